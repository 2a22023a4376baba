"""The scheduler's placement index: first fit that resumes past full workers, and a scheduler that
keeps its index between passes yet places and explains exactly as trying every task would.

The randomized tests compare against naive references written here: first fit by scanning every
worker, and the controller's scheduler as it was before the index (every pending task scanned
every worker on every pass).
"""

from __future__ import annotations

import random
from collections import OrderedDict

import attrs
import pytest

from iris.cluster.constraints import Constraint, Op
from iris.cluster.controller.controller import Controller, ObservedAttempt, WorkerIdentity
from iris.cluster.controller.placement import ALL_BUSY, PlacementIndex, eligible
from iris.cluster.controller.scheduler import Scheduler, wait_reason
from iris.cluster.controller.state import Job, JobSpec, Task, WorkerRecord
from iris.cluster.types import DeviceSpec, Entrypoint, ResourceSpec, TaskState

GB = 1 << 30
TRUE = Entrypoint.from_command("true")


def worker(i: int, cpu: float = 4.0, memory: int = 16 * GB, **attributes: str) -> WorkerRecord:
    return WorkerRecord(f"w{i}", "", cpu, memory, dict(attributes), last_seen=0.0)


def spec(cpu: float = 1.0, memory: int = GB, constraints: tuple[Constraint, ...] = (), device: str = "") -> JobSpec:
    resources = ResourceSpec(cpu=cpu, memory=memory, device=DeviceSpec(kind=device) if device else DeviceSpec())
    return JobSpec(name="j", entrypoint=TRUE, resources=resources, constraints=constraints)


def no_reason(*_: object) -> str:
    return "unused"


def naive_first_fit(workers: list[WorkerRecord], s: JobSpec) -> WorkerRecord | None:
    """First fit in worker order; for CPU-only work, hosts without an accelerator first."""
    if s.resources.device.kind in ("", "cpu"):
        workers = sorted(workers, key=lambda w: w.has_accelerator)
    return next((w for w in workers if not w.lost and eligible(w, s) and w.fits(s.resources)), None)


def take(w: WorkerRecord, s: JobSpec) -> None:
    w.used_cpu += s.resources.cpu
    w.used_memory += s.resources.memory


# --- the index on its own -----------------------------------------------------------------


def test_placement_first_fit_past_full_workers_returns_first_with_room() -> None:
    workers = [worker(0, cpu=1), worker(1, cpu=1), worker(2, cpu=2)]
    index = PlacementIndex(no_reason)
    index.sync(workers, pending=1)
    shape = index.shape(spec(cpu=1))
    placed = []
    while (w := index.first_fit(shape)) is not None:
        take(w, shape.spec)
        index.placed_on(w)
        placed.append(w.worker_id)
    assert placed == ["w0", "w1", "w2", "w2"]
    assert shape.cursor == 3


def test_placement_freed_capacity_moves_cursor_back_to_that_worker() -> None:
    workers = [worker(i, cpu=1) for i in range(3)]
    index = PlacementIndex(no_reason)
    index.sync(workers, pending=1)
    shape = index.shape(spec(cpu=1))
    for _ in range(3):
        w = index.first_fit(shape)
        take(w, shape.spec)
        index.placed_on(w)
    assert index.first_fit(shape) is None
    index.settle()
    workers[1].used_cpu = 0.0  # an attempt ended there
    index.sync(workers, pending=1)
    assert index.first_fit(shape) is workers[1]


def test_placement_joined_worker_extends_candidates_in_worker_order() -> None:
    workers = [worker(0, cpu=1, zone="a"), worker(1, cpu=1, zone="b")]
    index = PlacementIndex(no_reason)
    index.sync(list(workers), pending=1)
    shape = index.shape(spec(cpu=1, constraints=(Constraint("zone", Op.EQ, ("a",)),)))
    take(index.first_fit(shape), shape.spec)
    assert index.first_fit(shape) is None
    workers += [worker(2, cpu=1, zone="b"), worker(3, cpu=1, zone="a")]
    index.sync(list(workers), pending=1)
    assert index.first_fit(shape) is workers[3]


