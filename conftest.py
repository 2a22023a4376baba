"""Fixtures every test directory of the workspace can use."""

pytest_plugins = ["iris.testing.docker_pytest"]
