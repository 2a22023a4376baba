"""The scheduler's index: where pending tasks can go, and which of them may have become placeable.

Placement is first fit in worker order, tasks taken in submission order (see
:mod:`iris.cluster.controller.scheduler`). For a task that asks for no accelerator, workers
without one come first: a CPU-only task lands on a TPU or GPU host only when no other host has
room, so accelerator hosts stay free for the work that needs them. Two observations make that cheap on a large cluster:

* Tasks of the same *shape* (device, constraints, cpu, memory) have the same candidate workers
  and the same fit test. The index keeps, per shape, a cursor: every candidate before it had no
  room for that shape when last looked at. Free capacity only shrinks while the scheduler places
  tasks, so first fit resumes at the cursor instead of rescanning full workers, and a shape whose
  cursor has reached the end places nothing more (its tasks wait, with one reason for them all).
* The index outlives a pass. Each pass starts by comparing the workers with what it saw at the
  end of the last one (one sweep over the workers). Room that grew on a worker (an attempt
  ended; a worker restored from the database reconnected) moves back the cursors of the shapes
  that worker serves; workers that joined are appended to the candidate lists; a worker lost or
  replaced rebuilds the index. Tasks queued since the last pass are found at the end of the
  controller's pending queue (the controller only ever appends to it). A pass then looks only at
  shapes that may place something and at gangs whose candidates changed: a waiting task whose
  shape had no room and gained none keeps its reason untouched, so a pass costs what changed,
  not the length of the queue.

Pending reasons of single tasks depend only on the shape and the set of workers, not on free
capacity, so one string per shape serves all its waiting tasks; a gang's reason counts free
workers, so a gang is evaluated again whenever a candidate's free capacity changed.
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from operator import attrgetter

import attrs

from iris.cluster.controller.state import Job, JobSpec, Task, WorkerRecord
from iris.cluster.types import TaskState

NO_WORKERS = "no workers registered yet (waiting for workers to join)"
ALL_BUSY = "waiting for a worker with free capacity (all busy)"


class WaitKind(enum.Enum):
    """Why a task is not placed, as a structure the autoscaler and the UNSCHEDULABLE rule read."""

    NO_WORKERS = "no-workers"  # no live worker at all
    NO_DEVICE = "no-device"  # no worker has the device
    CONSTRAINT = "constraint"  # one constraint matches no worker
    CONSTRAINTS_TOGETHER = "constraints-together"  # each matches some worker, no worker matches all
    NO_GANG_KEY = "no-gang-key"  # no candidate has the attribute the gang is grouped by
    TOO_BIG = "too-big"  # larger (cpu or memory) than every candidate
    GANG_TOO_SMALL = "gang-too-small"  # no group of candidates is as large as the gang
    BUSY = "busy"  # a candidate could take it once capacity frees up
    GANG_BUSY = "gang-busy"  # a group is large enough but not free enough together
    GANG_PEERS_STOPPING = "gang-peers-stopping"  # a gang restarts once its running peers stop

    @property
    def static(self) -> bool:
        """No current worker could ever take the task, whatever finishes: only a new worker can."""
        return self in _STATIC


_STATIC = frozenset(
    {WaitKind.NO_WORKERS, WaitKind.NO_DEVICE, WaitKind.CONSTRAINT, WaitKind.CONSTRAINTS_TOGETHER,
     WaitKind.NO_GANG_KEY, WaitKind.TOO_BIG, WaitKind.GANG_TOO_SMALL}
)


@attrs.frozen
class Wait:
    """Why a task waits: the kind (read by code) and the sentence (read by people)."""

    kind: WaitKind
    text: str


WAIT_NO_WORKERS = Wait(WaitKind.NO_WORKERS, NO_WORKERS)
WAIT_BUSY = Wait(WaitKind.BUSY, ALL_BUSY)

ClassKey = tuple  # (device kind, device variant, constraints)
ShapeKey = tuple  # (ClassKey, cpu, memory)

# What decides whether a worker has room: a change outside the scheduler moves first fit back.
_USAGE = attrgetter("used_cpu", "used_memory", "lost", "awaiting_reconnect")

# The reason tasks of a spec wait: (spec, live workers, candidates) -> Wait.
ReasonFn = Callable[[JobSpec, list[WorkerRecord], list[WorkerRecord]], Wait]


def class_key(spec: JobSpec) -> ClassKey:
    device = spec.resources.device
    return (device.kind, device.variant, tuple(spec.constraints))


def eligible(worker: WorkerRecord, spec: JobSpec) -> bool:
    """The worker has the requested device and satisfies every constraint (capacity aside)."""
    return worker.has_device(spec.resources) and all(c.matches(worker.attributes) for c in spec.constraints)


@attrs.define(eq=False)
class WorkerClass:
    """The live workers eligible for one device-and-constraints combination, in worker order."""

    spec: JobSpec
    workers: list[WorkerRecord] = attrs.field(factory=list)
    shapes: list[Shape] = attrs.field(factory=list)
    stamp: int = 0  # bumped whenever free capacity changes on one of ``workers``
    # gang attribute -> [(value, workers having it)] sorted by value
    groups: dict[str, list[tuple[str, list[WorkerRecord]]]] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Shape:
    """Waiting tasks of one class and size, in submission order, and where first fit resumes."""

    spec: JobSpec  # of the first job seen with this shape: what the fit test and the reason use
    cls: WorkerClass
    cursor: int = 0  # every candidate before it has no room for this shape
    waiting: deque[tuple[int, Task]] = attrs.field(factory=deque)  # (sequence number, task)
    reason: Wait | None = None  # why its waiting tasks wait; None until needed


@attrs.define(eq=False)
class Gang:
    """A coscheduled job with pending tasks, evaluated whole, at its first pending task's turn."""

    job: Job
    seq: int
    cls: WorkerClass
    stamp: int = -1  # the class's stamp when last evaluated
    dirty: bool = True  # evaluate in the next pass regardless of the stamp