def test_placement_restored_worker_reconnecting_counts_as_room() -> None:
    workers = [worker(0, cpu=1), worker(1, cpu=1)]
    workers[0].awaiting_reconnect = True  # loaded from the database, not back yet
    index = PlacementIndex(no_reason)
    index.sync(workers, pending=1)
    shape = index.shape(spec(cpu=1))
    chosen = index.first_fit(shape)
    assert chosen is workers[1]
    take(chosen, shape.spec)
    index.placed_on(chosen)
    assert index.first_fit(shape) is None
    index.settle()
    workers[0].awaiting_reconnect = False
    index.sync(workers, pending=1)
    assert index.first_fit(shape) is workers[0]


def test_placement_discover_returns_only_tasks_queued_since_last_look() -> None:
    index = PlacementIndex(no_reason)
    pending: OrderedDict[str, Task] = OrderedDict()
    first = [Task(job_id="/a", index=i) for i in range(3)]
    pending.update((t.task_id, t) for t in first)
    assert index.discover(pending) == first
    del pending[first[1].task_id]  # leaves from the middle, as a killed task does
    later = Task(job_id="/b", index=0)
    pending[later.task_id] = later
    assert index.discover(pending) == [later]
    assert index.discover(pending) == []


@pytest.mark.parametrize("seed", range(20))
def test_placement_first_fit_random_changes_match_naive_first_fit(seed: int) -> None:
    rng = random.Random(seed)
    zones = ["a", "b", "c"]
    workers: list[WorkerRecord] = []
    specs = [
        spec(cpu=rng.choice([0.5, 1, 2, 3]), memory=rng.choice([1, 2, 8]) * GB, constraints=c, device=d)
        for c in [(), (Constraint("zone", Op.EQ, ("a",)),), (Constraint("zone", Op.IN, ("b", "c")),)]
        for d in ["", "gpu"]
        for _ in range(2)
    ]
    index = PlacementIndex(no_reason)
    for _ in range(300):
        op = rng.random()
        if op < 0.1 or not workers:
            attributes = {"zone": rng.choice(zones)}
            if rng.random() < 0.3:
                attributes["device"] = "gpu"
            workers.append(worker(len(workers), cpu=rng.choice([2, 4]), memory=rng.choice([4, 16]) * GB, **attributes))
            workers[-1].awaiting_reconnect = rng.random() < 0.2
        elif op < 0.15:
            rng.choice(workers).awaiting_reconnect = False  # a restored worker reconnected
        elif op < 0.25:
            w = rng.choice(workers)  # an attempt ended: capacity comes back
            w.used_cpu = max(0.0, w.used_cpu - rng.choice([0.5, 1, 2]))
            w.used_memory = max(0, w.used_memory - rng.choice([1, 2]) * GB)
        index.sync(list(workers), pending=1)
        for _ in range(rng.randint(1, 6)):
            s = rng.choice(specs)
            expected = naive_first_fit(workers, s)
            got = index.first_fit(index.shape(s))
            assert got is expected
            if got is not None:
                take(got, s)
                index.placed_on(got)
        index.settle()


# --- the scheduler against the scheduler it replaced ---------------------------------------


