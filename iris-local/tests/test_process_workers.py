"""LocalVmManager with ``worker_mode: process``: every VM is a worker process a test can SIGKILL.

Every test kills whatever it started: the ``state_dir`` fixture's teardown SIGKILLs the process
group of every process whose command line names the test's state directory (worker processes
and the task wrappers of their attempts, orphans included), independently of the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.cluster.worker.worker import start_in_process
from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.controller.state import JobSpec
from iris.cluster.manager import ClusterManager
from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState
from iris.config import ClusterConfig, ControllerConfig, ProviderConfig
from iris.errors import ConfigError
from iris.plugin.protocols import SliceInfo, SliceRequest, SliceState
from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry
from iris.plugin.worker_host import LABEL_WORKER, ready_marker
from iris.testing import wait_until
from iris.testing.contracts import VmManagerContract
from iris_local.bundle_store import FileBundleStore
from iris_local.process_runtime import ProcessRuntime, group_alive
from iris_local.vm_manager import LocalVmManager

TIMEOUT = 30.0
SMALL = ResourceSpec(cpu=0.1, memory="50MB")


# --- helpers and fixtures -------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, ended but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _processes_naming(text: str) -> list[int]:
    """Pids of running processes whose command line contains ``text``."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and _pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _kill_everything_under(state: Path) -> None:
    own_group = os.getpgid(0)
    for pid in _processes_naming(str(state)):
        try:
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    runtime_root = state / "runtime"
    if runtime_root.exists():
        for handle in ProcessRuntime(runtime_root).list_containers({}):
            if handle.status().running:
                handle.kill(grace_seconds=0)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """The provider's state directory; afterwards every process started under it is killed."""
    state = tmp_path / "state"
    yield state
    _kill_everything_under(state)
    assert wait_until(lambda: not _processes_naming(str(state)), TIMEOUT)


@pytest.fixture
def fast_controller(tmp_path: Path) -> Iterator[ControllerServer]:
    """A real controller that declares a silent worker lost after 2 seconds."""
    bundles = FileBundleStore(f"file://{tmp_path / 'controller-bundles'}")
    server = ControllerServer(Controller(worker_timeout=2.0), bundles, port=0)
    server.start()
    yield server
    server.stop()


def make_manager(state_dir: Path, server: ControllerServer, **options: Any) -> LocalVmManager:
    context = ProviderContext(
        controller_address=server.address,
        state_dir=state_dir,
        label_prefix="test",
        options={"worker_mode": "process", **options},
        registry=PluginRegistry(allow=["local"]),
        start_worker=start_in_process,
    )
    return LocalVmManager(context)


@pytest.fixture
def manager(state_dir: Path, local_controller: ControllerServer) -> Iterator[LocalVmManager]:
    manager = make_manager(state_dir, local_controller)
    yield manager
    for info in manager.list_slices({}):
        manager.delete_slice(info.slice_id)
    manager.close()


def registered(server: ControllerServer) -> set[str]:
    return {w.worker_id for w in server.controller.list_workers() if not w.lost}


def launch(server: ControllerServer, name: str, script: str) -> str:
    return server.controller.launch_job(JobSpec(name=name, entrypoint=Entrypoint.from_command("sh", "-c", script), resources=SMALL))


def first_attempt_running(server: ControllerServer, job_id: str) -> bool:
    task = server.controller.get_job(job_id).tasks[0]
    return bool(task.attempts) and task.attempts[0].state is TaskState.RUNNING


def log_lines(controller: Controller, job_id: str) -> list[str]:
    """The task's own lines (not the worker's about its environment)."""
    lines, _, _, _ = controller.read_logs(job_id, "")
    return [line.data for _, line in lines if line.stream != "env"]


# --- the VmManager contract -----------------------------------------------------------------


