"""Client commands against a controller reached only through the ``ssh`` tunnel (a real sshd
"host" on its own loopback address; for the dropped connection, also a container host), as a
config with ``controller.tunnel: ssh`` says."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.testing import wait_until
from iris.testing.processes import ControllerProcess
from iris.testing.sshd import SshdUnavailable, SshServer, ensure_sshd

IRIS = str(Path(sys.executable).parent / "iris")
HOST = "127.0.0.13"
CONTAINER_HOST = "127.0.0.121"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    try:
        ensure_sshd()
    except SshdUnavailable as exc:
        pytest.skip(str(exc))
    with SshServer(tmp_path_factory.mktemp("sshd"), address=HOST) as server:
        yield server


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    process = ControllerProcess(tmp_path_factory.mktemp("controller"), workers=1)
    process.start()
    yield process
    process.stop()
    process.delete_slices()


@pytest.fixture
def client_config(host: SshServer, controller: ControllerProcess, tmp_path: Path) -> Path:
    """What a user of a cluster elsewhere has: the controller's address and how to reach it."""
    config = tmp_path / "remote.yaml"
    config.write_text(
        "provider:\n  type: manual\n"
        f"  ssh_user: {host.user}\n  ssh_key: {host.key_path}\n"
        f"  options: {{ssh_host: {host.address}, ssh_port: {host.port}, ssh_known_hosts: {tmp_path / 'known_hosts'}}}\n"
        f"controller:\n  host: 127.0.0.1\n  port: {controller.port}\n  tunnel: ssh\n"
    )
    return config


def logins(host: SshServer) -> int:
    return host.log().count("Accepted publickey")


def test_job_commands_and_run_go_through_the_ssh_tunnel(
    host: SshServer, controller: ControllerProcess, client_config: Path, workspace: Path, iris
) -> None:
    before = logins(host)
    token = {"IRIS_TOKEN": controller.token}  # the controller's owner, as `iris login` would store it
    ran = iris("--config", str(client_config), "run", "--cpu", "0.1", "--memory", "64MB", "--", "echo", "through the tunnel", cwd=workspace, env=token)
    assert ran.returncode == 0, ran.stderr
    assert "through the tunnel" in ran.stdout
    listed = iris("--config", str(client_config), "job", "list", cwd=workspace, env=token)
    assert listed.returncode == 0, listed.stderr
    assert "echo" in listed.stdout
    assert logins(host) >= before + 2  # one SSH connection per command


def test_following_logs_through_the_tunnel_survives_its_ssh_connection_being_killed(
    host: SshServer, controller: ControllerProcess, client_config: Path, workspace: Path
) -> None:
    follow_logs_across_a_dropped_connection(controller, client_config, workspace, host.drop_connections)


@pytest.fixture(scope="module")
def container_host(docker_engine, container_host_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """A machine of its own: a container with its sshd on its own loopback address."""
    from iris.testing.container_hosts import ContainerHosts

    with ContainerHosts(docker_engine, container_host_image, addresses=[CONTAINER_HOST], root=tmp_path_factory.mktemp("chost")) as hosts:
        yield hosts, hosts.start("gateway")


@pytest.mark.docker
def test_following_logs_through_a_container_hosts_sshd_survives_its_connection_being_killed(
    container_host: Any, controller: ControllerProcess, workspace: Path, tmp_path: Path
) -> None:
    """The same through a host that is a container: its sshd's session processes are killed
    inside it (the connection drops as in a network cut), the tunnel reconnects."""
    hosts, gateway = container_host
    config = tmp_path / "remote.yaml"
    config.write_text(
        "provider:\n  type: manual\n"
        f"  ssh_user: {gateway.ssh.user}\n  ssh_key: {hosts.user_key}\n"
        f"  options: {{ssh_host: {gateway.address}, ssh_port: {gateway.ssh.port}, ssh_known_hosts: {tmp_path / 'known_hosts'}}}\n"
        f"controller:\n  host: 127.0.0.1\n  port: {controller.port}\n  tunnel: ssh\n"
    )
    follow_logs_across_a_dropped_connection(controller, config, workspace, lambda: hosts.drop_connections(gateway.name))


def follow_logs_across_a_dropped_connection(
    controller: ControllerProcess, client_config: Path, workspace: Path, drop: Callable[[], int]
) -> None:
    """``iris job logs -f`` through the config's tunnel prints every line once although
    ``drop()`` kills the tunnel's SSH connection halfway through."""
    gate = workspace / "gate"
    code = (
        "import os, time\n"
        "for i in range(40):\n"
        "    print(f'line {i}', flush=True)\n"
        f"    while i == 19 and not os.path.exists({str(gate)!r}):\n"  # the second half waits for the drop
        "        time.sleep(0.05)\n"
    )
    with IrisClient.remote(controller.url, token=controller.token) as client:
        job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", code), resources=ResourceSpec(cpu=0.1, memory="64MB"))
        follow = subprocess.Popen(
            [IRIS, "--config", str(client_config), "job", "logs", "-f", job.job_id],
            cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "IRIS_TOKEN": controller.token},
        )  # fmt: skip
        printed: list[str] = []
        reader = threading.Thread(target=lambda: [printed.append(ln) for ln in follow.stdout], daemon=True)  # type: ignore[union-attr]
        reader.start()
        try:
            assert wait_until(lambda: any(ln.startswith("line 19") for ln in printed), timeout=60), printed
            assert drop() >= 1  # the follower's SSH connection, mid-stream
            gate.touch()
            assert follow.wait(timeout=120) == 0, follow.stderr.read() if follow.stderr else ""
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()
        reader.join(timeout=10)
        err = follow.stderr.read() if follow.stderr else ""
        assert job.wait(timeout=60).state is JobState.SUCCEEDED
    lines = [ln.rstrip("\n") for ln in printed if ln.startswith("line ")]
    assert lines == [f"line {i}" for i in range(40)], (printed, err)  # none lost, none repeated


def test_tunnel_with_a_wrong_key_is_one_line_naming_the_host(host: SshServer, client_config: Path, workspace: Path, tmp_path: Path, iris) -> None:
    from iris.testing.sshd import keygen

    wrong = keygen(tmp_path / "wrong")
    bad = tmp_path / "bad.yaml"
    bad.write_text(client_config.read_text().replace(str(host.key_path), str(wrong)))
    result = iris("--config", str(bad), "job", "list", cwd=workspace)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert f"{host.user}@{host.address}:{host.port}: authentication failed with key {wrong}" in result.stderr, result.stderr


def test_login_checks_the_token_through_the_tunnel_and_keeps_it_for_the_controller(
    host: SshServer, controller: ControllerProcess, client_config: Path, workspace: Path, tmp_path: Path, iris
) -> None:
    import json

    home = tmp_path / "home"
    home.mkdir()
    before = logins(host)
    login = iris("--config", str(client_config), "login", "--token", controller.token, cwd=workspace, env={"HOME": str(home)})
    assert login.returncode == 0, login.stderr
    assert logins(host) >= before + 1, "iris login did not go through the config's ssh tunnel"
    kept = json.loads((home / ".iris" / "credentials.json").read_text())
    assert kept == {f"http://127.0.0.1:{controller.port}": controller.token}  # the controller's URL, not the tunnel's end
    before = logins(host)
    who = iris("--config", str(client_config), "whoami", cwd=workspace, env={"HOME": str(home)})
    assert who.returncode == 0 and who.stdout.startswith("admin "), who.stderr
    assert logins(host) >= before + 1
