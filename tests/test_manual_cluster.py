"""A manual cluster end to end, from the CLI. The machines are containers of the test host image
(``iris.testing.container_hosts``), each with its sshd on its own loopback address and its own
process table: `iris cluster start` bootstraps workers on three of them over SSH, a gang runs
across them, a machine is killed under a running task and the task runs again elsewhere, the
controller is SIGKILLed and restarted adopting the running workers, `iris cluster stop` leaves
nothing on any machine, and a wrong key or an unreachable host is one line naming the host. The
controller placed on a machine (as a container, with workers as containers) runs there too; sshd
processes on loopback (``iris.testing.sshd``) serve the quicker checks of the placed controller
as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.procfs import pid_alive
from iris.testing import wait_until
from iris.testing.container_hosts import ContainerHosts, interpreter_mounts, trusted_certificates
from iris.testing.sshd import SshdUnavailable, SshServer, ensure_sshd

ADDRESSES = ["127.0.0.31", "127.0.0.32", "127.0.0.33"]


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[SshServer]]:
    try:
        ensure_sshd()
    except SshdUnavailable as exc:
        pytest.skip(str(exc))
    servers = [SshServer(tmp_path / f"host{i}", address=a).start() for i, a in enumerate(ADDRESSES)]
    for server in servers[1:]:  # one key for every host
        (server.directory / "authorized_keys").write_text(Path(f"{servers[0].key_path}.pub").read_text())
    yield servers
    for server in servers:
        server.stop()


def iris_cmd(*args: str, home: Path, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}
    env.pop("IRIS_CONTROLLER_ADDRESS", None)
    return subprocess.run([str(Path(sys.executable).parent / "iris"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def owner_token(home: Path, name: str) -> str:
    """The admin token the controller started by this HOME's user wrote in its state directory."""
    return (home / ".iris" / name / "owner.token").read_text().strip()