class TestProcessModeLocalVmManagerContract(VmManagerContract):
    @pytest.fixture
    def vm_manager(self, state_dir: Path, local_controller: ControllerServer) -> Iterator[LocalVmManager]:
        manager = make_manager(state_dir, local_controller)
        yield manager
        manager.close()

    def kill_slice(self, vm_manager: LocalVmManager, info: SliceInfo) -> None:
        for vm in info.vms:
            os.kill(vm_manager.worker_pid(vm.vm_id), signal.SIGKILL)


# --- worker processes -----------------------------------------------------------------------


def test_process_slice_workers_run_as_separate_processes_and_register(
    manager: LocalVmManager, local_controller: ControllerServer
) -> None:
    info = manager.create_slice(SliceRequest(slice_id="s1", scale_group="cpu", vm_count=2, cpu=3, attributes={"device": "tpu"}))
    assert info.state is SliceState.READY, info
    pids = {vm.vm_id: manager.worker_pid(vm.vm_id) for vm in info.vms}
    assert all(pid is not None and pid != os.getpid() and _pid_alive(pid) for pid in pids.values()), pids
    assert len(set(pids.values())) == 2
    assert wait_until(lambda: registered(local_controller) == {"s1-0", "s1-1"}, TIMEOUT)
    worker = {w.worker_id: w for w in local_controller.controller.list_workers()}["s1-1"]
    assert (worker.slice_id, worker.cpu) == ("s1", 3.0)
    assert worker.attributes["tpu-worker-id"] == "1"


def test_process_worker_runs_a_job_to_success(manager: LocalVmManager, local_controller: ControllerServer) -> None:
    manager.create_slice(SliceRequest(slice_id="s1", scale_group="cpu", vm_count=1))
    # The task's parent is the runtime's sh wrapper; the wrapper's parent is the worker process.
    job_id = launch(local_controller, "hello", 'read -r stat < /proc/$PPID/stat; set -- $stat; echo "worker=$4"')
    job = local_controller.controller.wait_job(job_id, timeout=TIMEOUT)
    assert job.state is JobState.SUCCEEDED, job.error
    assert log_lines(local_controller.controller, job_id) == [f"worker={manager.worker_pid('s1-0')}"]


def test_process_slice_with_dead_workers_is_failed_until_created_again(
    manager: LocalVmManager, local_controller: ControllerServer
) -> None:
    request = SliceRequest(slice_id="s1", scale_group="cpu", vm_count=2)
    manager.create_slice(request)
    dead = [manager.worker_pid(vm_id) for vm_id in ("s1-0", "s1-1")]
    for pid in dead:
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

    def vm_states() -> list[SliceState]:
        info = manager.describe_slice("s1")
        return [vm.state for vm in info.vms] if info else []

    assert wait_until(lambda: vm_states() == [SliceState.FAILED, SliceState.FAILED], TIMEOUT)
    [info] = manager.list_slices({})
    assert info.state is SliceState.FAILED
    assert "s1-0" in info.error and "worker.log" in info.error
    assert manager.worker_pid("s1-0") is None

    again = manager.create_slice(request)

    assert again.state is SliceState.READY
    pids = [manager.worker_pid(vm_id) for vm_id in ("s1-0", "s1-1")]
    assert None not in pids and not set(pids) & set(dead)
    manager.delete_slice("s1")
    assert manager.describe_slice("s1") is None
    assert manager.list_slices({}) == []