def _cpu_only(spec: JobSpec) -> bool:
    return spec.resources.device.kind in ("", "cpu")


def _insert(cls: WorkerClass, worker: WorkerRecord) -> int:
    """Add a joining worker to the class in worker order (for CPU-only work, hosts without an
    accelerator before those with one); returns its position."""
    workers = cls.workers
    if _cpu_only(cls.spec) and not worker.has_accelerator:
        position = len(workers)
        while position > 0 and workers[position - 1].has_accelerator:
            position -= 1
        workers.insert(position, worker)
        return position
    workers.append(worker)
    return len(workers) - 1


class PlacementIndex:
    """Candidates per class, first-fit cursors per shape, and the waiting tasks, across passes."""

    def __init__(self, reason: ReasonFn):
        self._reason = reason
        self._reset([], [])

    def _reset(self, seen: list[WorkerRecord], usage: list[tuple[float, int, bool, bool]]) -> None:
        self.workers: list[WorkerRecord] = [w for w in seen if not w.lost]  # live, in worker order
        self._seen = seen  # every worker record at the last look, lost ones too
        self._usage = usage  # their _USAGE then
        self._slot = {w: i for i, w in enumerate(seen)}
        self._classes: dict[ClassKey, WorkerClass] = {}
        self._classes_of: dict[WorkerRecord, list[WorkerClass]] = {}
        self._shapes: dict[ShapeKey, Shape] = {}
        self._gangs: OrderedDict[str, Gang] = OrderedDict()
        self._seq: dict[str, int] = {}  # task id -> sequence number, for every known pending task
        self._next_seq = 0
        self._ready: set[Shape] = set()  # shapes that may place something in this pass
        self._placed_on: set[WorkerRecord] = set()

    # --- keeping up with the workers ----------------------------------------------------

    def sync(self, workers: list[WorkerRecord], pending: int) -> None:
        """Compare ``workers`` (all records, in order) with the last look and update the index.

        ``pending`` is the queue length: an index holding many more tasks than that (ended while
        waiting) is rebuilt to let go of them.
        """
        usage = list(map(_USAGE, workers))
        n = len(self._seen)
        if (
            len(workers) < n
            or workers[:n] != self._seen  # identity: a record replaced (a lost worker came back)
            or len(self._seq) > 2 * pending + 1024
            or len(self._shapes) > 2 * pending + 1024
        ):
            self._reset(workers, usage)
            return
        if usage[:n] != self._usage:  # freed capacity (an attempt ended, a worker reconnected), or lost
            changed = [i for i in range(n) if usage[i] != self._usage[i]]
            if any(usage[i][2] != self._usage[i][2] for i in changed):  # a worker was lost
                self._reset(workers, usage)
                return
            for i in changed:
                self._capacity_changed(workers[i])
        if len(workers) > n:
            self._add(workers[n:])
            self._slot.update((w, n + i) for i, w in enumerate(workers[n:]))
        self._seen, self._usage = workers, usage

    def _capacity_changed(self, worker: WorkerRecord) -> None:
        """Room on ``worker`` changed outside the scheduler (an attempt ended, it reconnected)."""
        for cls in self._classes_of.get(worker, ()):
            cls.stamp += 1
            position = cls.workers.index(worker)
            for shape in cls.shapes:
                if shape.cursor > position:
                    shape.cursor = position
                if shape.waiting:
                    self._ready.add(shape)

    def _add(self, joined: list[WorkerRecord]) -> None:
        live = [w for w in joined if not w.lost]
        if not live:
            return
        self.workers.extend(live)
        for cls in self._classes.values():
            cls.stamp += 1  # every gang is evaluated again: its reason may name the worker set
            cls.groups.clear()
            for w in live:
                if eligible(w, cls.spec):
                    position = _insert(cls, w)
                    for shape in cls.shapes:
                        shape.cursor = min(shape.cursor, position)
                    self._classes_of.setdefault(w, []).append(cls)
            for shape in cls.shapes:
                # A shape waiting because the cluster is busy still is; any other reason may
                # have changed with the new workers.
                if shape.reason is None or shape.reason.kind is WaitKind.BUSY:
                    pass
                elif not shape.waiting:
                    shape.reason = None
                else:
                    reason = self._reason(shape.spec, self.workers, cls.workers)
                    if reason != shape.reason:
                        shape.reason = reason
                        for _, task in shape.waiting:
                            if task.state is TaskState.PENDING:  # not one that ended while waiting
                                task.wait, task.pending_reason = reason, reason.text
                if shape.waiting:
                    self._ready.add(shape)

    # --- candidates -----------------------------------------------------------------------

    def worker_class(self, spec: JobSpec) -> WorkerClass:
        key = class_key(spec)
        cls = self._classes.get(key)
        if cls is None:
            candidates = [w for w in self.workers if eligible(w, spec)]
            if _cpu_only(spec):  # accelerator hosts last: CPU work goes there only when nothing else has room
                candidates.sort(key=attrgetter("has_accelerator"))
            cls = self._classes[key] = WorkerClass(spec, candidates)
            for w in cls.workers:
                self._classes_of.setdefault(w, []).append(cls)
        return cls

    def shape(self, spec: JobSpec) -> Shape:
        resources = spec.resources
        key = (class_key(spec), resources.cpu, resources.memory)
        shape = self._shapes.get(key)
        if shape is None:
            cls = self.worker_class(spec)
            shape = self._shapes[key] = Shape(spec, cls)
            cls.shapes.append(shape)
        return shape

    def first_fit(self, shape: Shape) -> WorkerRecord | None:
        """The first candidate, in worker order, with room for one task of ``shape``."""
        workers = shape.cls.workers
        resources = shape.spec.resources
        i, n = shape.cursor, len(workers)
        while i < n and not workers[i].fits(resources):
            i += 1
        shape.cursor = i
        return workers[i] if i < n else None

    def other_fit(self, shape: Shape, avoid: WorkerRecord) -> WorkerRecord | None:
        """A candidate after ``avoid`` with room for one task of ``shape`` (the cursor stays: this
        serves one task's wish to go elsewhere, not the shape's first fit)."""
        workers = shape.cls.workers
        resources = shape.spec.resources
        start = workers.index(avoid) + 1 if avoid in workers else shape.cursor
        return next((w for w in workers[start:] if w.fits(resources)), None)

    def reason(self, shape: Shape) -> Wait:
        """Why tasks of ``shape`` wait (given that none fits now)."""
        if shape.reason is None:
            shape.reason = self._reason(shape.spec, self.workers, shape.cls.workers) if self.workers else WAIT_NO_WORKERS
        return shape.reason

    def gang_groups(self, cls: WorkerClass, attribute: str) -> list[tuple[str, list[WorkerRecord]]]:
        """The class's workers having ``attribute``, grouped by its value, sorted by value."""
        groups = cls.groups.get(attribute)
        if groups is None:
            by_value: dict[str, list[WorkerRecord]] = {}
            for w in cls.workers:
                if attribute in w.attributes:
                    by_value.setdefault(w.attributes[attribute], []).append(w)
            groups = cls.groups[attribute] = sorted(by_value.items(), key=lambda item: item[0])
        return groups

    def placed_on(self, worker: WorkerRecord) -> None:
        """The scheduler placed a task on ``worker`` (its free capacity shrank)."""
        self._placed_on.add(worker)
        for cls in self._classes_of.get(worker, ()):
            cls.stamp += 1

    # --- the queue ----------------------------------------------------------------------

    def discover(self, pending: OrderedDict[str, Task]) -> list[Task]:
        """Tasks queued since the last pass: the unknown ones at the end of ``pending``."""
        new: list[tuple[str, Task]] = []
        for task_id in reversed(pending):
            if task_id in self._seq:
                break
            new.append((task_id, pending[task_id]))
        new.reverse()
        for task_id, _ in new:
            self._seq[task_id] = self._next_seq
            self._next_seq += 1
        return [task for _, task in new]

    def enqueue(self, task: Task, job: Job) -> Shape | None:
        """Queue a newly discovered task behind the waiting ones of its shape (None: in its gang)."""
        seq = self._seq[task.task_id]
        if job.is_gang:
            gang = self._gangs.get(job.job_id)
            if gang is None:
                self._gangs[job.job_id] = Gang(job, seq, self.worker_class(job.spec))
            else:
                gang.dirty = True
            return None
        shape = self.shape(job.spec)
        shape.waiting.append((seq, task))
        self._ready.add(shape)
        return shape

    def forget(self, task_id: str) -> None:
        self._seq.pop(task_id, None)

    def drop_gang(self, gang: Gang) -> None:
        self._gangs.pop(gang.job.job_id, None)

    def in_order(self) -> Iterator[Shape | Gang]:
        """Shapes that may place something and gangs to evaluate, in submission order.

        A shape is keyed by its first waiting task. The caller either removes that task from
        ``shape.waiting`` (placed, or gone), and the shape comes back keyed by the next one, or
        leaves it (no room), and the shape is done for this pass. A gang comes once.
        """
        heap: list[tuple[int, int, Shape | Gang]] = []
        count = 0
        for shape in self._ready:
            if shape.waiting and shape.cursor < len(shape.cls.workers):
                heap.append((shape.waiting[0][0], count, shape))
                count += 1
        self._ready = set()
        for gang in self._gangs.values():
            if gang.dirty or gang.stamp != gang.cls.stamp:
                heap.append((gang.seq, count, gang))
                count += 1
        heapq.heapify(heap)
        while heap:
            seq, n, item = heapq.heappop(heap)
            yield item
            if isinstance(item, Shape) and item.waiting and item.waiting[0][0] != seq:
                heapq.heappush(heap, (item.waiting[0][0], n, item))

    def settle(self) -> None:
        """End of a pass: remember the workers' usage as the scheduler left it."""
        for w in self._placed_on:
            self._usage[self._slot[w]] = _USAGE(w)
        self._placed_on = set()
