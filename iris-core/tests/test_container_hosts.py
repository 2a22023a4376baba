"""iris.testing.container_hosts: test machines that are containers, each with its sshd on its
own loopback address; killed, they stop answering and lose what ran on them; revived, they
answer again with nothing running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.testing import wait_until
from iris.testing.container_hosts import ContainerHosts, sshd_answers

pytestmark = pytest.mark.docker

ADDRESS = "127.0.0.122"


@pytest.fixture
def hosts(docker_engine, container_host_image: str, tmp_path: Path) -> Iterator[ContainerHosts]:  # type: ignore[no-untyped-def]
    with ContainerHosts(docker_engine, container_host_image, addresses=[ADDRESS], root=tmp_path / "root", mounts=["/etc/ssl/certs"]) as hosts:
        yield hosts


def test_container_host_killed_stops_answering_and_loses_its_processes_and_revived_answers_again(hosts: ContainerHosts) -> None:
    host = hosts.start("one")
    assert host.address == ADDRESS and sshd_answers(host.address, host.ssh.port)
    assert hosts.processes("one") == []
    hosts.engine.docker("exec", "-d", host.container, "sleep", "300")
    assert wait_until(lambda: any("sleep 300" in line for line in hosts.processes("one")), timeout=10)
    assert hosts.engine.docker("exec", host.container, "test", "-d", "/etc/ssl/certs", check=False).returncode == 0
    hosts.kill("one")
    assert not hosts.running("one") and not sshd_answers(host.address, host.ssh.port)
    hosts.revive("one")
    assert hosts.running("one") and sshd_answers(host.address, host.ssh.port)
    assert hosts.processes("one") == []


def test_container_host_drop_connections_kills_its_ssh_sessions_only(hosts: ContainerHosts) -> None:
    paramiko = pytest.importorskip("paramiko", reason="an SSH client to hold a connection (iris-manual's dependency)")
    host = hosts.start("one")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(host.address, port=host.ssh.port, username=host.ssh.user, key_filename=str(hosts.user_key), look_for_keys=False, allow_agent=False)
    try:
        assert hosts.drop_connections("one") >= 1
        assert wait_until(lambda: not client.get_transport().is_active(), timeout=10)  # type: ignore[union-attr]
        assert sshd_answers(host.address, host.ssh.port)  # sshd still listens
        assert hosts.drop_connections("one") == 0
    finally:
        client.close()
