"""The one writer of job, task and attempt state.

Every change of a ``state`` field of a :class:`Job`, :class:`Task` or :class:`Attempt` happens
here, checked against the legal-transition tables below. The decisions (what becomes of a task
when an attempt ends, what a job's state is given its tasks) are pure functions; the appliers
(``assign``, ``observe``, ``end_attempt``, ``stop_task``, ``requeue``, ``update_job``...) apply
them to the records and note what changed in a :class:`Changes`, touching nothing else: no I/O,
no clocks (callers pass ``now``), no locks. Tests drive them directly with tables of cases.

Task lifecycle::

    PENDING --assign--> ASSIGNED --observe--> BUILDING --observe--> RUNNING
       ^                    |                    |                     |
       +------ requeue -----+--------------------+---------------------+   (retry, gang restart)
    any non-terminal --end_attempt / stop_task--> SUCCEEDED | FAILED | KILLED | WORKER_FAILED
                                                  | PREEMPTED | UNSCHEDULABLE (from PENDING)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

from iris.cluster.controller.state import Attempt, Changes, Job, Task
from iris.cluster.types import JobState, TaskState

DEFAULT_MAX_PREEMPTIONS = 100

_T = TaskState
_ENDS = frozenset({_T.SUCCEEDED, _T.FAILED, _T.KILLED, _T.WORKER_FAILED, _T.PREEMPTED})

#: task state -> the states it may move to
TASK_TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    _T.PENDING: frozenset({_T.ASSIGNED, _T.KILLED, _T.FAILED, _T.UNSCHEDULABLE}),
    _T.ASSIGNED: frozenset({_T.BUILDING, _T.RUNNING, _T.PENDING, *_ENDS}),
    _T.BUILDING: frozenset({_T.RUNNING, _T.PENDING, *_ENDS}),
    _T.RUNNING: frozenset({_T.PENDING, *_ENDS}),
    **{s: frozenset() for s in (*_ENDS, _T.UNSCHEDULABLE)},
}

#: attempt state -> the states it may move to (an attempt never goes back)
ATTEMPT_TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    _T.ASSIGNED: frozenset({_T.BUILDING, _T.RUNNING, *_ENDS}),
    _T.BUILDING: frozenset({_T.RUNNING, *_ENDS}),
    _T.RUNNING: _ENDS,
    **{s: frozenset() for s in _ENDS},
}

_J = JobState
_JOB_ENDS = frozenset({_J.SUCCEEDED, _J.FAILED, _J.KILLED, _J.WORKER_FAILED, _J.UNSCHEDULABLE})

#: job state -> the states it may move to (RUNNING -> PENDING: every task is back in the queue, retrying)
JOB_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    _J.PENDING: frozenset({_J.RUNNING, *_JOB_ENDS}),
    _J.RUNNING: frozenset({_J.PENDING, *_JOB_ENDS}),
    **{s: frozenset() for s in _JOB_ENDS},
}


class IllegalTransition(RuntimeError):
    """A move the tables do not allow: a bug in the controller, never a user's mistake."""


# --- pure decisions ---------------------------------------------------------------------


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

    A non-zero exit (FAILED, which includes OOM and a task that cannot start) spends the failure
    budget; losing the worker or being preempted spends the separate, generous preemption budget.
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


def job_state_from_counts(counts: Mapping[TaskState, int], *, killed: bool = False, max_task_failures: int = 0) -> JobState:
    """A job's state from how many of its tasks are in each state.

    Killed wins; more than ``max_task_failures`` tasks ending in failure ends the job as FAILED
    (a task's own failure), else WORKER_FAILED (lost workers), else UNSCHEDULABLE; a task
    stopped by the job (KILLED) means the job was killed; all tasks ended otherwise is success;
    any task started means running; otherwise pending.
    """
    if killed:
        return JobState.KILLED
    total = sum(counts.values())
    if not total:
        return JobState.PENDING
    failures = sum(counts.get(s, 0) for s in _TERMINAL_FAILURES)
    if failures > max_task_failures:
        if counts.get(TaskState.FAILED):
            return JobState.FAILED
        if counts.get(TaskState.WORKER_FAILED) or counts.get(TaskState.PREEMPTED):
            return JobState.WORKER_FAILED
        return JobState.UNSCHEDULABLE
    if counts.get(TaskState.KILLED):
        return JobState.KILLED
    if counts.get(TaskState.PENDING, 0) == total:
        return JobState.PENDING
    if sum(n for s, n in counts.items() if s.is_terminal) == total:
        return JobState.SUCCEEDED
    return JobState.RUNNING


