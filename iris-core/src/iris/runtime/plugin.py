"""Implementations built into Iris core, registered like any plugin (entry point ``builtin``).

The ``docker`` ContainerRuntime (:mod:`iris.runtime.docker`): the ``docker`` SDK is imported only when a runtime is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iris.plugin.hookspecs import hookimpl
from iris.plugin.records import ContainerRuntimePlugin


def _docker_runtime(root: Path) -> Any:
    from iris.runtime.docker import DockerRuntime

    return DockerRuntime(root)


@hookimpl
def iris_register_container_runtimes(register):  # type: ignore[no-untyped-def]
    register(
        ContainerRuntimePlugin(
            name="docker",
            factory=_docker_runtime,
            description="containers of the Docker engine at DOCKER_HOST (default image: IRIS_DOCKER_IMAGE)",
        )
    )