def test_sigkilled_worker_task_reruns_on_other_worker_without_spending_failures(
    state_dir: Path, fast_controller: ControllerServer
) -> None:
    manager = make_manager(state_dir, fast_controller)
    try:
        manager.create_slice(SliceRequest(slice_id="s1", scale_group="cpu", vm_count=2))
        assert wait_until(lambda: registered(fast_controller) == {"s1-0", "s1-1"}, TIMEOUT)
        controller = fast_controller.controller
        job_id = launch(fast_controller, "survivor", 'if [ "$IRIS_ATTEMPT_ID" = 0 ]; then sleep 60; fi')
        assert wait_until(lambda: first_attempt_running(fast_controller, job_id), TIMEOUT)
        lost_vm = controller.get_job(job_id).tasks[0].attempts[0].worker_id
        pid = manager.worker_pid(lost_vm)
        assert pid is not None

        os.kill(pid, signal.SIGKILL)

        job = controller.wait_job(job_id, timeout=TIMEOUT)
        assert job.state is JobState.SUCCEEDED, job.error
        task = controller.get_job(job_id).tasks[0]
        assert [a.state for a in task.attempts] == [TaskState.WORKER_FAILED, TaskState.SUCCEEDED]
        assert task.attempts[1].worker_id != lost_vm
        assert (task.failures, task.preemptions) == (0, 1)

        # Nothing ran the dead worker's shutdown: its task is an orphan, still sleeping.
        orphans = ProcessRuntime(state_dir / "runtime").list_containers({LABEL_WORKER: lost_vm})
        assert [h.status().running for h in orphans] == [True]
        for handle in orphans:
            handle.kill(grace_seconds=1.0)
        assert wait_until(lambda: not any(group_alive(h.pgid) for h in orphans), TIMEOUT)
    finally:
        for info in manager.list_slices({}):
            manager.delete_slice(info.slice_id)
        manager.close()


def test_new_manager_rediscovers_surviving_slice_and_delete_leaves_no_process(
    state_dir: Path, local_controller: ControllerServer
) -> None:
    first = make_manager(state_dir, local_controller)
    first.create_slice(SliceRequest(slice_id="kept", scale_group="cpu", vm_count=1, labels={"test.cluster": "c1"}))
    job_id = launch(local_controller, "sleeper", "sleep 60")
    assert wait_until(lambda: first_attempt_running(local_controller, job_id), TIMEOUT)
    worker_pid = first.worker_pid("kept-0")
    assert worker_pid is not None
    [task] = ProcessRuntime(state_dir / "runtime").list_containers({LABEL_WORKER: "kept-0"})
    first.close()  # a controller going away leaves process-mode slices running
    assert _pid_alive(worker_pid) and group_alive(task.pgid)

    second = make_manager(state_dir, local_controller)
    try:
        [info] = second.list_slices({"test.cluster": "c1"})
        assert (info.slice_id, info.state, [vm.vm_id for vm in info.vms]) == ("kept", SliceState.READY, ["kept-0"])
        assert second.worker_pid("kept-0") == worker_pid

        second.delete_slice("kept")

        assert not _pid_alive(worker_pid)
        assert not group_alive(task.pgid)
        assert second.describe_slice("kept") is None
        assert second.list_slices({}) == []
    finally:
        second.close()


def test_delete_slice_after_worker_sigkill_kills_its_orphaned_tasks(
    manager: LocalVmManager, local_controller: ControllerServer, state_dir: Path
) -> None:
    manager.create_slice(SliceRequest(slice_id="s1", scale_group="cpu", vm_count=1))
    job_id = launch(local_controller, "sleeper", "sleep 60")
    assert wait_until(lambda: first_attempt_running(local_controller, job_id), TIMEOUT)
    [task] = ProcessRuntime(state_dir / "runtime").list_containers({LABEL_WORKER: "s1-0"})
    pid = manager.worker_pid("s1-0")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: manager.worker_pid("s1-0") is None, TIMEOUT)
    assert group_alive(task.pgid)

    manager.delete_slice("s1")

    assert not group_alive(task.pgid)
    assert manager.describe_slice("s1") is None


# --- configuration --------------------------------------------------------------------------