def derive_job_state(task_states: Iterable[TaskState], *, killed: bool = False, max_task_failures: int = 0) -> JobState:
    """:func:`job_state_from_counts` for a list of task states."""
    counts: dict[TaskState, int] = {}
    for s in task_states:
        counts[s] = counts.get(s, 0) + 1
    return job_state_from_counts(counts, killed=killed, max_task_failures=max_task_failures)


def job_exit_code(job_state: JobState, task_exit_codes: Iterable[int | None]) -> int:
    """The exit code ``iris run`` returns: 0 on success, the first failing task's code, else 1."""
    if job_state is JobState.SUCCEEDED:
        return 0
    for code in task_exit_codes:
        if code:
            return code
    return 1


# --- the appliers: the only assignments to .state -----------------------------------------


def _move_task(job: Job, task: Task, new: TaskState, changes: Changes) -> None:
    old = task.state
    if new is old:
        return
    if new not in TASK_TRANSITIONS[old]:
        raise IllegalTransition(f"task {task.task_id}: {old.value} -> {new.value}")
    task.state = new
    counts = job.task_counts
    counts[old] -= 1
    counts[new] = counts.get(new, 0) + 1
    changes.task(task)


def _move_attempt(task: Task, attempt: Attempt, new: TaskState, changes: Changes) -> None:
    old = attempt.state
    if new is old:
        return
    if new not in ATTEMPT_TRANSITIONS[old]:
        raise IllegalTransition(f"attempt {task.task_id}.{attempt.attempt_id}: {old.value} -> {new.value}")
    attempt.state = new
    changes.task(task)


def new_job(job: Job, now: float, changes: Changes) -> None:
    """Give a job just made its tasks, all PENDING since ``now``."""
    job.tasks = [Task(job_id=job.job_id, index=i, pending_since=now) for i in range(job.spec.replicas)]
    job.task_counts = {TaskState.PENDING: len(job.tasks)}
    changes.job(job)
    changes.tasks.update(job.tasks)


_NO_COUNTS: Mapping[TaskState, int] = MappingProxyType({})


def forget_counts(job: Job) -> None:
    """An ended job's tasks never move again: let go of its counts (memory per finished job)."""
    job.task_counts = _NO_COUNTS  # type: ignore[assignment]  # read-only: a late move would raise


def restore_counts(job: Job) -> None:
    """Recount a job's tasks by state (after loading it from the store)."""
    counts: dict[TaskState, int] = {}
    for t in job.tasks:
        counts[t.state] = counts.get(t.state, 0) + 1
    job.task_counts = counts


def assign(job: Job, task: Task, worker_id: str, changes: Changes) -> Attempt:
    """A new attempt of ``task`` on the worker: the task is ASSIGNED."""
    attempt = Attempt(attempt_id=len(task.attempts), worker_id=worker_id)
    task.attempts.append(attempt)
    task.pending_reason = ""
    task.wait = None
    _move_task(job, task, TaskState.ASSIGNED, changes)
    return attempt


def observe(job: Job, task: Task, attempt: Attempt, state: TaskState, now: float, changes: Changes) -> bool:
    """The worker reports the attempt BUILDING or RUNNING. True if that is news."""
    if attempt.state.is_terminal or attempt.state is state or state not in (TaskState.BUILDING, TaskState.RUNNING):
        return False
    if attempt.state is TaskState.RUNNING:  # never back from RUNNING to BUILDING
        return False
    _move_attempt(task, attempt, state, changes)
    if state is TaskState.RUNNING and not attempt.started_at:
        attempt.started_at = now
    if not task.state.is_terminal and task.current is attempt and not attempt.stop_requested:
        _move_task(job, task, state, changes)
        task.pending_reason = ""
    return True


@attrs.frozen
class AttemptEnd:
    """How an attempt ended, as the worker (or the controller, for a lost worker) reports it."""

    state: TaskState
    exit_code: int | None = None
    error: str = ""
    oom: bool = False
    result: bytes = b""  # a callable's outcome (opaque)
    result_is_error: bool = False


