"""Process facts from /proc: a child's start time is known at once, without waiting on its exec."""

from __future__ import annotations

import subprocess
import time

from iris.procfs import _TICK_NS, boottime_ns, child_start_time, pid_start_time


def test_child_start_time_is_the_start_time_proc_gives_read_or_not() -> None:
    for _ in range(20):
        before = boottime_ns()
        child = subprocess.Popen(["sleep", "5"])
        after = boottime_ns()
        try:
            expected = pid_start_time(child.pid)
            assert expected is not None
            assert child_start_time(child.pid, before, after) == expected
            # readings in different ticks: read from /proc instead
            assert child_start_time(child.pid, before - _TICK_NS, after) == expected
        finally:
            child.kill()
            child.wait()


def test_child_start_time_of_an_unreaped_ended_child_is_still_its_own() -> None:
    """A child that ended at once (a zombie until reaped) still has its start time, so a worker
    that adopts its container later tells it from a process that reuses the pid."""
    before = boottime_ns()
    child = subprocess.Popen(["true"])
    after = boottime_ns()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # ended, not reaped
            with open(f"/proc/{child.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert pid_start_time(child.pid) is None  # counted as gone
        assert child_start_time(child.pid, before - _TICK_NS, after) is not None
        assert child_start_time(child.pid, before, before) == str(before // _TICK_NS)
    finally:
        child.wait()
