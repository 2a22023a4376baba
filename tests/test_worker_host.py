"""``iris.plugin.worker_host``: the one public way for providers to start workers."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.cluster.worker.worker import start_in_process
from iris.client import IrisClient
from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.worker.main import build_parser
from iris.plugin import WorkerLaunch, is_ready, ready_marker, wait_ready
from iris.plugin.registry import PluginRegistry
from iris.plugin.worker_host import write_ready
from iris.testing import wait_until
from iris_local.bundle_store import FileBundleStore

TIMEOUT = 30.0


def test_worker_launch_argv_parses_back_to_its_fields(tmp_path: Path) -> None:
    launch = WorkerLaunch(
        worker_id="s1-0",
        controller_address="http://10.0.0.2:10000",
        work_dir=tmp_path / "w",
        slice_id="s1",
        cpu=7.5,
        memory_bytes=3 << 30,
        attributes={"zone": "us a", "quote": "it's"},
        runtime="docker",
        runtime_root=tmp_path / "rt",
        wait_seconds=0.5,
    )
    argv = launch.argv()
    assert argv[1:3] == ["-m", "iris.cluster.worker.main"]
    args = build_parser().parse_args(argv[3:])
    assert (args.controller, args.worker_id, args.slice_id, args.work_dir) == ("http://10.0.0.2:10000", "s1-0", "s1", tmp_path / "w")
    assert (args.cpu, args.memory_bytes, args.attributes) == (7.5, 3 << 30, {"zone": "us a", "quote": "it's"})
    assert (args.runtime, args.runtime_root, args.wait_seconds) == ("docker", tmp_path / "rt", 0.5)
    assert shlex.split(launch.command()) == ["PYTHONUNBUFFERED=1", *argv]


def test_worker_launch_without_a_size_leaves_it_to_the_machine(tmp_path: Path) -> None:
    args = build_parser().parse_args(WorkerLaunch(worker_id="w", controller_address="x", work_dir=tmp_path).argv()[3:])
    assert (args.cpu, args.memory_bytes, args.runtime_root) == (None, None, None)


def test_ready_marker_counts_only_for_the_process_that_wrote_it(tmp_path: Path) -> None:
    assert not is_ready(tmp_path)
    assert not wait_ready(tmp_path, timeout=0)
    write_ready(tmp_path, "w", pid=12345)
    assert json.loads(ready_marker(tmp_path).read_text()) == {"pid": 12345, "worker_id": "w"}
    assert is_ready(tmp_path) and is_ready(tmp_path, pid=12345)
    assert not is_ready(tmp_path, pid=54321)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerServer]:
    server = ControllerServer(Controller(), FileBundleStore(f"file://{tmp_path / 'bundles'}"), port=0)
    server.start()
    yield server
    server.stop()


def registered(server: ControllerServer) -> dict[str, Any]:
    """The workers the controller knows, as its public API lists them."""
    with IrisClient.remote(server.address) as client:
        return {w.worker_id: w for w in client.list_workers()}


def test_worker_launch_as_a_process_registers_becomes_ready_and_stops_on_sigterm(
    tmp_path: Path, controller: ControllerServer
) -> None:
    launch = WorkerLaunch(
        worker_id="p-0", controller_address=controller.address, work_dir=tmp_path / "p-0", slice_id="p", cpu=3,
        attributes={"zone": "here"},
    )  # fmt: skip
    process = subprocess.Popen(
        launch.argv(), env=launch.env({**os.environ, "IRIS_PLUGINS": "local"}), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_ready(launch.work_dir, timeout=TIMEOUT, pid=process.pid)
        assert wait_until(lambda: "p-0" in registered(controller), TIMEOUT)
        worker = registered(controller)["p-0"]
        # the launch's attributes, and how its runtime holds memory limits
        assert worker.capacity.cpu == 3.0
        assert dict(worker.attributes).keys() == {"zone", "memory-limits"}
        assert worker.attributes["zone"] == "here"
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
        assert not is_ready(launch.work_dir)
    finally:
        process.kill()
        process.wait()


def test_worker_launch_in_process_registers_and_stops(tmp_path: Path, controller: ControllerServer) -> None:
    registry = PluginRegistry(allow=["local"])
    runtime = registry.container_runtime("process").factory(tmp_path / "runtime")
    launch = WorkerLaunch(worker_id="t-0", controller_address=controller.address, work_dir=tmp_path / "t-0", cpu=2, memory_bytes=1 << 30)
    worker = start_in_process(launch, runtime=runtime, bundle_store_for=registry.open_bundle_store)
    try:
        assert worker.worker_id == "t-0"
        assert wait_until(lambda: "t-0" in registered(controller), TIMEOUT)
        assert registered(controller)["t-0"].capacity.memory_bytes == 1 << 30
    finally:
        worker.stop(kill_attempts=True)
        runtime.close()
