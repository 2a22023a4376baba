"""LocalVmManager: each VM of a slice is an in-process worker registered with a real controller."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.cluster.worker.worker import start_in_process
from iris.cluster.controller.service import ControllerServer
from iris.cluster.controller.state import JobSpec
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.errors import PluginError
from iris.plugin.protocols import SliceRequest
from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry
from iris.plugin.worker_host import LABEL_WORKER
from iris.testing import wait_until
from iris_local.process_runtime import ProcessRuntime
from iris_local.vm_manager import LocalVmManager

TIMEOUT = 30.0


def make_manager(tmp_path: Path, server: ControllerServer, **options: str) -> LocalVmManager:
    context = ProviderContext(
        controller_address=server.address,
        state_dir=tmp_path / "state",
        label_prefix="test",
        options=dict(options),
        registry=PluginRegistry(allow=["local"]),
        start_worker=start_in_process,
    )
    return LocalVmManager(context)


@pytest.fixture
def manager(tmp_path: Path, local_controller: ControllerServer) -> Iterator[LocalVmManager]:
    manager = make_manager(tmp_path, local_controller)
    yield manager
    manager.close()


def registered(server: ControllerServer) -> dict[str, object]:
    return {w.worker_id: w for w in server.controller.list_workers()}


def test_local_create_slice_workers_register_with_slice_and_attributes(
    manager: LocalVmManager, local_controller: ControllerServer
) -> None:
    request = SliceRequest(
        slice_id="s1", scale_group="cpu", vm_count=2, cpu=3, memory_bytes=2 * 1000**3, attributes={"device": "tpu"}
    )
    info = manager.create_slice(request)
    assert info.labels["test.slice"] == "s1"
    assert wait_until(lambda: set(registered(local_controller)) == {"s1-0", "s1-1"}, TIMEOUT)
    worker = registered(local_controller)["s1-1"]
    assert worker.slice_id == "s1"  # type: ignore[attr-defined]
    assert (worker.cpu, worker.memory_bytes) == (3.0, 2 * 1000**3)  # type: ignore[attr-defined]
    assert worker.attributes["device"] == "tpu"  # type: ignore[attr-defined]
    assert worker.attributes["vm-index"] == "1"  # type: ignore[attr-defined]


def test_local_delete_slice_kills_attempts_running_on_it(
    manager: LocalVmManager, local_controller: ControllerServer, tmp_path: Path
) -> None:
    manager.create_slice(SliceRequest(slice_id="s1", scale_group="cpu", vm_count=1))
    local_controller.controller.launch_job(
        JobSpec(
            name="sleeper",
            entrypoint=Entrypoint.from_command("sleep", "60"),
            resources=ResourceSpec(cpu=0.1, memory="50MB"),
        )
    )
    observer = ProcessRuntime(tmp_path / "state" / "runtime")  # a second view of the slice's containers

    def containers() -> list:
        return observer.list_containers({LABEL_WORKER: "s1-0"})

    assert wait_until(lambda: any(h.status().running for h in containers()), TIMEOUT)
    (running,) = containers()
    manager.delete_slice("s1")
    assert manager.workers("s1") == []
    assert not running.status().running  # killed, and removed with what it kept
    assert containers() == []


def test_local_slice_runs_a_job_to_success(manager: LocalVmManager, local_controller: ControllerServer) -> None:
    manager.create_slice(SliceRequest(slice_id="s1", scale_group="cpu", vm_count=1))
    controller = local_controller.controller
    job_id = controller.launch_job(
        JobSpec(
            name="hello",
            entrypoint=Entrypoint.from_command("sh", "-c", "echo hello"),
            resources=ResourceSpec(cpu=0.1, memory="50MB"),
        )
    )
    job = controller.wait_job(job_id, timeout=TIMEOUT)
    assert job.state is JobState.SUCCEEDED


def test_local_unknown_runtime_option_raises_listing_choices(
    tmp_path: Path, local_controller: ControllerServer
) -> None:
    manager = make_manager(tmp_path, local_controller, runtime="podman")
    try:
        with pytest.raises(PluginError, match="unknown container runtime 'podman'; choose one of: process"):
            manager.create_slice(SliceRequest(slice_id="s1", scale_group="cpu"))
        assert manager.describe_slice("s1") is None
    finally:
        manager.close()