def test_cluster_config_provider_options_worker_mode_process_runs_worker_processes(state_dir: Path) -> None:
    config = ClusterConfig(
        provider=ProviderConfig(type="local", options={"worker_mode": "process"}),
        controller=ControllerConfig(state_dir=str(state_dir)),
    )
    cluster = ClusterManager(config, registry=PluginRegistry(allow=["local"]))
    cluster.start()
    try:
        vm_manager = cluster.vm_manager
        assert vm_manager.worker_mode == "process"
        [info] = vm_manager.list_slices({})
        pid = vm_manager.worker_pid(info.vms[0].vm_id)
        assert pid is not None and pid != os.getpid()
        job_id = cluster.controller.launch_job(JobSpec(name="hi", entrypoint=Entrypoint.from_command("true"), resources=SMALL))
        assert cluster.controller.wait_job(job_id, timeout=TIMEOUT).state is JobState.SUCCEEDED
    finally:
        cluster.stop()
    assert not _pid_alive(pid)


def test_invalid_worker_mode_raises_naming_choices(state_dir: Path, local_controller: ControllerServer) -> None:
    with pytest.raises(ConfigError, match="worker_mode: 'fork' is invalid; choose one of: thread, process"):
        make_manager(state_dir, local_controller, options={"worker_mode": "fork"}, worker_mode=None)


def test_thread_mode_is_the_default_and_has_no_worker_pids(state_dir: Path, local_controller: ControllerServer) -> None:
    manager = make_manager(state_dir, local_controller, worker_mode=None)
    try:
        assert manager.worker_mode == "thread"
        manager.create_slice(SliceRequest(slice_id="s1", scale_group="cpu", vm_count=1))
        assert manager.worker_pid("s1-0") is None
        assert [w.worker_id for w in manager.workers("s1")] == ["s1-0"]
        assert not (state_dir / "slices").exists()
    finally:
        manager.close()


# --- python -m iris.cluster.worker.main -----------------------------------------------------


def worker_main(*args: str) -> list[str]:
    return [sys.executable, "-m", "iris.cluster.worker.main", *args]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--worker-id", "w"], "the following arguments are required: --controller, --work-dir"),
        (["--controller", "x", "--worker-id", "w", "--work-dir", "WORK", "--cpu", "lots"], "argument --cpu: expected a positive float, got 'lots'"),
        (["--controller", "x", "--worker-id", "w", "--work-dir", "WORK", "--attributes", "[1]"], "argument --attributes: expected a JSON object of strings"),
        (["--controller", "x", "--worker-id", "w", "--work-dir", "WORK", "--runtime", "podman"], "--runtime: unknown container runtime 'podman'; choose one of: process"),
    ],
)
def test_worker_main_bad_arguments_print_one_line_and_exit_2(state_dir: Path, args: list[str], message: str) -> None:
    argv = worker_main(*[str(state_dir / "work") if a == "WORK" else a for a in args])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, "IRIS_PLUGINS": "local"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (state_dir / "work").exists()


def test_worker_main_sigterm_kills_its_attempts_and_exits_0(state_dir: Path, local_controller: ControllerServer) -> None:
    work = state_dir / "w1"
    argv = worker_main(
        "--controller", local_controller.address, "--worker-id", "w1", "--work-dir", str(work),
        "--cpu", "2", "--memory-bytes", str(1 << 30), "--attributes", json.dumps({"zone": "here"}),
        "--runtime-root", str(state_dir / "runtime"),
    )  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(f"iris worker w1 running (pid {process.pid})")
        assert json.loads(ready_marker(work).read_text())["pid"] == process.pid
        assert wait_until(lambda: registered(local_controller) == {"w1"}, TIMEOUT)
        assert local_controller.controller.list_workers()[0].attributes["zone"] == "here"
        job_id = launch(local_controller, "sleeper", "sleep 60")
        assert wait_until(lambda: first_attempt_running(local_controller, job_id), TIMEOUT)
        [task] = ProcessRuntime(state_dir / "runtime").list_containers({LABEL_WORKER: "w1"})

        process.send_signal(signal.SIGTERM)

        assert process.wait(TIMEOUT) == 0
        assert not group_alive(task.pgid)
        assert not ready_marker(work).exists()
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
