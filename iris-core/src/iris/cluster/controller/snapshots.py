"""Immutable views of controller records: what every read returns.

A view is taken under the controller's lock and never changes afterwards, so the service (and
any other reader) can convert or inspect it at leisure while the controller moves on.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from iris.cluster.controller.state import Attempt, Job, Task, WorkerRecord
from iris.cluster.controller.transitions import job_exit_code
from iris.job.records import AttemptView, JobView, TaskView, WorkerView
from iris.cluster.types import TaskState

__all__ = [
    "AttemptView", "JobPage", "JobSummary", "JobView", "TaskView", "WorkerView",
    "attempt_view", "job_summary", "job_view", "task_view", "worker_view",
]


@attrs.frozen
class JobSummary:
    """A job as a list shows it: no task snapshots, only how many tasks are in each state and why
    the first waiting one waits."""

    job_id: str
    name: str
    user: str
    state: str
    submitted_at: float
    started_at: float
    finished_at: float
    error: str
    exit_code: int
    replicas: int
    tasks_by_state: dict[str, int]
    pending_reason: str
    parent_job_id: str
    children: int


@attrs.frozen
class JobPage:
    """One page of a filtered job list: ``total`` matching jobs, ``counts`` by state under the
    user/prefix filter (before the state filter), and the page's jobs."""

    total: int
    counts: dict[str, int]
    jobs: tuple[JobSummary, ...]


def job_summary(job: Job) -> JobSummary:
    by_state: dict[str, int] = {}
    reason = ""
    for t in job.tasks:
        by_state[t.state.value] = by_state.get(t.state.value, 0) + 1
        if not reason and t.state is TaskState.PENDING:
            reason = t.pending_reason
    exit_code = job_exit_code(job.state, (t.exit_code for t in job.tasks)) if job.state.is_terminal else 0
    return JobSummary(
        job.job_id, job.spec.name, job.spec.user, job.state.value, job.submitted_at, job.started_at, job.finished_at,
        job.error, exit_code, len(job.tasks), by_state, reason, job.spec.parent_job_id, len(job.children),
    )


def attempt_view(a: Attempt) -> AttemptView:
    return AttemptView(
        a.attempt_id, a.worker_id, a.state, a.exit_code, a.error, a.started_at, a.finished_at, a.oom, a.stop_requested,
        dict(a.ports),
    )


def task_view(t: Task) -> TaskView:
    return TaskView(
        t.job_id, t.index, t.state, t.pending_reason if t.state is TaskState.PENDING else "", t.exit_code, t.error,
        t.failures, t.preemptions, tuple(map(attempt_view, t.attempts)),
    )


def job_view(job: Job, tasks: Iterable[Task] | None = None) -> JobView:
    """The job's view; with ``tasks``, only those tasks are in it (a page of a big job)."""
    exit_code = job_exit_code(job.state, (t.exit_code for t in job.tasks)) if job.state.is_terminal else 0
    return JobView(
        job.job_id, job.spec, job.submitted_at, job.state, job.started_at, job.finished_at, job.error, exit_code,
        tuple(map(task_view, job.tasks if tasks is None else tasks)), tuple(job.children),
    )


def worker_view(w: WorkerRecord) -> WorkerView:
    return WorkerView(
        w.worker_id, w.slice_id, w.cpu, w.memory_bytes, dict(w.attributes), w.last_seen, w.used_cpu, w.used_memory, w.lost,
        len(w.attempts),
    )
