"""pytest fixtures for tests that need a real Docker engine (load with
``pytest_plugins = ["iris.testing.docker_pytest"]`` in a root ``conftest.py``).

``docker_engine`` (session): a private ``dockerd`` (see :class:`~iris.testing.docker_engine.DockerEngine`),
installed with apt-get first if missing, stopped and deleted at the end of the session.
``docker_base_image`` (session): the cached bookworm + python3 image imported into it.
``docker_registry`` (session): Debian's ``docker-registry`` on 127.0.0.1.
``docker_worker_image`` (session): this workspace's worker image on the base image, cached by content.
``container_host_image`` (session): the image of :class:`~iris.testing.container_hosts.ContainerHosts`
(python3, sshd, the docker CLI), cached by content.

A test that uses them and cannot have them is skipped with the exact reason. Mark such tests
``@pytest.mark.docker`` so ``-m "not docker"`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iris.testing.docker_engine import DockerEngine, LocalRegistry, base_image_key, base_image_tar, cached_worker_image, ensure_installed

BASE_IMAGE = f"iris-test-base:{base_image_key()}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: needs a real Docker engine (started by the docker_engine fixture)")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    why = ensure_installed()
    if why:
        pytest.skip(f"no Docker engine for this test: {why}")
    engine = DockerEngine()
    try:
        engine.start()
    except Exception as exc:
        engine.stop()
        pytest.skip(f"no Docker engine for this test: dockerd did not start: {exc}")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def docker_base_image(docker_engine: DockerEngine) -> str:
    """``iris-test-base:<key>``: Debian bookworm (minbase) with python3, /usr/bin/python3.11 as
    on the build machines; built by debootstrap once per cache key and cached as a tarball."""
    try:
        tar = base_image_tar()
    except Exception as exc:
        pytest.skip(f"cannot build the test base image (debootstrap of Debian bookworm): {exc}")
    return docker_engine.import_image(tar, BASE_IMAGE)


@pytest.fixture(scope="session")
def docker_registry(docker_engine: DockerEngine) -> Iterator[LocalRegistry]:
    registry = LocalRegistry()
    try:
        registry.start()
    except Exception as exc:
        registry.stop()
        pytest.skip(f"cannot start docker-registry on 127.0.0.1: {exc}")
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def docker_worker_image(docker_engine: DockerEngine, docker_base_image: str) -> str:
    """``iris-worker:<key>``: the worker image of this workspace (``iris build worker-image``) on
    the test base image; ``key`` is a hash of the workspace's sources (:func:`workspace_key`). The
    built image is cached as a ``docker save`` tarball by that key, so a later session with the same
    sources only loads it (seconds, not minutes); tarballs of other keys are deleted after an hour."""
    try:
        return cached_worker_image(docker_engine, docker_base_image)
    except Exception as exc:
        pytest.fail(f"cannot build the worker image: {exc}")


@pytest.fixture(scope="session")
def container_host_image(docker_engine: DockerEngine) -> str:
    """The test hosts' image (:func:`iris.testing.container_hosts.host_image`): Debian bookworm
    with python3, curl, CA certificates, openssh-server and the docker client; built by
    debootstrap once per cache key."""
    from iris.testing.container_hosts import host_image

    try:
        return host_image(docker_engine)
    except Exception as exc:
        pytest.skip(f"cannot build the test host image (debootstrap of Debian bookworm with python3 and openssh-server): {exc}")
