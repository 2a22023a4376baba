"""One worker with many attempts: every attempt starts, and a kill ends them all promptly.

A real controller and a real worker (the local provider, in process), real task processes. The
processes are found and checked through /proc by this test itself, not through Iris.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState
from iris.config import ClusterConfig, ControllerConfig, ScaleGroupConfig
from iris.testing import wait_until

REPLICAS = 200
#: The spec's bound: a kill ends every process of the job within this many seconds.
KILL_BOUND_SECONDS = 5.0


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (state, ppid, pgrp, ...); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _live_members(pgids: set[int]) -> list[int]:
    """Live (not zombie) processes in any of the process groups."""
    live = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) in pgids:
                live.append(int(entry.name))
    return live


@pytest.fixture
def pid_dir(tmp_path: Path) -> Iterator[Path]:
    """Each task writes its pid here; afterwards any process group still alive is SIGKILLed."""
    directory = tmp_path / "pids"
    directory.mkdir()
    yield directory
    for path in directory.iterdir():
        fields = _stat(int(path.read_text() or 0))
        if fields is not None and fields[0] not in ("Z", "X"):
            try:
                os.killpg(int(fields[2]), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_worker_with_200_attempts_runs_them_all_and_a_kill_ends_every_process(pid_dir: Path, tmp_path: Path) -> None:
    config = ClusterConfig(
        controller=ControllerConfig(state_dir=str(tmp_path / "state")),
        scale_groups={"big": ScaleGroupConfig(min_slices=1, max_slices=1, cpu=256, memory="512GB")},
    )
    with IrisClient.local(config) as client:
        job = client.submit(
            name="many-sleepers",
            entrypoint=Entrypoint.from_command("sh", "-c", f'echo $$ > {pid_dir}/"$IRIS_TASK_INDEX"; exec sleep 300'),
            resources=ResourceSpec(cpu=1, memory="32MB"),
            replicas=REPLICAS,
        )

        def all_running() -> bool:
            return [t.state for t in job.status().tasks] == [TaskState.RUNNING] * REPLICAS

        assert wait_until(all_running, timeout=120, interval=0.2), {
            s: [t.state for t in job.status().tasks].count(s) for s in TaskState
        }
        assert len({a.worker_id for t in job.status().tasks for a in t.attempts}) == 1  # all on one worker
        assert wait_until(lambda: len([p for p in pid_dir.iterdir() if p.read_text().strip()]) == REPLICAS, timeout=30)
        pids = {int(p.read_text()) for p in pid_dir.iterdir()}
        stats = {pid: _stat(pid) for pid in pids}
        assert all(s is not None and s[0] not in ("Z", "X") for s in stats.values()), "a task process is not running"
        pgids = {int(s[2]) for s in stats.values() if s is not None}
        assert len(pgids) == REPLICAS  # each attempt is its own process group

        assert job.kill().state is JobState.KILLED

        gone = wait_until(lambda: not _live_members(pgids), timeout=KILL_BOUND_SECONDS, interval=0.05)
        assert gone, f"{len(_live_members(pgids))} processes of the killed job still run {KILL_BOUND_SECONDS}s after the kill"