class ReferenceScheduler(Scheduler):
    """The scheduler before the placement index: every pass tries every pending task, and each
    try scans every worker (in worker order; for CPU-only work, hosts without an accelerator first)."""

    def schedule(self) -> None:
        state = self._state
        if not state.pending:
            return
        workers = [w for w in state.workers.values() if not w.lost]
        placed: list[str] = []
        gangs_seen: set[str] = set()
        for task_id, task in state.pending.items():
            job = state.jobs[task.job_id]
            if job.kill_requested or job.state.is_terminal:
                placed.append(task_id)
                continue
            if not workers:
                task.pending_reason = "no workers registered yet (waiting for workers to join)"
                continue
            if job.is_gang:
                if job.job_id in gangs_seen:
                    continue
                gangs_seen.add(job.job_id)
                members = [t for t in job.tasks if t.task_id in state.pending]
                if len(members) + sum(1 for t in job.tasks if t.state.is_terminal) < len(job.tasks):
                    for t in members:
                        t.pending_reason = "waiting for gang peers to stop before restarting together"
                    continue
                if self._reference_gang(job, members, workers):
                    placed.extend(t.task_id for t in members)
                continue
            candidates = [w for w in workers if eligible(w, job.spec)]
            chosen = naive_first_fit(workers, job.spec)
            if chosen is not None and chosen.worker_id == task.avoid_worker:  # elsewhere if anywhere has room
                order = sorted(workers, key=lambda w: w.has_accelerator) if job.spec.resources.device.kind in ("", "cpu") else workers
                later = order[order.index(chosen) + 1:]
                chosen = next((w for w in later if eligible(w, job.spec) and w.fits(job.spec.resources)), chosen)
            if chosen is None:
                task.pending_reason = wait_reason(job.spec, workers, candidates).text
                continue
            self._assign(job, task, chosen)
            placed.append(task_id)
        for task_id in placed:
            state.pending.pop(task_id, None)

    def _reference_gang(self, job: Job, members: list[Task], workers: list[WorkerRecord]) -> bool:
        key = job.spec.coschedule_by
        candidates = [w for w in workers if eligible(w, job.spec) and key in w.attributes]
        groups: dict[str, list[WorkerRecord]] = {}
        for w in candidates:
            groups.setdefault(w.attributes[key], []).append(w)
        best = 0
        for value in sorted(groups):
            free = [w for w in groups[value] if w.fits(job.spec.resources)]
            best = max(best, len(free))
            if len(free) >= len(members):
                for task, chosen in zip(members, sorted(free, key=lambda w: w.worker_id)):
                    self._assign(job, task, chosen)
                return True
        if not candidates:
            reason = wait_reason(job.spec, workers, candidates, gang_key=key).text
        else:
            largest = max(len(g) for g in groups.values())
            if largest < len(members):
                reason = f"waiting for gang peers: needs {len(members)} workers sharing {key}, the largest such group has {largest}"
            else:
                reason = f"waiting for gang peers: needs {len(members)} workers sharing {key} with room, at most {best} free together"
        for task in members:
            task.pending_reason = reason
        return False


def reference_controller(clock: Clock) -> Controller:
    """A controller whose scheduler is the reference one (a test double swapped in)."""
    controller = Controller(clock=clock, worker_timeout=1e9)
    controller._scheduler = ReferenceScheduler(controller._state, controller._jobs, clock)
    return controller


@attrs.define
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def observable(controller: Controller) -> tuple[object, ...]:
    jobs = [
        (
            j.job_id,
            j.state,
            j.error,
            j.started_at,
            [(t.state, t.pending_reason, [(a.worker_id, a.state, a.stop_requested) for a in t.attempts]) for t in j.tasks],
        )
        for j in controller.list_jobs()
    ]
    # versions start from a per-process base (fresh_version); placement is compared without them
    workers = [(w.worker_id, w.used_cpu, w.used_memory, w.lost) for w in controller.list_workers()]
    return jobs, workers