@attrs.frozen
class EndVerdict:
    """What :func:`end_attempt` decided for the task: ``retry`` (requeued), ``gang_restart``
    (a gang member failed and will retry: the caller restarts its siblings)."""

    retry: bool = False
    gang_restart: bool = False


def end_attempt(job: Job, task: Task, attempt: Attempt, end: AttemptEnd, now: float, changes: Changes) -> EndVerdict:
    """Record the attempt's end and decide its task's fate (retry on the right budget, or end)."""
    _move_attempt(task, attempt, end.state, changes)
    attempt.exit_code = end.exit_code
    attempt.oom = end.oom
    attempt.error = end.error or ("out of memory: killed for exceeding its memory limit" if end.oom else "")
    attempt.finished_at = now
    attempt.result, attempt.result_is_error = end.result, end.result_is_error
    if attempt.stop_requested or task.state.is_terminal or task.current is not attempt:
        return EndVerdict()  # the controller already decided this task's fate (killed, timed out, restarted)
    outcome = task_after_attempt(
        end.state,
        failures=task.failures,
        preemptions=task.preemptions,
        max_retries=job.spec.max_retries,
        max_preemptions=job.spec.max_preemptions or DEFAULT_MAX_PREEMPTIONS,
    )
    task.failures, task.preemptions = outcome.failures, outcome.preemptions
    task.exit_code = end.exit_code
    task.error = attempt.error
    if outcome.retry and not job.kill_requested:
        requeue(job, task, f"retrying after attempt {attempt.attempt_id} ended {end.state.value}", now, changes)
        return EndVerdict(retry=True, gang_restart=job.is_gang)
    _move_task(job, task, outcome.state, changes)
    return EndVerdict()


def requeue(job: Job, task: Task, reason: str, now: float, changes: Changes) -> None:
    """Back to PENDING for a new attempt."""
    _move_task(job, task, TaskState.PENDING, changes)
    task.pending_reason = reason
    task.wait = None
    task.pending_since = now


def request_stop(task: Task, changes: Changes) -> Attempt | None:
    """Ask the worker to stop the task's running attempt; returns it if a stop was newly asked."""
    attempt = task.current
    if attempt is None or attempt.state.is_terminal or attempt.stop_requested:
        return None
    attempt.stop_requested = True
    changes.task(task)
    return attempt


def stop_task(job: Job, task: Task, state: TaskState, reason: str, changes: Changes) -> Attempt | None:
    """End a task now (KILLED, FAILED on timeout, UNSCHEDULABLE) and ask its worker to stop the
    running attempt, which is returned when there is one to stop."""
    _move_task(job, task, state, changes)
    task.error = task.error or reason
    task.pending_reason = ""
    task.wait = None
    return request_stop(task, changes)


def attempt_done(task: Task, attempt: Attempt, changes: Changes) -> None:
    """The attempt's final state and its whole log are recorded."""
    attempt.done = True
    changes.task(task)


def update_job(job: Job, now: float, changes: Changes) -> JobState | None:
    """Derive the job's state from its tasks; returns the state when the job just ended."""
    if job.state.is_terminal:
        return None
    max_failures = 0 if job.is_gang else job.spec.max_task_failures
    state = job_state_from_counts(job.task_counts, killed=job.kill_requested, max_task_failures=max_failures)
    if state is job.state:
        return None
    if state not in JOB_TRANSITIONS[job.state]:
        raise IllegalTransition(f"job {job.job_id}: {job.state.value} -> {state.value}")
    changes.job(job)
    if state is JobState.RUNNING and not job.started_at:
        job.started_at = now
    job.state = state
    if not state.is_terminal:
        return None
    job.finished_at = now
    if not job.error:
        failed = next((t for t in job.tasks if t.state.is_terminal and t.state is not TaskState.SUCCEEDED), None)
        if failed is not None:
            job.error = f"task {failed.index}: {failed.error or failed.state.value}"
    return state


def kill_job(job: Job, reason: str, keep_children: bool, changes: Changes) -> None:
    """Mark the job killed (its tasks are stopped by the caller through :func:`stop_task`)."""
    job.kill_requested = True
    job.keep_children = keep_children
    job.error = job.error or reason
    changes.job(job)
