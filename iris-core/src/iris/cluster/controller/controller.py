"""The controller facade: one lock over the rooms, one commit per operation, snapshots out.

The rooms do the work (see docs/architecture.md):

* :mod:`.jobs` admission, the job tree, kills, timeouts; :mod:`.scheduler` placement, demand
  and impossible requests (with :mod:`.placement`); :mod:`.workers` the reconcile protocol and
  liveness; :mod:`.logs`; :mod:`.endpoints`; :mod:`.store` persistence.
* :mod:`.transitions` is the only writer of job, task and attempt state.

Every public method takes the lock, calls the rooms, then commits: the changed rows are written
to the store before the method returns (so before anything is acknowledged), and the keys that
changed (job ids, ``worker:<id>``) are announced to waiters: to threads waiting on the
condition, and to listeners (the asyncio service) registered with :meth:`Controller.subscribe`.
Reads return immutable snapshots (:mod:`.snapshots`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from iris.cluster.controller import transitions
from iris.cluster.controller.endpoints import Endpoints
from iris.cluster.controller.jobs import AlreadyExists, InvalidRequest, Jobs
from iris.cluster.controller.logs import MAX_LOG_LINES_PER_READ, BadCursor, Logs, decode_cursor, encode_cursor
from iris.cluster.controller.scheduler import CapacityOracle, Scheduler
from iris.cluster.controller.snapshots import JobPage, JobView, WorkerView, job_summary, job_view, worker_view
from iris.cluster.controller.state import ClusterState, Endpoint, Job, JobSpec, LogLine
from iris.cluster.controller.store import Store
from iris.cluster.controller.workers import (
    AttemptAck,
    DesiredAttempt,
    ObservedAttempt,
    ReconcileResult,
    WorkerIdentity,
    Workers,
    fresh_version,
)
from iris.cluster.demand import Demand
from iris.job.records import BundleLimits, TaskResult
from iris.cluster.types import JobState, TaskState

logger = logging.getLogger(__name__)

Listener = Callable[[frozenset[str]], None]

#: how long log readers wait, after a job ended, for the last lines of its stopped tasks
FINAL_LINES_GRACE = 10.0

__all__ = [
    "AlreadyExists",
    "AttemptAck",
    "BadCursor",
    "Controller",
    "DesiredAttempt",
    "InvalidRequest",
    "MAX_LOG_LINES_PER_READ",
    "ObservedAttempt",
    "ReconcileResult",
    "WorkerIdentity",
    "fresh_version",
]


class Controller:
    """Job, task and worker state behind one lock (no sockets here)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        worker_timeout: float = 60.0,
        store: Store | None = None,
        bundle_limits: BundleLimits = BundleLimits(),
    ):
        """With a ``store``, the controller starts from the state saved there and writes every
        change through to it before acknowledging it. ``bundle_limits`` go to workers with every
        attempt: how much they may unpack from its bundle."""
        self._clock = clock
        self.bundle_limits = bundle_limits
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._listeners: list[Listener] = []
        self._shutdown = False
        self._store = store
        self._logs_saved: dict[str, int] = {}
        self.address = ""
        state = self._state = ClusterState()
        self._endpoints = Endpoints(state.changes)
        self._logs = Logs(clock)
        self._jobs = Jobs(state, self._endpoints, clock)
        self._workers = Workers(state, self._jobs, self._logs, clock, worker_timeout)
        self._jobs.stop_attempt = self._workers.stop_attempt
        self._scheduler = Scheduler(state, self._jobs, clock)
        if store is not None:
            self._load(store)

    # --- waiting and announcing -----------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(keys)`` after every commit that changed something (under the lock:
        it must only hand the keys on, e.g. with ``loop.call_soon_threadsafe``)."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def shutdown(self) -> None:
        """Release every long-poll at once (the server is stopping)."""
        with self._lock:
            self._shutdown = True
            self._changed.notify_all()
            for listener in self._listeners:
                listener(frozenset({"*"}))

    def _wait(self, deadline: float, active: Callable[[], bool]) -> bool:
        """Wait for a change until ``deadline``; False once the wait should end."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self._shutdown or not active():
            return False
        self._changed.wait(remaining)
        return True

    # --- persistence ----------------------------------------------------------------------

    def _load(self, store: Store) -> None:
        """Rebuild the working set from the store; workers get a fresh timeout to reconnect."""
        state = self._state
        now = self._clock()
        for doc in store.load_workers():
            self._workers.restore(doc, now)
        pending = []
        for job in store.load_jobs():
            if job.state.is_terminal:
                transitions.forget_counts(job)
            else:
                transitions.restore_counts(job)
            state.jobs[job.job_id] = job
            self._logs_saved[job.job_id] = len(job.logs)
            if not job.state.is_terminal:
                state.active[job.job_id] = job
            for task in job.tasks:
                if task.state is TaskState.PENDING and not job.state.is_terminal:
                    pending.append(task)
                for attempt in task.attempts:
                    worker = state.workers.get(attempt.worker_id)
                    if attempt.done or worker is None or worker.lost:
                        continue
                    worker.attempts[(task.task_id, attempt.attempt_id)] = (task, attempt)
                    if not attempt.state.is_terminal:
                        worker.used_cpu += job.spec.resources.cpu
                        worker.used_memory += job.spec.resources.memory
        for task in pending:
            task.pending_since = now
            state.pending[task.task_id] = task
        self._endpoints.load(store.load_endpoints())
        state.changes.clear()
        logger.info("loaded %d jobs and %d workers from %s", len(state.jobs), len(state.workers), store.path)

    def _commit(self) -> None:
        """Write what this operation changed in one transaction, then announce it."""
        changes = self._state.changes
        if not (changes.keys or changes.workers or changes.endpoints or changes.jobs or changes.tasks):
            return
        if self._store is not None:
            jobs = self._state.jobs
            logs: list[tuple[str, int, LogLine]] = []
            for key in changes.keys:
                job = jobs.get(key)
                if job is None:
                    continue
                start = self._logs_saved.get(key, 0)
                if start < len(job.logs):
                    lines = job.logs
                    logs.extend((key, i, lines[i]) for i in range(start, len(lines)))
                    self._logs_saved[key] = len(lines)
            self._store.write(
                changes.jobs, changes.tasks, logs, changes.workers, self._endpoints.all() if changes.endpoints else None
            )
        keys = frozenset(changes.keys)
        changes.clear()
        if keys:
            self._changed.notify_all()
            for listener in self._listeners:
                listener(keys)

    def record_bundle(self, bundle_id: str, size: int) -> None:
        if self._store is not None:
            with self._lock:
                self._store.add_bundle(bundle_id, size, self._clock())

    # --- jobs -------------------------------------------------------------------------------

    def launch_job(self, spec: JobSpec) -> str:
        with self._lock:
            try:
                job = self._jobs.launch(spec)
                self._scheduler.schedule()
            finally:
                self._commit()
        logger.info("launched job %s with %d task(s)", job.job_id, len(job.tasks))
        return job.job_id

    def get_job(self, job_id: str) -> JobView:
        with self._lock:
            return job_view(self._jobs.resolve(job_id))

    def get_job_page(self, job_id: str, task_offset: int = 0, task_limit: int = 0) -> tuple[JobView, dict[str, int]]:
        """The job with only tasks ``[task_offset, task_offset + task_limit)`` in its view (all
        with ``task_limit`` 0), and how many of all its tasks are in each state: a job of 10,000
        tasks can be shown a page at a time."""
        with self._lock:
            job = self._jobs.resolve(job_id)
            counts: dict[str, int] = {}
            for task in job.tasks:
                counts[task.state.value] = counts.get(task.state.value, 0) + 1
            end = task_offset + task_limit if task_limit > 0 else len(job.tasks)
            return job_view(job, job.tasks[max(0, task_offset) : end]), counts

    def job_state(self, job_id: str) -> tuple[str, JobState]:
        """The full id and state of a job (cheap: no snapshot of its tasks)."""
        with self._lock:
            job = self._jobs.resolve(job_id)
            return job.job_id, job.state

    def job_owner(self, job_id: str) -> tuple[str, str]:
        """The full id of a job and the user it runs as (cheap: what authorization needs)."""
        with self._lock:
            job = self._jobs.resolve(job_id)
            return job.job_id, job.spec.user

    def list_jobs(
        self, states: Iterable[JobState] = (), prefix: str = "", visible: Callable[[str, str], bool] | None = None
    ) -> list[JobView]:
        """Jobs in ``states`` (all if empty) whose id starts with ``prefix``; with ``visible``,
        only those for which ``visible(job_id, user)`` holds."""
        wanted = set(states)
        with self._lock:
            jobs = [
                j
                for j in self._state.jobs.values()
                if (not wanted or j.state in wanted)
                and j.job_id.startswith(prefix)
                and (visible is None or visible(j.job_id, j.spec.user))
            ]
            jobs.sort(key=lambda j: j.submitted_at)
            return [job_view(j) for j in jobs]

    def page_jobs(
        self, *, states: Iterable[JobState] = (), user: str = "", prefix: str = "", offset: int = 0, limit: int = 50
    ) -> JobPage:
        """One page of jobs, newest first, filtered by state, user and id prefix, as summaries (no
        task snapshots), with the total and the count of each state under the user/prefix filter.
        Cheap with many jobs: only the page's jobs are summarised."""
        wanted = set(states)
        with self._lock:
            matching = [j for j in self._state.jobs.values() if j.job_id.startswith(prefix) and (not user or j.spec.user == user)]
            counts: dict[str, int] = {}
            for job in matching:
                counts[job.state.value] = counts.get(job.state.value, 0) + 1
            if wanted:
                matching = [j for j in matching if j.state in wanted]
            if limit <= 0:  # only the counts
                return JobPage(len(matching), counts, ())
            matching.sort(key=lambda j: j.submitted_at, reverse=True)
            page = matching[max(0, offset) : max(0, offset) + limit]
            return JobPage(len(matching), counts, tuple(job_summary(j) for j in page))

    def wait_job(self, job_id: str, timeout: float, active: Callable[[], bool] = lambda: True) -> JobView:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            job = self._jobs.resolve(job_id)
            while not job.state.is_terminal and self._wait(deadline, active):
                pass
            return job_view(job)

    def kill_job(self, job_id: str, *, keep_children: bool = False, reason: str = "") -> JobView:
        """Kill the job (and, unless ``keep_children``, its children); ``reason`` is recorded as
        its error (default: killed by user)."""
        with self._lock:
            job = self._jobs.resolve(job_id)
            try:
                self._jobs.kill(job, reason[:1000] or "killed by user", keep_children=keep_children)
            finally:
                self._commit()
            return job_view(job)

    def task_results(self, job_id: str) -> list[TaskResult]:
        """What each task's Python callable returned or raised in its last attempt (tasks whose
        last attempt sent no outcome are left out)."""
        with self._lock:
            job = self._jobs.resolve(job_id)
            out = []
            for task in job.tasks:
                attempt = task.current
                if attempt is not None and attempt.state.is_terminal and (attempt.result or attempt.result_is_error):
                    out.append(TaskResult(task.index, attempt.attempt_id, attempt.result, attempt.result_is_error))
            return out

    # --- endpoints --------------------------------------------------------------------------

    def register_endpoint(self, endpoint: Endpoint) -> None:
        if not endpoint.name or not endpoint.address:
            raise InvalidRequest("endpoint: name and address are required")
        with self._lock:
            job = self._jobs.resolve(endpoint.job_id)
            if job.state.is_terminal:
                raise InvalidRequest(f"job {job.job_id} is {job.state.value}; it cannot register endpoints")
            self._endpoints.register(Endpoint(endpoint.name, endpoint.address, job.job_id, endpoint.task_index, endpoint.metadata))
            self._commit()

    def lookup_endpoint(self, name: str) -> list[Endpoint]:
        with self._lock:
            return self._endpoints.lookup(name)

    def list_endpoints(self) -> list[Endpoint]:
        with self._lock:
            return sorted(self._endpoints.all(), key=lambda e: (e.name, e.job_id, e.task_index))

    # --- logs -------------------------------------------------------------------------------

    def read_logs(
        self, job_id: str, cursor: str, max_lines: int = 0, *, include_children: bool = False, since: float = 0.0, tail: int = 0
    ) -> tuple[list[tuple[str, LogLine]], str, bool, frozenset[str]]:
        """Lines after ``cursor`` (of the job, and its descendants if asked), the new cursor,
        whether every job read is over and all its lines returned, and the keys (job ids) whose
        change may bring more. Never waits."""
        positions = decode_cursor(cursor)
        with self._lock:
            root = self._jobs.resolve(job_id)
            jobs = [root, *self._jobs.descendants(root)] if include_children else [root]
            if not cursor and tail > 0:
                self._logs.apply_tail(jobs, positions, tail)
            lines, finished = self._logs.read(jobs, positions, max_lines, since, self._final_lines_in)
            return lines, encode_cursor(positions), finished, frozenset(j.job_id for j in jobs)

    def _final_lines_in(self, job: Job) -> bool:
        """An ended job whose stopped tasks' workers have sent their last lines (what a task
        prints as it is killed comes after the job is KILLED), or gave up on them: the worker is
        lost, or ``FINAL_LINES_GRACE`` seconds passed since the job ended."""
        if self._clock() - job.finished_at > FINAL_LINES_GRACE:
            return True
        workers = self._state.workers
        for task in job.tasks:
            attempt = task.current
            if attempt is None or attempt.done or not attempt.observed:
                continue
            worker = workers.get(attempt.worker_id)
            if worker is not None and not worker.lost:
                return False
        return True

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
        """:meth:`read_logs`, waiting up to ``wait`` seconds for a line when there is none yet."""
        deadline = time.monotonic() + max(0.0, wait)
        with self._lock:
            while True:
                lines, new_cursor, finished, _ = self.read_logs(
                    job_id, cursor, max_lines, include_children=include_children, since=since, tail=tail
                )
                if lines or finished or not self._wait(deadline, active):
                    return lines, new_cursor, finished
                cursor = new_cursor  # a tail is applied once, to the first read

    # --- workers ------------------------------------------------------------------------------

    def list_workers(self) -> list[WorkerView]:
        with self._lock:
            return [worker_view(w) for w in self._state.workers.values()]

    def worker_attempts(self) -> dict[str, list[tuple[str, int, str]]]:
        """Worker id -> (task id, attempt id, state) of each attempt it holds and has not finished."""
        with self._lock:
            return {
                w.worker_id: sorted((task.task_id, attempt.attempt_id, attempt.state.value) for task, attempt in w.attempts.values())
                for w in self._state.workers.values()
            }

    def exchange(self, identity: WorkerIdentity, observed: list[ObservedAttempt]) -> tuple[int, list[AttemptAck], bool]:
        """The first half of a reconcile: record what the worker observes. Returns its desired
        set's version, the acks, and whether the worker waits for them (it sent log bytes or an
        ended attempt): then the answer goes back at once, else it may be held (long-poll).
        Never waits."""
        with self._lock:
            try:
                worker, schedule = self._workers.checkin(identity)
                acks, news = self._workers.apply_observed(worker, observed)
                if schedule or news:
                    self._scheduler.schedule()
            finally:
                self._commit()  # what the acks promise is on disk
            awaited = any(o.log_data or o.state.is_terminal for o in observed)
            return worker.version, acks, awaited

    def desired(self, worker_id: str, observed: Iterable[ObservedAttempt], acks: list[AttemptAck]) -> ReconcileResult:
        """The second half of a reconcile: the worker's desired set, now."""
        with self._lock:
            worker = self._state.workers[worker_id]
            keys = {(o.task_id, o.attempt_id) for o in observed}
            return ReconcileResult(worker.version, self._workers.desired(worker, keys), acks, self.bundle_limits)

    def worker_version(self, worker_id: str) -> tuple[int, bool]:
        """The worker's desired-set version and whether it is lost."""
        with self._lock:
            worker = self._state.workers[worker_id]
            return worker.version, worker.lost

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
            version, acks, awaited = self.exchange(identity, observed)
            if not awaited and known_version == version and wait > 0:
                deadline = time.monotonic() + wait
                worker = self._state.workers[identity.worker_id]
                while worker.version == known_version and not worker.lost and self._wait(deadline, active):
                    pass
            return self.desired(identity.worker_id, observed, acks)

    # --- the autoscaler's side ------------------------------------------------------------------

    def set_capacity(self, oracle: CapacityOracle | None) -> None:
        """What some scale group could serve (the autoscaler's feasibility check): with it, a
        task no worker and no group could ever take ends UNSCHEDULABLE at once."""
        with self._lock:
            self._scheduler.capacity = oracle
            self._scheduler.forget_verdicts()

    def unmet_demand(self) -> list[Demand]:
        with self._lock:
            return self._scheduler.unmet_demand()

    def busy_slices(self) -> set[str]:
        """Slices whose workers hold any attempt (not idle)."""
        with self._lock:
            return self._workers.busy_slices()

    def annotate_pending(self, notes: dict[str, str]) -> None:
        """Tell waiting tasks what the autoscaler is doing for their job (job id -> sentence)."""
        with self._lock:
            self._scheduler.annotate(notes)

    def lose_slice(self, slice_id: str) -> None:
        """The provider is deleting this slice: its workers are gone now, not after a timeout."""
        with self._lock:
            try:
                if self._workers.lose_slice(slice_id, self._clock()):
                    self._scheduler.schedule()
            finally:
                self._commit()

    def mark_worker_lost(self, worker_id: str) -> None:
        """Treat a worker as gone now (its VM was deleted); its attempts are retried elsewhere."""
        with self._lock:
            worker = self._state.workers.get(worker_id)
            if worker is None or worker.lost:
                return
            try:
                self._workers.lose(worker, self._clock(), "marked lost")
                self._scheduler.schedule()
            finally:
                self._commit()

    # --- periodic -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Enforce run and scheduling timeouts, retry backed-off tasks, mark silent workers lost.
        Called about every half second."""
        with self._lock:
            now = self._clock()
            try:
                changed = self._jobs.enforce_timeouts(now)
                changed = self._workers.release_delayed(now) or changed
                changed = self._workers.expire(now) or changed
                if changed:
                    self._scheduler.schedule()
            finally:
                self._commit()