class SimulatedWorker:
    """Runs what the controller wants: reports desired attempts RUNNING, ends them when told."""

    def __init__(self, identity: WorkerIdentity):
        self.identity = identity
        self.attempts: dict[tuple[str, int], TaskState] = {}
        self.version = 0

    def observed(self) -> list[ObservedAttempt]:
        return [
            ObservedAttempt(t, a, s, exit_code=1 if s is TaskState.FAILED else 0, log_complete=s.is_terminal)
            for (t, a), s in self.attempts.items()
        ]

    def apply(self, result: object) -> None:
        self.version = result.version
        desired = {(d.task_id, d.attempt_id) for d in result.desired}
        for key in desired:
            self.attempts.setdefault(key, TaskState.RUNNING)
        for ack in result.acks:
            if ack.done and self.attempts.get((ack.task_id, ack.attempt_id), TaskState.RUNNING).is_terminal:
                del self.attempts[(ack.task_id, ack.attempt_id)]
        for key, state in self.attempts.items():
            if key not in desired and not state.is_terminal:
                self.attempts[key] = TaskState.KILLED


def random_spec(rng: random.Random, n: int) -> JobSpec:
    constraints = rng.choice(
        [(), (), (Constraint("zone", Op.EQ, ("a",)),), (Constraint("zone", Op.EQ, ("mars",)),),
         (Constraint("zone", Op.EQ, ("a",)), Constraint("zone", Op.EQ, ("b",))), (Constraint("slice", Op.IN, ("s0", "s1")),)]
    )
    resources = ResourceSpec(
        cpu=rng.choice([0.5, 1, 1, 2, 8]),
        memory=rng.choice([GB, GB, 2 * GB, 64 * GB]),
        device=DeviceSpec(kind="gpu") if rng.random() < 0.15 else DeviceSpec(),
    )
    replicas = rng.choice([1, 1, 1, 2, 3])
    gang = rng.choice(["", "", "", "slice", "nokey"]) if replicas > 1 else ""
    return JobSpec(
        name=f"job{n}", entrypoint=TRUE, resources=resources, constraints=constraints, replicas=replicas,
        coschedule_by=gang, max_retries=rng.choice([0, 1]), scheduling_timeout_seconds=rng.choice([0, 0, 5]),
    )


