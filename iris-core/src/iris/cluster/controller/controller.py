"""The controller: accepts jobs, places tasks on workers, reconciles with workers, serves logs.

All state sits behind one lock. Every change that someone may be waiting for (a job finishing,
new log lines, a worker's desired set) is announced on one condition variable, which the
long-polling calls (``wait_job``, ``get_logs``, ``reconcile``) wait on.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import attrs

from iris.cluster.controller.placement import ALL_BUSY, NO_WORKERS, Gang, PlacementIndex, Shape
from iris.cluster.controller.state import Attempt, Endpoint, Job, JobSpec, LogLine, Task, WorkerRecord
from iris.cluster.controller.store import Store
from iris.cluster.controller.transitions import (
    DEFAULT_MAX_PREEMPTIONS,
    derive_job_state,
    job_exit_code,
    task_after_attempt,
)
from iris.cluster.demand import Demand
from iris.cluster.types import JobState, TaskState, format_memory
from iris.errors import IrisError, JobNotFound

logger = logging.getLogger(__name__)

JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PORT_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
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
    ports: dict[str, int] = attrs.field(factory=dict)


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


def fresh_version() -> int:
    """A desired-set version no earlier controller process can have handed out (microseconds
    since the epoch: versions grow by far less than one per microsecond)."""
    return time.time_ns() // 1000


def encode_cursor(positions: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(positions, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, int) for k, v in data.items()):
            return data
    except (ValueError, TypeError):
        pass
    raise InvalidRequest(f"log cursor {cursor!r} is invalid")


class Controller:
    """Job, task and worker state plus the scheduling and reconcile logic (no sockets here)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        worker_timeout: float = 60.0,
        store: Store | None = None,
    ):
        """With a ``store``, the controller starts from the state saved there and writes every
        change through to it before acknowledging it."""
        self._clock = clock
        self._worker_timeout = worker_timeout
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._workers: dict[str, WorkerRecord] = {}
        self._pending: OrderedDict[str, Task] = OrderedDict()  # task_id -> task, FIFO
        self._endpoints: dict[str, list[Endpoint]] = {}
        self._address = ""
        self._shutdown = False
        self._store = store
        self._touched_jobs: set[str] = set()
        self._touched_workers: set[str] = set()
        self._endpoints_dirty = False
        self._logs_saved: dict[str, int] = {}
        if store is not None:
            self._load(store)

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

    # --- persistence --------------------------------------------------------------------

    def _load(self, store: Store) -> None:
        """Rebuild the working set from the store; workers get a fresh timeout to reconnect."""
        now = self._clock()
        for doc in store.load_workers():
            self._workers[doc["worker_id"]] = WorkerRecord(
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
        pending: list[Task] = []
        for job in store.load_jobs():
            self._jobs[job.job_id] = job
            self._logs_saved[job.job_id] = len(job.logs)
            for task in job.tasks:
                if task.state is TaskState.PENDING and not job.state.is_terminal:
                    pending.append(task)
                for attempt in task.attempts:
                    worker = self._workers.get(attempt.worker_id)
                    if attempt.done or worker is None or worker.lost:
                        continue
                    worker.attempts[(task.task_id, attempt.attempt_id)] = (task, attempt)
                    if not attempt.state.is_terminal:
                        worker.used_cpu += job.spec.resources.cpu
                        worker.used_memory += job.spec.resources.memory
        for task in pending:
            task.pending_since = now
            self._pending[task.task_id] = task
        for endpoint in store.load_endpoints():
            self._endpoints.setdefault(endpoint.name, []).append(endpoint)
        logger.info("loaded %d jobs and %d workers from %s", len(self._jobs), len(self._workers), store.path)

    def _touch(self, job: Job) -> None:
        self._touched_jobs.add(job.job_id)

    def _commit_locked(self) -> None:
        """Write every change since the last commit in one transaction (before acknowledging)."""
        if self._store is None:
            self._touched_jobs.clear()
            self._touched_workers.clear()
            self._endpoints_dirty = False
            return
        if not (self._touched_jobs or self._touched_workers or self._endpoints_dirty):
            return
        jobs = [self._jobs[j] for j in self._touched_jobs]
        logs: list[tuple[str, int, LogLine]] = []
        for job in jobs:
            start = self._logs_saved.get(job.job_id, 0)
            logs.extend((job.job_id, i, job.logs[i]) for i in range(start, len(job.logs)))
            self._logs_saved[job.job_id] = len(job.logs)
        workers = [self._workers[w] for w in self._touched_workers]
        endpoints = [e for entries in self._endpoints.values() for e in entries] if self._endpoints_dirty else None
        self._store.write(jobs, logs, workers, endpoints)
        self._touched_jobs.clear()
        self._touched_workers.clear()
        self._endpoints_dirty = False

    def record_bundle(self, bundle_id: str, size: int) -> None:
        if self._store is not None:
            with self._lock:
                self._store.add_bundle(bundle_id, size, self._clock())

    # --- jobs ---------------------------------------------------------------------------

    def _validate(self, spec: JobSpec) -> None:
        if not JOB_NAME_RE.match(spec.name or ""):
            raise InvalidRequest(
                f"job name {spec.name!r} is invalid; use 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if not spec.entrypoint.argv and not spec.entrypoint.callable_bytes:
            raise InvalidRequest("entrypoint: the command is empty")
        if spec.replicas < 1:
            raise InvalidRequest(f"replicas: {spec.replicas}; must be >= 1")
        for field, value in (
            ("max_retries", spec.max_retries),
            ("max_task_failures", spec.max_task_failures),
            ("max_preemptions", spec.max_preemptions),
            ("timeout", spec.timeout_seconds),
            ("scheduling_timeout", spec.scheduling_timeout_seconds),
        ):
            if value < 0:
                raise InvalidRequest(f"{field}: {value}; must be >= 0")
        for key in spec.environment.env:
            if not key or "=" in key:
                raise InvalidRequest(f"environment variable name {key!r} is invalid; it must be non-empty without '='")
        for port in spec.ports:
            if not PORT_NAME_RE.match(port):
                raise InvalidRequest(f"port name {port!r} is invalid; use a letter then letters, digits or '_' (it becomes IRIS_PORT_{port.upper()})")
        if len(set(spec.ports)) != len(spec.ports):
            raise InvalidRequest(f"ports: {', '.join(spec.ports)} names a port twice")
        if spec.user and not JOB_NAME_RE.match(spec.user):
            raise InvalidRequest(f"user {spec.user!r} is invalid; use letters, digits, '.', '_' or '-'")

    @staticmethod
    def _expand_tpu(spec: JobSpec) -> JobSpec:
        """A multi-host TPU type runs one task per host, together on one slice (``tpu-name``)."""
        device = spec.resources.device
        if device.kind != "tpu" or not device.variant:
            return spec
        from iris.cluster.tpu import tpu_topology

        topology = tpu_topology(device.variant)
        if topology.hosts == 1:
            return spec
        if spec.replicas not in (1, topology.hosts):
            raise InvalidRequest(
                f"replicas: {device.variant} has {topology.hosts} hosts and runs one task per host; "
                f"use replicas {topology.hosts} (or leave it at 1), not {spec.replicas}"
            )
        return attrs.evolve(spec, replicas=topology.hosts, coschedule_by=spec.coschedule_by or "tpu-name")

    def launch_job(self, spec: JobSpec) -> str:
        self._validate(spec)
        spec = self._expand_tpu(spec)
        with self._lock:
            if spec.parent_job_id:
                parent = self._jobs.get(spec.parent_job_id)
                if parent is None:
                    raise InvalidRequest(f"parent job {spec.parent_job_id!r} not found")
                if parent.state.is_terminal:
                    raise InvalidRequest(f"parent job {parent.job_id} is {parent.state.value}; it cannot start children")
                job_id = f"{parent.job_id}/{spec.name}"
                # children inherit the parent's bundle and environment (their own values win)
                env = {**parent.spec.environment.env, **spec.environment.env}
                spec = attrs.evolve(
                    spec,
                    bundle_id=spec.bundle_id or parent.spec.bundle_id,
                    environment=attrs.evolve(spec.environment, env=env),
                    user=spec.user or parent.spec.user,
                )
            else:
                parent = None
                job_id = f"/{spec.user}/{spec.name}" if spec.user else f"/{spec.name}"
            if job_id in self._jobs:
                existing = self._jobs[job_id]
                raise AlreadyExists(f"job {job_id} already exists (state {existing.state.value}); choose another job name")
            now = self._clock()
            job = Job(job_id=job_id, spec=spec, submitted_at=now)
            job.tasks = [Task(job_id=job_id, index=i, pending_since=now) for i in range(spec.replicas)]
            self._jobs[job_id] = job
            if parent is not None:
                parent.children.append(job_id)
            for task in job.tasks:
                self._pending[task.task_id] = task
            self._touch(job)
            if parent is not None:
                self._touch(parent)
            self._schedule_locked()
            self._commit_locked()
            self._changed.notify_all()
        logger.info("launched job %s with %d task(s)", job_id, spec.replicas)
        return job_id

    def _resolve_locked(self, job_id: str) -> Job:
        job = self._jobs.get(job_id) or self._jobs.get(f"/{job_id}")
        if job is not None:
            return job
        if job_id and not job_id.startswith("/"):
            matches = [j for j in self._jobs.values() if j.job_id.endswith(f"/{job_id}")]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                names = ", ".join(sorted(j.job_id for j in matches)[:5])
                raise InvalidRequest(f"job {job_id!r} is ambiguous: {names}; give the full id")
        raise JobNotFound(f"job {job_id!r} not found")

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            return self._resolve_locked(job_id)

    def list_jobs(self, states: Iterable[JobState] = (), prefix: str = "") -> list[Job]:
        wanted = set(states)
        with self._lock:
            jobs = [
                j
                for j in self._jobs.values()
                if (not wanted or j.state in wanted) and j.job_id.startswith(prefix)
            ]
            return sorted(jobs, key=lambda j: j.submitted_at)

    def wait_job(self, job_id: str, timeout: float, active: Callable[[], bool] = lambda: True) -> Job:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            job = self._resolve_locked(job_id)
            while not job.state.is_terminal and self._wait_locked(deadline, active):
                pass
            return job

    def kill_job(self, job_id: str, *, keep_children: bool = False) -> Job:
        with self._lock:
            job = self._resolve_locked(job_id)
            self._kill_locked(job, "killed by user", keep_children=keep_children)
            self._commit_locked()
            self._changed.notify_all()
            return job

    def _kill_locked(self, job: Job, reason: str, *, keep_children: bool = False) -> None:
        if not keep_children:
            for child_id in job.children:
                self._kill_locked(self._jobs[child_id], f"parent job {job.job_id} was killed")
        if job.state.is_terminal:
            return
        job.kill_requested = True
        job.keep_children = keep_children
        job.error = job.error or reason
        for task in job.tasks:
            if not task.state.is_terminal:
                self._stop_task_locked(task, TaskState.KILLED, reason)
        self._update_job_locked(job)

    def job_exit_code(self, job: Job) -> int:
        with self._lock:
            return job_exit_code(job.state, (t.exit_code for t in job.tasks))

    def descendants(self, job: Job) -> list[Job]:
        with self._lock:
            out: list[Job] = []
            stack = list(reversed(job.children))
            while stack:
                child = self._jobs[stack.pop()]
                out.append(child)
                stack.extend(reversed(child.children))
            return out

    # --- endpoints ----------------------------------------------------------------------

    def register_endpoint(self, endpoint: Endpoint) -> None:
        if not endpoint.name or not endpoint.address:
            raise InvalidRequest("endpoint: name and address are required")
        with self._lock:
            job = self._resolve_locked(endpoint.job_id)
            if job.state.is_terminal:
                raise InvalidRequest(f"job {job.job_id} is {job.state.value}; it cannot register endpoints")
            endpoint = attrs.evolve(endpoint, job_id=job.job_id)
            entries = [e for e in self._endpoints.get(endpoint.name, []) if (e.job_id, e.task_index) != (job.job_id, endpoint.task_index)]
            entries.append(endpoint)
            self._endpoints[endpoint.name] = entries
            self._endpoints_dirty = True
            self._commit_locked()

    def lookup_endpoint(self, name: str) -> list[Endpoint]:
        with self._lock:
            return list(self._endpoints.get(name, []))

    def _drop_endpoints_locked(self, job: Job) -> None:
        self._endpoints_dirty = True
        for name in list(self._endpoints):
            kept = [e for e in self._endpoints[name] if e.job_id != job.job_id]
            if kept:
                self._endpoints[name] = kept
            else:
                del self._endpoints[name]

    # --- logs ---------------------------------------------------------------------------

    def get_logs(
        self,
        job_id: str,
        cursor: str,
        max_lines: int = 0,
        wait: float = 0.0,
        active: Callable[[], bool] = lambda: True,
        *,
        include_children: bool = False,
        since: float = 0.0,
        tail: int = 0,
    ) -> tuple[list[tuple[str, LogLine]], str, bool]:
        """Lines after ``cursor`` (of the job, and its descendants if asked), the new cursor, and
        whether every job read is over and all its lines returned."""
        positions = decode_cursor(cursor)
        limit = min(max_lines or MAX_LOG_LINES_PER_READ, MAX_LOG_LINES_PER_READ)
        deadline = time.monotonic() + max(0.0, wait)
        with self._lock:
            root = self._resolve_locked(job_id)
            while True:
                jobs = [root, *self.descendants(root)] if include_children else [root]
                if not cursor and tail > 0:
                    self._apply_tail(jobs, positions, tail)
                    cursor = "tail-applied"
                pending = [(j, positions.get(j.job_id, 0)) for j in jobs if positions.get(j.job_id, 0) < len(j.logs)]
                if pending or all(j.state.is_terminal for j in jobs) or not self._wait_locked(deadline, active):
                    break
            merged: list[tuple[float, int, int, Job, LogLine]] = []
            for order, (job, start) in enumerate(pending):
                for index in range(start, min(len(job.logs), start + limit)):
                    line = job.logs[index]
                    merged.append((line.timestamp, order, index, job, line))
            merged.sort(key=lambda m: (m[0], m[1], m[2]))
            taken = merged[:limit]
            out: list[tuple[str, LogLine]] = []
            for _, _, index, job, line in taken:
                positions[job.job_id] = index + 1
                if line.timestamp >= since:
                    out.append((job.job_id, line))
            finished = all(j.state.is_terminal and positions.get(j.job_id, 0) >= len(j.logs) for j in jobs)
            return out, encode_cursor(positions), finished

    @staticmethod
    def _apply_tail(jobs: list[Job], positions: dict[str, int], tail: int) -> None:
        candidates = []
        for job in jobs:
            for index in range(max(0, len(job.logs) - tail), len(job.logs)):
                candidates.append((job.logs[index].timestamp, job.job_id, index))
        candidates.sort()
        kept = candidates[-tail:]
        for job in jobs:
            indices = [i for _, jid, i in kept if jid == job.job_id]
            positions[job.job_id] = min(indices) if indices else len(job.logs)

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
                    version=(worker.version + 1) if worker else fresh_version(),
                )
                self._workers[identity.worker_id] = worker
                self._touched_workers.add(worker.worker_id)
                logger.info(
                    "worker %s registered (%s cpu, %s)", worker.worker_id, worker.cpu, format_memory(worker.memory_bytes)
                )
                self._schedule_locked()
            worker.last_seen = now
            if worker.awaiting_reconnect:  # back after a controller restart: schedulable again
                worker.awaiting_reconnect = False
                self._schedule_locked()
            acks, news = self._apply_observed_locked(worker, observed)
            if news:
                self._schedule_locked()
            self._commit_locked()  # what the acks below promise is on disk
            if news:
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
                acks.append(
                    AttemptAck(obs.task_id, obs.attempt_id, obs.log_offset + len(obs.log_data), obs.state.is_terminal)
                )
                continue
            task, attempt = entry
            job = self._jobs[task.job_id]
            if not attempt.observed or (obs.ports and attempt.ports != obs.ports):
                attempt.observed = True
                attempt.ports = dict(obs.ports) if obs.ports else attempt.ports
                self._touch(job)
            if obs.log_data:
                self._touch(job)
                if self._append_log_locked(task, attempt, obs):
                    news = True
            if obs.state is not attempt.state and not attempt.started_at and obs.state is not TaskState.BUILDING:
                attempt.started_at = now  # first seen running (or already ended: a short task)
                job.started_at = job.started_at or now
            log_received = attempt.log_offset >= obs.log_offset + len(obs.log_data)
            if not attempt.state.is_terminal:
                if obs.state in (TaskState.BUILDING, TaskState.RUNNING) and attempt.state != obs.state:
                    attempt.state = obs.state
                    if obs.state is TaskState.RUNNING and not attempt.started_at:
                        attempt.started_at = now
                    if not task.state.is_terminal and task.current is attempt and not attempt.stop_requested:
                        task.state = obs.state
                        task.pending_reason = ""
                    self._update_job_locked(self._jobs[task.job_id])
                    news = True
                elif obs.state.is_terminal and obs.log_complete and log_received:
                    self._finish_attempt_locked(worker, task, attempt, obs, now)
                    news = True
            if attempt.state.is_terminal and obs.log_complete and log_received:
                if not attempt.done:
                    self._flush_partial_locked(task, attempt)
                    attempt.done = True
                    self._touch(job)
                    news = True
                worker.attempts.pop(key, None)
            acks.append(AttemptAck(obs.task_id, obs.attempt_id, attempt.log_offset, attempt.done))
        # Attempts the worker had acknowledged but no longer reports were lost with its state.
        for key, (task, attempt) in list(worker.attempts.items()):
            if key in reported or not attempt.observed:
                continue
            worker.attempts.pop(key)
            self._touch(self._jobs[task.job_id])
            if not attempt.state.is_terminal:
                lost = ObservedAttempt(key[0], key[1], TaskState.WORKER_FAILED, error="the worker lost this attempt")
                self._finish_attempt_locked(worker, task, attempt, lost, now)
                news = True
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
            index, attempt_id = task.index, attempt.attempt_id
            job.logs.extend(LogLine(index, attempt_id, now, line.decode("utf-8", "replace")) for line in complete)
            return True
        return False

    def _flush_partial_locked(self, task: Task, attempt: Attempt) -> None:
        if attempt.log_partial:
            job = self._jobs[task.job_id]
            job.logs.append(
                LogLine(task.index, attempt.attempt_id, self._clock(), attempt.log_partial.decode("utf-8", "replace"))
            )
            attempt.log_partial = b""

    def _release_locked(self, worker: WorkerRecord, task: Task) -> None:
        resources = self._jobs[task.job_id].spec.resources
        worker.used_cpu = max(0.0, worker.used_cpu - resources.cpu)
        worker.used_memory = max(0, worker.used_memory - resources.memory)

    def _finish_attempt_locked(
        self, worker: WorkerRecord, task: Task, attempt: Attempt, obs: ObservedAttempt, now: float
    ) -> None:
        self._touch(self._jobs[task.job_id])
        attempt.state = obs.state
        attempt.exit_code = obs.exit_code
        attempt.oom = obs.oom
        attempt.error = obs.error or ("out of memory: killed for exceeding its memory limit" if obs.oom else "")
        attempt.finished_at = now
        if not worker.lost:
            self._release_locked(worker, task)
        job = self._jobs[task.job_id]
        if attempt.stop_requested or task.state.is_terminal or task.current is not attempt:
            # the controller already decided this task's fate (killed, timed out, gang restart)
            self._update_job_locked(job)
            return
        outcome = task_after_attempt(
            obs.state,
            failures=task.failures,
            preemptions=task.preemptions,
            max_retries=job.spec.max_retries,
            max_preemptions=job.spec.max_preemptions or DEFAULT_MAX_PREEMPTIONS,
        )
        task.failures, task.preemptions = outcome.failures, outcome.preemptions
        task.exit_code = obs.exit_code
        task.error = attempt.error
        if outcome.retry and not job.kill_requested:
            self._requeue_locked(task, f"retrying after attempt {attempt.attempt_id} ended {obs.state.value}")
            if job.is_gang:
                # a gang runs together: restart every sibling with it (their budgets untouched)
                for sibling in job.tasks:
                    if sibling is not task and not sibling.state.is_terminal:
                        self._stop_current_attempt_locked(sibling)
                        self._requeue_locked(sibling, f"restarting with gang peer task {task.index}")
        else:
            task.state = outcome.state
        self._update_job_locked(job)

    def _requeue_locked(self, task: Task, reason: str) -> None:
        self._touch(self._jobs[task.job_id])
        task.state = TaskState.PENDING
        task.pending_reason = reason
        task.pending_since = self._clock()
        self._pending[task.task_id] = task

    def _stop_current_attempt_locked(self, task: Task) -> None:
        attempt = task.current
        if attempt is not None and not attempt.state.is_terminal and not attempt.stop_requested:
            attempt.stop_requested = True
            worker = self._workers.get(attempt.worker_id)
            if worker is not None:
                worker.version += 1

    def _stop_task_locked(self, task: Task, state: TaskState, reason: str) -> None:
        """Mark a task terminal now and ask its worker to stop the running attempt."""
        self._touch(self._jobs[task.job_id])
        task.state = state
        task.error = task.error or reason
        task.pending_reason = ""
        self._pending.pop(task.task_id, None)
        self._stop_current_attempt_locked(task)

    def _update_job_locked(self, job: Job) -> None:
        self._touch(job)
        if job.state.is_terminal:
            return
        max_failures = 0 if job.is_gang else job.spec.max_task_failures
        state = derive_job_state((t.state for t in job.tasks), killed=job.kill_requested, max_task_failures=max_failures)
        if state is JobState.RUNNING and not job.started_at:
            job.started_at = self._clock()
        if state.is_terminal:
            job.finished_at = self._clock()
            failed = next((t for t in job.tasks if t.state.is_terminal and t.state is not TaskState.SUCCEEDED), None)
            if failed is not None and not job.error:
                job.error = f"task {failed.index}: {failed.error or failed.state.value}"
            job.state = state
            for task in job.tasks:  # the job is over: stop what still runs
                if not task.state.is_terminal:
                    self._stop_task_locked(task, TaskState.KILLED, f"job {state.value}")
            if not job.keep_children:
                for child_id in job.children:
                    self._kill_locked(self._jobs[child_id], f"parent job {job.job_id} ended {state.value}")
            self._drop_endpoints_locked(job)
            logger.info("job %s %s", job.job_id, state.value)
        job.state = state

    # --- scheduling ---------------------------------------------------------------------

    _placement: PlacementIndex | None = None  # made by the first pass, kept between passes

    def _schedule_locked(self) -> None:
        """Place pending tasks in submission order: first fit, or a whole gang at once.

        A task that cannot be placed does not hold back later ones. The placement index
        (placement.py) remembers between passes which tasks wait and why, so a pass looks only
        at the tasks and gangs whose chances changed; the outcome is that of trying them all.
        """
        if not self._pending:
            return
        index = self._placement
        if index is None:
            index = self._placement = PlacementIndex(self._pending_reason)
        index.sync(list(self._workers.values()), len(self._pending))
        new: list[tuple[Task, Shape | None]] = []  # (task, its shape; None in a gang)
        for task in index.discover(self._pending):
            job = self._jobs[task.job_id]
            if job.kill_requested or job.state.is_terminal:
                self._pending.pop(task.task_id, None)
                index.forget(task.task_id)
                continue
            new.append((task, index.enqueue(task, job)))
        if not index.workers:
            for task, shape in new:
                task.pending_reason = NO_WORKERS if shape is None else index.reason(shape)
            index.settle()
            return
        for item in index.in_order():
            if isinstance(item, Gang):
                self._schedule_gang_locked(item, index)
            else:
                self._schedule_shape_locked(item, index)
        for task, shape in new:  # new tasks behind one that found no room wait for the same reason
            if shape is not None and task.task_id in self._pending:
                task.pending_reason = index.reason(shape)
        index.settle()

    def _schedule_shape_locked(self, shape: Shape, index: PlacementIndex) -> None:
        """Try the first waiting task of ``shape``; it leaves the queue if placed (or gone)."""
        _, task = shape.waiting[0]
        job = self._jobs[task.job_id]
        if task.task_id in self._pending and not (job.kill_requested or job.state.is_terminal):
            worker = index.first_fit(shape)
            if worker is None:
                task.pending_reason = index.reason(shape)
                return
            self._assign_locked(task, worker)
            index.placed_on(worker)
        shape.waiting.popleft()
        self._pending.pop(task.task_id, None)
        index.forget(task.task_id)

    def _schedule_gang_locked(self, gang: Gang, index: PlacementIndex) -> None:
        """Evaluate a gang at its turn: all its pending tasks leave the queue together, or none."""
        job = gang.job
        members = [t for t in job.tasks if t.task_id in self._pending]
        if job.kill_requested or job.state.is_terminal or not members:
            placed = True
        else:
            gang.stamp, gang.dirty = gang.cls.stamp, False
            if len(members) + sum(1 for t in job.tasks if t.state.is_terminal) < len(job.tasks):
                for t in members:
                    t.pending_reason = "waiting for gang peers to stop before restarting together"
                gang.dirty = True  # peers stopping is not something the index watches: look again next pass
                return
            placed = self._place_gang_locked(job, members, index)
        if placed:
            for t in members:
                self._pending.pop(t.task_id, None)
                index.forget(t.task_id)
            index.drop_gang(gang)

    def _place_gang_locked(self, job: Job, members: list[Task], index: PlacementIndex) -> bool:
        """Place every member on distinct workers sharing the ``coschedule_by`` attribute, or none."""
        key = job.spec.coschedule_by
        resources = job.spec.resources
        groups = index.gang_groups(index.worker_class(job.spec), key)
        best = 0
        for _, group in groups:
            free = [w for w in group if w.fits(resources)]
            best = max(best, len(free))
            if len(free) >= len(members):
                for task, worker in zip(members, sorted(free, key=lambda w: w.worker_id)):
                    self._assign_locked(task, worker)
                    index.placed_on(worker)
                return True
        if not groups:
            reason = self._pending_reason(job.spec, index.workers, [], gang_key=key)
        else:
            largest = max(len(g) for _, g in groups)
            if largest < len(members):
                reason = (
                    f"waiting for gang peers: needs {len(members)} workers sharing {key}, "
                    f"the largest such group has {largest}"
                )
            else:
                reason = (
                    f"waiting for gang peers: needs {len(members)} workers sharing {key} with room, "
                    f"at most {best} free together"
                )
        for task in members:
            task.pending_reason = reason
        return False

    def _assign_locked(self, task: Task, worker: WorkerRecord) -> None:
        job = self._jobs[task.job_id]
        self._touch(job)
        attempt = Attempt(attempt_id=len(task.attempts), worker_id=worker.worker_id)
        task.attempts.append(attempt)
        task.state = TaskState.ASSIGNED
        task.pending_reason = ""
        worker.used_cpu += job.spec.resources.cpu
        worker.used_memory += job.spec.resources.memory
        worker.attempts[(task.task_id, attempt.attempt_id)] = (task, attempt)
        worker.version += 1
        if not (job.state is JobState.RUNNING and job.started_at):  # else it stays RUNNING: skip O(tasks)
            self._update_job_locked(job)

    def _pending_reason(
        self, spec: JobSpec, workers: list[WorkerRecord], candidates: list[WorkerRecord], gang_key: str = ""
    ) -> str:
        resources = spec.resources
        if not any(w.has_device(resources) for w in workers):
            wanted = " ".join(filter(None, (resources.device.kind, resources.device.variant)))
            return f"no worker has device {wanted}"
        for constraint in spec.constraints:
            if not any(constraint.matches(w.attributes) for w in workers):
                return f"constraint {constraint.describe()} matches no worker"
        if not candidates:
            return "no worker satisfies all constraints together: " + ", ".join(c.describe() for c in spec.constraints)
        if gang_key:
            return f"no worker matching the request has the attribute {gang_key} to schedule the gang by"
        most_cpu = max(w.cpu for w in candidates)
        most_memory = max(w.memory_bytes for w in candidates)
        if resources.memory > most_memory:
            return (
                f"no worker has enough memory: needs {format_memory(resources.memory)}, "
                f"largest worker has {format_memory(most_memory)}"
            )
        if resources.cpu > most_cpu:
            return f"no worker has enough cpu: needs {resources.cpu:g}, largest worker has {most_cpu:g}"
        return ALL_BUSY

    # --- autoscaler inputs ----------------------------------------------------------------

    _CAPACITY_REASONS = (
        "no workers registered yet",
        "no worker has device",
        "no worker has enough",
        "waiting for a worker with free capacity",
        "waiting for gang peers",
        "waiting for the autoscaler",
    )

    def unmet_demand(self) -> list[Demand]:
        """One Demand per job with tasks waiting for capacity (for the autoscaler)."""
        with self._lock:
            pending_by_job: dict[str, int] = {}
            for task in self._pending.values():
                if task.pending_reason.startswith(self._CAPACITY_REASONS):
                    pending_by_job[task.job_id] = pending_by_job.get(task.job_id, 0) + 1
            demand = []
            for job_id, count in pending_by_job.items():
                job = self._jobs[job_id]
                if job.kill_requested or job.state.is_terminal:
                    continue
                spec = job.spec
                demand.append(
                    Demand(
                        key=job_id,
                        tasks=count,
                        cpu=spec.resources.cpu,
                        memory_bytes=spec.resources.memory,
                        device=spec.resources.device.kind or "cpu",
                        variant=spec.resources.device.variant,
                        gang=job.is_gang,
                        constraints=spec.constraints,
                    )
                )
            return demand

    def busy_slices(self) -> set[str]:
        """Slices whose workers hold any attempt (not idle)."""
        with self._lock:
            return {w.slice_id for w in self._workers.values() if w.attempts and not w.lost}

    # reasons the autoscaler's word may replace; a specific one ("no worker has enough memory:
    # needs 64GB, largest worker has 16GB") says more than "scale group X is AT_MAX"
    _GENERIC_REASONS = (
        "no workers registered yet",
        "no worker has device",
        "waiting for a worker with free capacity",
        "waiting for gang peers",
        "waiting for the autoscaler",
    )

    def annotate_pending(self, reasons: dict[str, str]) -> None:
        """Tell waiting tasks what the autoscaler is doing for their job (job id -> reason)."""
        with self._lock:
            for task in self._pending.values():
                reason = reasons.get(task.job_id)
                if reason and task.pending_reason.startswith(self._GENERIC_REASONS):
                    task.pending_reason = reason

    def lose_slice(self, slice_id: str) -> None:
        """The provider is deleting this slice: its workers are gone now, not after a timeout."""
        with self._lock:
            for worker in self._workers.values():
                if worker.slice_id == slice_id and not worker.lost:
                    self._lose_worker_locked(worker, self._clock())
            self._schedule_locked()
            self._commit_locked()
            self._changed.notify_all()

    # --- periodic -----------------------------------------------------------------------

    def tick(self) -> None:
        """Enforce run and scheduling timeouts, mark silent workers lost. Called about every half second."""
        with self._lock:
            now = self._clock()
            changed = False
            for job in list(self._jobs.values()):
                if job.state.is_terminal:
                    continue
                spec = job.spec
                if spec.timeout_seconds and job.started_at and now - job.started_at > spec.timeout_seconds:
                    reason = f"timed out after {spec.timeout_seconds:g}s"
                    job.error = reason
                    for task in job.tasks:
                        if not task.state.is_terminal:
                            self._stop_task_locked(task, TaskState.FAILED, reason)
                    self._update_job_locked(job)
                    changed = True
                    continue
                if spec.scheduling_timeout_seconds:
                    for task in job.tasks:
                        if (
                            task.state is TaskState.PENDING
                            and task.task_id in self._pending
                            and now - task.pending_since > spec.scheduling_timeout_seconds
                        ):
                            reason = f"not scheduled within {spec.scheduling_timeout_seconds:g}s: {task.pending_reason}"
                            self._stop_task_locked(task, TaskState.UNSCHEDULABLE, reason)
                            job.error = job.error or f"task {task.index}: {reason}"
                            changed = True
                    if changed:
                        self._update_job_locked(job)
            for worker in self._workers.values():
                if not worker.lost and now - worker.last_seen > self._worker_timeout:
                    self._lose_worker_locked(worker, now)
                    changed = True
            if changed:
                self._schedule_locked()
            self._commit_locked()
            if changed:
                self._changed.notify_all()

    def _lose_worker_locked(self, worker: WorkerRecord, now: float) -> None:
        logger.warning("worker %s lost: no reconcile for %.0fs", worker.worker_id, now - worker.last_seen)
        worker.lost = True
        self._touched_workers.add(worker.worker_id)
        worker.version += 1
        for key, (task, attempt) in list(worker.attempts.items()):
            worker.attempts.pop(key)
            if not attempt.state.is_terminal:
                lost = ObservedAttempt(key[0], key[1], TaskState.WORKER_FAILED, error=f"worker {worker.worker_id} lost")
                self._finish_attempt_locked(worker, task, attempt, lost, now)
        worker.used_cpu = worker.used_memory = 0

    def mark_worker_lost(self, worker_id: str) -> None:
        """Treat a worker as gone now (its VM was deleted); its attempts are retried elsewhere."""
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is not None and not worker.lost:
                self._lose_worker_locked(worker, self._clock())
                self._schedule_locked()
                self._commit_locked()
                self._changed.notify_all()

