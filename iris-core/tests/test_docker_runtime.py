"""The docker runtime against a real engine: the ContainerRuntime contract, and what only a
container does (limits, labels, image errors, separate streams)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.plugin.protocols import ContainerSpec, TaskStartError
from iris.runtime.docker import LABEL_MANAGED, DockerRuntime
from iris.testing.contracts import ContainerRuntimeContract
from iris.testing.docker_engine import DockerEngine

pytestmark = pytest.mark.docker


class TestDockerRuntimeContract(ContainerRuntimeContract):
    python = "python3"
    # The engine sets HOSTNAME, and HOME when the spec has none; the sh entrypoint exports PWD.
    allowed_extra_env = frozenset({"HOSTNAME", "HOME", "PWD"})
    # A container has its own pid namespace: its pids mean nothing here (and a kill ends the
    # namespace's every process, which the kernel guarantees).
    shares_pid_namespace = False

    @pytest.fixture
    def runtime_factory(self, tmp_path: Path, docker_engine: DockerEngine, docker_base_image: str) -> Any:
        return lambda: DockerRuntime(tmp_path / "runtime", base_url=docker_engine.url, default_image=docker_base_image)
