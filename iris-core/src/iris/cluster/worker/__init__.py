"""The worker agent: reconciles with the controller and runs attempts in a ContainerRuntime."""
