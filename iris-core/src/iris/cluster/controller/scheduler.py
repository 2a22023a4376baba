"""The scheduler: places pending tasks on workers, says why the others wait, and what they need.

A pass takes pending tasks in submission order: first fit for a single task, all-or-nothing for
a gang. The placement index (placement.py) keeps between passes which tasks wait and why, so a
pass costs what changed. Tasks that stay unplaced become :class:`~iris.cluster.demand.Demand`
for the autoscaler, read from their typed :class:`~.placement.Wait`, never from text. A task that
no current worker could ever take (a static wait) and that the capacity oracle (the autoscaler's
feasibility check) says no scale group could serve either ends UNSCHEDULABLE at once.
"""

from __future__ import annotations

from collections.abc import Callable

from iris.cluster.controller import transitions
from iris.cluster.controller.placement import (
    WAIT_BUSY,
    WAIT_NO_WORKERS,
    Gang,
    PlacementIndex,
    Shape,
    Wait,
    WaitKind,
)
from iris.cluster.controller.jobs import Jobs
from iris.cluster.controller.state import ClusterState, Job, JobSpec, Task, WorkerRecord
from iris.cluster.demand import Demand
from iris.cluster.types import TaskState, format_memory

#: the autoscaler's verdict on a demand: None if some scale group could ever serve it, else why not
CapacityOracle = Callable[[Demand], "str | None"]

PEERS_STOPPING = Wait(WaitKind.GANG_PEERS_STOPPING, "waiting for gang peers to stop before restarting together")

# waits whose text the autoscaler's word replaces: a precise one ("no worker has enough memory:
# needs 64GB, largest worker has 16GB") says more than "scale group X is AT_MAX"
_ANNOTATABLE = frozenset(
    {WaitKind.NO_WORKERS, WaitKind.NO_DEVICE, WaitKind.CONSTRAINT, WaitKind.CONSTRAINTS_TOGETHER,
     WaitKind.BUSY, WaitKind.GANG_TOO_SMALL, WaitKind.GANG_BUSY}
)


def demand_for(job: Job, tasks: int) -> Demand:
    spec = job.spec
    device = spec.resources.device
    return Demand(
        key=job.job_id,
        tasks=tasks,
        cpu=spec.resources.cpu,
        memory_bytes=spec.resources.memory,
        device=device.kind or "cpu",
        variant=device.variant,
        gang=job.is_gang,
        constraints=tuple(spec.constraints),
    )


def wait_reason(spec: JobSpec, workers: list[WorkerRecord], candidates: list[WorkerRecord], gang_key: str = "") -> Wait:
    """Why a task of ``spec`` cannot be placed on ``workers`` (``candidates``: those eligible)."""
    if not workers:
        return WAIT_NO_WORKERS
    resources = spec.resources
    if not any(w.has_device(resources) for w in workers):
        wanted = " ".join(filter(None, (resources.device.kind, resources.device.variant)))
        return Wait(WaitKind.NO_DEVICE, f"no worker has device {wanted}")
    for constraint in spec.constraints:
        if not any(constraint.matches(w.attributes) for w in workers):
            return Wait(WaitKind.CONSTRAINT, f"constraint {constraint.describe()} matches no worker")
    if not candidates:
        return Wait(
            WaitKind.CONSTRAINTS_TOGETHER,
            "no worker satisfies all constraints together: " + ", ".join(c.describe() for c in spec.constraints),
        )
    if gang_key:
        return Wait(WaitKind.NO_GANG_KEY, f"no worker matching the request has the attribute {gang_key} to schedule the gang by")
    most_cpu = max(w.cpu for w in candidates)
    most_memory = max(w.memory_bytes for w in candidates)
    if resources.memory > most_memory:
        return Wait(
            WaitKind.TOO_BIG,
            f"no worker has enough memory: needs {format_memory(resources.memory)}, "
            f"largest worker has {format_memory(most_memory)}",
        )
    if resources.cpu > most_cpu + 1e-9:
        return Wait(WaitKind.TOO_BIG, f"no worker has enough cpu: needs {resources.cpu:g}, largest worker has {most_cpu:g}")
    return WAIT_BUSY


