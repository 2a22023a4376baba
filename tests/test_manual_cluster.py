"""A manual cluster end to end: three sshd "hosts" on their own loopback addresses, `iris cluster
start` bootstrapping workers on them over SSH, a job across them, the controller SIGKILLed and
restarted adopting the running workers, and `iris cluster stop` leaving nothing on any host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.client import IrisClient
from iris.procfs import pid_alive
from iris.testing import wait_until
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


def session_env() -> dict[str, str]:
    """What an SSH session here lacks for the workers' uv to reach the package index (this
    machine's certificate bundle), as a real config would pass a proxy or a cache directory."""
    return {k: v for k, v in os.environ.items() if k in ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_FIND_LINKS", "UV_CACHE_DIR")}


def worker_records(remote: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(remote.glob("*/*/vm.json"))]


def test_manual_cluster_starts_runs_adopts_after_a_controller_kill_and_stops_clean(hosts: list[SshServer], tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    remote = tmp_path / "remote"
    config = tmp_path / "manual.yaml"
    config.write_text(
        "name: manualtest\n"
        "provider:\n  type: manual\n"
        f"  hosts: [{', '.join(f'{h.address}:{h.port}' for h in hosts)}]\n"
        f"  ssh_user: {hosts[0].user}\n  ssh_key: {hosts[0].key_path}\n"
        f"  options: {{python: {sys.executable}, remote_dir: '{remote}/{{host}}', ssh_known_hosts: {tmp_path / 'known_hosts'}, stop_grace: 5,\n"
        f"             env: {json.dumps(session_env())}}}\n"
        "autoscaler: {evaluation_interval_seconds: 0.5}\n"
        "scale_groups:\n  hosts: {min_slices: 3, max_slices: 3, vms_per_slice: 1, cpu: 1, memory: 1GB}\n"
    )
    controller_pid = 0
    try:
        started = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        with IrisClient.remote(url) as client:
            assert wait_until(lambda: len([w for w in client.list_workers() if not w.lost]) == 3, timeout=120)
        records = worker_records(remote)
        assert sorted(r["vm_id"] for r in records) == ["iris-hosts-0-0", "iris-hosts-1-0", "iris-hosts-2-0"]
        hosts_used = {p.parent.parent.name for p in remote.glob("*/*/vm.json")}
        assert hosts_used == {f"{h.address}-{h.port}" for h in hosts}  # one worker per host

        ran = iris_cmd("--config", str(config), "run", "--replicas", "3", "--cpu", "1", "--memory", "64MB", "--",
                       "sh", "-c", "echo on $IRIS_WORKER_ID", home=home, cwd=tmp_path)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert sorted(line.split("on ")[1] for line in ran.stdout.splitlines() if "on " in line) == sorted(r["vm_id"] for r in records)

        # the controller dies; a new one on the same state adopts the workers (none started anew)
        controller_pid = int((home / ".iris" / "manualtest" / "controller.pid").read_text())
        os.kill(controller_pid, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(controller_pid), timeout=10)
        again = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        with IrisClient.remote(again.stdout.strip()) as client:
            assert wait_until(lambda: len([w for w in client.list_workers() if not w.lost]) == 3, timeout=120)
        assert [(r["vm_id"], r["pid"]) for r in worker_records(remote)] == [(r["vm_id"], r["pid"]) for r in records]
        status = iris_cmd("cluster", "--config", str(config), "status", home=home, cwd=tmp_path)
        assert status.returncode == 0 and "iris-hosts-0" in status.stdout, status.stdout + status.stderr
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", home=home, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_alive(r["pid"]) for r in records), "a worker outlived iris cluster stop"
    assert worker_records(remote) == [] and list(remote.glob("*/*")) == []
