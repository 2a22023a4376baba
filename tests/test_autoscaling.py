"""The autoscaler and cluster lifecycle end to end on the local provider (issue 5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iris.client import IrisClient
from iris.cluster.manager import ClusterManager
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.config import parse_config
from iris.plugin import VmManagerPlugin, hookimpl
from iris.plugin.protocols import QuotaExceeded
from iris.plugin.registry import PluginRegistry
from iris.procfs import pid_alive, pid_start_time
from iris.testing import wait_until

SMALL = ResourceSpec(cpu=0.1, memory="16MB")
FAST = {"evaluation_interval_seconds": 0.1, "idle_threshold_seconds": 1.0, "scale_down_cooldown_seconds": 0.0,
        "backoff_initial_seconds": 0.2, "backoff_max_seconds": 1.0, "quota_hold_seconds": 1.0}


def slices(client: IrisClient) -> dict[str, list[str]]:
    return {g["name"]: [s["slice_id"] for s in g["slices"]] for g in client.autoscaler_status()}


def test_min_zero_group_gets_a_slice_for_a_job_then_loses_it_when_idle() -> None:
    config = parse_config(
        {"provider": {"type": "local"}, "autoscaler": FAST, "scale_groups": {"burst": {"min_slices": 0, "max_slices": 1, "cpu": 1, "memory": "1GB"}}}
    )
    with IrisClient.local(config) as client:
        assert slices(client) == {"burst": []}
        job = client.submit(entrypoint=Entrypoint.from_command("echo", "scaled"), resources=SMALL)
        assert job.wait(timeout=60).state is JobState.SUCCEEDED
        assert [ln.data for ln in job.logs()] == ["scaled"]
        assert job.status().tasks[0].attempts[0].worker_id.startswith("iris-burst-")
        assert wait_until(lambda: slices(client) == {"burst": []}, timeout=30)


def test_pending_task_says_it_waits_for_the_autoscaler() -> None:
    config = parse_config(
        {"provider": {"type": "local"}, "autoscaler": {**FAST, "scale_up_cooldown_seconds": 600},
         "scale_groups": {"g": {"min_slices": 0, "max_slices": 1, "cpu": 1, "memory": "1GB"}}}
    )
    with IrisClient.local(config) as client:
        client.create_slice("g")  # the cooldown now holds further scale-up
        assert wait_until(lambda: len(client.list_workers()) == 1, timeout=30)
        first = client.submit(entrypoint=Entrypoint.from_command("sleep", "30"), resources=ResourceSpec(cpu=1, memory="64MB"))
        second = client.submit(entrypoint=Entrypoint.from_command("true"), resources=ResourceSpec(cpu=1, memory="64MB"))
        assert wait_until(lambda: "scale group g" in second.status().tasks[0].pending_reason, timeout=30)
        first.kill()
        second.kill()


def test_gang_of_four_waits_for_one_four_vm_slice_not_four_single_slices(tmp_path: Path) -> None:
    config = parse_config(
        {
            "provider": {"type": "local"},
            "autoscaler": FAST,
            "scale_groups": {
                "single": {"min_slices": 0, "max_slices": 4, "vms_per_slice": 1, "cpu": 1, "memory": "1GB", "priority": 10},
                "quad": {"min_slices": 0, "max_slices": 1, "vms_per_slice": 4, "cpu": 1, "memory": "1GB"},
            },
        }
    )
    with IrisClient.local(config) as client:
        job = client.submit(entrypoint=Entrypoint.from_command("sh", "-c", "echo $IRIS_WORKER_ID"), replicas=4, coscheduling="slice", resources=SMALL)
        status = job.wait(timeout=60)
        assert status.state is JobState.SUCCEEDED
        workers = sorted(a.worker_id for t in status.tasks for a in t.attempts)
        assert len(workers) == 4 and len({w.rsplit("-", 1)[0] for w in workers}) == 1  # one slice
        assert workers[0].startswith("iris-quad-")
        assert slices(client)["single"] == []


def test_zone_constrained_job_gets_a_slice_of_the_group_in_that_zone_and_succeeds() -> None:
    # the reported bug: steady (zone a) is up, so the scheduler says "constraint zone=b matches
    # no worker"; the job must still get a spot slice (zone b) rather than wait forever
    config = parse_config(
        {
            "provider": {"type": "local"},
            "autoscaler": FAST,
            "scale_groups": {
                "steady": {"min_slices": 1, "max_slices": 1, "zones": ["a"], "cpu": 1, "memory": "1GB"},
                "spot": {"min_slices": 0, "max_slices": 1, "zones": ["b"], "preemptible": True, "cpu": 1, "memory": "1GB"},
            },
        }
    )
    with IrisClient.local(config) as client:
        assert wait_until(lambda: len(client.list_workers()) == 1, timeout=30)
        job = client.submit(entrypoint=Entrypoint.from_command("true"), resources=SMALL, constraints=["zone=b"])
        status = job.wait(timeout=30)
        assert status.state is JobState.SUCCEEDED
        assert status.tasks[0].attempts[0].worker_id.startswith("iris-spot-")


class FlakyLocal:
    """The local provider, but its first creates fail (or hit quota): a plugin registered in a test."""

    def __init__(self, failures: int, quota: bool):
        self.failures = failures
        self.quota = quota
        self.attempts = 0

    @hookimpl
    def iris_register_vm_managers(self, register: Any) -> None:
        from iris_local.vm_manager import LocalVmManager

        outer = self

        class Manager(LocalVmManager):
            def create_slice(self, request):  # type: ignore[no-untyped-def]
                outer.attempts += 1
                if outer.attempts <= outer.failures:
                    raise QuotaExceeded("quota: TPUS_PER_PROJECT exceeded") if outer.quota else RuntimeError("boot failed")
                return super().create_slice(request)

        register(VmManagerPlugin(name="flaky", factory=Manager))


@pytest.mark.parametrize(("quota", "expected_state"), [(False, "BACKOFF"), (True, "QUOTA_EXCEEDED")])
def test_failing_creates_back_off_or_hold_then_succeed(quota: bool, expected_state: str, tmp_path: Path) -> None:
    plugin = FlakyLocal(failures=2, quota=quota)
    registry = PluginRegistry()
    registry.register(plugin, name="flaky-test")
    config = parse_config(
        {
            "provider": {"type": "flaky"},
            "controller": {"state_dir": str(tmp_path / "state")},
            "autoscaler": FAST,
            "scale_groups": {"g": {"min_slices": 0, "max_slices": 1, "cpu": 1, "memory": "1GB"}},
        }
    )
    manager = ClusterManager(config, registry=registry)
    url = manager.start()
    client = IrisClient.remote(url, token=manager.owner_token)
    try:
        job = client.submit(entrypoint=Entrypoint.from_command("true"), resources=SMALL)
        assert wait_until(lambda: client.autoscaler_status()[0]["state"] == expected_state, timeout=30)
        assert job.wait(timeout=60).state is JobState.SUCCEEDED
        assert plugin.attempts == 3
    finally:
        client.close()
        manager.stop()


def attempt_directories(state: Path) -> list[str]:
    """What lies in any ``attempts/`` directory under ``state`` (os.walk skips directories that
    vanish while they are walked, as the runtime recycles finished attempts' directories)."""
    return [os.path.join(d, n) for d, dirs, files in os.walk(state) if os.path.basename(d) == "attempts" for n in dirs + files]


def owner_token(home: Path, state: str) -> str:
    """The admin token a controller started by this HOME's user wrote in its state directory."""
    return (home / ".iris" / state / "owner.token").read_text().strip()


def iris_cmd(*args: str, home: Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}
    env.pop("IRIS_CONTROLLER_ADDRESS", None)
    return subprocess.run([str(Path(sys.executable).parent / "iris"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


EU_WEST4 = Path(__file__).resolve().parents[1] / "docs" / "examples" / "eu-west4.yaml"


def test_gcp_shaped_config_runs_a_tpu_job_locally_and_stop_removes_every_slice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    try:
        started = iris_cmd("cluster", "--config", str(EU_WEST4), "start", "--local", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        ran = iris_cmd(
            "--config", str(EU_WEST4), "run", "--tpu", "v5litepod-16", "--cpu", "0.2", "--memory", "64MB", "--",
            "sh", "-c", "echo host $IRIS_TASK_INDEX", home=home, cwd=tmp_path,
        )
        assert ran.returncode == 0, ran.stderr
        assert sorted(ran.stdout.splitlines()) == [f"[{i}] host {i}" for i in range(4)]
        status = iris_cmd("cluster", "--config", str(EU_WEST4), "status", "--local", "--json", home=home, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["controller"]["healthy"]
        tpu_slices = [s for s in report["slices"] if s["scale_group"] == "tpu_v5e_16"]
        assert len(tpu_slices) == 1 and tpu_slices[0]["vms"] == 4
        assert not any(s["unknown_to_controller"] for s in report["slices"])
    finally:
        # the controller's database is deleted first: stop must still find and remove the slices
        state = home / ".iris" / "iris-local"
        for name in ("controller.db", "controller.db-wal", "controller.db-shm"):
            (state / name).unlink(missing_ok=True)
        stopped = iris_cmd("cluster", "--config", str(EU_WEST4), "stop", "--local", home=home, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert "deleted 1 slice(s)" in stopped.stderr
    after = iris_cmd("cluster", "--config", str(EU_WEST4), "status", "--local", "--json", home=home, cwd=tmp_path)
    assert json.loads(after.stdout) == {"cluster": "iris", "provider": "local", "controller": None, "slices": []}


def test_status_flags_a_slice_the_controller_does_not_know(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("name: flagtest\nprovider: {type: local, options: {worker_mode: process}}\nscale_groups:\n  g: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")
    try:
        assert iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path).returncode == 0
        # stop only the controller and start it on an empty state: the slice is still there
        assert iris_cmd("cluster", "--config", str(config), "restart", home=home, cwd=tmp_path).returncode == 0
        plain = iris_cmd("cluster", "--config", str(config), "status", home=home, cwd=tmp_path)
        assert plain.returncode == 0, plain.stderr
        assert "slice iris-g-0" in plain.stdout
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", home=home, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr


def test_slice_create_and_terminate_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("name: slicetest\nprovider: {type: local, options: {worker_mode: process}}\nscale_groups:\n  g: {min_slices: 0, max_slices: 2, cpu: 1, memory: 1GB}\n")
    try:
        assert iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path).returncode == 0
        created = iris_cmd("cluster", "--config", str(config), "slice", "create", "--scale-group", "g", home=home, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        slice_id = created.stdout.strip()
        assert slice_id == "iris-g-0"
        listed = iris_cmd("cluster", "--config", str(config), "slice", "list", "--json", home=home, cwd=tmp_path)
        assert [s["slice_id"] for s in json.loads(listed.stdout)] == [slice_id]
        unknown = iris_cmd("cluster", "--config", str(config), "slice", "create", "--scale-group", "nope", home=home, cwd=tmp_path)
        assert unknown.returncode != 0 and "unknown scale group 'nope'; choose one of: g" in unknown.stderr
        gone = iris_cmd("cluster", "--config", str(config), "slice", "terminate", slice_id, home=home, cwd=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert gone.stdout.strip() == f"terminated {slice_id}"
        listed = iris_cmd("cluster", "--config", str(config), "slice", "list", "--json", home=home, cwd=tmp_path)
        assert json.loads(listed.stdout) == []
    finally:
        iris_cmd("cluster", "--config", str(config), "stop", home=home, cwd=tmp_path)


def test_controller_run_local_serves_until_interrupted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("name: fg\nprovider: {type: local}\nscale_groups:\n  g: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")
    env = {**os.environ, "HOME": str(home)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "iris"), "cluster", "--config", str(config), "controller", "run-local"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url_file = home / ".iris" / "fg-local" / "controller.url"
        assert wait_until(url_file.exists, timeout=60)
        with IrisClient.remote(url_file.read_text().strip(), token=owner_token(home, "fg-local")) as client:
            job = client.submit(entrypoint=Entrypoint.from_command("echo", "fg"), resources=SMALL)
            assert job.wait(timeout=60).succeeded
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "serving at" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # run-local leaves its slices running for a restart, as documented: remove them
        stopped = iris_cmd("cluster", "--config", str(config), "stop", "--local", home=home, cwd=tmp_path)
        assert "deleted 1 slice(s)" in stopped.stderr, stopped.stderr


def test_whole_cluster_sigkilled_comes_back_with_fresh_slices_not_backoff(tmp_path: Path) -> None:
    """SIGKILL the controller and every worker process of a long-lived local cluster; the next
    start replaces the dead slices at once (no backoff) and runs jobs."""
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        # a backoff, had the dead slices counted as failures, would outlast every deadline here
        "name: crash\nautoscaler: {evaluation_interval_seconds: 0.5, backoff_initial_seconds: 600}\n"
        "scale_groups:\n  g: {min_slices: 3, max_slices: 3, cpu: 1, memory: 1GB}\n"
    )
    state = home / ".iris" / "crash-local"
    try:
        started = iris_cmd("cluster", "--config", str(config), "start", "--local", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        workers = [w for r in sorted((state / "slices").glob("*.json")) for w in json.loads(r.read_text())["workers"]]
        assert len(workers) == 3
        victims = [(int((state / "controller.pid").read_text()), None)] + [(w["pid"], w["start_time"]) for w in workers]
        for pid, start_time in victims:  # only the processes this test started (not a reused pid)
            if start_time is None or pid_start_time(pid) == start_time:
                os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not any(pid_alive(pid) for pid, _ in victims), timeout=10)

        again = iris_cmd("cluster", "--config", str(config), "start", "--local", home=home, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        with IrisClient.remote(again.stdout.strip(), token=owner_token(home, "crash-local")) as client:
            assert client.autoscaler_status()[0]["state"] != "BACKOFF"

            def recovered() -> bool:
                (g,) = client.autoscaler_status()
                return g["state"] != "BACKOFF" and [s["state"] for s in g["slices"]] == ["READY"] * 3

            assert wait_until(recovered, timeout=60), client.autoscaler_status()
            old = {w["vm_id"].rsplit("-", 1)[0] for w in workers}
            assert not old & {s["slice_id"] for s in client.autoscaler_status()[0]["slices"]}
            job = client.submit(entrypoint=Entrypoint.from_command("echo", "back"), resources=SMALL)
            assert job.wait(timeout=60).state is JobState.SUCCEEDED
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", "--local", home=home, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr


def test_status_counts_a_lost_worker_as_lost_not_live(tmp_path: Path) -> None:
    """A worker process SIGKILLed is lost; `cluster status` counts it apart from the live ones."""
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: losttest\ncontroller: {worker_timeout_seconds: 1}\nautoscaler: {evaluation_interval_seconds: 0.5}\n"
        "scale_groups:\n  g: {min_slices: 2, max_slices: 2, cpu: 1, memory: 1GB}\n"
    )
    state = home / ".iris" / "losttest-local"
    try:
        started = iris_cmd("cluster", "--config", str(config), "start", "--local", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        workers = [w for r in sorted((state / "slices").glob("*.json")) for w in json.loads(r.read_text())["workers"]]
        assert len(workers) == 2
        victim = workers[0]
        if pid_start_time(victim["pid"]) == victim["start_time"]:  # only the process this test started
            os.kill(victim["pid"], signal.SIGKILL)

        def status() -> dict[str, Any]:
            result = iris_cmd("cluster", "--config", str(config), "status", "--local", "--json", home=home, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)["controller"]

        assert wait_until(lambda: status().get("lost_workers") == 1, timeout=30), status()
        assert status()["workers"] <= 2  # the lost one is not counted among the live
        plain = iris_cmd("cluster", "--config", str(config), "status", "--local", home=home, cwd=tmp_path)
        assert "(1 lost)" in plain.stdout, plain.stdout
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", "--local", home=home, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr


def test_job_commands_with_a_config_find_the_cluster_it_started(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"  # port 0, as every example config: the address is found, not fixed
    config.write_text("name: findme\nscale_groups:\n  g: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")
    try:
        started = iris_cmd("cluster", "--config", str(config), "start", "--local", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        with IrisClient.remote(started.stdout.strip(), token=owner_token(home, "findme-local")) as client:
            job = client.submit(entrypoint=Entrypoint.from_command("echo", "found"), resources=SMALL)
            job.wait(timeout=60)
        for args in (["--config", str(config), "job", "list"], ["job", "logs", job.job_id, "--config", str(config)]):
            result = iris_cmd(*args, home=home, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            assert (job.job_id if "list" in args else "found") in result.stdout
        # --local wherever a cluster command takes the config, in any position
        for args in (["cluster", "--config", str(config), "slice", "list", "--local"],
                     ["cluster", "--config", str(config), "slice", "--local", "list"],
                     ["cluster", "--local", "--config", str(config), "slice", "list"]):
            result = iris_cmd(*args, home=home, cwd=tmp_path)
            assert result.returncode == 0, (args, result.stderr)
            assert "iris-g-0" in result.stdout, (args, result.stdout)
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", "--local", home=home, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr


def test_two_configs_with_one_name_never_share_or_stop_each_others_controller(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"  # neither sets name: both are "iris"
    first.write_text("scale_groups:\n  a: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")
    second.write_text("scale_groups:\n  b: {min_slices: 0, max_slices: 2, cpu: 1, memory: 1GB}\n")
    try:
        started = iris_cmd("cluster", "--config", str(first), "start", "--local", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        pid = int((home / ".iris" / "iris-local" / "controller.pid").read_text())
        for args in (["cluster", "--config", str(second), "start", "--local"], ["cluster", "--config", str(second), "stop", "--local"],
                     ["--config", str(second), "run", "--", "true"], ["--config", str(second), "job", "list"]):
            result = iris_cmd(*args, home=home, cwd=tmp_path)
            assert result.returncode != 0, (args, result.stdout)
            assert "belongs to another config named 'iris'" in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert pid_alive(pid)  # the first config's controller was neither reused nor stopped
        again = iris_cmd("cluster", "--config", str(first), "start", "--local", home=home, cwd=tmp_path)
        assert again.returncode == 0 and again.stdout.strip() == started.stdout.strip(), again.stderr
    finally:
        stopped = iris_cmd("cluster", "--config", str(first), "stop", "--local", home=home, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr


def test_edited_config_is_refused_until_restart_force_applies_it_and_stop_force_stops_it(tmp_path: Path) -> None:
    """The user edits their own config (raises g's max_slices, drops group h): every command
    refuses, naming ``restart --force``; ``restart --force`` restarts the controller with the
    edit, which it runs from then on (``run`` and ``status`` work, status shows the new
    max_slices; h's slice is left running outside every group, until terminated); ``stop
    --force`` with yet another edit stops it and leaves no process."""
    home = tmp_path / "home"
    home.mkdir()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("name: edited\nscale_groups:\n  g: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n"
                      "  h: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")  # fmt: skip
    state = home / ".iris" / "edited-local"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return iris_cmd(*args, home=home, cwd=workspace)

    def status() -> dict[str, Any]:
        result = cli("cluster", "--config", str(config), "status", "--local", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    try:
        started = cli("cluster", "--config", str(config), "start", "--local")
        assert started.returncode == 0, started.stderr
        assert wait_until(lambda: sorted(s["slice_id"] for s in status()["slices"]) == ["iris-g-0", "iris-h-0"], timeout=60)
        first_pid = int((state / "controller.pid").read_text())

        config.write_text("name: edited\nscale_groups:\n  g: {min_slices: 1, max_slices: 3, cpu: 1, memory: 1GB}\n")
        for args in (["cluster", "--config", str(config), "restart", "--local"], ["cluster", "--config", str(config), "stop", "--local"],
                     ["cluster", "--config", str(config), "controller", "restart", "--local"],
                     ["cluster", "--config", str(config), "status", "--local"], ["--config", str(config), "run", "--", "true"]):
            refused = cli(*args)
            assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
            line = refused.stderr.strip()
            assert "belongs to another config named 'edited'" in line and "\n" not in line, (args, line)
            assert line.endswith("; if this is your cluster and you edited its config, apply the edit with "
                                 f"`iris cluster --config {config} restart --local --force` (or stop it with `stop --local --force`)"), line  # fmt: skip
        assert pid_alive(first_pid)

        restarted = cli("cluster", "--config", str(config), "restart", "--local", "--force")
        assert restarted.returncode == 0, restarted.stderr
        assert "controller restarted at" in restarted.stderr and "it runs this config from now on" in restarted.stderr
        assert restarted.stdout.strip() == started.stdout.strip()  # the same address: the workers reconnect
        assert not pid_alive(first_pid) and int((state / "controller.pid").read_text()) != first_pid
        import yaml

        recorded = yaml.safe_load((state / "cluster.yaml").read_text())
        assert recorded["scale_groups"]["g"]["max_slices"] == 3 and "h" not in recorded["scale_groups"]

        ran = cli("--config", str(config), "run", "--cpu", "0.1", "--memory", "16MB", "--", "echo", "applied")
        assert ran.returncode == 0 and "applied" in ran.stdout, ran.stdout + ran.stderr
        report = status()
        groups = {g["name"]: g for g in report["controller"]["scale_groups"]}
        assert list(groups) == ["g"] and groups["g"]["max_slices"] == 3, groups
        plain = cli("cluster", "--config", str(config), "status", "--local")
        assert "group g: " in plain.stdout and "(min 1, max 3)" in plain.stdout, plain.stdout
        # h's slice was not adopted (its group is gone): left running, in no group, until deleted
        assert "iris-h-0" in {s["slice_id"] for s in report["slices"]}
        assert all(s["slice_id"] != "iris-h-0" for g in groups.values() for s in g["slices"])
        assert wait_until(lambda: status()["controller"]["workers"] == 2, timeout=30)  # its worker still connects
        terminated = cli("cluster", "--config", str(config), "slice", "terminate", "iris-h-0", "--local")
        assert terminated.returncode == 0 and "terminated iris-h-0" in terminated.stdout, terminated.stderr
        assert wait_until(lambda: "iris-h-0" not in {s["slice_id"] for s in status()["slices"]}, timeout=30)

        second_pid = int((state / "controller.pid").read_text())
        workers = [w for r in sorted((state / "slices").glob("*.json")) for w in json.loads(r.read_text())["workers"]]
        assert workers
        config.write_text("name: edited\nscale_groups:\n  g: {min_slices: 1, max_slices: 2, cpu: 1, memory: 1GB}\n")
        assert cli("cluster", "--config", str(config), "stop", "--local").returncode == 2
        stopped = cli("cluster", "--config", str(config), "stop", "--local", "--force")
        assert stopped.returncode == 0, stopped.stderr
        assert "controller stopped" in stopped.stderr and "deleted 1 slice(s): iris-g-0" in stopped.stderr, stopped.stderr
        assert not pid_alive(second_pid)
        assert wait_until(lambda: not any(pid_start_time(w["pid"]) == w["start_time"] for w in workers), timeout=15)
        assert status() == {"cluster": "edited", "provider": "local", "controller": None, "slices": []}
    finally:
        cli("cluster", "--config", str(config), "stop", "--local", "--force")


def test_stop_kills_running_jobs_on_the_record_and_the_next_start_shows_them_killed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("name: stoptest\nscale_groups:\n  g: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")
    runs = tmp_path / "runs"
    code = f"open({str(runs)!r}, 'a').write('run\\n'); import time; time.sleep(120)"
    try:
        started = iris_cmd("cluster", "--config", str(config), "start", "--local", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        with IrisClient.remote(started.stdout.strip(), token=owner_token(home, "stoptest-local")) as client:
            job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", code), resources=SMALL)
            assert wait_until(runs.exists, timeout=30)
        stopped = iris_cmd("cluster", "--config", str(config), "stop", "--local", home=home, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        again = iris_cmd("cluster", "--config", str(config), "start", "--local", home=home, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        with IrisClient.remote(again.stdout.strip(), token=owner_token(home, "stoptest-local")) as client:
            status = client.job(job.job_id).status()
            assert status.state is JobState.KILLED and "the cluster was stopped" in status.error, status
            assert wait_until(lambda: len(client.list_workers()) >= 1, timeout=30)
        assert runs.read_text() == "run\n"  # not run again after the restart
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", "--local", home=home, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr


def test_plain_local_config_started_without_local_flag_shows_and_stops_its_slices(tmp_path: Path) -> None:
    """`iris cluster start` on a local config that says nothing of worker_mode: its workers are
    processes; status lists their slice and stop removes it (no worker left behind)."""
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("name: plain\nscale_groups:\n  g: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")
    state = home / ".iris" / "plain"
    try:
        started = iris_cmd("cluster", "--config", str(config), "start", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        status = iris_cmd("cluster", "--config", str(config), "status", home=home, cwd=tmp_path)
        assert "slice iris-g-0" in status.stdout and "slices: none" not in status.stdout, status.stdout
        workers = [w for r in sorted((state / "slices").glob("*.json")) for w in json.loads(r.read_text())["workers"]]
        assert len(workers) == 1
        vms = iris_cmd("cluster", "--config", str(config), "vm", "status", home=home, cwd=tmp_path)
        assert vms.returncode == 0 and vms.stdout.split()[:3] == ["iris-g-0-0", "slice", "iris-g-0"], vms.stdout + vms.stderr
        logs = iris_cmd("cluster", "--config", str(config), "vm", "logs", "iris-g-0-0", "--tail", "5", home=home, cwd=tmp_path)
        assert logs.returncode == 0 and "iris worker iris-g-0-0 running" in logs.stdout, logs.stdout + logs.stderr
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", home=home, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr
    assert wait_until(lambda: not any(pid_start_time(w["pid"]) == w["start_time"] for w in workers), timeout=15)


def test_stop_leaves_nothing_of_a_task_that_escaped_its_process_group(tmp_path: Path) -> None:
    """A task that starts a `setsid` daemon and a double-forked one and writes a temporary file:
    `iris cluster stop` ends both processes and removes the attempt's directories and its file."""
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("name: escapes\nscale_groups:\n  g: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")
    state = home / ".iris" / "escapes-local"
    report = tmp_path / "report"
    script = (
        "import subprocess, tempfile, time\n"
        "daemon = subprocess.Popen(['sleep', '900'], start_new_session=True)\n"
        "forked = subprocess.run(['sh', '-c', '( sleep 900 >/dev/null 2>&1 & echo $! ) &'], capture_output=True, text=True).stdout.split()[0]\n"
        "tmp = tempfile.NamedTemporaryFile(delete=False).name\n"
        f"open({str(report)!r} + '.part', 'w').write(f'{{daemon.pid}} {{forked}} {{tmp}}')\n"
        f"import os; os.rename({str(report)!r} + '.part', {str(report)!r})\n"
        "time.sleep(600)\n"
    )
    pids: list[int] = []
    try:
        started = iris_cmd("cluster", "--config", str(config), "start", "--local", home=home, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        with IrisClient.remote(started.stdout.strip(), token=owner_token(home, "escapes-local")) as client:
            job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", script), resources=SMALL)
            assert wait_until(report.exists, timeout=30), (job.status(), [ln.data for ln in job.logs()])
        daemon, forked, temp_file = report.read_text().split()
        pids = [int(daemon), int(forked)]
        assert all(pid_alive(pid) for pid in pids) and Path(temp_file).exists()
        assert attempt_directories(state)  # the running attempt's directory
    finally:
        stopped = iris_cmd("cluster", "--config", str(config), "stop", "--local", home=home, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        survivors = [pid for pid in pids if pid_alive(pid)]
        for pid in survivors:  # never leak them, even when the test fails
            os.kill(pid, signal.SIGKILL)
    assert survivors == [], "processes that left the task's process group outlived `iris cluster stop`"
    assert not Path(temp_file).exists()
    assert attempt_directories(state) == []