def session_env() -> dict[str, str]:
    """What an SSH session here lacks for the workers' uv to reach the package index (this
    machine's certificate bundle), as a real config would pass a proxy or a cache directory."""
    return {k: v for k, v in os.environ.items() if k in ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_FIND_LINKS", "UV_CACHE_DIR")}


def worker_records(remote: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(remote.glob("*/*/vm.json"))]


CLUSTER_HOST_ADDRESSES = [f"127.0.0.{n}" for n in range(111, 114)]
NO_HOST = "127.0.0.119"  # an address with no host behind it


@pytest.fixture(scope="module")
def cluster_hosts(docker_engine, container_host_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerHosts]:  # type: ignore[no-untyped-def]
    """Three machines: containers of the host image, each with its sshd on its own 127.0.0.N and
    its own process table, and Iris installed (this workspace's interpreter, mounted read-only
    as a shared drive would hold it); the directory they all see at the same path is the NFS
    share a lab has (the job bundles, the workers' directories)."""
    _, certificates = trusted_certificates()
    root = tmp_path_factory.mktemp("cluster-hosts")
    with ContainerHosts(docker_engine, container_host_image, addresses=CLUSTER_HOST_ADDRESSES, root=root,
                        mounts=[*interpreter_mounts(), *certificates]) as hosts:  # fmt: skip
        for i in range(len(CLUSTER_HOST_ADDRESSES)):
            hosts.start(f"m{i}")
        yield hosts


def container_cluster_config(path: Path, hosts: ContainerHosts, name: str, *, key: Path | None = None, entries: list[str] | None = None) -> Path:
    env, _ = trusted_certificates()
    root = hosts.root
    options = {
        "python": sys.executable, "remote_dir": f"{root}/{name}/remote/{{host}}", "ssh_known_hosts": str(path.parent / "known_hosts"),
        "stop_grace": 5, "env": {**env, "IRIS_ENV_DIR": f"{root}/envs", "UV_CACHE_DIR": f"{root}/uv-cache"},
    }  # fmt: skip
    path.write_text(
        f"name: {name}\n"
        "provider:\n  type: manual\n"
        f"  hosts: {json.dumps(entries or [f'{h.address}:{h.ssh.port}' for h in hosts.hosts()])}\n"
        f"  ssh_user: root\n  ssh_key: {key or hosts.user_key}\n"
        f"  options: {json.dumps(options)}\n"
        # a dead machine's worker is lost after 20s; short, but long enough for the live workers to
        # find a restarted controller (their gRPC channels' reconnect backoff included) on a busy machine
        f"controller: {{worker_timeout_seconds: 20, bundle_prefix: 'file://{root}/{name}/bundles'}}\n"
        "autoscaler: {evaluation_interval_seconds: 0.5, backoff_initial_seconds: 1}\n"
        "scale_groups:\n  hosts: {min_slices: 3, max_slices: 3, vms_per_slice: 1, cpu: 1, memory: 1GB}\n"
    )
    return path


def host_records(remote: Path) -> dict[str, dict]:
    """Each worker's record on the share, by the host directory it is in."""
    return {p.parent.parent.name: json.loads(p.read_text()) for p in remote.glob("*/*/vm.json")}


def live_workers(client: IrisClient) -> set[str]:
    return {w.worker_id for w in client.list_workers() if not w.lost}


@pytest.fixture
def machines(cluster_hosts: ContainerHosts) -> Iterator[ContainerHosts]:
    """The three machines, each booted again after the test if it killed one."""
    yield cluster_hosts
    for host in cluster_hosts.hosts():
        if not cluster_hosts.running(host.name):
            cluster_hosts.revive(host.name)


@pytest.mark.docker
def test_manual_cluster_on_three_container_hosts_runs_a_gang_survives_a_host_and_a_controller_kill_and_stops_clean(
    machines: ContainerHosts, tmp_path: Path
) -> None:
    """`iris cluster start` bootstraps a worker on each of three machines over SSH; a gang of
    three runs across them and streams back; a machine killed under a running task (its
    container killed: the worker and the task die with it) has the task retried on another; the
    controller SIGKILLed under a running job is started again and adopts the workers (the same
    processes) and the job (no attempt re-run); `stop` leaves no process on any machine and no
    container in the engine."""
    hosts = machines
    by_dir = {f"{h.address}-{h.ssh.port}": h for h in hosts.hosts()}
    home = tmp_path / "home"
    home.mkdir()
    config = container_cluster_config(tmp_path / "manual.yaml", hosts, "manualhosts")
    remote = hosts.root / "manualhosts" / "remote"
    dead, dead_dir = "", ""
    stopped = None
    try:
        started = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        with IrisClient.remote(url, token=owner_token(home, "manualhosts")) as client:
            assert wait_until(lambda: len(live_workers(client)) == 3, timeout=180)
        records = host_records(remote)
        assert sorted(records) == sorted(by_dir)  # one worker on each machine, running there
        for directory, record in records.items():
            running = hosts.processes(by_dir[directory].name)
            assert any(line.split()[0] == str(record["pid"]) and "iris.cluster.worker.main" in line for line in running), running

        # a gang: all three tasks start together, one on each machine, and their output streams back
        gang = iris_cmd("--config", str(config), "run", "--replicas", "3", "--coschedule", "scale-group", "--cpu", "1",
                        "--memory", "64MB", "--", "sh", "-c", "echo gang $IRIS_TASK_INDEX $IRIS_WORKER_ID",
                        home=home, cwd=tmp_path, timeout=300)  # fmt: skip
        assert gang.returncode == 0, gang.stderr
        ran_on = sorted(line.rsplit(" ", 1)[1] for line in gang.stdout.splitlines() if "gang " in line)
        assert ran_on == sorted(r["vm_id"] for r in records.values()), gang.stdout

        # seed 001's operations, read from the machines
        vms = iris_cmd("cluster", "--config", str(config), "vm", "status", home=home, cwd=tmp_path)
        assert vms.returncode == 0 and sorted(line.split()[0] for line in vms.stdout.splitlines()) == sorted(r["vm_id"] for r in records.values()), (
            vms.stdout + vms.stderr
        )
        some = sorted(r["vm_id"] for r in records.values())[0]
        logs = iris_cmd("cluster", "--config", str(config), "vm", "logs", some, "--tail", "100000", home=home, cwd=tmp_path)
        assert logs.returncode == 0 and f"iris worker {some} running" in logs.stdout, logs.stdout + logs.stderr
        got = iris_cmd("cluster", "--config", str(config), "vm", "get", some, home=home, cwd=tmp_path)
        assert got.returncode == 0 and json.loads(got.stdout)["address"] in CLUSTER_HOST_ADDRESSES, got.stdout + got.stderr
        one = iris_cmd("cluster", "--config", str(config), "slice", "get", some.rsplit("-", 1)[0], home=home, cwd=tmp_path)
        assert one.returncode == 0 and f"slice {some.rsplit('-', 1)[0]}  group hosts  READY" in one.stdout, one.stdout + one.stderr
        missing = iris_cmd("cluster", "--config", str(config), "vm", "logs", "nope", home=home, cwd=tmp_path)
        assert missing.returncode == 2 and "no VM 'nope'" in missing.stderr and "Traceback" not in missing.stderr
        status = iris_cmd("cluster", "--config", str(config), "status", home=home, cwd=tmp_path)
        assert status.returncode == 0 and some.rsplit("-", 1)[0] in status.stdout, status.stdout + status.stderr

        # a machine dies under a running task: the task runs again on another machine
        gate = hosts.root / "manualhosts" / "gate"
        code = (
            "import os, time\nprint('on', os.environ['IRIS_WORKER_ID'], flush=True)\n"
            f"while os.environ['IRIS_ATTEMPT_ID'] == '0' and not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"
        )
        with IrisClient.remote(url, token=owner_token(home, "manualhosts")) as client:
            job = client.submit(Entrypoint.from_command("python", "-c", code), resources=ResourceSpec(cpu=1, memory="64MB"))
            assert wait_until(lambda: any(ln.data.startswith("on ") for ln in job.logs()), timeout=180)
            first = [ln.data for ln in job.logs() if ln.data.startswith("on ")][0].split()[1]
            (dead_dir,) = [d for d, r in records.items() if r["vm_id"] == first]
            dead = by_dir[dead_dir].name
            hosts.kill(dead)
            status = job.wait(timeout=180)
            assert status.state is JobState.SUCCEEDED
            (task,) = status.tasks
            assert len(task.attempts) == 2 and task.attempts[1].worker_id not in ("", first)
            assert first not in live_workers(client)
        survivors = {d: r for d, r in records.items() if d != dead_dir}

        # the controller is SIGKILLed under a running job; started again, it adopts the workers
        # (the same processes on the machines) and the job, whose task is not run again
        gate2 = hosts.root / "manualhosts" / "gate2"
        code2 = f"import os, time\nprint('held on', os.environ['IRIS_WORKER_ID'], flush=True)\nwhile not os.path.exists({str(gate2)!r}): time.sleep(0.05)\nprint('released')\n"
        with IrisClient.remote(url, token=owner_token(home, "manualhosts")) as client:
            held = client.submit(Entrypoint.from_command("python", "-c", code2), resources=ResourceSpec(cpu=1, memory="64MB"))
            assert wait_until(lambda: any(ln.data.startswith("held on ") for ln in held.logs()), timeout=180)
        controller_pid = int((home / ".iris" / "manualhosts" / "controller.pid").read_text())
        os.kill(controller_pid, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(controller_pid), timeout=10)
        again = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        dead_where = next(h.where for h in hosts.hosts() if h.name == dead)
        assert [ln for ln in again.stderr.splitlines() if "does not answer" in ln and dead_where in ln], again.stderr
        with IrisClient.remote(again.stdout.strip(), token=owner_token(home, "manualhosts")) as client:
            assert wait_until(lambda: live_workers(client) == {r["vm_id"] for r in survivors.values()}, timeout=120)
            assert {d: (r["pid"], r["start_time"]) for d, r in host_records(remote).items() if d != dead_dir} == {
                d: (r["pid"], r["start_time"]) for d, r in survivors.items()
            }
            gate2.write_text("")
            status = client.job(held.job_id).wait(timeout=120)
            assert status.state is JobState.SUCCEEDED
            (task,) = status.tasks
            assert len(task.attempts) == 1, task.attempts
            lines = [ln.data for ln in client.job(held.job_id).logs()]
            assert len([ln for ln in lines if ln.startswith("held on ")]) == 1 and "released" in lines, lines
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", home=home, cwd=tmp_path, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    for host in hosts.hosts():
        if host.name == dead:
            assert not hosts.running(host.name)  # nothing runs on a dead machine
        else:
            assert hosts.processes(host.name) == [], f"left running on {host.name}"
    assert hosts.started_containers() == []
    engine_containers = set(hosts.engine.docker("ps", "-q", "--no-trunc").stdout.decode().split())
    assert engine_containers <= {h.container for h in hosts.hosts()}
    assert set(host_records(remote)) <= {dead_dir}  # only the dead machine's record is left, on its disk


@pytest.mark.docker
def test_manual_cluster_start_with_a_wrong_key_or_an_unreachable_host_says_so_in_one_line_naming_the_host(
    machines: ContainerHosts, tmp_path: Path
) -> None:
    cluster_hosts = machines
    from iris.testing.sshd import keygen

    home = tmp_path / "home"
    home.mkdir()
    wrong = keygen(tmp_path / "wrong_key")
    first = cluster_hosts.hosts()[0]
    cases = {
        "wrongkey": (container_cluster_config(tmp_path / "wrongkey.yaml", cluster_hosts, "wrongkey", key=wrong),
                     f"{first.where}: authentication failed with key {wrong}"),
        "nohost": (container_cluster_config(tmp_path / "nohost.yaml", cluster_hosts, "nohost", entries=[f"{NO_HOST}:22"]),
                   f"root@{NO_HOST}:22: cannot connect"),
    }  # fmt: skip
    for name, (config, expected) in cases.items():
        started = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path)
        assert started.returncode != 0 and "Traceback" not in started.stderr, started.stderr
        lines = [ln for ln in started.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and expected in lines[0], started.stderr
        assert not (home / ".iris" / name / "controller.pid").exists()  # no controller was started
        status = iris_cmd("cluster", "--config", str(config), "vm", "status", home=home, cwd=tmp_path)
        assert status.returncode != 0 and expected in status.stderr and "Traceback" not in status.stderr, status.stderr


def _free_port(address: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def test_manual_controller_placed_on_a_host_over_ssh_runs_restarts_and_stops_clean(tmp_path: Path) -> None:
    """controller.vm.enabled with provider.options.controller_host: the controller runs on that
    host (a process of its Python, the config written there and passed with --config), workers on
    the others get its address as the hosts reach it, clients go through the ssh tunnel, and
    restart/stop find it from what runs on the host."""
    try:
        ensure_sshd()
    except SshdUnavailable as exc:
        pytest.skip(str(exc))
    servers = [SshServer(tmp_path / f"host{i}", address=f"127.0.0.5{i}").start() for i in range(3)]
    for server in servers[1:]:
        (server.directory / "authorized_keys").write_text(Path(f"{servers[0].key_path}.pub").read_text())
    placed, workers = servers[0], servers[1:]
    home = tmp_path / "home"
    home.mkdir()
    remote, controller_dir = tmp_path / "remote", tmp_path / "controller-dir"
    port, http_port = _free_port(placed.address), _free_port(placed.address)
    config = tmp_path / "manual.yaml"
    config.write_text(
        "name: manualplaced\n"
        "provider:\n  type: manual\n"
        f"  hosts: [{', '.join(f'{h.address}:{h.port}' for h in workers)}]\n"
        f"  ssh_user: {placed.user}\n  ssh_key: {placed.key_path}\n"
        f"  options: {{python: {sys.executable}, remote_dir: '{remote}/{{host}}', ssh_known_hosts: {tmp_path / 'known_hosts'}, stop_grace: 5,\n"
        f"             controller_dir: {controller_dir}, env: {json.dumps(session_env())}}}\n"
        f"controller: {{tunnel: ssh, http_port: {http_port}}}\n"
        f"controller_vm: {{manual: {{host: '{placed.user}@{placed.address}:{placed.port}', port: {port}}}}}\n"
        "autoscaler: {evaluation_interval_seconds: 0.5}\n"
        "scale_groups:\n  hosts: {min_slices: 2, max_slices: 2, vms_per_slice: 1, cpu: 1, memory: 1GB}\n"
    )
    url = f"http://{placed.address}:{port}"
    records: list[dict] = []
    first: dict = {}
    try:
        started = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr + _read(controller_dir / "controller.log")
        assert started.stdout.strip() == url
        first = json.loads((controller_dir / "controller.json").read_text())
        assert pid_alive(first["pid"]) and first["argv"][-1] == f"{controller_dir}/config.yaml"
        assert (controller_dir / "config.yaml").stat().st_mode & 0o077 == 0  # it holds the admin token's hash
        assert not (home / ".iris" / "manualplaced" / "controller.pid").exists()  # nothing runs here
        with IrisClient.remote(url, token=owner_token(home, "manualplaced")) as client:
            assert wait_until(lambda: len([w for w in client.list_workers() if not w.lost]) == 2, timeout=120)
        records = worker_records(remote)
        assert {p.parent.parent.name for p in remote.glob("*/*/vm.json")} == {f"{h.address}-{h.port}" for h in workers}
        # the workers were given the controller's address on its host
        for record in records:
            assert record["cleanup"][record["cleanup"].index("--controller") + 1] == url

        ran = iris_cmd("--config", str(config), "run", "--replicas", "2", "--cpu", "1", "--memory", "64MB", "--",
                       "sh", "-c", "echo on $IRIS_WORKER_ID", home=home, cwd=tmp_path)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert sorted(line.split("on ")[1] for line in ran.stdout.splitlines() if "on " in line) == sorted(r["vm_id"] for r in records)

        status = iris_cmd("cluster", "--config", str(config), "controller", "status", home=home, cwd=tmp_path)
        assert status.returncode == 0 and "healthy" in status.stdout and placed.address in status.stdout, status.stdout + status.stderr

        # another config with the same name neither uses nor stops this cluster's controller
        other = tmp_path / "other.yaml"
        other.write_text(config.read_text().replace("max_slices: 2", "max_slices: 3"))
        for args in (["--config", str(other), "run", "--", "true"], ["--config", str(other), "job", "list"],
                     ["cluster", "--config", str(other), "start"], ["cluster", "--config", str(other), "stop"]):  # fmt: skip
            refused = iris_cmd(*args, home=home, cwd=tmp_path)
            assert refused.returncode != 0 and "runs another config with this name" in refused.stderr, (args, refused.stderr)
            assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
            assert refused.stderr.strip().endswith(f"apply the edit with `iris cluster --config {other} restart --force` "
                                                   "(or stop it with `stop --force`)"), refused.stderr  # fmt: skip
        assert pid_alive(first["pid"]) and json.loads((controller_dir / "controller.json").read_text())["pid"] == first["pid"]

        # restart: the same directory and state, a new process; the workers are adopted, not started anew
        restarted = iris_cmd("cluster", "--config", str(config), "controller", "restart", home=home, cwd=tmp_path)
        assert restarted.returncode == 0, restarted.stderr
        again = json.loads((controller_dir / "controller.json").read_text())
        assert again["pid"] != first["pid"] and not pid_alive(first["pid"]) and pid_alive(again["pid"])
        with IrisClient.remote(url, token=owner_token(home, "manualplaced")) as client:
            assert wait_until(lambda: len([w for w in client.list_workers() if not w.lost]) == 2, timeout=120)
            assert len(client.list_jobs()) == 1  # the job run before the restart is still on the record
        assert [(r["vm_id"], r["pid"]) for r in worker_records(remote)] == [(r["vm_id"], r["pid"]) for r in records]

        # SIGKILLed on its host: status says so (found from the host, not from local files), and
        # start brings it back on the same state, adopting the workers
        os.kill(again["pid"], signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(again["pid"]), timeout=10)
        down = iris_cmd("cluster", "--config", str(config), "controller", "status", home=home, cwd=tmp_path)
        assert down.returncode == 1 and "not running" in down.stdout, down.stdout + down.stderr
        revived = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path)
        assert revived.returncode == 0 and revived.stdout.strip() == url, revived.stderr
        first = json.loads((controller_dir / "controller.json").read_text())
        assert pid_alive(first["pid"]) and first["pid"] != again["pid"]
        with IrisClient.remote(url, token=owner_token(home, "manualplaced")) as client:
            assert wait_until(lambda: len([w for w in client.list_workers() if not w.lost]) == 2, timeout=120)
            assert len(client.list_jobs()) == 1
        assert [(r["vm_id"], r["pid"]) for r in worker_records(remote)] == [(r["vm_id"], r["pid"]) for r in records]

        # the user's edit (other.yaml: max_slices 3) applied with restart --force: the host's
        # config and record are the edit's from then on; the state and the workers are kept
        before = json.loads((controller_dir / "controller.json").read_text())
        forced = iris_cmd("cluster", "--config", str(other), "restart", "--force", home=home, cwd=tmp_path)
        assert forced.returncode == 0 and forced.stdout.strip() == url, forced.stderr
        first = json.loads((controller_dir / "controller.json").read_text())
        assert pid_alive(first["pid"]) and not pid_alive(before["pid"]) and first["config_digest"] != before["config_digest"]
        assert yaml.safe_load((controller_dir / "config.yaml").read_text())["scale_groups"]["hosts"]["max_slices"] == 3
        listed = iris_cmd("--config", str(other), "job", "list", home=home, cwd=tmp_path)
        assert listed.returncode == 0 and listed.stdout.strip(), listed.stderr  # the job run before is still on the record
        old = iris_cmd("--config", str(config), "job", "list", home=home, cwd=tmp_path)
        assert old.returncode == 2 and "runs another config with this name" in old.stderr, old.stderr
        with IrisClient.remote(url, token=owner_token(home, "manualplaced")) as client:
            assert wait_until(lambda: len([w for w in client.list_workers() if not w.lost]) == 2, timeout=120)
        assert [(r["vm_id"], r["pid"]) for r in worker_records(remote)] == [(r["vm_id"], r["pid"]) for r in records]
        # and stop --force with the config it no longer runs stops it, and its workers
        stopped = iris_cmd("cluster", "--config", str(config), "stop", "--force", home=home, cwd=tmp_path)
        assert stopped.returncode == 0 and "controller stopped" in stopped.stderr, stopped.stderr
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", home=home, cwd=tmp_path)
        if stopped.returncode != 0:  # a failure above left the edited config running: clean up all the same
            iris_cmd("cluster", "--config", str(config), "stop", "--force", home=home, cwd=tmp_path)
        for server in servers:
            server.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert not first or not pid_alive(first["pid"]), "the controller outlived iris cluster stop"
    assert not controller_dir.exists()
    assert not any(pid_alive(r["pid"]) for r in records), "a worker outlived iris cluster stop"
    assert worker_records(remote) == []


def test_manual_controller_host_without_docker_or_iris_says_what_to_install(hosts: list[SshServer], tmp_path: Path) -> None:
    config = tmp_path / "manual.yaml"
    host = hosts[0]
    config.write_text(
        "name: manualbare\n"
        f"provider:\n  type: manual\n  hosts: ['{hosts[1].address}:{hosts[1].port}']\n"
        f"  ssh_user: {host.user}\n  ssh_key: {host.key_path}\n"
        f"  options: {{python: /usr/bin/python3, ssh_known_hosts: {tmp_path / 'known_hosts'}, controller_dir: {tmp_path / 'c'},\n"
        "             env: {DOCKER_HOST: 'unix:///nonexistent/docker.sock'}}\n"
        f"controller_vm: {{image: iris-controller:none, manual: {{host: '{host.address}:{host.port}'}}}}\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    started = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path)
    assert started.returncode != 0 and "Traceback" not in started.stderr
    (line,) = [ln for ln in started.stderr.splitlines() if "cannot run the controller" in ln]
    assert f"{host.user}@{host.address}:{host.port}" in line and "install Docker" in line and "iris-core and iris-manual" in line
    assert not (tmp_path / "c").exists()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


CONTAINER_HOST_ADDRESSES = [f"127.0.0.{n}" for n in range(61, 66)]


@pytest.mark.docker
def test_manual_cluster_on_container_hosts_places_the_controller_and_docker_workers_and_stops_clean(
    docker_engine, docker_worker_image: str, docker_registry, docker_base_image: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """Four hosts that are containers (sshd on their own loopback address, Docker through the
    engine's socket, python3, no Iris): `iris cluster start` places the controller on one as a
    container of the worker image (pulled from the registry) and workers as containers on the
    other three; a job runs across them through the ssh tunnel; `vm logs` reads a worker's log;
    `stop` leaves no container and no directory."""
    from iris.testing.container_hosts import ContainerHosts, host_image

    try:
        image = host_image(docker_engine)
    except Exception as exc:
        pytest.skip(f"cannot build the test host image (debootstrap of Debian bookworm with python3 and openssh-server): {exc}")
    pushed = f"{docker_registry.address}/iris-worker:{docker_worker_image.rsplit(':', 1)[1]}"
    docker_engine.docker("tag", docker_worker_image, pushed)
    docker_engine.docker("push", pushed, timeout=600)
    docker_engine.docker("rmi", pushed)  # the hosts pull it from the registry
    edited = f"{docker_registry.address}/iris-controller:edited"
    hosts = ContainerHosts(docker_engine, image, addresses=CONTAINER_HOST_ADDRESSES, root=tmp_path / "hosts")
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "manual.yaml"
    stopped = None
    try:
        placed = hosts.start("controller")
        workers = [hosts.start(f"w{i}") for i in range(3)]
        root = hosts.root
        (root / "shared" / "bundles").mkdir(parents=True)
        env, mounts = trusted_certificates()
        port, http_port = _free_port(placed.address), _free_port(placed.address)
        options = {
            "remote_dir": f"{root}/remote/{{host}}", "ssh_known_hosts": str(tmp_path / "known_hosts"), "stop_grace": 5,
            "controller_dir": f"{root}/controller", "worker_image": pushed, "docker_socket": str(docker_engine.socket_path),
            "worker_mounts": [*mounts, f"{root}/shared/bundles"], "env": env,
        }  # fmt: skip
        config.write_text(
            "name: manualdocker\n"
            "provider:\n  type: manual\n"
            f"  hosts: [{', '.join(f'{h.address}:{h.ssh.port}' for h in workers)}]\n"
            f"  ssh_user: root\n  ssh_key: {hosts.user_key}\n"
            f"  options: {json.dumps(options)}\n"
            f"worker: {{runtime: docker}}\ndocker: {{image: '{docker_base_image}'}}\n"
            f"controller: {{tunnel: ssh, http_port: {http_port}, bundle_prefix: 'file://{root}/shared/bundles'}}\n"
            f"controller_vm: {{image: '{pushed}', manual: {{host: '{placed.where}', port: {port}}}}}\n"
            "autoscaler: {evaluation_interval_seconds: 0.5}\n"
            "scale_groups:\n  hosts: {min_slices: 3, max_slices: 3, vms_per_slice: 1, cpu: 1, memory: 1GB}\n"
        )
        started = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path, timeout=900)
        assert started.returncode == 0, started.stderr
        url = f"http://{placed.address}:{port}"
        assert started.stdout.strip() == url
        record = json.loads((root / "controller" / "controller.json").read_text())
        inspect = json.loads(docker_engine.docker("inspect", record["container"]).stdout)[0]
        assert inspect["State"]["Running"] and inspect["Config"]["Image"] == pushed
        assert inspect["Args"][-2:] == ["--config", "/etc/iris/config.yaml"]
        config_mount = [m for m in inspect["Mounts"] if m["Destination"] == "/etc/iris/config.yaml"]
        assert config_mount and config_mount[0]["Source"] == f"{root}/controller/config.yaml" and not config_mount[0]["RW"]
        with IrisClient.remote(url, token=owner_token(home, "manualdocker")) as client:
            assert wait_until(lambda: len([w for w in client.list_workers() if not w.lost]) == 3, timeout=300)
        worker_containers = docker_engine.docker("ps", "-q", "--filter", "label=iris.worker").stdout.decode().split()
        assert len(worker_containers) == 3
        records = sorted((json.loads(p.read_text()) for p in (root / "remote").glob("*/*/vm.json")), key=lambda r: r["vm_id"])
        assert {p.parent.parent.name for p in (root / "remote").glob("*/*/vm.json")} == {f"{h.address}-{h.ssh.port}" for h in workers}
        assert all(r.get("container") for r in records)

        ran = iris_cmd("--config", str(config), "run", "--replicas", "3", "--cpu", "1", "--memory", "64MB", "--",
                       "sh", "-c", "echo on $IRIS_WORKER_ID", home=home, cwd=tmp_path, timeout=600)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert sorted(line.split("on ")[1] for line in ran.stdout.splitlines() if "on " in line) == [r["vm_id"] for r in records]

        logs = iris_cmd("cluster", "--config", str(config), "vm", "logs", records[0]["vm_id"], home=home, cwd=tmp_path)
        assert logs.returncode == 0 and f"iris worker {records[0]['vm_id']} running" in logs.stdout, logs.stdout + logs.stderr

        # an edited config with another controller image, applied with restart --force: the host's
        # controller container is replaced by one of the new image at the same address, its state
        # kept; the workers reconnect and the next job runs on them
        with IrisClient.remote(url, token=owner_token(home, "manualdocker")) as client:
            jobs_before = {job.job_id for job in client.list_jobs()}
        assert jobs_before
        docker_engine.docker("tag", docker_worker_image, edited)
        docker_engine.docker("push", edited, timeout=600)
        docker_engine.docker("rmi", edited)  # the host pulls it
        config.write_text(config.read_text().replace(f"image: '{pushed}'", f"image: '{edited}'"))
        refused = iris_cmd("cluster", "--config", str(config), "restart", home=home, cwd=tmp_path)
        assert refused.returncode == 2 and "--force" in refused.stderr, refused.stderr
        forced = iris_cmd("cluster", "--config", str(config), "restart", "--force", home=home, cwd=tmp_path, timeout=900)
        assert forced.returncode == 0 and forced.stdout.strip() == url, forced.stderr
        replaced = json.loads((root / "controller" / "controller.json").read_text())
        assert replaced["container"] != record["container"]
        assert json.loads(docker_engine.docker("inspect", replaced["container"]).stdout)[0]["Config"]["Image"] == edited
        assert docker_engine.docker("inspect", record["container"], check=False).returncode != 0  # the old one is gone
        with IrisClient.remote(url, token=owner_token(home, "manualdocker")) as client:
            assert wait_until(lambda: len([w for w in client.list_workers() if not w.lost]) == 3, timeout=300)
            assert jobs_before <= {job.job_id for job in client.list_jobs()}  # the state was kept
        again = iris_cmd("--config", str(config), "run", "--cpu", "1", "--memory", "64MB", "--", "echo", "after", home=home, cwd=tmp_path, timeout=600)
        assert again.returncode == 0 and "after" in again.stdout, again.stderr
        assert sorted(docker_engine.docker("ps", "-q", "--filter", "label=iris.worker").stdout.decode().split()) == sorted(worker_containers)

        # the controller container SIGKILLed on its host: `start` brings it back from its state on
        # the host, and it adopts the running workers (the same containers)
        docker_engine.docker("kill", "-s", "KILL", replaced["container"])
        down = iris_cmd("--config", str(config), "job", "list", home=home, cwd=tmp_path)
        assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1, down.stderr
        assert f"{config}: no controller of this cluster is running where the config places it" in down.stderr, down.stderr
        revived = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path, timeout=900)
        assert revived.returncode == 0 and revived.stdout.strip() == url, revived.stderr
        with IrisClient.remote(url, token=owner_token(home, "manualdocker")) as client:
            assert wait_until(lambda: len([w for w in client.list_workers() if not w.lost]) == 3, timeout=300)
            assert jobs_before <= {job.job_id for job in client.list_jobs()}
        assert sorted(docker_engine.docker("ps", "-q", "--filter", "label=iris.worker").stdout.decode().split()) == sorted(worker_containers)
    finally:
        if config.exists():
            stopped = iris_cmd("cluster", "--config", str(config), "stop", home=home, cwd=tmp_path, timeout=600)
        left = hosts.started_containers()
        hosts.close()
        docker_engine.docker("rmi", pushed, check=False)
        docker_engine.docker("rmi", edited, check=False)
    assert stopped is not None and stopped.returncode == 0, stopped.stderr if stopped else ""
    assert left == [], "a container outlived iris cluster stop"
    assert not (tmp_path / "hosts" / "controller").exists()
    assert list((tmp_path / "hosts" / "remote").glob("*/*")) == []
