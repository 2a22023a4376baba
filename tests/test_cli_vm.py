"""``iris cluster vm ... --controller-url URL`` (seed 001's VM operations) against a real cluster.

One long-lived local cluster (``iris cluster --config C start --local``: a controller process,
auth on, a scale group with ``min_slices: 1`` whose worker is a process) serves every test; the
``--controller-url`` forms go to it over real gRPC and must print what the ``--config`` forms
print, which open the provider on this side.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from iris.cluster.manager import ClusterManager
from iris.config import parse_config
from iris.plugin import VmManagerPlugin, hookimpl
from iris.plugin.registry import PluginRegistry
from iris.testing import wait_until

IRIS = str(Path(sys.executable).parent / "iris")


@attrs.frozen
class Cluster:
    config: Path
    url: str
    home: Path
    cwd: Path
    vm_id: str

    def iris(self, *args: str, token: str = "") -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("IRIS_CONTROLLER_ADDRESS", "IRIS_TOKEN")}
        env["HOME"] = str(self.home)
        if token:
            env["IRIS_TOKEN"] = token
        return subprocess.run([IRIS, *args], cwd=self.cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("vmurl")
    home = root / "home"
    home.mkdir()
    config = root / "c.yaml"
    config.write_text("name: vmurl\nscale_groups:\n  g: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")
    probe = Cluster(config, "", home, root, "")
    try:
        started = probe.iris("cluster", "--config", str(config), "start", "--local")
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        listed: list[dict] = []

        def worker_up() -> bool:
            out = probe.iris("cluster", "vm", "status", "--json", "--controller-url", url)
            listed[:] = json.loads(out.stdout) if out.returncode == 0 else []
            return any(vm["state"] == "READY" for vm in listed)

        assert wait_until(worker_up, timeout=60), listed
        yield Cluster(config, url, home, root, listed[0]["vm_id"])
    finally:
        stopped = probe.iris("cluster", "--config", str(config), "stop", "--local")
        assert stopped.returncode == 0, stopped.stderr


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip()


def test_cli_vm_status_through_the_controller_url_equals_the_config_form(cluster: Cluster) -> None:
    by_config = cluster.iris("cluster", "--config", str(cluster.config), "vm", "status", "--local", "--json")
    assert by_config.returncode == 0, by_config.stderr
    vms = json.loads(by_config.stdout)
    assert [vm["vm_id"] for vm in vms] == [cluster.vm_id]
    assert set(vms[0]) == {"vm_id", "address", "state", "attributes", "slice_id", "scale_group"}
    for args in (["vm", "--controller-url", cluster.url, "status", "--json"], ["vm", "status", "--json", "--controller-url", cluster.url]):
        by_url = cluster.iris("cluster", *args)
        assert by_url.returncode == 0, by_url.stderr
        assert json.loads(by_url.stdout) == vms
    text_config = cluster.iris("cluster", "--config", str(cluster.config), "vm", "status", "--local")
    text_url = cluster.iris("cluster", "vm", "--controller-url", cluster.url, "status")
    assert text_url.returncode == 0 and text_url.stdout == text_config.stdout, text_url.stderr
    assert text_url.stdout.split()[:3] == [cluster.vm_id, "slice", vms[0]["slice_id"]]


def test_cli_vm_get_and_logs_through_the_controller_url_match_the_config_form(cluster: Cluster) -> None:
    got_config = cluster.iris("cluster", "--config", str(cluster.config), "vm", "get", cluster.vm_id, "--local")
    got_url = cluster.iris("cluster", "vm", "get", cluster.vm_id, "--controller-url", cluster.url)
    assert got_url.returncode == 0, got_url.stderr
    assert json.loads(got_url.stdout) == json.loads(got_config.stdout)
    assert json.loads(got_url.stdout)["vm_id"] == cluster.vm_id
    running = f"iris worker {cluster.vm_id} running"
    logs_config = cluster.iris("cluster", "--config", str(cluster.config), "vm", "logs", cluster.vm_id, "--tail", "200", "--local")
    assert logs_config.returncode == 0 and running in logs_config.stdout, logs_config.stderr
    logs_url = cluster.iris("cluster", "vm", "--controller-url", cluster.url, "logs", cluster.vm_id, "--tail", "200")
    assert logs_url.returncode == 0, logs_url.stderr
    assert running in logs_url.stdout
    assert logs_url.stdout.splitlines()[0] == logs_config.stdout.splitlines()[0]  # the same log, from its start
    short = cluster.iris("cluster", "vm", "logs", cluster.vm_id, "--tail", "1", "--controller-url", cluster.url)
    assert short.returncode == 0 and len(short.stdout.splitlines()) == 1, short.stdout + short.stderr


def test_cli_vm_unknown_id_through_the_controller_url_exits_2_with_one_line(cluster: Cluster) -> None:
    for command in ("get", "logs"):
        result = cluster.iris("cluster", "vm", "--controller-url", cluster.url, command, "no-such-vm")
        assert result.returncode == 2, (command, result.stderr)
        assert one_line(result) == "iris: error: no VM 'no-such-vm' in this cluster; `iris cluster vm status` lists them"
        by_config = cluster.iris("cluster", "--config", str(cluster.config), "vm", command, "no-such-vm", "--local")
        assert by_config.returncode == 2 and by_config.stderr == result.stderr, by_config.stderr


def test_client_not_found_errors_keep_their_kind_across_the_wire(cluster: Cluster) -> None:
    """NOT_FOUND is one gRPC code for a job and a VM; the controller names the error class, so
    the Python API raises VmNotFound for a VM and JobNotFound for a job (neither as the other)."""
    script = (
        "import sys\n"
        "from iris.auth import find_token\n"
        "from iris.client import IrisClient\n"
        "from iris.errors import JobNotFound, VmNotFound\n"
        "client = IrisClient.remote(sys.argv[1], token=find_token(sys.argv[1]) or None)\n"
        "for name, action in (('vm', lambda: client.vm_logs('no-such-vm')), ('job', lambda: client.job('/nobody/none').status())):\n"
        "    try:\n"
        "        action()\n"
        "    except (JobNotFound, VmNotFound) as exc:\n"
        "        print(name, type(exc).__name__, exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("IRIS_CONTROLLER_ADDRESS", "IRIS_TOKEN")}
    env["HOME"] = str(cluster.home)
    result = subprocess.run([sys.executable, "-c", script, cluster.url], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "vm VmNotFound no VM 'no-such-vm' in this cluster; `iris cluster vm status` lists them", lines
    assert lines[1].startswith("job JobNotFound ") and "/nobody/none" in lines[1], lines


def test_cli_vm_logs_with_a_user_token_is_refused_but_status_is_not(cluster: Cluster) -> None:
    minted = cluster.iris("--config", str(cluster.config), "token", "create", "alice", "--ttl", "1h")
    assert minted.returncode == 0, minted.stderr
    alice = minted.stdout.strip()
    status = cluster.iris("cluster", "vm", "--controller-url", cluster.url, "status", "--json", token=alice)
    assert status.returncode == 0 and [vm["vm_id"] for vm in json.loads(status.stdout)] == [cluster.vm_id], status.stderr
    refused = cluster.iris("cluster", "vm", "--controller-url", cluster.url, "logs", cluster.vm_id, token=alice)
    assert refused.returncode == 3, refused.stderr
    assert one_line(refused) == (
        f"iris: error: permission denied: user alice may not read the worker log of VM {cluster.vm_id!r} (admins only)"
    )
    assert refused.stdout == ""


def test_cli_vm_dead_controller_url_is_one_line_naming_it(cluster: Cluster) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    for args in (["status"], ["get", cluster.vm_id], ["logs", cluster.vm_id]):
        result = cluster.iris("cluster", "vm", "--controller-url", dead, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert f"cannot reach the controller at {dead}" in one_line(result)


def test_cli_vm_controller_url_wins_over_config(cluster: Cluster) -> None:
    """Given both, the URL is asked and the config is not even read."""
    missing = cluster.cwd / "no-such-config.yaml"
    result = cluster.iris("cluster", "--config", str(missing), "vm", "--controller-url", cluster.url, "status", "--json")
    assert result.returncode == 0, result.stderr
    assert [vm["vm_id"] for vm in json.loads(result.stdout)] == [cluster.vm_id]


class NoLogsProvider:
    """The local provider without the optional ``vm_logs``: a plugin registered in this test only
    (the CLI below does not have it, and needs it not: the controller answers)."""

    @hookimpl
    def iris_register_vm_managers(self, register: Any) -> None:
        from iris_local.vm_manager import LocalVmManager

        class Manager(LocalVmManager):
            vm_logs = None  # as a provider that does not define it: getattr finds nothing to call

        register(VmManagerPlugin(name="nologs", factory=Manager))


def test_cli_vm_logs_of_a_provider_without_them_is_one_line_naming_it(tmp_path: Path) -> None:
    registry = PluginRegistry()
    registry.register(NoLogsProvider(), name="nologs-test")
    config = parse_config(
        {
            "provider": {"type": "nologs"},
            "controller": {"state_dir": str(tmp_path / "state")},
            "scale_groups": {"g": {"min_slices": 1, "max_slices": 1, "cpu": 1, "memory": "1GB"}},
        }
    )
    manager = ClusterManager(config, registry=registry)
    url = manager.start()
    try:
        cli = Cluster(tmp_path / "absent.yaml", url, tmp_path, tmp_path, "")
        listed: list[dict] = []

        def listed_one() -> bool:
            out = cli.iris("cluster", "vm", "status", "--json", "--controller-url", url, token=manager.owner_token)
            assert out.returncode == 0, out.stderr
            listed[:] = json.loads(out.stdout)
            return len(listed) == 1

        assert wait_until(listed_one, timeout=60), listed
        result = cli.iris("cluster", "vm", "logs", listed[0]["vm_id"], "--controller-url", url, token=manager.owner_token)
        assert result.returncode == 1, result.stderr
        assert one_line(result) == "iris: error: provider 'nologs' cannot show VM logs"
    finally:
        manager.stop()
