"""The autoscaler: turns the scheduler's unmet demand into slice requests, and idle slices into deletions.

One :meth:`Autoscaler.run_once` per evaluation interval decides, from the demand the scheduler
could not place and the set of busy slices, what each scale group should create or delete. The
decisions are pure bookkeeping; every provider call (create, delete, describe, list) goes through
the ``submit`` callable, so a cycle never waits for a cloud API and tests run it inline with an
injected clock. How it decides is written up in docs/autoscaler.md.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from iris.cluster.constraints import Constraint
from iris.cluster.demand import Demand
from iris.cluster.scale_groups import RequestFor, slice_request_for
from iris.cluster.types import format_memory
from iris.config import AutoscalerConfig, ClusterConfig, ProviderConfig, ScaleGroupConfig
from iris.errors import IrisError
from iris.plugin.protocols import QuotaExceeded, SliceInfo, SliceRequest, SliceState, VmManager

__all__ = ["Autoscaler", "CycleReport", "Demand", "GroupState", "GroupStatus", "SliceStatus", "slice_request_for"]

logger = logging.getLogger(__name__)

Submit = Callable[[Callable[[], None]], None]

# tuples, not sets: membership by identity is cheaper than hashing an Enum
_IN_FLIGHT = (SliceState.REQUESTING, SliceState.BOOTING, SliceState.INITIALIZING)
_ALIVE = (*_IN_FLIGHT, SliceState.READY)
_DEAD = (SliceState.FAILED, SliceState.PREEMPTED)
_MANY = 1 << 40  # tasks per VM when the VM's size is unknown (cpu/memory 0): no limit
_EPS = 1e-9
_DEFAULT_WORKERS = 8
_OPEN_VMS = 64  # partly used VMs a plan remembers per group
# attributes the provider sets per slice or VM (see iris.cluster.constraints): a group's request
# cannot say what they will be, so a constraint on one is left to the scheduler unless the
# group's own attributes set it
_PER_VM_KEYS = frozenset({"slice", "hostname", "vm-index", "tpu-name", "tpu-worker-id"})


class GroupState(enum.Enum):
    AVAILABLE = "AVAILABLE"
    REQUESTING = "REQUESTING"
    BACKOFF = "BACKOFF"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    AT_MAX = "AT_MAX"


@attrs.frozen
class SliceStatus:
    """One slice as the autoscaler sees it. Times are ``clock()`` values (``GroupStatus.at`` is now)."""

    slice_id: str
    scale_group: str
    state: SliceState
    created_at: float
    ready_at: float | None = None
    idle_since: float | None = None
    error: str = ""
    vms: int = 0
    adopted: bool = False


@attrs.frozen
class GroupStatus:
    """One scale group: its state, why (``detail``), and its slices (``counts`` by slice state)."""

    name: str
    state: GroupState
    detail: str
    priority: int
    min_slices: int
    max_slices: int
    counts: Mapping[str, int]
    failures: int
    backoff_until: float | None
    quota_until: float | None
    last_error: str
    at: float
    slices: tuple[SliceStatus, ...] = ()


@attrs.frozen
class CycleReport:
    """What one :meth:`Autoscaler.run_once` did.

    ``requested``: slice ids whose create was submitted. ``deleted``: slice ids whose delete was
    submitted (idle, failed, timed out). ``failed``: the slices among those that failed or died.
    ``routes``: demand key -> (group serving it or None, reason), as :meth:`Autoscaler.route`.
    """

    at: float
    requested: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    routes: Mapping[str, tuple[str | None, str]] = attrs.field(factory=dict)


@attrs.frozen
class _Shape:
    """What a group's slices offer, read from the SliceRequest it builds: the device, the VMs per
    slice and their size, and the worker attributes (zone, region, preemptible, custom ones) that
    a demand's constraints are matched against."""

    device: str
    variant: str
    vm_count: int
    cpu: float  # per VM; 0 = unknown (no limit)
    memory_bytes: int  # per VM; 0 = unknown (no limit)
    attributes: Mapping[str, str]

    @classmethod
    def of(cls, group: ScaleGroupConfig, request: SliceRequest) -> _Shape:
        attributes = dict(request.attributes)
        device = attributes.get("device") or group.accelerator_type or "cpu"
        variant = attributes.get("device-variant", group.accelerator_variant if device == group.accelerator_type else "")
        return cls(device, variant, max(request.vm_count, 1), request.cpu, request.memory_bytes, attributes)

    def unmet(self, constraint: Constraint) -> str | None:
        """Why the group's workers fail the constraint, or None if they meet it (or if it is on a
        per-VM attribute the group does not set)."""
        key = constraint.key
        if key in _PER_VM_KEYS and key not in self.attributes:
            return None
        if constraint.matches(self.attributes):
            return None
        have = f"{key}={self.attributes[key]}" if key in self.attributes else f"no attribute {key}"
        return f"{have}, the job needs {constraint.describe()}"

    def describe(self) -> str:
        return f"{self.device} {self.variant}".strip()


