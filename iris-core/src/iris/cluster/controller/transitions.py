"""Pure state transitions for tasks and jobs: no I/O, no clocks, no locks.

The controller calls these with the facts it has; tests call them with tables of cases.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from iris.cluster.types import JobState, TaskState

DEFAULT_MAX_PREEMPTIONS = 100


@attrs.frozen
class TaskOutcome:
    """What becomes of a task after one of its attempts ends.

    ``retry`` True means the task goes back to PENDING for a new attempt.
    """

    state: TaskState
    failures: int
    preemptions: int
    retry: bool


def task_after_attempt(
    attempt_state: TaskState,
    *,
    failures: int,
    preemptions: int,
    max_retries: int,
    max_preemptions: int = DEFAULT_MAX_PREEMPTIONS,
) -> TaskOutcome:
    """Apply the end of an attempt to its task, spending the right retry budget.

    A non-zero exit (FAILED, which includes OOM) spends the failure budget; losing the worker
    or being preempted spends the separate, generous preemption budget.
    """
    if not attempt_state.is_terminal:
        raise ValueError(f"attempt state {attempt_state.value} is not terminal")
    if attempt_state is TaskState.SUCCEEDED:
        return TaskOutcome(TaskState.SUCCEEDED, failures, preemptions, retry=False)
    if attempt_state is TaskState.FAILED:
        failures += 1
        if failures <= max_retries:
            return TaskOutcome(TaskState.PENDING, failures, preemptions, retry=True)
        return TaskOutcome(TaskState.FAILED, failures, preemptions, retry=False)
    if attempt_state in (TaskState.WORKER_FAILED, TaskState.PREEMPTED):
        preemptions += 1
        if preemptions <= max_preemptions:
            return TaskOutcome(TaskState.PENDING, failures, preemptions, retry=True)
        return TaskOutcome(attempt_state, failures, preemptions, retry=False)
    return TaskOutcome(attempt_state, failures, preemptions, retry=False)


_TERMINAL_FAILURES = (TaskState.FAILED, TaskState.WORKER_FAILED, TaskState.PREEMPTED, TaskState.UNSCHEDULABLE)


def derive_job_state(task_states: Iterable[TaskState], *, killed: bool = False, max_task_failures: int = 0) -> JobState:
    """A job's state from its tasks' states.

    Killed wins; more than ``max_task_failures`` tasks ending in failure ends the job as FAILED
    (a task's own failure), else WORKER_FAILED (lost workers), else UNSCHEDULABLE; a task stopped by the job (KILLED) means the job was killed; all
    tasks ended otherwise is success; any task started means running; otherwise pending.
    """
    states = list(task_states)
    if killed:
        return JobState.KILLED
    if not states:
        return JobState.PENDING
    failures = [s for s in states if s in _TERMINAL_FAILURES]
    if len(failures) > max_task_failures:
        if TaskState.FAILED in failures:
            return JobState.FAILED
        if TaskState.WORKER_FAILED in failures or TaskState.PREEMPTED in failures:
            return JobState.WORKER_FAILED
        return JobState.UNSCHEDULABLE
    if TaskState.KILLED in states:
        return JobState.KILLED
    if all(s.is_terminal for s in states):
        return JobState.SUCCEEDED
    if any(s.is_active or s.is_terminal for s in states):
        return JobState.RUNNING
    return JobState.PENDING


def job_exit_code(job_state: JobState, task_exit_codes: Iterable[int | None]) -> int:
    """The exit code ``iris run`` returns: 0 on success, the first failing task's code, else 1."""
    if job_state is JobState.SUCCEEDED:
        return 0
    for code in task_exit_codes:
        if code:
            return code
    return 1
