from iris_cli.main import main

main()
