"""The worker's monitor watches running attempts' exit descriptors by attempt: a descriptor
number closed with an ended attempt's container and reused at once by a new attempt's stands for
the new attempt (a job whose end was taken for an earlier attempt's stayed RUNNING forever)."""

from __future__ import annotations

import os
from pathlib import Path

from iris.cluster.worker.worker import ExitWatch, LocalAttempt
from iris.cluster.types import TaskState
from iris.rpc import worker_pb2


def _attempt(task_id: str, fd: int) -> LocalAttempt:
    return LocalAttempt(task_id=task_id, attempt_id=0, spec=worker_pb2.AttemptSpec(), directory=Path("/nonexistent"), state=TaskState.RUNNING, exit_fd=fd)


def test_exit_watch_number_reused_by_a_new_attempt_reports_the_new_attempt() -> None:
    wake_r, wake_w = os.pipe()
    first_r, first_w = os.pipe()
    try:
        watch = ExitWatch(wake_r)
        first = _attempt("/u/first/0", first_r)
        assert watch.watch([first]) == []
        assert watch.wait(0) == []
        # the first attempt's container is removed (its descriptor closed) and a new attempt's
        # descriptor gets the same number before the monitor looks again
        os.close(first_r)
        os.close(first_w)
        second_r, second_w = os.pipe()
        if second_r != first_r:  # make the reuse certain whatever the process has open
            os.dup2(second_r, first_r)
            os.close(second_r)
            second_r = first_r
        second = _attempt("/u/second/0", second_r)
        first.state = TaskState.SUCCEEDED
        assert watch.watch([second]) == []
        os.write(second_w, b"x")  # the new attempt ends
        assert watch.wait(1.0) == [second]
        os.close(second_r)
        os.close(second_w)
    finally:
        os.close(wake_r)
        os.close(wake_w)


def test_exit_watch_returns_attempts_without_a_descriptor_to_poll_and_lets_gone_ones_go() -> None:
    wake_r, wake_w = os.pipe()
    ended_r, ended_w = os.pipe()
    try:
        watch = ExitWatch(wake_r)
        with_fd, without = _attempt("/u/a/0", ended_r), _attempt("/u/b/0", -1)
        without.exit_fd = None
        assert watch.watch([with_fd, without]) == [without]
        os.write(ended_w, b"x")
        assert watch.watch([]) == []  # no longer running: no longer watched
        assert watch.wait(0) == []
        os.write(wake_w, b"x")  # a wake-up is drained, not reported
        assert watch.wait(0) == [] and watch.wait(0) == []
    finally:
        for fd in (wake_r, wake_w, ended_r, ended_w):
            os.close(fd)
