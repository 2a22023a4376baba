"""Shared by every test directory: one task-environment cache for the whole session, and the
Docker engine fixtures (``iris.testing.docker_pytest``: ``docker_engine``, ``docker_base_image``,
``docker_registry``) for the tests marked ``docker``.

Workers build each task's Python environment with uv and cache it by what determines it
(docs/environments.md); the tests start many short-lived workers, each with its own work
directory, so they share one cache (``IRIS_ENV_DIR``) and build each distinct environment once
per session instead of once per worker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

pytest_plugins = ["iris.testing.docker_pytest"]


@pytest.fixture(scope="session", autouse=True)
def shared_task_environments() -> Iterator[str]:
    previous = os.environ.get("IRIS_ENV_DIR")
    directory = tempfile.mkdtemp(prefix="iris-test-envs-")
    os.environ["IRIS_ENV_DIR"] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop("IRIS_ENV_DIR", None)
        else:
            os.environ["IRIS_ENV_DIR"] = previous
        shutil.rmtree(directory, ignore_errors=True)