@attrs.define(eq=False)
class _Slice:
    slice_id: str
    group: str
    state: SliceState
    created_at: float
    request: SliceRequest | None = None
    info: SliceInfo | None = None
    ready_at: float | None = None
    idle_since: float | None = None
    error: str = ""
    adopted: bool = False
    ready_when_adopted: bool = False  # its age is unknown: dying is not counted as early
    deleting: bool = False  # a delete is submitted (or must be retried: delete_failed)
    delete_failed: bool = False
    polling: bool = False
    counted: bool = False  # its failure was already handled
    failures_when_ready: int = 0  # the group's failure count that becoming READY reset


@attrs.define(eq=False)
class _Group:
    name: str
    config: ScaleGroupConfig
    shape: _Shape
    slices: dict[str, _Slice] = attrs.field(factory=dict)
    next_index: int = 0
    failures: int = 0
    backoff_until: float = -math.inf
    quota_until: float = -math.inf
    last_scale_up: float = -math.inf
    last_scale_down: float = -math.inf
    last_error: str = ""

    def alive(self) -> list[_Slice]:
        return [s for s in self.slices.values() if s.state in _ALIVE and not s.deleting]

    def held(self, now: float) -> bool:
        """True while quota or backoff forbids creating slices."""
        return now < self.quota_until or now < self.backoff_until


def _dead_on_arrival(info: SliceInfo) -> bool:
    """A slice found at adoption that will never serve: FAILED or PREEMPTED, or every VM of it is
    (its machines are gone, as after a crash of the whole cluster)."""
    return info.state in _DEAD or (bool(info.vms) and all(vm.state in _DEAD for vm in info.vms))


def _submitter(executor: ThreadPoolExecutor) -> Submit:
    def submit(fn: Callable[[], None]) -> None:
        executor.submit(fn)

    return submit


def _fit(cpu_left: float, memory_left: float, cpu: float, memory: int) -> int:
    """How many tasks of (cpu, memory) fit in what is left; _MANY when nothing limits it."""
    n = _MANY
    if cpu > 0 and math.isfinite(cpu_left):
        n = min(n, int(cpu_left / cpu + _EPS))
    if memory > 0 and math.isfinite(memory_left):
        n = min(n, int(memory_left / memory + _EPS))
    return max(n, 0)


