"""Workers: the reconcile protocol and liveness.

A worker sends everything it observes (each attempt's state and the log bytes not yet
acknowledged); the controller records it and answers with the worker's desired set, versioned so
a worker that has the current set can long-poll for the next. A worker silent for longer than
the timeout, or whose slice is deleted, is lost: its attempts end WORKER_FAILED and are retried
elsewhere on the preemption budget. An attempt that ends WORKER_FAILED on a live worker (an
infrastructure failure) is retried after a backoff, preferably on another worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from iris.cluster.controller import transitions
from iris.cluster.controller.jobs import Jobs
from iris.cluster.controller.logs import Logs
from iris.cluster.controller.state import Attempt, ClusterState, Task, WorkerRecord
from iris.cluster.controller.transitions import AttemptEnd
from iris.job.records import AttemptAck, DesiredAttempt, ObservedAttempt, ReconcileResult, WorkerIdentity
from iris.cluster.types import TaskState, format_memory

# the exchange's records live in iris.job.records (below the RPC layer); re-exported here
__all__ = ["AttemptAck", "DesiredAttempt", "ObservedAttempt", "ReconcileResult", "WorkerIdentity", "Workers", "fresh_version"]

logger = logging.getLogger(__name__)

INFRA_BACKOFF_FIRST = 0.5  # seconds before retrying after the first infrastructure failure
INFRA_BACKOFF_MAX = 30.0


def fresh_version() -> int:
    """A desired-set version no earlier controller process can have handed out (microseconds
    since the epoch: versions grow by far less than one per microsecond)."""
    return time.time_ns() // 1000


def infra_backoff(consecutive: int) -> float:
    return min(INFRA_BACKOFF_MAX, INFRA_BACKOFF_FIRST * 2 ** max(0, consecutive - 1))


class Workers:
    """The reconcile exchange and worker liveness (called with the controller's lock held)."""

    def __init__(self, state: ClusterState, jobs: Jobs, logs: Logs, clock: Callable[[], float], worker_timeout: float):
        self._state = state
        self._jobs = jobs
        self._logs = logs
        self._clock = clock
        self._timeout = worker_timeout
        # tasks waiting out an infrastructure-failure backoff: task -> when it may be placed again
        self._delayed: dict[Task, float] = {}

    # --- registration ------------------------------------------------------------------------

    def restore(self, doc: dict, now: float) -> WorkerRecord:
        worker = WorkerRecord(
            worker_id=doc["worker_id"],
            slice_id=doc["slice_id"],
            cpu=doc["cpu"],
            memory_bytes=doc["memory_bytes"],
            attributes=doc["attributes"],
            last_seen=now,
            version=fresh_version(),  # assignments bump it unsaved: never reuse a number
            lost=doc["lost"],
            awaiting_reconnect=True,
        )
        self._state.workers[worker.worker_id] = worker
        return worker

    def checkin(self, identity: WorkerIdentity) -> tuple[WorkerRecord, bool]:
        """The worker record for a reconcile, registering it if new or back from lost.
        True if the scheduler should run (a new worker, or one back after a restart)."""
        state = self._state
        now = self._clock()
        worker = state.workers.get(identity.worker_id)
        schedule = False
        if worker is None or worker.lost:
            worker = WorkerRecord(
                worker_id=identity.worker_id,
                slice_id=identity.slice_id,
                cpu=identity.cpu,
                memory_bytes=identity.memory_bytes,
                attributes=dict(identity.attributes),
                last_seen=now,
                version=(worker.version + 1) if worker else fresh_version(),
            )
            state.workers[identity.worker_id] = worker
            state.changes.workers.add(worker)
            logger.info("worker %s registered (%s cpu, %s)", worker.worker_id, worker.cpu, format_memory(worker.memory_bytes))
            schedule = True
        worker.last_seen = now
        if worker.awaiting_reconnect:  # back after a controller restart: schedulable again
            worker.awaiting_reconnect = False
            schedule = True
        return worker, schedule

    # --- what the worker observed --------------------------------------------------------------

    def apply_observed(self, worker: WorkerRecord, observed: list[ObservedAttempt]) -> tuple[list[AttemptAck], bool]:
        """Record what the worker reports; returns the acks and whether anything is news."""
        state = self._state
        changes = state.changes
        acks: list[AttemptAck] = []
        news = False
        now = self._clock()
        reported = set()
        for obs in observed:
            key = (obs.task_id, obs.attempt_id)
            reported.add(key)
            entry = worker.attempts.get(key)
            if entry is None:
                # Not ours (moved elsewhere, or finished and forgotten): the worker kills it since
                # it is not desired, and may forget it once it has ended.
                acks.append(AttemptAck(obs.task_id, obs.attempt_id, obs.log_offset + len(obs.log_data), obs.state.is_terminal))
                continue
            task, attempt = entry
            job = state.jobs[task.job_id]
            if not attempt.observed or (obs.ports and attempt.ports != obs.ports):
                attempt.observed = True
                attempt.ports = dict(obs.ports) if obs.ports else attempt.ports
                changes.task(task)
            if obs.log_data:
                changes.task(task)
                if self._logs.append(job, task, attempt, obs.log_offset, obs.log_data):
                    news = True
            if not attempt.started_at and obs.state is not attempt.state and obs.state is not TaskState.BUILDING:
                attempt.started_at = now  # first seen running (or already ended: a short task)
                job.started_at = job.started_at or now
            log_received = attempt.log_offset >= obs.log_offset + len(obs.log_data)
            if not attempt.state.is_terminal:
                if obs.state in (TaskState.BUILDING, TaskState.RUNNING):
                    if transitions.observe(job, task, attempt, obs.state, now, changes):
                        if job.state is not transitions.JobState.RUNNING:
                            self._jobs.update(job)
                        news = True
                elif obs.state.is_terminal and obs.log_complete and log_received:
                    end = AttemptEnd(obs.state, obs.exit_code, obs.error, obs.oom, obs.result, obs.result_is_error)
                    self.end_attempt(worker, task, attempt, end, now)
                    news = True
            if attempt.state.is_terminal and obs.log_complete and log_received:
                if not attempt.done:
                    self._logs.flush_partial(job, task, attempt)
                    transitions.attempt_done(task, attempt, changes)
                    news = True
                worker.attempts.pop(key, None)
            acks.append(AttemptAck(obs.task_id, obs.attempt_id, attempt.log_offset, attempt.done))
        # Attempts the worker had acknowledged but no longer reports were lost with its state.
        for key, (task, attempt) in list(worker.attempts.items()):
            if key in reported or not attempt.observed:
                continue
            worker.attempts.pop(key)
            changes.task(task)
            if not attempt.state.is_terminal:
                lost = AttemptEnd(TaskState.WORKER_FAILED, error="the worker lost this attempt")
                self.end_attempt(worker, task, attempt, lost, now)
                news = True
        return acks, news

    def end_attempt(self, worker: WorkerRecord, task: Task, attempt: Attempt, end: AttemptEnd, now: float) -> None:
        state = self._state
        job = state.jobs[task.job_id]
        if not worker.lost:
            resources = job.spec.resources
            worker.used_cpu = max(0.0, worker.used_cpu - resources.cpu)
            worker.used_memory = max(0, worker.used_memory - resources.memory)
        verdict = transitions.end_attempt(job, task, attempt, end, now, state.changes)
        self._jobs.attempt_ended(job, task)
        if verdict.retry:
            infra = end.state is TaskState.WORKER_FAILED and not worker.lost
            self._requeue(task, avoid=worker.worker_id, delay=infra_backoff(task.preemptions) if infra else 0.0)
            if verdict.gang_restart:
                # a gang runs together: restart every sibling with it (their budgets untouched)
                for sibling in job.tasks:
                    if sibling is not task and not sibling.state.is_terminal:
                        self.stop_attempt(sibling)
                        self._jobs.attempt_ended(job, sibling)
                        transitions.requeue(job, sibling, f"restarting with gang peer task {task.index}", now, state.changes)
                        self._requeue(sibling)
        self._jobs.update(job)

    def _requeue(self, task: Task, *, avoid: str = "", delay: float = 0.0) -> None:
        task.avoid_worker = avoid
        if delay > 0:
            self._delayed[task] = self._clock() + delay
            task.pending_reason = f"{task.pending_reason}; retrying in {delay:g}s"
        else:
            self._state.pending[task.task_id] = task

    def release_delayed(self, now: float) -> bool:
        """Queue the tasks whose backoff is over. True if any."""
        due = [t for t, at in self._delayed.items() if at <= now]
        for task in due:
            del self._delayed[task]
            if task.state is TaskState.PENDING:
                self._state.pending[task.task_id] = task
        return bool(due)

    def stop_attempt(self, task: Task) -> None:
        """Ask the worker running the task's current attempt to stop it."""
        attempt = transitions.request_stop(task, self._state.changes) or task.current
        if attempt is None or attempt.state.is_terminal:
            return
        worker = self._state.workers.get(attempt.worker_id)
        if worker is not None:
            self._state.changes.worker_desired(worker)

    # --- what the worker should run ----------------------------------------------------------

    def desired(self, worker: WorkerRecord, observed_keys: set[tuple[str, int]]) -> list[DesiredAttempt]:
        jobs = self._state.jobs
        out = []
        for (task_id, attempt_id), (task, attempt) in worker.attempts.items():
            if attempt.stop_requested or attempt.state.is_terminal:
                continue
            needs_spec = (task_id, attempt_id) not in observed_keys
            out.append(DesiredAttempt(task_id, attempt_id, task.job_id, task.index, jobs[task.job_id].spec if needs_spec else None))
        return out

    # --- liveness --------------------------------------------------------------------------------

    def lose(self, worker: WorkerRecord, now: float, why: str) -> None:
        """The worker is gone: its attempts end WORKER_FAILED and are retried elsewhere."""
        logger.warning("worker %s lost: %s", worker.worker_id, why)
        worker.lost = True
        changes = self._state.changes
        changes.workers.add(worker)
        changes.worker_desired(worker)
        for key, (task, attempt) in list(worker.attempts.items()):
            worker.attempts.pop(key)
            if not attempt.state.is_terminal:
                self.end_attempt(worker, task, attempt, AttemptEnd(TaskState.WORKER_FAILED, error=f"worker {worker.worker_id} lost"), now)
        worker.used_cpu = worker.used_memory = 0

    def expire(self, now: float) -> bool:
        """Mark workers silent for longer than the timeout lost. True if any."""
        changed = False
        for worker in list(self._state.workers.values()):
            if not worker.lost and now - worker.last_seen > self._timeout:
                self.lose(worker, now, f"no reconcile for {now - worker.last_seen:.0f}s")
                changed = True
        return changed

    def lose_slice(self, slice_id: str, now: float) -> bool:
        changed = False
        for worker in list(self._state.workers.values()):
            if worker.slice_id == slice_id and not worker.lost:
                self.lose(worker, now, f"its slice {slice_id} is being deleted")
                changed = True
        return changed

    def busy_slices(self) -> set[str]:
        return {w.slice_id for w in self._state.workers.values() if w.attempts and not w.lost}
