"""The controller: accepts jobs, places tasks on workers, reconciles with workers, serves logs.

All state sits behind one lock. Every change that someone may be waiting for (a job finishing,
new log lines, a worker's desired set) is announced on one condition variable, which the
long-polling calls (``wait_job``, ``get_logs``, ``reconcile``) wait on.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import attrs

from iris.cluster.controller.state import Attempt, Job, JobSpec, LogLine, Task, WorkerRecord
from iris.cluster.controller.transitions import derive_job_state, job_exit_code, task_after_attempt
from iris.cluster.types import JobState, ResourceSpec, TaskState, format_memory
from iris.errors import IrisError, JobNotFound

logger = logging.getLogger(__name__)

JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_LOG_LINES_PER_READ = 10_000


class InvalidRequest(IrisError):
    """A request the controller refuses; the message says why."""


class AlreadyExists(IrisError):
    pass


@attrs.frozen
class ObservedAttempt:
    task_id: str
    attempt_id: int
    state: TaskState
    exit_code: int | None = None
    error: str = ""
    log_offset: int = 0
    log_data: bytes = b""
    log_complete: bool = False
    oom: bool = False


@attrs.frozen
class WorkerIdentity:
    worker_id: str
    slice_id: str = ""
    cpu: float = 1.0
    memory_bytes: int = 0
    attributes: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class AttemptAck:
    task_id: str
    attempt_id: int
    log_offset: int
    done: bool


@attrs.frozen
class DesiredAttempt:
    task_id: str
    attempt_id: int
    job: Job | None  # set when the worker needs the full spec
    task_index: int


@attrs.frozen
class ReconcileResult:
    version: int
    desired: list[DesiredAttempt]
    acks: list[AttemptAck]


class Controller:
    """Job, task and worker state plus the scheduling and reconcile logic (no sockets here)."""

    def __init__(
        self,
        *,
        bundle_url: Callable[[str], str] = lambda bundle_id: "",
        clock: Callable[[], float] = time.time,
        worker_timeout: float = 60.0,
    ):
        self._bundle_url = bundle_url
        self._clock = clock
        self._worker_timeout = worker_timeout
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._workers: dict[str, WorkerRecord] = {}
        self._pending: OrderedDict[str, Task] = OrderedDict()  # task_id -> task, FIFO
        self._address = ""
        self._shutdown = False

    def notify(self) -> None:
        """Wake every long-poll so it re-checks whether its caller is still there."""
        with self._lock:
            self._changed.notify_all()

    def shutdown(self) -> None:
        """Release every long-poll at once (the server is stopping)."""
        with self._lock:
            self._shutdown = True
            self._changed.notify_all()

    def _wait_locked(self, deadline: float, active: Callable[[], bool]) -> bool:
        """Wait for a change until ``deadline``; False once the wait should end."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self._shutdown or not active():
            return False
        self._changed.wait(remaining)
        return True

    @property
    def address(self) -> str:
        return self._address

    @address.setter
    def address(self, value: str) -> None:
        self._address = value

    # --- jobs ---------------------------------------------------------------------------

    def launch_job(self, spec: JobSpec) -> str:
        if not JOB_NAME_RE.match(spec.name or ""):
            raise InvalidRequest(
                f"job name {spec.name!r} is invalid; use 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if not spec.entrypoint.argv and not spec.entrypoint.callable_bytes:
            raise InvalidRequest("entrypoint: the command is empty")
        if spec.replicas < 1:
            raise InvalidRequest(f"replicas: {spec.replicas}; must be >= 1")
        if spec.max_retries < 0:
            raise InvalidRequest(f"max_retries: {spec.max_retries}; must be >= 0")
        if spec.timeout_seconds < 0:
            raise InvalidRequest(f"timeout: {spec.timeout_seconds}; must be >= 0 (0 = no timeout)")
        for key in spec.environment.env:
            if not key or "=" in key:
                raise InvalidRequest(f"environment variable name {key!r} is invalid; it must be non-empty without '='")
        job_id = f"/{spec.name}"
        with self._lock:
            if job_id in self._jobs:
                existing = self._jobs[job_id]
                raise AlreadyExists(
                    f"job {job_id} already exists (state {existing.state.value}); choose another job name"
                )
            job = Job(job_id=job_id, spec=spec, submitted_at=self._clock())
            job.tasks = [Task(job_id=job_id, index=i) for i in range(spec.replicas)]
            self._jobs[job_id] = job
            for task in job.tasks:
                self._pending[task.task_id] = task
            self._schedule_locked()
            self._changed.notify_all()
        logger.info("launched job %s with %d task(s)", job_id, spec.replicas)
        return job_id

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id) or self._jobs.get(f"/{job_id}")
            if job is None:
                raise JobNotFound(f"job {job_id!r} not found")
            return job

    def list_jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.submitted_at)

    def wait_job(self, job_id: str, timeout: float, active: Callable[[], bool] = lambda: True) -> Job:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            job = self.get_job(job_id)
            while not job.state.is_terminal and self._wait_locked(deadline, active):
                pass
            return job

    def kill_job(self, job_id: str) -> Job:
        with self._lock:
            job = self.get_job(job_id)
            if job.state.is_terminal:
                return job
            job.kill_requested = True
            for task in job.tasks:
                if not task.state.is_terminal:
                    self._stop_task_locked(task, TaskState.KILLED, "killed by user")
            self._update_job_locked(job)
            self._changed.notify_all()
            return job

    def job_exit_code(self, job: Job) -> int:
        with self._lock:
            return job_exit_code(job.state, (t.exit_code for t in job.tasks))

    # --- logs ---------------------------------------------------------------------------

    def get_logs(
        self, job_id: str, cursor: str, max_lines: int = 0, wait: float = 0.0, active: Callable[[], bool] = lambda: True
    ) -> tuple[list[LogLine], str, bool]:
        """Lines after ``cursor``; the new cursor; whether the job is over and all lines read."""
        try:
            position = int(cursor) if cursor else 0
        except ValueError:
            raise InvalidRequest(f"log cursor {cursor!r} is invalid") from None
        limit = min(max_lines or MAX_LOG_LINES_PER_READ, MAX_LOG_LINES_PER_READ)
        deadline = time.monotonic() + max(0.0, wait)
        with self._lock:
            job = self.get_job(job_id)
            while len(job.logs) <= position and not job.state.is_terminal and self._wait_locked(deadline, active):
                pass
            lines = job.logs[position : position + limit]
            position += len(lines)
            finished = job.state.is_terminal and position >= len(job.logs)
            return lines, str(position), finished

    # --- workers ------------------------------------------------------------------------

    def list_workers(self) -> list[WorkerRecord]:
        with self._lock:
            return list(self._workers.values())

    def reconcile(
        self,
        identity: WorkerIdentity,
        observed: Iterable[ObservedAttempt],
        known_version: int,
        wait: float = 0.0,
        active: Callable[[], bool] = lambda: True,
    ) -> ReconcileResult:
        """One level-triggered exchange: record what the worker observes, answer what it should run.

        When nothing new came in and the worker already has the current desired set, the answer
        is held up to ``wait`` seconds until that set changes.
        """
        observed = list(observed)
        with self._lock:
            now = self._clock()
            worker = self._workers.get(identity.worker_id)
            if worker is None or worker.lost:
                worker = WorkerRecord(
                    worker_id=identity.worker_id,
                    slice_id=identity.slice_id,
                    cpu=identity.cpu,
                    memory_bytes=identity.memory_bytes,
                    attributes=dict(identity.attributes),
                    last_seen=now,
                    version=(worker.version + 1) if worker else 1,
                )
                self._workers[identity.worker_id] = worker
                logger.info("worker %s registered (%s cpu, %s)", worker.worker_id, worker.cpu, format_memory(worker.memory_bytes))
                self._schedule_locked()
            worker.last_seen = now
            acks, news = self._apply_observed_locked(worker, observed)
            if news:
                self._schedule_locked()
                self._changed.notify_all()
            if not news and known_version == worker.version and wait > 0:
                deadline = time.monotonic() + wait
                while worker.version == known_version and not worker.lost and self._wait_locked(deadline, active):
                    pass
            observed_keys = {(o.task_id, o.attempt_id) for o in observed}
            desired = []
            for (task_id, attempt_id), (task, attempt) in worker.attempts.items():
                if attempt.stop_requested or attempt.state.is_terminal:
                    continue
                needs_spec = (task_id, attempt_id) not in observed_keys
                desired.append(
                    DesiredAttempt(task_id, attempt_id, self._jobs[task.job_id] if needs_spec else None, task.index)
                )
            return ReconcileResult(worker.version, desired, acks)

    def _apply_observed_locked(
        self, worker: WorkerRecord, observed: list[ObservedAttempt]
    ) -> tuple[list[AttemptAck], bool]:
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
            attempt.observed = True
            if obs.log_data and self._append_log_locked(task, attempt, obs):
                news = True
            if not attempt.state.is_terminal:
                if obs.state in (TaskState.BUILDING, TaskState.RUNNING) and attempt.state != obs.state:
                    attempt.state = obs.state
                    if obs.state is TaskState.RUNNING and not attempt.started_at:
                        attempt.started_at = now
                    if not task.state.is_terminal:
                        task.state = obs.state
                        task.pending_reason = ""
                    self._update_job_locked(self._jobs[task.job_id])
                    news = True
                elif obs.state.is_terminal and obs.log_complete and attempt.log_offset >= obs.log_offset + len(obs.log_data):
                    self._finish_attempt_locked(worker, task, attempt, obs, now)
                    news = True
            if attempt.state.is_terminal and obs.log_complete and attempt.log_offset >= obs.log_offset + len(obs.log_data):
                if not attempt.done:
                    self._flush_partial_locked(task, attempt)
                    attempt.done = True
                    news = True
                worker.attempts.pop(key, None)
            acks.append(AttemptAck(obs.task_id, obs.attempt_id, attempt.log_offset, attempt.done))
        # Attempts the worker had acknowledged but no longer reports were lost with its state.
        for key, (task, attempt) in list(worker.attempts.items()):
            if key in reported or not attempt.observed:
                continue
            worker.attempts.pop(key)
            if not attempt.state.is_terminal:
                lost = ObservedAttempt(key[0], key[1], TaskState.WORKER_FAILED, error="the worker lost this attempt")
                self._finish_attempt_locked(worker, task, attempt, lost, now, release=True)
                news = True
            else:
                self._release_locked(worker, task)
        return acks, news

    def _append_log_locked(self, task: Task, attempt: Attempt, obs: ObservedAttempt) -> bool:
        data = obs.log_data
        if obs.log_offset > attempt.log_offset:
            return False  # a gap: the ack tells the worker where to resend from
        skip = attempt.log_offset - obs.log_offset
        if skip >= len(data):
            return False
        data = data[skip:]
        attempt.log_offset += len(data)
        buffer = attempt.log_partial + data
        *complete, rest = buffer.split(b"\n")
        attempt.log_partial = rest
        if complete:
            job = self._jobs[task.job_id]
            now = self._clock()
            job.logs.extend(
                LogLine(task.index, attempt.attempt_id, now, line.decode("utf-8", "replace")) for line in complete
            )
            return True
        return False

    def _flush_partial_locked(self, task: Task, attempt: Attempt) -> None:
        if attempt.log_partial:
            job = self._jobs[task.job_id]
            job.logs.append(LogLine(task.index, attempt.attempt_id, self._clock(), attempt.log_partial.decode("utf-8", "replace")))
            attempt.log_partial = b""

    def _release_locked(self, worker: WorkerRecord, task: Task) -> None:
        resources = self._jobs[task.job_id].spec.resources
        worker.used_cpu = max(0.0, worker.used_cpu - resources.cpu)
        worker.used_memory = max(0, worker.used_memory - resources.memory)

    def _finish_attempt_locked(
        self, worker: WorkerRecord, task: Task, attempt: Attempt, obs: ObservedAttempt, now: float, release: bool = True
    ) -> None:
        attempt.state = obs.state
        attempt.exit_code = obs.exit_code
        attempt.error = obs.error or ("out of memory: killed for exceeding its memory limit" if obs.oom else "")
        attempt.finished_at = now
        if release:
            self._release_locked(worker, task)
        job = self._jobs[task.job_id]
        if task.state.is_terminal:  # already decided (killed, or a sibling failed the job)
            self._update_job_locked(job)
            return
        outcome = task_after_attempt(
            obs.state, failures=task.failures, preemptions=task.preemptions, max_retries=job.spec.max_retries
        )
        task.failures, task.preemptions = outcome.failures, outcome.preemptions
        task.exit_code = obs.exit_code
        task.error = attempt.error
        if outcome.retry and not job.kill_requested:
            task.state = TaskState.PENDING
            task.pending_reason = f"retrying after attempt {attempt.attempt_id} ended {obs.state.value}"
            self._pending[task.task_id] = task
        else:
            task.state = outcome.state
        self._update_job_locked(job)

    def _stop_task_locked(self, task: Task, state: TaskState, reason: str) -> None:
        """Mark a task terminal now and ask its worker to stop the running attempt."""
        task.state = state
        task.error = task.error or reason
        task.pending_reason = ""
        self._pending.pop(task.task_id, None)
        attempt = task.current
        if attempt is not None and not attempt.state.is_terminal and not attempt.stop_requested:
            attempt.stop_requested = True
            worker = self._workers.get(attempt.worker_id)
            if worker is not None:
                worker.version += 1

    def _update_job_locked(self, job: Job) -> None:
        if job.state.is_terminal:
            return
        state = derive_job_state((t.state for t in job.tasks), killed=job.kill_requested)
        if state is JobState.RUNNING and not job.started_at:
            job.started_at = self._clock()
        if state.is_terminal:
            job.finished_at = self._clock()
            failed = next((t for t in job.tasks if t.state.is_terminal and t.state is not TaskState.SUCCEEDED), None)
            if failed is not None and not job.error:
                job.error = f"task {failed.index}: {failed.error or failed.state.value}"
            for task in job.tasks:  # one task failing ends its siblings
                if not task.state.is_terminal:
                    self._stop_task_locked(task, TaskState.KILLED, f"job {state.value}")
            logger.info("job %s %s", job.job_id, state.value)
        job.state = state

    # --- scheduling ---------------------------------------------------------------------

    def _schedule_locked(self) -> None:
        """First-fit placement of pending tasks, in submission order."""
        if not self._pending:
            return
        workers = [w for w in self._workers.values() if not w.lost]
        if not workers:
            for task in self._pending.values():
                task.pending_reason = "no workers registered yet"
            return
        placed = []
        for task_id, task in self._pending.items():
            job = self._jobs[task.job_id]
            if job.kill_requested:
                placed.append(task_id)
                continue
            resources = job.spec.resources
            worker = next((w for w in workers if w.fits(resources)), None)
            if worker is None:
                task.pending_reason = self._pending_reason(resources, workers)
                if not any(w.cpu - w.used_cpu > 0 and w.memory_bytes - w.used_memory > 0 for w in workers):
                    break  # the cluster is full: nothing later can fit either
                continue
            self._assign_locked(task, worker)
            placed.append(task_id)
        for task_id in placed:
            self._pending.pop(task_id, None)

    def _assign_locked(self, task: Task, worker: WorkerRecord) -> None:
        job = self._jobs[task.job_id]
        attempt = Attempt(attempt_id=len(task.attempts), worker_id=worker.worker_id)
        task.attempts.append(attempt)
        task.state = TaskState.ASSIGNED
        task.pending_reason = ""
        worker.used_cpu += job.spec.resources.cpu
        worker.used_memory += job.spec.resources.memory
        worker.attempts[(task.task_id, attempt.attempt_id)] = (task, attempt)
        worker.version += 1
        self._update_job_locked(job)

    @staticmethod
    def _pending_reason(resources: ResourceSpec, workers: list[WorkerRecord]) -> str:
        if not any(w.has_device(resources) for w in workers):
            wanted = " ".join(filter(None, (resources.device.kind, resources.device.variant)))
            return f"no worker has device {wanted}"
        workers = [w for w in workers if w.has_device(resources)]
        most_cpu = max(w.cpu for w in workers)
        most_memory = max(w.memory_bytes for w in workers)
        if resources.memory > most_memory:
            return (
                f"no worker has enough memory: needs {format_memory(resources.memory)}, "
                f"largest worker has {format_memory(most_memory)}"
            )
        if resources.cpu > most_cpu:
            return f"no worker has enough cpu: needs {resources.cpu:g}, largest worker has {most_cpu:g}"
        return "waiting for a worker with free capacity (all busy)"

    # --- periodic -----------------------------------------------------------------------

    def tick(self) -> None:
        """Enforce job timeouts and mark silent workers lost. Called about every half second."""
        with self._lock:
            now = self._clock()
            changed = False
            for job in self._jobs.values():
                if job.state.is_terminal or not job.spec.timeout_seconds or not job.started_at:
                    continue
                if now - job.started_at > job.spec.timeout_seconds:
                    reason = f"timed out after {job.spec.timeout_seconds:g}s"
                    for task in job.tasks:
                        if not task.state.is_terminal:
                            self._stop_task_locked(task, TaskState.FAILED, reason)
                    job.error = reason
                    self._update_job_locked(job)
                    changed = True
            for worker in self._workers.values():
                if not worker.lost and now - worker.last_seen > self._worker_timeout:
                    self._lose_worker_locked(worker, now)
                    changed = True
            if changed:
                self._schedule_locked()
                self._changed.notify_all()

    def _lose_worker_locked(self, worker: WorkerRecord, now: float) -> None:
        logger.warning("worker %s lost: no reconcile for %.0fs", worker.worker_id, now - worker.last_seen)
        worker.lost = True
        worker.version += 1
        for key, (task, attempt) in list(worker.attempts.items()):
            worker.attempts.pop(key)
            if not attempt.state.is_terminal:
                lost = ObservedAttempt(key[0], key[1], TaskState.WORKER_FAILED, error=f"worker {worker.worker_id} lost")
                self._finish_attempt_locked(worker, task, attempt, lost, now)
        worker.used_cpu = worker.used_memory = 0


def bundle_id_for(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
