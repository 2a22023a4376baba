"""pytest fixtures for fake GCP machines that really boot (:mod:`iris_gcp.testing.hosts`).

They build on ``iris.testing.docker_pytest`` (``docker_engine``, ``docker_base_image``,
``docker_registry``), which the root ``conftest.py`` loads; import these fixtures by name into a
``conftest.py`` (``from iris_gcp.testing.hosts_pytest import *``).

- ``fake_host_image`` (session): the fake machine image (:func:`~iris_gcp.testing.hosts.host_image`),
  debootstrapped once and cached under ``~/.cache/iris-images/``.
- ``iris_image`` (session): the Iris worker image of this workspace (``docker_worker_image``:
  it runs ``python3 -m iris_gcp.boot worker`` and, with ``--entrypoint``, the controller), pushed
  to the test registry as ``<registry>/iris-worker:<key>``. The registry tag is removed from the
  engine after the push, so machines really pull it.
- ``fake_metadata`` (function): a :class:`~iris_gcp.testing.fake_metadata.FakeMetadataServer`.
- ``container_booter`` (function): a :class:`~iris_gcp.testing.hosts.ContainerBooter` on
  ``127.0.0.11`` ... ``127.0.0.60`` with sshd on every host; closed (every host halted, every
  container and directory removed) at the end of the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iris.testing.docker_engine import DockerEngine, LocalRegistry, workspace_key
from iris_gcp.testing.fake_metadata import FakeMetadataServer
from iris_gcp.testing.hosts import ContainerBooter, host_image

__all__ = ["container_booter", "fake_host_image", "fake_metadata", "iris_image", "workspace_key"]

BOOTER_ADDRESSES = [f"127.0.0.{n}" for n in range(11, 61)]


@pytest.fixture(scope="session")
def fake_host_image(docker_engine: DockerEngine) -> str:
    try:
        return host_image(docker_engine)
    except Exception as exc:
        pytest.skip(f"cannot build the fake GCP host image (debootstrap of Debian bookworm with curl and openssh-server): {exc}")


@pytest.fixture(scope="session")
def iris_image(docker_engine: DockerEngine, docker_worker_image: str, docker_registry: LocalRegistry) -> str:
    key = docker_worker_image.rsplit(":", 1)[1]
    pushed = f"{docker_registry.address}/iris-worker:{key}"
    docker_engine.docker("tag", docker_worker_image, pushed)
    docker_engine.docker("push", pushed, timeout=600)
    docker_engine.docker("rmi", pushed)  # the machines pull it from the registry
    return pushed


@pytest.fixture
def fake_metadata() -> Iterator[FakeMetadataServer]:
    with FakeMetadataServer() as server:
        yield server


@pytest.fixture
def container_booter(docker_engine: DockerEngine, fake_host_image: str, fake_metadata: FakeMetadataServer) -> Iterator[ContainerBooter]:
    booter = ContainerBooter(docker_engine, fake_host_image, metadata=fake_metadata, addresses=BOOTER_ADDRESSES, ssh=True)
    try:
        yield booter
    finally:
        booter.close()
