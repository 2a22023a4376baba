"""iris.runtime.images' Debian rootfs cache, which the test host image shares
(iris.testing.container_hosts): what goes in names the tarball, and a cached one is reused
without running debootstrap."""

from __future__ import annotations

from pathlib import Path

import pytest

from iris.runtime.images import BASE_INCLUDE, DEBIAN_SUITE, debian_rootfs_tar, rootfs_key
from iris.testing import container_hosts


def test_rootfs_key_changes_with_the_packages_and_what_finish_adds() -> None:
    keys = {rootfs_key(), rootfs_key(("python3", "curl")), rootfs_key(BASE_INCLUDE, extra="docker client abc"), rootfs_key(BASE_INCLUDE, extra="other")}
    assert len(keys) == 4
    assert rootfs_key() == rootfs_key(BASE_INCLUDE, extra="")


def test_debian_rootfs_tar_returns_the_cached_tarball_of_its_key_without_building(tmp_path: Path) -> None:
    include = ("python3", "openssh-server")
    cached = tmp_path / f"host-{rootfs_key(include, extra='x')}.tar"
    cached.write_bytes(b"a tarball")
    finished: list[Path] = []
    assert debian_rootfs_tar(tmp_path, include=include, name="host-", finish=finished.append, extra="x") == cached
    assert finished == []
    base = tmp_path / f"{DEBIAN_SUITE}-python3-{rootfs_key()}.tar"
    base.write_bytes(b"another")
    assert debian_rootfs_tar(tmp_path) == base


def test_host_image_tar_is_the_rootfs_cache_with_the_host_packages_and_the_docker_client(tmp_path: Path) -> None:
    if not container_hosts.DOCKER_CLIENT.exists():
        pytest.skip(f"needs the docker client at {container_hosts.DOCKER_CLIENT} (Debian package docker.io)")
    key = container_hosts.host_image_key()
    assert key == rootfs_key(container_hosts.HOST_INCLUDE, extra=container_hosts._docker_client_digest())
    cached = tmp_path / f"{container_hosts.HOST_TAR_PREFIX}{key}.tar"
    cached.write_bytes(b"a host tarball")
    assert container_hosts.host_image_tar(tmp_path) == cached
