"""pytest fixtures for tests that need a real Docker engine (load with
``pytest_plugins = ["iris.testing.docker_pytest"]`` in a root ``conftest.py``).

``docker_engine`` (session): a private ``dockerd`` (see :class:`~iris.testing.docker_engine.DockerEngine`),
installed with apt-get first if missing, stopped and deleted at the end of the session.
``docker_base_image`` (session): the cached bookworm + python3 image imported into it.
``docker_registry`` (session): Debian's ``docker-registry`` on 127.0.0.1.
``docker_worker_image`` (session): this workspace's worker image, built on the base image.

A test that uses them and cannot have them is skipped with the exact reason. Mark such tests
``@pytest.mark.docker`` so ``-m "not docker"`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iris.testing.docker_engine import DockerEngine, LocalRegistry, base_image_key, base_image_tar, ensure_installed

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
    """``iris-worker:test``: the worker image of this workspace (``iris build worker-image``) on
    the test base image, built once per session in the session's engine."""
    from iris.runtime.images import build_image

    tag = "iris-worker:test"
    try:
        build_image("worker", tag, base=docker_base_image, docker_host=docker_engine.url)
    except Exception as exc:
        pytest.fail(f"cannot build the worker image: {exc}")
    return tag
