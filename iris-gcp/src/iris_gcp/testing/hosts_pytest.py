"""pytest fixtures for fake GCP machines that really boot (:mod:`iris_gcp.testing.hosts`).

They build on ``iris.testing.docker_pytest`` (``docker_engine``, ``docker_base_image``,
``docker_registry``), which the root ``conftest.py`` loads; import these fixtures by name into a
``conftest.py`` (``from iris_gcp.testing.hosts_pytest import *``).

- ``fake_host_image`` (session): the fake machine image (:func:`~iris_gcp.testing.hosts.host_image`),
  debootstrapped once and cached under ``~/.cache/iris-images/``.
- ``iris_image`` (session): the Iris worker image of this workspace (``iris build worker-image``:
  it runs ``python3 -m iris_gcp.boot worker`` and, with ``--entrypoint``, the controller), pushed
  to the test registry as ``<registry>/iris-worker:<key>``; ``key`` is a hash of the workspace's
  sources, and the built image is cached as a ``docker save`` tarball by it, so a later session
  with the same sources only loads it (seconds, not minutes; tarballs of other keys are deleted
  after an hour). The registry tag is removed from the
  engine after the push, so machines really pull it.
- ``fake_metadata`` (function): a :class:`~iris_gcp.testing.fake_metadata.FakeMetadataServer`.
- ``container_booter`` (function): a :class:`~iris_gcp.testing.hosts.ContainerBooter` on
  ``127.0.0.11`` ... ``127.0.0.60`` with sshd on every host; closed (every host halted, every
  container and directory removed) at the end of the test.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.runtime.images import CACHE_DIR, WORKSPACE_MEMBERS, build_image, find_workspace
from iris.testing.docker_engine import DockerEngine, LocalRegistry
from iris_gcp.testing.fake_metadata import FakeMetadataServer
from iris_gcp.testing.hosts import ContainerBooter, host_image

__all__ = ["container_booter", "fake_host_image", "fake_metadata", "iris_image", "workspace_key"]

BOOTER_ADDRESSES = [f"127.0.0.{n}" for n in range(11, 61)]


def workspace_key(workspace: Path) -> str:
    """A hash of what an image built from ``workspace`` holds: its members' files (tracked and
    untracked, not ignored), the root ``pyproject.toml`` and ``uv.lock``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z", "--", *WORKSPACE_MEMBERS, "pyproject.toml", "uv.lock"],
        cwd=workspace, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    digest = hashlib.sha256()
    for name in sorted(n for n in listed if n and "/tests/" not in f"/{n}"):
        path = workspace / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def fake_host_image(docker_engine: DockerEngine) -> str:
    try:
        return host_image(docker_engine)
    except Exception as exc:
        pytest.skip(f"cannot build the fake GCP host image (debootstrap of Debian bookworm with curl and openssh-server): {exc}")


@pytest.fixture(scope="session")
def iris_image(docker_engine: DockerEngine, docker_base_image: str, docker_registry: LocalRegistry) -> str:
    workspace = find_workspace()
    key = workspace_key(workspace)
    local = f"iris-worker:{key}"
    tar = CACHE_DIR / f"iris-worker-{key}.tar"
    if docker_engine.docker("image", "inspect", local, check=False).returncode != 0:
        if tar.exists():
            docker_engine.docker("load", "-i", str(tar), timeout=600)
        else:
            build_image("worker", local, base=docker_base_image, workspace=workspace, docker_host=docker_engine.url)
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            for stale in CACHE_DIR.glob("iris-worker-*.tar"):
                # they are large: keep only recent ones (another session may be loading one)
                if time.time() - stale.stat().st_mtime > 3600:
                    stale.unlink(missing_ok=True)
            partial = tar.with_name(f"{tar.name}.{os.getpid()}.partial")
            docker_engine.docker("save", "-o", str(partial), local, timeout=600)
            os.replace(partial, tar)
    pushed = f"{docker_registry.address}/iris-worker:{key}"
    docker_engine.docker("tag", local, pushed)
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