class Scheduler:
    """Placement passes over the shared state (called with the controller's lock held)."""

    def __init__(self, state: ClusterState, jobs: Jobs, clock: Callable[[], float]):
        self._state = state
        self._jobs = jobs
        self._clock = clock
        self._index: PlacementIndex | None = None
        self.capacity: CapacityOracle | None = None
        self._verdicts: dict[tuple, str | None] = {}  # capacity verdicts memoized by demand shape

    def reset(self) -> None:
        """Forget the placement index (the worker set was rebuilt)."""
        self._index = None

    # --- a pass ---------------------------------------------------------------------------

    def schedule(self) -> None:
        """Place pending tasks in submission order: first fit, or a whole gang at once.

        A task that cannot be placed does not hold back later ones.
        """
        state = self._state
        if not state.pending:
            return
        index = self._index
        if index is None:
            index = self._index = PlacementIndex(wait_reason)
        index.sync(list(state.workers.values()), len(state.pending))
        new: list[tuple[Task, Shape | None]] = []  # (task, its shape; None in a gang)
        for task in index.discover(state.pending):
            job = state.jobs[task.job_id]
            if job.kill_requested or job.state.is_terminal or task.state is not TaskState.PENDING:
                state.pending.pop(task.task_id, None)
                index.forget(task.task_id)
                continue
            new.append((task, index.enqueue(task, job)))
        gangs: list[Gang] = []
        if index.workers:
            for item in index.in_order():
                if isinstance(item, Gang):
                    if not self._schedule_gang(item, index):
                        gangs.append(item)
                else:
                    self._schedule_shape(item, index)
        for task, shape in new:  # new tasks behind one that found no room wait for the same reason
            if shape is not None and task.task_id in state.pending:
                reason = index.reason(shape)
                task.wait, task.pending_reason = reason, reason.text
        if not index.workers:
            for task, shape in new:
                if shape is None:
                    task.wait, task.pending_reason = WAIT_NO_WORKERS, WAIT_NO_WORKERS.text
        index.settle()
        if self.capacity is not None:
            self._end_impossible([t for t, _ in new] + [t for g in gangs for t in g.job.tasks if t.task_id in state.pending])

    def _schedule_shape(self, shape: Shape, index: PlacementIndex) -> None:
        """Try the first waiting task of ``shape``; it leaves the queue if placed (or gone)."""
        state = self._state
        _, task = shape.waiting[0]
        job = state.jobs[task.job_id]
        if task.task_id in state.pending and task.state is TaskState.PENDING and not (job.kill_requested or job.state.is_terminal):
            worker = index.first_fit(shape)
            if worker is None:
                reason = index.reason(shape)
                task.wait, task.pending_reason = reason, reason.text
                return
            if task.avoid_worker and worker.worker_id == task.avoid_worker:
                # its last attempt failed there for the machine's reasons: elsewhere if anywhere has room
                worker = index.other_fit(shape, worker) or worker
            self._assign(job, task, worker)
            index.placed_on(worker)
        shape.waiting.popleft()
        state.pending.pop(task.task_id, None)
        index.forget(task.task_id)

    def _schedule_gang(self, gang: Gang, index: PlacementIndex) -> bool:
        """Evaluate a gang at its turn: all its pending tasks leave the queue together, or none.
        False if it still waits."""
        state = self._state
        job = gang.job
        members = [t for t in job.tasks if t.task_id in state.pending and t.state is TaskState.PENDING]
        if job.kill_requested or job.state.is_terminal or not members:
            placed = True
        else:
            gang.stamp, gang.dirty = gang.cls.stamp, False
            ended = sum(n for s, n in job.task_counts.items() if s.is_terminal)
            if len(members) + ended < len(job.tasks):
                for t in members:
                    t.wait, t.pending_reason = PEERS_STOPPING, PEERS_STOPPING.text
                gang.dirty = True  # peers stopping is not something the index watches: look again next pass
                return False
            placed = self._place_gang(job, members, index)
        if placed:
            for t in members:
                state.pending.pop(t.task_id, None)
                index.forget(t.task_id)
            index.drop_gang(gang)
        return placed

    def _place_gang(self, job: Job, members: list[Task], index: PlacementIndex) -> bool:
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
                    self._assign(job, task, worker)
                    index.placed_on(worker)
                return True
        if not groups:
            reason = wait_reason(job.spec, index.workers, [], gang_key=key)
        else:
            largest = max(len(g) for _, g in groups)
            if largest < len(members):
                reason = Wait(
                    WaitKind.GANG_TOO_SMALL,
                    f"waiting for gang peers: needs {len(members)} workers sharing {key}, the largest such group has {largest}",
                )
            else:
                reason = Wait(
                    WaitKind.GANG_BUSY,
                    f"waiting for gang peers: needs {len(members)} workers sharing {key} with room, at most {best} free together",
                )
        for task in members:
            task.wait, task.pending_reason = reason, reason.text
        return False

    def _assign(self, job: Job, task: Task, worker: WorkerRecord) -> None:
        changes = self._state.changes
        attempt = transitions.assign(job, task, worker.worker_id, changes)
        worker.used_cpu += job.spec.resources.cpu
        worker.used_memory += job.spec.resources.memory
        worker.attempts[(task.task_id, attempt.attempt_id)] = (task, attempt)
        changes.worker_desired(worker)
        if job.state is not transitions.JobState.RUNNING:  # else it stays RUNNING: skip the update
            transitions.update_job(job, self._clock(), changes)

    # --- impossible requests ----------------------------------------------------------------

    def _end_impossible(self, tasks: list[Task]) -> None:
        """End UNSCHEDULABLE the waiting tasks no worker can take and no scale group could serve."""
        state = self._state
        by_job: dict[str, dict[str, Task]] = {}
        for task in tasks:
            wait = task.wait
            if isinstance(wait, Wait) and wait.kind.static and task.task_id in state.pending:
                by_job.setdefault(task.job_id, {})[task.task_id] = task
        for job_id, found in by_job.items():
            waiting = list(found.values())
            job = state.jobs[job_id]
            demand = demand_for(job, len(waiting))
            shape = (demand.device, demand.variant, demand.gang, demand.tasks if demand.gang else 0, demand.cpu,
                     demand.memory_bytes, demand.constraints)
            if shape not in self._verdicts:
                assert self.capacity is not None
                self._verdicts[shape] = self.capacity(demand)
            verdict = self._verdicts[shape]
            if verdict is None:
                continue
            for task in waiting:
                reason = f"no worker or scale group can run it: {task.pending_reason}; {verdict}"
                job.error = job.error or f"task {task.index}: {reason}"
                self._jobs.stop_task(job, task, TaskState.UNSCHEDULABLE, reason)
                if self._index is not None:
                    self._index.forget(task.task_id)
            self._jobs.update(job)

    def forget_verdicts(self) -> None:
        """The scale groups changed: ask the oracle again."""
        self._verdicts.clear()

    # --- what the autoscaler reads and writes ---------------------------------------------

    def unmet_demand(self) -> list[Demand]:
        """One Demand per job with tasks waiting for a worker (any wait but peers stopping)."""
        state = self._state
        counts: dict[str, int] = {}
        for task in state.pending.values():
            if task.state is not TaskState.PENDING:
                continue
            wait = task.wait
            if isinstance(wait, Wait) and wait.kind is WaitKind.GANG_PEERS_STOPPING:
                continue
            counts[task.job_id] = counts.get(task.job_id, 0) + 1
        out = []
        for job_id, count in counts.items():
            job = state.jobs[job_id]
            if not (job.kill_requested or job.state.is_terminal):
                out.append(demand_for(job, count))
        return out

    def annotate(self, notes: dict[str, str]) -> None:
        """Tell waiting tasks what the autoscaler is doing for their job (job id -> sentence)."""
        for task in self._state.pending.values():
            note = notes.get(task.job_id)
            wait = task.wait
            if note and task.state is TaskState.PENDING and (wait is None or (isinstance(wait, Wait) and wait.kind in _ANNOTATABLE)):
                task.pending_reason = note