@pytest.mark.parametrize("seed", range(25))
def test_schedule_random_operations_match_reference_scheduler(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    real = Controller(clock=clock, worker_timeout=1e9)
    reference = reference_controller(clock)
    sims: list[SimulatedWorker] = []
    bases: dict[str, tuple[int, int]] = {}  # each controller's first version per worker
    launched: list[str] = []

    def both(call: str, *args: object, **kwargs: object) -> tuple[object, object]:
        a = getattr(real, call)(*args, **kwargs)
        b = getattr(reference, call)(*args, **kwargs)
        return a, b

    for step in range(160):
        op = rng.random()
        if op < 0.3:
            launched.append(both("launch_job", random_spec(rng, step))[0])
        elif op < 0.4 and len(sims) < 12 or not sims:
            i = len(sims)
            attributes = {"zone": rng.choice("ab"), "slice": f"s{i // 3}"}
            if rng.random() < 0.2:
                attributes["device"] = "gpu"
            sim = SimulatedWorker(
                WorkerIdentity(f"w{i}", cpu=rng.choice([2, 4]), memory_bytes=rng.choice([4, 16]) * GB, attributes=attributes)
            )
            sims.append(sim)
            a, b = both("reconcile", sim.identity, [], 0, wait=0)
            bases[sim.identity.worker_id] = (a.version, b.version)
            sim.apply(a)
        elif op < 0.7:
            sim = rng.choice(sims)
            a, b = both("reconcile", sim.identity, sim.observed(), sim.version, wait=0)
            base_a, base_b = bases[sim.identity.worker_id]
            assert (a.version - base_a, [(d.task_id, d.attempt_id) for d in a.desired], a.acks) == (
                b.version - base_b, [(d.task_id, d.attempt_id) for d in b.desired], b.acks)
            sim.apply(a)
        elif op < 0.85:
            sim = rng.choice(sims)
            running = [k for k, s in sim.attempts.items() if not s.is_terminal]
            if running:
                sim.attempts[rng.choice(running)] = rng.choice([TaskState.SUCCEEDED, TaskState.FAILED])
        elif op < 0.9 and launched:
            both("kill_job", rng.choice(launched))
        elif op < 0.95:
            both("mark_worker_lost", rng.choice(sims).identity.worker_id)
        else:
            clock.now += rng.choice([0.5, 3.0])
            both("tick")
        assert observable(real) == observable(reference), f"diverged at step {step}"
    assert any(t.attempts for j in real.list_jobs() for t in j.tasks)  # the run placed something


# --- the scheduler on specific cases ------------------------------------------------------


class Live:
    """A job as the controller sees it now: every attribute read takes a fresh snapshot."""

    def __init__(self, controller: Controller, job_id: str):
        self._controller, self.job_id = controller, job_id

    def __getattr__(self, name: str) -> object:
        return getattr(self._controller.get_job(self.job_id), name)


def launch(controller: Controller, name: str, **fields: object) -> Live:
    return Live(controller, controller.launch_job(JobSpec(name=name, entrypoint=TRUE, **fields)))


def register(controller: Controller, i: int, cpu: float = 4.0, memory: int = 16 * GB, **attributes: str) -> None:
    controller.reconcile(WorkerIdentity(f"w{i}", cpu=cpu, memory_bytes=memory, attributes=attributes), [], 0, wait=0)


def test_schedule_backlog_places_in_submission_order_when_capacity_frees() -> None:
    controller = Controller()
    register(controller, 0, cpu=1)
    jobs = [launch(controller, f"j{i}", resources=ResourceSpec(cpu=1, memory=GB)) for i in range(4)]
    assert [j.tasks[0].state for j in jobs] == [TaskState.ASSIGNED] + [TaskState.PENDING] * 3
    assert {j.tasks[0].pending_reason for j in jobs[1:]} == {ALL_BUSY}
    first = jobs[0].tasks[0]
    done = ObservedAttempt(first.task_id, 0, TaskState.SUCCEEDED, exit_code=0, log_complete=True)
    controller.reconcile(WorkerIdentity("w0", cpu=1, memory_bytes=16 * GB), [done], 0, wait=0)
    assert [j.tasks[0].state for j in jobs[1:]] == [TaskState.ASSIGNED, TaskState.PENDING, TaskState.PENDING]


def test_schedule_waiting_reason_follows_a_bigger_worker_joining() -> None:
    controller = Controller()
    register(controller, 0, cpu=2, memory=4 * GB)
    big = launch(controller, "big", resources=ResourceSpec(cpu=8, memory=GB))
    busy = [launch(controller, f"small{i}", resources=ResourceSpec(cpu=2, memory=GB)) for i in range(2)]
    assert big.tasks[0].pending_reason == "no worker has enough cpu: needs 8, largest worker has 2"
    assert busy[1].tasks[0].pending_reason == ALL_BUSY
    register(controller, 1, cpu=4, memory=4 * GB)
    assert big.tasks[0].pending_reason == "no worker has enough cpu: needs 8, largest worker has 4"
    assert busy[1].tasks[0].state is TaskState.ASSIGNED


def test_schedule_many_waiting_tasks_keep_reasons_while_new_ones_place() -> None:
    controller = Controller()
    register(controller, 0, cpu=1, zone="a")
    register(controller, 1, cpu=1, zone="b")
    in_a, in_b = (Constraint("zone", Op.EQ, ("a",)),), (Constraint("zone", Op.EQ, ("b",)),)
    waiting = [launch(controller, f"a{i}", resources=ResourceSpec(cpu=1, memory=GB), constraints=in_a) for i in range(50)]
    later = launch(controller, "b0", resources=ResourceSpec(cpu=1, memory=GB), constraints=in_b)
    assert waiting[0].tasks[0].state is TaskState.ASSIGNED
    assert all(j.tasks[0].pending_reason == ALL_BUSY for j in waiting[1:])
    assert later.tasks[0].state is TaskState.ASSIGNED


def finish(controller: Controller, worker_id: str, job: Live, cpu: float = 4.0) -> None:
    task = job.tasks[0]
    done = ObservedAttempt(task.task_id, task.attempts[-1].attempt_id, TaskState.SUCCEEDED, exit_code=0, log_complete=True)
    controller.reconcile(WorkerIdentity(worker_id, cpu=cpu, memory_bytes=16 * GB), [done], 0, wait=0)


def test_schedule_gang_waits_for_room_then_starts_whole() -> None:
    controller = Controller()
    register(controller, 0, cpu=1, slice="s0")
    register(controller, 1, cpu=1, slice="s0")
    blocker = launch(controller, "blocker", resources=ResourceSpec(cpu=1, memory=GB))
    gang = launch(controller, "gang", resources=ResourceSpec(cpu=1, memory=GB), replicas=2, coschedule_by="slice")
    reason = "waiting for gang peers: needs 2 workers sharing slice with room, at most 1 free together"
    assert [t.pending_reason for t in gang.tasks] == [reason, reason]
    finish(controller, "w0", blocker, cpu=1)
    assert sorted(t.attempts[-1].worker_id for t in gang.tasks) == ["w0", "w1"]


def test_schedule_tasks_killed_while_waiting_are_let_go_and_order_kept() -> None:
    controller = Controller()
    register(controller, 0, cpu=1)
    running = launch(controller, "running", resources=ResourceSpec(cpu=1, memory=GB))
    waiting = [launch(controller, f"w{i}", resources=ResourceSpec(cpu=1, memory=GB)) for i in range(1500)]
    for job in waiting[:1400]:
        controller.kill_job(job.job_id)
    last = launch(controller, "last", resources=ResourceSpec(cpu=1, memory=GB))
    finish(controller, "w0", running, cpu=1)
    assert waiting[1400].tasks[0].state is TaskState.ASSIGNED
    assert all(j.tasks[0].state is TaskState.PENDING for j in [*waiting[1401:], last])
    assert last.tasks[0].pending_reason == ALL_BUSY


def test_schedule_infrastructure_failure_backs_off_then_prefers_another_worker() -> None:
    clock = Clock(now=100.0)
    controller = Controller(clock=clock, worker_timeout=1e9)
    register(controller, 0, cpu=4)
    register(controller, 1, cpu=4)
    job = launch(controller, "flaky-machine", resources=ResourceSpec(cpu=1, memory=GB))
    first = job.tasks[0].attempts[-1]
    assert first.worker_id == "w0"
    broke = ObservedAttempt(f"{job.job_id}/0", 0, TaskState.WORKER_FAILED, error="runtime failed", log_complete=True)
    controller.reconcile(WorkerIdentity("w0", cpu=4, memory_bytes=16 * GB), [broke], 0, wait=0)
    task = job.tasks[0]
    assert task.state is TaskState.PENDING and len(task.attempts) == 1  # backing off, not retried at once
    assert "retrying in 0.5s" in task.pending_reason
    controller.tick()
    assert len(job.tasks[0].attempts) == 1
    clock.now += 0.6
    controller.tick()
    task = job.tasks[0]
    assert [a.worker_id for a in task.attempts] == ["w0", "w1"] and task.preemptions == 1


def test_schedule_task_failure_is_retried_at_once_on_the_budget() -> None:
    controller = Controller()
    register(controller, 0, cpu=4)
    job = launch(controller, "flaky-task", resources=ResourceSpec(cpu=1, memory=GB), max_retries=1)
    failed = ObservedAttempt(f"{job.job_id}/0", 0, TaskState.FAILED, exit_code=2, log_complete=True)
    controller.reconcile(WorkerIdentity("w0", cpu=4, memory_bytes=16 * GB), [failed], 0, wait=0)
    task = job.tasks[0]
    assert len(task.attempts) == 2 and task.failures == 1 and task.preemptions == 0
