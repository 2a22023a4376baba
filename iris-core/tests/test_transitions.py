"""Table-driven tests of the pure task and job state transitions."""

from __future__ import annotations

import pytest

from iris.cluster.controller.transitions import (
    DEFAULT_MAX_PREEMPTIONS,
    TaskOutcome,
    derive_job_state,
    job_exit_code,
    task_after_attempt,
)
from iris.cluster.types import JobState, TaskState

T = TaskState
J = JobState


@pytest.mark.parametrize(
    ("attempt", "failures", "preemptions", "max_retries", "max_preemptions", "expected"),
    [
        # success never retries and spends nothing
        (T.SUCCEEDED, 0, 0, 0, 5, TaskOutcome(T.SUCCEEDED, 0, 0, retry=False)),
        (T.SUCCEEDED, 2, 3, 5, 5, TaskOutcome(T.SUCCEEDED, 2, 3, retry=False)),
        # a failure spends the failure budget
        (T.FAILED, 0, 0, 0, 5, TaskOutcome(T.FAILED, 1, 0, retry=False)),
        (T.FAILED, 0, 0, 1, 5, TaskOutcome(T.PENDING, 1, 0, retry=True)),
        (T.FAILED, 1, 0, 2, 5, TaskOutcome(T.PENDING, 2, 0, retry=True)),
        (T.FAILED, 2, 0, 2, 5, TaskOutcome(T.FAILED, 3, 0, retry=False)),
        # preemptions do not count against the failure budget
        (T.FAILED, 0, 4, 1, 5, TaskOutcome(T.PENDING, 1, 4, retry=True)),
        # losing the worker or being preempted spends the preemption budget only
        (T.PREEMPTED, 0, 0, 0, 5, TaskOutcome(T.PENDING, 0, 1, retry=True)),
        (T.WORKER_FAILED, 0, 0, 0, 5, TaskOutcome(T.PENDING, 0, 1, retry=True)),
        (T.PREEMPTED, 3, 4, 0, 5, TaskOutcome(T.PENDING, 3, 5, retry=True)),
        (T.PREEMPTED, 0, 5, 0, 5, TaskOutcome(T.PREEMPTED, 0, 6, retry=False)),
        (T.WORKER_FAILED, 0, 5, 9, 5, TaskOutcome(T.WORKER_FAILED, 0, 6, retry=False)),
        (T.PREEMPTED, 0, 0, 0, 0, TaskOutcome(T.PREEMPTED, 0, 1, retry=False)),
        # a killed or unschedulable attempt ends the task as it is
        (T.KILLED, 1, 1, 5, 5, TaskOutcome(T.KILLED, 1, 1, retry=False)),
        (T.UNSCHEDULABLE, 0, 0, 5, 5, TaskOutcome(T.UNSCHEDULABLE, 0, 0, retry=False)),
    ],
)
def test_task_after_attempt_table_spends_the_right_budget(
    attempt: TaskState, failures: int, preemptions: int, max_retries: int, max_preemptions: int, expected: TaskOutcome
) -> None:
    outcome = task_after_attempt(
        attempt, failures=failures, preemptions=preemptions, max_retries=max_retries, max_preemptions=max_preemptions
    )
    assert outcome == expected


def test_task_after_attempt_default_preemption_budget_is_generous() -> None:
    outcome = task_after_attempt(T.PREEMPTED, failures=0, preemptions=DEFAULT_MAX_PREEMPTIONS - 1, max_retries=0)
    assert outcome.retry
    exhausted = task_after_attempt(T.PREEMPTED, failures=0, preemptions=DEFAULT_MAX_PREEMPTIONS, max_retries=0)
    assert not exhausted.retry
    assert DEFAULT_MAX_PREEMPTIONS >= 10


@pytest.mark.parametrize("state", [s for s in TaskState if not s.is_terminal])
def test_task_after_attempt_non_terminal_state_raises_naming_it(state: TaskState) -> None:
    with pytest.raises(ValueError, match=state.value):
        task_after_attempt(state, failures=0, preemptions=0, max_retries=3)


@pytest.mark.parametrize(
    ("tasks", "killed", "expected"),
    [
        ([], False, J.PENDING),
        ([], True, J.KILLED),
        ([T.PENDING, T.PENDING], False, J.PENDING),
        ([T.PENDING, T.ASSIGNED], False, J.RUNNING),
        ([T.PENDING, T.BUILDING], False, J.RUNNING),
        ([T.RUNNING, T.RUNNING], False, J.RUNNING),
        ([T.SUCCEEDED, T.PENDING], False, J.RUNNING),
        ([T.SUCCEEDED, T.SUCCEEDED], False, J.SUCCEEDED),
        ([T.SUCCEEDED, T.FAILED], False, J.FAILED),
        ([T.RUNNING, T.FAILED], False, J.FAILED),
        ([T.RUNNING, T.WORKER_FAILED], False, J.WORKER_FAILED),
        ([T.SUCCEEDED, T.PREEMPTED], False, J.WORKER_FAILED),
        ([T.PENDING, T.UNSCHEDULABLE], False, J.UNSCHEDULABLE),
        ([T.RUNNING, T.KILLED], False, J.KILLED),
        # failure outranks the other terminal outcomes
        ([T.KILLED, T.UNSCHEDULABLE, T.WORKER_FAILED, T.FAILED], False, J.FAILED),
        ([T.KILLED, T.WORKER_FAILED], False, J.WORKER_FAILED),
        # a kill request wins over everything
        ([T.SUCCEEDED, T.SUCCEEDED], True, J.KILLED),
        ([T.FAILED], True, J.KILLED),
    ],
)
def test_derive_job_state_table(tasks: list[TaskState], killed: bool, expected: JobState) -> None:
    assert derive_job_state(tasks, killed=killed) is expected


def test_derive_job_state_accepts_a_generator() -> None:
    assert derive_job_state(s for s in [T.SUCCEEDED, T.SUCCEEDED]) is J.SUCCEEDED


@pytest.mark.parametrize(
    ("job_state", "codes", "expected"),
    [
        (J.SUCCEEDED, [0, 0], 0),
        (J.SUCCEEDED, [], 0),
        (J.FAILED, [0, 3, 4], 3),
        (J.FAILED, [None, 137], 137),
        (J.FAILED, [0, None], 1),
        (J.FAILED, [], 1),
        (J.KILLED, [None], 1),
        (J.WORKER_FAILED, [0], 1),
        (J.UNSCHEDULABLE, [], 1),
    ],
)
def test_job_exit_code_table(job_state: JobState, codes: list[int | None], expected: int) -> None:
    assert job_exit_code(job_state, codes) == expected
