"""Fault points at a 15% rate: every job still reaches its real final state and no task runs
twice. In process (each point alone), and across a controller SIGKILL with the point enabled
in the controller and worker processes (IRIS_FAULTS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iris import faults
from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.testing import wait_until
from iris.testing.processes import ControllerProcess, kill_strays

SMALL = ResourceSpec(cpu=0.1, memory="16MB")
RATE = 0.15


@pytest.fixture
def fault_free():
    faults.reset()
    yield
    faults.reset()


def test_fault_registry_rejects_unknown_point_and_bad_rate(fault_free) -> None:
    with pytest.raises(ValueError, match="unknown fault point 'nope'; choose one of"):
        faults.enable("nope")
    with pytest.raises(ValueError, match="rate must be within 0..1"):
        faults.enable("worker.task_monitor", rate=2)


def test_fault_inject_is_silent_when_nothing_is_enabled(fault_free) -> None:
    for point in faults.POINTS:
        faults.inject(point)
    assert all(faults.fired(p) == 0 for p in faults.POINTS)


@pytest.mark.parametrize("point", faults.POINTS)
def test_jobs_reach_final_state_with_fault_point_enabled(point: str, tmp_path: Path, fault_free) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with IrisClient.local() as client:
        faults.enable(point, rate=RATE)
        names = [f"job{i:03d}" for i in range(60)]
        ids = []
        for name in names:
            # each job ships its own workspace, so each one downloads a bundle
            workspace = tmp_path / "ws" / name
            workspace.mkdir(parents=True)
            (workspace / "payload.txt").write_text(f"payload of {name}\n")
            with IrisClient.remote(client.address, workspace=workspace) as submitter:
                command = f"grep -q {name} payload.txt && echo ran >> {markers}/{name}"
                ids.append(submitter.submit(name=name, entrypoint=Entrypoint.from_command("sh", "-c", command), resources=SMALL).job_id)
        statuses = [client.job(job_id).wait(timeout=120) for job_id in ids]
        assert [s.state for s in statuses] == [JobState.SUCCEEDED] * len(ids), [s.error for s in statuses if not s.succeeded]
        for name in names:
            assert (markers / name).read_text() == "ran\n", name
        assert faults.fired(point) > 0, f"{point} never fired"
        faults.reset()


def submit(client: IrisClient, markers: Path, names: list[str], seconds: float) -> list[str]:
    return [
        client.submit(
            name=name, entrypoint=Entrypoint.from_command("sh", "-c", f"echo ran >> {markers}/{name}; sleep {seconds}"), resources=SMALL
        ).job_id
        for name in names
    ]


@pytest.mark.parametrize("point", faults.POINTS)
def test_controller_sigkill_with_fault_point_enabled_loses_nothing(point: str, tmp_path: Path) -> None:
    process = ControllerProcess(tmp_path, env={"IRIS_FAULTS": f"{point}={RATE}"})
    markers = tmp_path / "markers"
    markers.mkdir()
    try:
        url = process.start()
        client = IrisClient.remote(url, token=process.token)
        names = [f"job{i:03d}" for i in range(200)]
        ids = submit(client, markers, names[:100], 0.2)
        assert wait_until(lambda: len(list(markers.iterdir())) >= 10, timeout=60)
        process.kill()
        client.close()
        process.start()
        client = IrisClient.remote(url, token=process.token)
        ids += submit(client, markers, names[100:], 0.05)
        statuses = [client.job(job_id).wait(timeout=120) for job_id in ids]
        assert {s.state for s in statuses} == {JobState.SUCCEEDED}
        for name in names:
            assert (markers / name).read_text() == "ran\n", name
        client.close()
    finally:
        process.stop()
        process.delete_slices()
        kill_strays(str(tmp_path))


def test_faults_bad_iris_faults_setting_is_one_line_on_stderr_not_a_traceback() -> None:
    env = {**os.environ, "IRIS_FAULTS": "nonsense,worker.reconcile_send=2"}
    result = subprocess.run([sys.executable, "-c", "import iris.faults as f; print(sorted(f._active))"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("iris: IRIS_FAULTS: ") for line in lines)
    assert "'nonsense' ignored: unknown fault point 'nonsense'; choose one of:" in lines[0]
    assert "rate must be within 0..1" in lines[1]
    assert result.stdout.strip() == "[]"