class _Plan:
    """One cycle's capacity accounting for one group: whole slices not yet claimed by demand
    (in flight, idle READY, or to be created), VMs of claimed slices, partly used VMs."""

    def __init__(self, group: _Group, free_slices: int, headroom: int, can_create: bool):
        self.group = group
        self.shape = group.shape
        self.free_slices = free_slices
        self.headroom = headroom
        self.can_create = can_create
        self.free_vms = 0
        self.open: list[list[float]] = []  # [cpu_left, memory_left] of partly used VMs
        self.new = 0

    def add_new(self, count: int) -> None:
        """Create up to ``count`` more slices (for min_slices), unclaimed."""
        extra = min(self.headroom, count) if self.can_create else 0
        self.headroom -= extra
        self.new += extra
        self.free_slices += extra

    def _grab_slices(self, wanted: int) -> int:
        """Claim up to ``wanted`` whole slices: unclaimed ones first, then new ones."""
        got = min(self.free_slices, wanted)
        self.free_slices -= got
        if got < wanted and self.can_create:
            extra = min(self.headroom, wanted - got)
            self.headroom -= extra
            self.new += extra
            got += extra
        return got

    def place_gang(self) -> bool:
        return self._grab_slices(1) == 1

    def place_tasks(self, demand: Demand, left: int, per_vm: int) -> int:
        """Place as many of ``left`` tasks of the demand as this group can hold; return how many
        are still left."""
        cpu, memory = demand.cpu, demand.memory_bytes
        for vm in self.open:
            if left == 0:
                break
            k = min(left, _fit(vm[0], vm[1], cpu, memory))
            if k:
                vm[0] -= k * cpu
                vm[1] -= k * memory
                left -= k
        if left == 0:
            return 0
        vms_needed = -(-left // per_vm)
        if self.free_vms < vms_needed:
            short = vms_needed - self.free_vms
            self.free_vms += self._grab_slices(-(-short // self.shape.vm_count)) * self.shape.vm_count
        take = min(vms_needed, self.free_vms)
        if take == 0:
            return left
        self.free_vms -= take
        placed = min(left, take * per_vm)
        on_last = placed - (take - 1) * per_vm
        if on_last < per_vm:
            size_cpu = self.shape.cpu if self.shape.cpu > 0 else math.inf
            size_memory = self.shape.memory_bytes if self.shape.memory_bytes > 0 else math.inf
            self.open.append([size_cpu - on_last * cpu, size_memory - on_last * memory])
            del self.open[:-_OPEN_VMS]
        return left - placed


class Autoscaler:
    """Scale groups' slices up for unmet demand and down when idle. See docs/autoscaler.md."""

    def __init__(
        self,
        groups: dict[str, ScaleGroupConfig],
        vm_manager: VmManager,
        *,
        cluster_name: str,
        label_prefix: str = "iris",
        config: AutoscalerConfig = AutoscalerConfig(),
        clock: Callable[[], float] = time.monotonic,
        submit: Submit | None = None,
        request_for: RequestFor | None = None,
        on_delete: Callable[[str], None] | None = None,
    ):
        """``submit`` runs provider calls asynchronously (default: a small thread pool); each
        callable it gets catches its own errors. ``on_delete(slice_id)`` is called just before a
        slice is deleted (the controller marks its workers lost at once, not after a timeout). ``request_for(group name, group config, slice id)``
        builds a slice's request (default: :func:`slice_request_for` of a cluster with this name,
        label prefix and no provider region/zone); it is also called once per group here, to
        learn what the group's slices offer, so it must not have side effects."""
        self._vm_manager = vm_manager
        self._on_delete = on_delete
        self._cluster_name = cluster_name
        self._prefix = label_prefix
        self._config = config
        self._clock = clock
        self._executors: list[ThreadPoolExecutor] = []
        if submit is None:
            # creates and deletes may block for minutes; describes and lists get their own
            # threads so that they never queue behind them
            changes = ThreadPoolExecutor(max_workers=_DEFAULT_WORKERS, thread_name_prefix="iris-autoscaler")
            observer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="iris-autoscaler-observe")
            self._executors = [changes, observer]
            self._submit_fn: Submit = _submitter(changes)
            self._observe_fn: Submit = _submitter(observer)
        else:
            self._submit_fn = submit
            self._observe_fn = submit
        if request_for is None:
            request_for = slice_request_for(
                ClusterConfig(name=cluster_name, label_prefix=label_prefix, provider=ProviderConfig(type=""))
            )
        self._request_for = request_for
        self._groups: dict[str, _Group] = {}
        for name, group in groups.items():
            probe = request_for(name, group, self._slice_id(name, 0))
            self._groups[name] = _Group(name, group, _Shape.of(group, probe))
        # routing order: higher priority first, ties by name
        self._order = sorted(self._groups.values(), key=lambda g: (-g.config.priority, g.name))
        self._lock = threading.Lock()
        self._cycle_lock = threading.Lock()
        self._strays: dict[str, SliceInfo] = {}
        self._all: dict[str, _Slice] = {}  # every group's slices by id
        self._sweeping = False
        self._routes: dict[str, str] = {}  # demand key -> group, from the last cycle
        self._closed = False
        self._outstanding = 0  # submitted provider calls not yet returned
        self._settled = threading.Condition()

    # --- public surface -------------------------------------------------------------------

    @property
    def labels(self) -> dict[str, str]:
        """The labels every slice of this cluster carries (what :meth:`adopt` lists by)."""
        return {f"{self._prefix}.cluster": self._cluster_name}

    @property
    def strays(self) -> list[SliceInfo]:
        """Slices labelled with this cluster whose scale group is not configured (from :meth:`adopt`)."""
        with self._lock:
            return list(self._strays.values())

    def adopt(self) -> list[SliceInfo]:
        """List the provider's slices carrying this cluster's label and take each into its group's
        bookkeeping (by its ``<prefix>.scale-group`` label). Returns the slices adopted; slices of
        groups not configured are left alone and kept in :attr:`strays`. A slice found dead
        (FAILED or PREEMPTED, or every VM of it) is deleted and replaced by the first
        :meth:`run_once`, without counting as the group's failure: it died while no controller
        watched, as after a crash of the whole cluster, and must not hold the group in backoff.
        Call once, before the first :meth:`run_once`. This one call waits for the provider
        (``list_slices``)."""
        infos = self._vm_manager.list_slices(self.labels)
        now = self._clock()
        adopted: list[SliceInfo] = []
        with self._lock:
            for info in infos:
                name = info.labels.get(f"{self._prefix}.scale-group") or info.scale_group
                group = self._groups.get(name)
                if group is None:
                    self._strays[info.slice_id] = info
                    continue
                self._reserve_index(group, info.slice_id)
                if info.slice_id in group.slices or info.state is SliceState.DELETING:
                    continue
                dead = _dead_on_arrival(info)
                if dead:
                    logger.warning(
                        "slice %s of scale group %s is dead (%s): deleting and replacing it",
                        info.slice_id, name, info.error or info.state.value,
                    )  # fmt: skip
                group.slices[info.slice_id] = self._all[info.slice_id] = _Slice(
                    slice_id=info.slice_id,
                    group=name,
                    state=(info.state if info.state in _DEAD else SliceState.FAILED) if dead else info.state,
                    created_at=now,
                    info=info,
                    ready_at=now if info.state is SliceState.READY else None,
                    error=info.error or ("every VM of the slice is gone" if dead else ""),
                    adopted=True,
                    ready_when_adopted=info.state is SliceState.READY,
                    counted=dead,  # it died while nobody watched: not the group's failure, no backoff
                )
                adopted.append(info)
        return adopted

    def run_once(self, demand: Sequence[Demand], busy_slices: set[str]) -> CycleReport:
        """One evaluation: observe slices (describe for booting ones, one list for the rest),
        delete failed, timed-out and idle slices, route demand to groups and request slices for
        what in-flight and idle capacity does not cover, keeping every group within
        [min_slices, max_slices]. Provider calls go through ``submit``; this never waits for one.

        ``busy_slices``: slice ids with any task assigned or running. A READY slice not in it is
        idle from the first cycle that saw it so."""
        with self._cycle_lock:
            if self._closed:
                return CycleReport(at=self._clock())
            self._observe()
            with self._lock:
                now = self._clock()
                actions: list[Callable[[], None]] = []
                deleted: list[str] = []
                failed: list[str] = []
                self._reconcile(now, busy_slices, actions, deleted, failed)
                self._scale_down(now, actions, deleted)
                requested, routes = self._scale_up(now, demand, actions)
            for action in actions:
                self._submit(action)
            return CycleReport(at=now, requested=tuple(requested), deleted=tuple(deleted), failed=tuple(failed), routes=routes)

    def route(self, demand: Demand) -> tuple[str | None, str]:
        """(group that would serve the demand, human reason), for a pending task's reason."""
        with self._lock:
            return self._route_locked(demand, self._clock())

    def feasibility(self, demand: Demand) -> str | None:
        """None if some configured scale group could ever serve the demand, whatever it is doing
        now (backoff, quota hold, at max_slices, cooldown); else one line saying why none can,
        naming each group's reason, e.g. ``no scale group can serve it (cpu): local: 2 cpu per
        VM, a task needs 100000``. A group with ``max_slices`` 0 serves nothing. For a gang,
        ``demand.tasks`` is the gang's size. Reads only the groups' configuration: no lock, no
        provider call, so the controller may call it under its own lock."""
        if any(self._rejection(demand, g) is None for g in self._order):
            return None
        return self._why_unservable(demand)

    def status(self) -> list[GroupStatus]:
        """Every group, in routing order (priority, then name), with its slices."""
        with self._lock:
            now = self._clock()
            out = []
            for group in self._order:
                state, detail = self._group_state(group, now)
                counts: dict[str, int] = {}
                slices = []
                for s in group.slices.values():
                    shown = SliceState.DELETING if s.deleting and s.state not in _DEAD else s.state
                    counts[shown.value] = counts.get(shown.value, 0) + 1
                    vms = len(s.info.vms) if s.info is not None else group.shape.vm_count
                    slices.append(
                        SliceStatus(s.slice_id, group.name, shown, s.created_at, s.ready_at, s.idle_since, s.error, vms, s.adopted)
                    )
                out.append(
                    GroupStatus(
                        name=group.name,
                        state=state,
                        detail=detail,
                        priority=group.config.priority,
                        min_slices=group.config.min_slices,
                        max_slices=group.config.max_slices,
                        counts=counts,
                        failures=group.failures,
                        backoff_until=group.backoff_until if now < group.backoff_until else None,
                        quota_until=group.quota_until if now < group.quota_until else None,
                        last_error=group.last_error,
                        at=now,
                        slices=tuple(slices),
                    )
                )
            return out

    def slices(self) -> list[SliceInfo]:
        """Every slice the autoscaler holds, with its state as the autoscaler sees it."""
        with self._lock:
            out = []
            for group in self._order:
                for s in group.slices.values():
                    state = SliceState.DELETING if s.deleting and s.state not in _DEAD else s.state
                    labels = s.info.labels if s.info is not None else (s.request.labels if s.request else {})
                    vms = s.info.vms if s.info is not None else ()
                    out.append(SliceInfo(s.slice_id, group.name, state, labels=labels, vms=vms, error=s.error))
            return out

    def request_slice(self, group_name: str) -> str:
        """Create one slice in a group now, as an operator asks (``iris slice create``): bypasses
        cooldown, backoff and quota holds but not max_slices. Returns the slice id. The slice is
        then managed like any other (deleted when idle past the threshold, above min_slices)."""
        with self._lock:
            group = self._groups.get(group_name)
            if group is None:
                choices = ", ".join(sorted(self._groups)) or "(none configured)"
                raise IrisError(f"unknown scale group {group_name!r}; choose one of: {choices}")
            alive = len(group.alive())
            if alive >= group.config.max_slices:
                raise IrisError(
                    f"scale group {group_name} is at max_slices ({alive}/{group.config.max_slices}); "
                    "raise max_slices or terminate a slice first"
                )
            now = self._clock()
            action = self._start_create(group, now)
            group.last_scale_up = now
            slice_id = action.slice_id
        self._submit(action)
        return slice_id

    def terminate(self, slice_ids: Sequence[str] | None = None) -> list[str]:
        """Delete these slices (None = every slice, strays included); returns the ids deleted.
        Unknown ids raise IrisError before anything is deleted. Terminating is not a failure:
        no backoff, and min_slices is restored on the next cycle."""
        with self._lock:
            known = {s.slice_id: s for g in self._groups.values() for s in g.slices.values()}
            if slice_ids is None:
                wanted = [*known, *self._strays]
            else:
                wanted = list(dict.fromkeys(slice_ids))
                unknown = [i for i in wanted if i not in known and i not in self._strays]
                if unknown:
                    raise IrisError(f"unknown slice(s): {', '.join(unknown)}; see `iris cluster status`")
            actions = []
            for slice_id in wanted:
                record = known.get(slice_id)
                if record is not None:
                    record.counted = True
                    if not record.deleting:
                        record.deleting = True
                        actions.append(self._delete_action(slice_id))
                else:
                    self._strays.pop(slice_id, None)
                    actions.append(self._delete_action(slice_id))
        for action in actions:
            self._submit(action)
        return wanted

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every provider call submitted so far has returned (True), or ``timeout``
        seconds pass (False). For a caller that wants, say, min_slices created before it goes
        on; the autoscaler itself never waits."""
        with self._settled:
            return self._settled.wait_for(lambda: self._outstanding <= 0, timeout)

    def shutdown(self) -> None:
        """Stop submitting provider calls (queued ones are dropped). Slices are left running, for
        a restarted controller to adopt; the VmManager is not closed (its owner closes it)."""
        with self._lock:
            self._closed = True
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        with self._settled:  # calls cancelled in the queue never run
            self._outstanding = 0
            self._settled.notify_all()

    # --- observing the provider -----------------------------------------------------------

    def _observe(self) -> None:
        """Describe every booting slice and list the cluster's slices once (for READY ones that
        died), through ``submit``: inline, the results apply to this cycle; else to a later one."""
        polls: list[str] = []
        sweep: set[str] | None = None
        with self._lock:
            for group in self._groups.values():
                for s in group.slices.values():
                    if s.state in (SliceState.BOOTING, SliceState.INITIALIZING) and not s.deleting and not s.polling:
                        s.polling = True
                        polls.append(s.slice_id)
            if not self._sweeping:
                ready = {s.slice_id for g in self._groups.values() for s in g.slices.values() if s.state is SliceState.READY}
                if ready:
                    self._sweeping = True
                    sweep = ready
        for slice_id in polls:
            self._submit(lambda slice_id=slice_id: self._poll(slice_id), observe=True)
        if sweep is not None:
            self._submit(lambda: self._sweep(sweep), observe=True)

    def _poll(self, slice_id: str) -> None:
        try:
            info = self._vm_manager.describe_slice(slice_id)
        except Exception as exc:
            logger.warning("describe_slice(%s) failed: %s", slice_id, exc)
            with self._lock:
                record = self._find(slice_id)
                if record is not None:
                    record.polling = False
            return
        with self._lock:
            record = self._find(slice_id)
            if record is None:
                return
            record.polling = False
            if info is None:
                self._set_dead(record, SliceState.FAILED, "the provider no longer knows this slice")
            else:
                self._apply(record, info)

    def _sweep(self, ready: set[str]) -> None:
        try:
            infos = self._vm_manager.list_slices(self.labels)
        except Exception as exc:
            logger.warning("list_slices failed: %s", exc)
            with self._lock:
                self._sweeping = False
            return
        with self._lock:
            self._sweeping = False
            seen = set()
            for info in infos:
                seen.add(info.slice_id)
                record = self._find(info.slice_id)
                if record is not None and record.state is not SliceState.REQUESTING:
                    self._apply(record, info)
            for slice_id in ready - seen:
                record = self._find(slice_id)
                if record is not None and record.state is SliceState.READY:
                    self._set_dead(record, SliceState.PREEMPTED, "the slice disappeared from the provider")

    def _apply(self, record: _Slice, info: SliceInfo) -> None:
        record.info = info
        if record.state in _DEAD:
            return
        if info.state in _DEAD:
            self._set_dead(record, info.state, info.error or f"the provider reports the slice {info.state.value}")
        elif info.state in _ALIVE and info.state is not SliceState.REQUESTING:
            record.state = info.state

    @staticmethod
    def _set_dead(record: _Slice, state: SliceState, error: str) -> None:
        if record.state not in _DEAD:
            record.state = state
            record.error = error

    # --- one cycle's decisions (under the lock) -------------------------------------------

    def _reconcile(
        self, now: float, busy: set[str], actions: list[Callable[[], None]], deleted: list[str], failed: list[str]
    ) -> None:
        """Note slices that became READY (resetting backoff), delete failed and timed-out ones
        (starting backoff), retry failed deletes, and track idleness."""
        timeout = self._config.boot_timeout_seconds
        for group in self._groups.values():
            for s in list(group.slices.values()):
                if s.deleting:
                    if s.delete_failed:
                        s.delete_failed = False
                        actions.append(self._delete_action(s.slice_id))
                    continue
                if s.state in _IN_FLIGHT and now - s.created_at >= timeout:
                    self._set_dead(s, SliceState.FAILED, f"not READY within boot_timeout_seconds ({timeout:g}s)")
                if s.state in _DEAD:
                    if not s.counted:
                        s.counted = True
                        early = s.ready_at is None or now - s.ready_at < timeout
                        if early and not s.ready_when_adopted:
                            self._count_failure(group, now, s.error, s.failures_when_ready)
                    s.deleting = True
                    actions.append(self._delete_action(s.slice_id))
                    deleted.append(s.slice_id)
                    failed.append(s.slice_id)
                    logger.warning("slice %s of scale group %s %s: %s", s.slice_id, group.name, s.state.value, s.error)
                    continue
                if s.state is SliceState.READY:
                    if s.ready_at is None:
                        s.ready_at = now
                        s.failures_when_ready = group.failures
                        group.failures = 0
                        group.backoff_until = -math.inf
                    if s.slice_id in busy:
                        s.idle_since = None
                    elif s.idle_since is None:
                        s.idle_since = now

    def _count_failure(self, group: _Group, now: float, error: str, floor: int = 0) -> None:
        group.failures = max(group.failures, floor) + 1
        delay = min(self._config.backoff_initial_seconds * 2 ** (group.failures - 1), self._config.backoff_max_seconds)
        group.backoff_until = now + delay
        group.last_error = error

    def _scale_down(self, now: float, actions: list[Callable[[], None]], deleted: list[str]) -> None:
        """Delete slices idle past the threshold, above min_slices, at most once per cooldown."""
        threshold = self._config.idle_threshold_seconds
        cooldown = self._config.scale_down_cooldown_seconds
        for group in self._groups.values():
            idle = [
                s
                for s in group.slices.values()
                if s.state is SliceState.READY and not s.deleting and s.idle_since is not None and now - s.idle_since >= threshold
            ]
            if not idle or now < group.last_scale_down + cooldown or now < group.last_scale_up + cooldown:
                continue
            spare = len(group.alive()) - group.config.min_slices
            idle.sort(key=lambda s: (s.idle_since, s.slice_id))
            for s in idle[: max(spare, 0)]:
                s.deleting = True
                s.counted = True
                actions.append(self._delete_action(s.slice_id))
                deleted.append(s.slice_id)
                group.last_scale_down = now
                logger.info("deleting slice %s of scale group %s: idle for %.0fs", s.slice_id, group.name, now - s.idle_since)

    def _scale_up(
        self, now: float, demand: Sequence[Demand], actions: list[Callable[[], None]]
    ) -> tuple[list[str], dict[str, tuple[str | None, str]]]:
        """Top groups up to min_slices, then route demand (gangs first) to the groups that can
        serve it, by priority, counting in-flight and idle slices as capacity; create the rest."""
        plans: dict[str, _Plan] = {}
        for group in self._order:
            alive = group.alive()
            free = sum(1 for s in alive if s.state in _IN_FLIGHT or s.idle_since is not None)
            plan = _Plan(group, free, group.config.max_slices - len(alive), not group.held(now))
            missing = group.config.min_slices - len(alive)
            if missing > 0:
                plan.add_new(missing)
            plans[group.name] = plan
        self._routes = {}
        candidates: dict[tuple, list[_Group]] = {}
        ordered = sorted(demand, key=lambda d: not d.gang)  # stable: gangs first, else as given
        for d in ordered:
            if d.tasks <= 0:
                continue
            left = d.tasks
            first: str | None = None
            for group in self._candidates(d, candidates):
                first = first or group.name
                plan = plans[group.name]
                before = left
                if d.gang:
                    left = 0 if plan.place_gang() else left
                else:
                    left = plan.place_tasks(d, left, self._per_vm(d, group.shape))
                if left < before:
                    self._routes.setdefault(d.key, group.name)
                if left == 0:
                    break
            if d.key not in self._routes and first is not None:
                self._routes[d.key] = first
        requested: list[str] = []
        up_cooldown = self._config.scale_up_cooldown_seconds
        for group in self._order:
            plan = plans[group.name]
            if plan.new <= 0 or now < group.last_scale_up + up_cooldown:
                continue
            for _ in range(plan.new):
                action = self._start_create(group, now)
                actions.append(action)
                requested.append(action.slice_id)
            group.last_scale_up = now
            logger.info("requesting %d slice(s) for scale group %s", plan.new, group.name)
        states: dict[str, tuple[GroupState, str]] = {}
        routes = {d.key: self._route_locked(d, now, candidates, states) for d in demand if d.tasks > 0}
        return requested, routes

    # --- routing --------------------------------------------------------------------------

    @staticmethod
    def _per_vm(d: Demand, shape: _Shape) -> int:
        cpu = shape.cpu if shape.cpu > 0 else math.inf
        memory = shape.memory_bytes if shape.memory_bytes > 0 else math.inf
        return _fit(cpu, memory, d.cpu, d.memory_bytes) if (math.isfinite(cpu) or math.isfinite(memory)) else _MANY

    @staticmethod
    def _offers_device(d: Demand, shape: _Shape) -> bool:
        return (d.device or "cpu") == shape.device and (not d.variant or d.variant == shape.variant)

    def _rejection(self, d: Demand, group: _Group) -> str | None:
        """Why the group can never serve the demand, or None if it can (now or once it may
        create slices): its device, its workers' attributes against every constraint, the size of
        its VMs, its VMs per slice for a gang, and max_slices."""
        shape = group.shape
        if not self._offers_device(d, shape):
            return f"offers {shape.describe()}"
        for constraint in d.constraints:
            unmet = shape.unmet(constraint)
            if unmet is not None:
                return unmet
        if shape.cpu > 0 and d.cpu > shape.cpu + _EPS:
            return f"{shape.cpu:g} cpu per VM, a task needs {d.cpu:g}"
        if shape.memory_bytes > 0 and d.memory_bytes > shape.memory_bytes:
            return f"{format_memory(shape.memory_bytes)} memory per VM, a task needs {format_memory(d.memory_bytes)}"
        if d.gang and d.tasks != shape.vm_count:
            return f"a gang of {d.tasks} needs {d.tasks} VMs per slice, its slices have {shape.vm_count}"
        if group.config.max_slices <= 0:
            return "max_slices is 0"
        return None

    def _candidates(self, d: Demand, memo: dict[tuple, list[_Group]]) -> list[_Group]:
        """The groups that can serve the demand, in routing order (memoized by its shape)."""
        key = (d.device, d.variant, d.gang, d.tasks if d.gang else 0, d.constraints, d.cpu, d.memory_bytes)
        found = memo.get(key)
        if found is None:
            found = memo[key] = [g for g in self._order if self._rejection(d, g) is None]
        return found

    def _route_locked(
        self,
        d: Demand,
        now: float,
        memo: dict[tuple, list[_Group]] | None = None,
        states: dict[str, tuple[GroupState, str]] | None = None,
    ) -> tuple[str | None, str]:
        candidates = self._candidates(d, {} if memo is None else memo)
        if not candidates:
            return None, self._why_unservable(d)
        name = self._routes.get(d.key)
        group = self._groups[name] if name in self._groups else None
        if group is None or group not in candidates:
            # the first group that could act for it, else the first by priority
            group = next((g for g in candidates if not g.held(now) and len(g.alive()) < g.config.max_slices), candidates[0])
        if states is None:
            states = {}
        if group.name not in states:
            states[group.name] = self._group_state(group, now)
        state, detail = states[group.name]
        reason = f"waiting for the autoscaler: scale group {group.name} is {state.value}"
        return group.name, f"{reason} ({detail})" if detail else reason

    def _why_unservable(self, d: Demand) -> str:
        """One line: why no group can serve the demand (when none can), naming each group's reason."""
        matching = [g for g in self._order if self._offers_device(d, g.shape)]
        wanted = f"{d.device or 'cpu'} {d.variant}".strip()
        if not matching:
            return f"no scale group offers device {wanted}"
        why = "; ".join(f"{g.name}: {self._rejection(d, g)}" for g in matching)
        return f"no scale group can serve it ({wanted}): {why}"

    def _group_state(self, group: _Group, now: float) -> tuple[GroupState, str]:
        alive = group.alive()
        max_slices = group.config.max_slices
        if now < group.quota_until:
            return GroupState.QUOTA_EXCEEDED, f"held {group.quota_until - now:.0f}s more: {group.last_error}"
        if now < group.backoff_until:
            return (
                GroupState.BACKOFF,
                f"retrying in {group.backoff_until - now:.0f}s after {group.failures} failure(s): {group.last_error}",
            )
        in_flight = [s for s in alive if s.state in _IN_FLIGHT]
        if in_flight:
            states = ", ".join(f"{s.slice_id} {s.state.value}" for s in in_flight[:3])
            more = f" and {len(in_flight) - 3} more" if len(in_flight) > 3 else ""
            return GroupState.REQUESTING, f"{states}{more}"
        if len(alive) >= max_slices:
            return GroupState.AT_MAX, f"{len(alive)}/{max_slices} slices"
        cooldown_end = group.last_scale_up + self._config.scale_up_cooldown_seconds
        if now < cooldown_end:
            return GroupState.AVAILABLE, f"scale-up cooldown {cooldown_end - now:.0f}s more"
        unused = sum(1 for s in alive if s.idle_since is not None or s.ready_at is None)
        if unused:
            return GroupState.AVAILABLE, f"{unused} READY slice(s) not yet busy"
        return GroupState.AVAILABLE, f"{len(alive)}/{max_slices} slices"

    # --- provider actions -----------------------------------------------------------------

    def _slice_id(self, group: str, n: int) -> str:
        return f"{self._prefix}-{group}-{n}".replace("_", "-")

    def _reserve_index(self, group: _Group, slice_id: str) -> None:
        head = self._slice_id(group.name, 0)[:-1]
        tail = slice_id[len(head) :]
        if slice_id.startswith(head) and tail.isdigit():
            group.next_index = max(group.next_index, int(tail) + 1)

    def _new_slice_id(self, group: _Group) -> str:
        while True:
            slice_id = self._slice_id(group.name, group.next_index)
            group.next_index += 1
            if self._find(slice_id) is None and slice_id not in self._strays:
                return slice_id

    def _find(self, slice_id: str) -> _Slice | None:
        return self._all.get(slice_id)

    def _forget(self, slice_id: str) -> None:
        record = self._all.pop(slice_id, None)
        if record is not None:
            self._groups[record.group].slices.pop(slice_id, None)

    def _start_create(self, group: _Group, now: float) -> _CreateAction:
        slice_id = self._new_slice_id(group)
        request = self._request_for(group.name, group.config, slice_id)
        group.slices[slice_id] = self._all[slice_id] = _Slice(slice_id, group.name, SliceState.REQUESTING, now, request=request)
        return _CreateAction(self, group, slice_id, request)

    def _create(self, group: _Group, slice_id: str, request: SliceRequest) -> None:
        try:
            info = self._vm_manager.create_slice(request)
        except QuotaExceeded as exc:
            with self._lock:
                now = self._clock()
                group.quota_until = now + self._config.quota_hold_seconds
                group.last_error = f"quota exceeded: {exc}"
                self._forget(slice_id)
            logger.warning("scale group %s: quota exceeded creating %s: %s", group.name, slice_id, exc)
            return
        except Exception as exc:
            logger.warning("scale group %s: creating slice %s failed: %s", group.name, slice_id, exc)
            with self._lock:
                record = group.slices.get(slice_id)
                if record is not None:
                    self._set_dead(record, SliceState.FAILED, f"create failed: {exc}")
                    record.counted = True
                    record.deleting = True
                self._count_failure(group, self._clock(), f"create failed: {exc}")
            self._delete(slice_id)  # it may exist in part
            return
        with self._lock:
            record = group.slices.get(slice_id)
            stale = record is None or record.deleting or record.state in _DEAD
            if not stale:
                record.info = info
                if info.state in _DEAD:
                    self._set_dead(record, info.state, info.error or f"created {info.state.value}")
                else:
                    record.state = SliceState.BOOTING if info.state is SliceState.REQUESTING else info.state
        if stale:  # terminated or timed out while the create ran: delete what it made
            self._delete(slice_id)

    def _delete_action(self, slice_id: str) -> Callable[[], None]:
        return lambda: self._delete(slice_id)

    def _delete(self, slice_id: str) -> None:
        try:
            if self._on_delete is not None:
                self._on_delete(slice_id)
            self._vm_manager.delete_slice(slice_id)
        except Exception as exc:
            logger.warning("deleting slice %s failed (retried next cycle): %s", slice_id, exc)
            with self._lock:
                record = self._find(slice_id)
                if record is not None:
                    record.delete_failed = True
            return
        with self._lock:
            self._forget(slice_id)

    def _submit(self, fn: Callable[[], None], *, observe: bool = False) -> None:
        def guarded() -> None:
            try:
                fn()
            except Exception:
                logger.exception("autoscaler provider call failed")
            finally:
                with self._settled:
                    self._outstanding -= 1
                    self._settled.notify_all()

        with self._settled:
            self._outstanding += 1
        try:
            (self._observe_fn if observe else self._submit_fn)(guarded)
        except RuntimeError:  # the executor is shut down
            with self._settled:
                self._outstanding -= 1
                self._settled.notify_all()
            if not self._closed:
                raise


@attrs.frozen
class _CreateAction:
    """A submitted create: callable, and knows its slice id."""

    autoscaler: Autoscaler
    group: _Group
    slice_id: str
    request: SliceRequest

    def __call__(self) -> None:
        self.autoscaler._create(self.group, self.slice_id, self.request)
