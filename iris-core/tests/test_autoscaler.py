"""The autoscaler core, driven with an injected clock and an inline ``submit`` over the in-memory
VmManager: every provider call happens inside ``run_once``, so no test sleeps or starts threads
(except the one that checks the default thread pool)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from iris.cluster.autoscaler import Autoscaler, Demand, GroupState, slice_request_for
from iris.cluster.constraints import parse_constraint
from iris.cluster.scale_groups import machine_size
from iris.cluster.types import format_memory, parse_memory
from iris.config import AutoscalerConfig, ClusterConfig, ProviderConfig, ScaleGroupConfig
from iris.errors import IrisError
from iris.plugin.protocols import SliceInfo, SliceRequest, SliceState
from iris.testing.contracts import VmManagerContract
from iris.testing.fakes import InMemoryVmManager

GB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def inline(fn: Callable[[], None]) -> None:
    fn()


class ManualExecutor:
    """Holds submitted calls until ``run_all``: a provider whose calls are still in flight."""

    def __init__(self) -> None:
        self.queue: list[Callable[[], None]] = []

    def __call__(self, fn: Callable[[], None]) -> None:
        self.queue.append(fn)

    def run_all(self) -> None:
        while self.queue:
            self.queue.pop(0)()


CPU = ScaleGroupConfig(accelerator_type="cpu", cpu=4, memory="16GB", max_slices=10)
TPU4 = ScaleGroupConfig(accelerator_type="tpu", accelerator_variant="v5litepod-16", max_slices=4)  # 4 VMs
TPU1 = ScaleGroupConfig(accelerator_type="tpu", accelerator_variant="v5litepod-4", max_slices=4)  # 1 VM

FAST = AutoscalerConfig(
    idle_threshold_seconds=60,
    scale_up_cooldown_seconds=0,
    scale_down_cooldown_seconds=0,
    backoff_initial_seconds=5,
    backoff_max_seconds=40,
    quota_hold_seconds=100,
    boot_timeout_seconds=300,
)


def make(
    groups: dict[str, ScaleGroupConfig],
    *,
    config: AutoscalerConfig = FAST,
    clock: Clock | None = None,
    manager: InMemoryVmManager | None = None,
    submit: Callable[[Callable[[], None]], None] = inline,
) -> tuple[Autoscaler, InMemoryVmManager, Clock]:
    clock = clock or Clock()
    manager = manager or InMemoryVmManager(clock=clock)
    autoscaler = Autoscaler(groups, manager, cluster_name="test", config=config, clock=clock, submit=submit)
    return autoscaler, manager, clock


def cpu_demand(key: str = "job", tasks: int = 1, cpu: float = 1, memory: int = GB, *constraints: str, **kw: object) -> Demand:
    return Demand(key=key, tasks=tasks, cpu=cpu, memory_bytes=memory, constraints=tuple(map(parse_constraint, constraints)), **kw)  # type: ignore[arg-type]


def constrained(key: str, *constraints: str) -> Demand:
    return cpu_demand(key, 1, 1, GB, *constraints)


def tpu_demand(key: str, variant: str, tasks: int, gang: bool = True) -> Demand:
    return Demand(key=key, tasks=tasks, cpu=1, memory_bytes=GB, device="tpu", variant=variant, gang=gang)


def group(autoscaler: Autoscaler, name: str):  # noqa: ANN201
    return next(g for g in autoscaler.status() if g.name == name)


def live(manager: InMemoryVmManager) -> list[str]:
    return sorted(s.slice_id for s in manager.list_slices({}))


# --- scale up ---------------------------------------------------------------------------


def test_run_once_demand_for_min0_group_requests_one_slice_in_the_same_cycle() -> None:
    autoscaler, manager, _ = make({"cpu": CPU})
    assert autoscaler.run_once([], set()).requested == ()
    assert manager.calls["create_slice"] == 0

    report = autoscaler.run_once([cpu_demand()], set())

    # demand seen -> create submitted (inline: made) within this one cycle
    assert report.requested == ("iris-cpu-0",)
    assert manager.created == ["iris-cpu-0"]
    request_labels = manager.describe_slice("iris-cpu-0").labels
    assert request_labels["iris.cluster"] == "test" and request_labels["iris.scale-group"] == "cpu"
    assert report.routes["job"][0] == "cpu"


def test_run_once_in_flight_slices_count_against_demand_without_duplicate_requests() -> None:
    clock = Clock()
    manager = InMemoryVmManager(clock=clock, boot_delay=120)
    autoscaler, _, _ = make({"cpu": CPU}, clock=clock, manager=manager)
    demand = [cpu_demand(tasks=4)]  # 4 x 1 cpu = one 4-cpu VM

    assert autoscaler.run_once(demand, set()).requested == ("iris-cpu-0",)
    for _ in range(5):
        clock.advance(10)
        assert autoscaler.run_once(demand, set()).requested == ()
    assert manager.calls["create_slice"] == 1
    assert group(autoscaler, "cpu").state is GroupState.REQUESTING
    assert [s.state for s in group(autoscaler, "cpu").slices] == [SliceState.BOOTING]

    # more demand than the booting slice holds: exactly one more slice
    clock.advance(10)
    more = [*demand, cpu_demand("other", tasks=3)]
    assert autoscaler.run_once(more, set()).requested == ("iris-cpu-1",)
    clock.advance(10)
    assert autoscaler.run_once(more, set()).requested == ()


def test_run_once_in_flight_requesting_slice_counts_before_the_create_returns() -> None:
    executor = ManualExecutor()
    autoscaler, manager, clock = make({"cpu": CPU}, submit=executor)
    assert autoscaler.run_once([cpu_demand()], set()).requested == ("iris-cpu-0",)
    assert manager.calls["create_slice"] == 0  # not run yet: run_once did not wait for it
    assert [s.state for s in group(autoscaler, "cpu").slices] == [SliceState.REQUESTING]
    clock.advance(5)
    assert autoscaler.run_once([cpu_demand()], set()).requested == ()
    executor.run_all()
    assert manager.created == ["iris-cpu-0"]


def test_run_once_packs_non_gang_tasks_by_cpu_and_memory() -> None:
    by_cpu = cpu_demand("a", tasks=10)  # 1 cpu, 1GB each: 4 per 4-cpu VM -> 3 slices
    by_memory = cpu_demand("b", tasks=3, cpu=0.5, memory=6 * GB)  # 2 per 16GB VM -> 2 slices
    assert len(make({"cpu": CPU})[0].run_once([by_cpu], set()).requested) == 3
    assert len(make({"cpu": CPU})[0].run_once([by_memory], set()).requested) == 2
    # together: a's third VM (2 cpu, 14GB left) takes two of b's tasks -> 4 slices
    assert len(make({"cpu": CPU})[0].run_once([by_cpu, by_memory], set()).requested) == 4


def test_run_once_packs_tasks_of_different_jobs_onto_one_vm() -> None:
    autoscaler, _, _ = make({"cpu": CPU})
    report = autoscaler.run_once([cpu_demand("a", tasks=2), cpu_demand("b", tasks=2)], set())
    assert len(report.requested) == 1


def test_run_once_group_of_unknown_size_serves_all_tasks_with_one_slice() -> None:
    autoscaler, _, _ = make({"machine": ScaleGroupConfig(max_slices=5)})  # cpu 0, memory 0
    assert len(autoscaler.run_once([cpu_demand(tasks=50, cpu=8, memory=64 * GB)], set()).requested) == 1


def test_run_once_task_larger_than_any_vm_is_not_served() -> None:
    autoscaler, _, _ = make({"cpu": CPU})
    report = autoscaler.run_once([cpu_demand(cpu=8)], set())
    assert report.requested == ()
    assert report.routes["job"] == (None, "no scale group can serve it (cpu): cpu: 4 cpu per VM, a task needs 8")


# --- routing ----------------------------------------------------------------------------


def test_run_once_gang_of_4_routes_to_group_with_4_vm_slices_not_1_vm_slices() -> None:
    one_vm = attrs.evolve(TPU1, priority=10)  # preferred, but its slices have 1 VM
    autoscaler, manager, _ = make({"tpu_one": one_vm, "tpu_four": TPU4})
    demand = Demand(key="gang", tasks=4, cpu=1, memory_bytes=GB, device="tpu", gang=True)  # any TPU variant

    report = autoscaler.run_once([demand], set())

    assert report.requested == ("iris-tpu-four-0",)
    assert len(manager.describe_slice("iris-tpu-four-0").vms) == 4
    assert report.routes["gang"][0] == "tpu_four"
    assert autoscaler.route(demand)[0] == "tpu_four"


def test_route_gang_with_only_1_vm_groups_is_unserved_with_reason() -> None:
    autoscaler, manager, _ = make({"tpu_one": TPU1, "cpu": CPU})
    demand = Demand(key="gang", tasks=4, cpu=1, memory_bytes=GB, device="tpu", gang=True)

    report = autoscaler.run_once([demand], set())

    assert report.requested == () and manager.calls["create_slice"] == 0
    assert autoscaler.route(demand) == (
        None,
        "no scale group can serve it (tpu): tpu_one: a gang of 4 needs 4 VMs per slice, its slices have 1",
    )


def test_route_unknown_device_variant_names_it() -> None:
    autoscaler, _, _ = make({"tpu": TPU4})
    assert autoscaler.route(tpu_demand("j", "v5litepod-32", 8)) == (None, "no scale group offers device tpu v5litepod-32")
    assert autoscaler.route(cpu_demand()) == (None, "no scale group offers device cpu")


def test_route_reason_names_the_group_state() -> None:
    clock = Clock()
    autoscaler, _, _ = make({"tpu_v5e_16": TPU4}, clock=clock, manager=InMemoryVmManager(clock=clock, boot_delay=60))
    demand = tpu_demand("j", "v5litepod-16", 4)
    autoscaler.run_once([demand], set())
    name, reason = autoscaler.route(demand)
    assert name == "tpu_v5e_16"
    assert reason.startswith("waiting for the autoscaler: scale group tpu_v5e_16 is REQUESTING")
    assert "iris-tpu-v5e-16-0 BOOTING" in reason


def test_run_once_routes_by_priority_then_name() -> None:
    groups = {
        "b_low": ScaleGroupConfig(cpu=4, memory="16GB", max_slices=5, priority=0),
        "a_low": ScaleGroupConfig(cpu=4, memory="16GB", max_slices=5, priority=0),
        "z_high": ScaleGroupConfig(cpu=4, memory="16GB", max_slices=1, priority=5),
    }
    autoscaler, _, _ = make(groups)
    # 3 slices' worth: z_high takes one (its max), then a_low (name before b_low) the rest
    report = autoscaler.run_once([cpu_demand(tasks=12)], set())
    assert report.requested == ("iris-z-high-0", "iris-a-low-0", "iris-a-low-1")
    assert [g.name for g in autoscaler.status()] == ["z_high", "a_low", "b_low"]


ZONED = {
    "spot": ScaleGroupConfig(cpu=4, memory="16GB", preemptible=True, zones=["us-a"], priority=9, attributes={"disk-gb": "100"}),
    "steady": ScaleGroupConfig(cpu=4, memory="16GB", zones=["us-b"], attributes={"disk-gb": "500", "team": "ml"}),
}


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        ("zone=us-b", "steady"),  # EQ
        ("zone!=us-a", "steady"),  # NE
        ("preemptible=false", "steady"),
        ("preemptible=true", "spot"),
        ("region=eu", "steady"),  # region from the cluster's provider (spot sets its own)
        ("team", "steady"),  # EXISTS, a custom attribute
        ("!team", "spot"),  # NOT_EXISTS
        ("zone in us-c,us-b", "steady"),  # IN
        ("disk-gb>100", "steady"),  # GT
        ("disk-gb>=500", "steady"),  # GE
        ("disk-gb<500", "spot"),  # LT
        ("disk-gb<=100", "spot"),  # LE
        ("scale-group=steady", "steady"),
        ("hostname=anything", "spot"),  # set per VM by the provider: left to the scheduler
    ],
)
def test_run_once_each_constraint_kind_routes_to_the_group_whose_attributes_match(constraint: str, expected: str) -> None:
    cluster = ClusterConfig(name="test", provider=ProviderConfig(type="gcp", region="eu"))
    groups = {**ZONED, "spot": attrs.evolve(ZONED["spot"], attributes={"disk-gb": "100", "region": "us"})}
    autoscaler = Autoscaler(groups, InMemoryVmManager(), cluster_name="test", config=FAST, clock=Clock(), submit=inline,
                            request_for=slice_request_for(cluster))  # fmt: skip
    demand = constrained("j", constraint)
    report = autoscaler.run_once([demand], set())
    assert report.routes["j"][0] == expected
    assert [r.split("-")[1] for r in report.requested] == [expected]
    assert autoscaler.feasibility(demand) is None


def test_run_once_every_constraint_of_a_demand_must_match_and_the_reason_names_each_group() -> None:
    autoscaler, _, _ = make(ZONED)
    assert autoscaler.run_once([constrained("both", "zone=us-a", "preemptible=true")], set()).routes["both"][0] == "spot"
    report = autoscaler.run_once([constrained("none", "zone=us-a", "preemptible=false")], set())
    assert report.routes["none"] == (
        None,
        "no scale group can serve it (cpu): spot: preemptible=true, the job needs preemptible=false; "
        "steady: zone=us-b, the job needs zone=us-a",
    )
    assert autoscaler.route(constrained("gpu", "gpu-kind=a100"))[1] == (
        "no scale group can serve it (cpu): spot: no attribute gpu-kind, the job needs gpu-kind=a100; "
        "steady: no attribute gpu-kind, the job needs gpu-kind=a100"
    )


# --- feasibility ------------------------------------------------------------------------


def local_autoscaler(groups: dict[str, ScaleGroupConfig]) -> Autoscaler:
    """The autoscaler as the cluster manager builds it for the local provider."""
    cluster = ClusterConfig(name="test", provider=ProviderConfig(type="local"), scale_groups=groups)
    return Autoscaler(groups, InMemoryVmManager(), cluster_name="test", config=FAST, clock=Clock(), submit=inline,
                      request_for=slice_request_for(cluster))  # fmt: skip


def test_feasibility_local_machine_sized_group_rejects_what_no_machine_holds() -> None:
    autoscaler = local_autoscaler({"local": ScaleGroupConfig(min_slices=1, max_slices=1)})  # no cpu/memory: this machine
    cpus, memory = machine_size()
    assert autoscaler.feasibility(cpu_demand(cpu=cpus, memory=memory)) is None
    assert autoscaler.feasibility(cpu_demand(cpu=100000)) == (
        f"no scale group can serve it (cpu): local: {cpus:g} cpu per VM, a task needs 100000"
    )
    assert autoscaler.feasibility(cpu_demand(memory=parse_memory("100TB"))) == (
        f"no scale group can serve it (cpu): local: {format_memory(memory)} memory per VM, a task needs 100.0TB"
    )
    assert autoscaler.feasibility(tpu_demand("t", "v5litepod-16", 4)) == "no scale group offers device tpu v5litepod-16"
    assert autoscaler.feasibility(constrained("z", "zone=mars")) == (
        "no scale group can serve it (cpu): local: zone=local, the job needs zone=mars"
    )


def test_feasibility_group_that_offers_it_makes_it_feasible() -> None:
    groups = {
        "steady": ScaleGroupConfig(min_slices=1, max_slices=2, zones=["a"]),
        "spot": ScaleGroupConfig(max_slices=2, zones=["b"], preemptible=True),
        "tpu": ScaleGroupConfig(accelerator_type="tpu", accelerator_variant="v5litepod-16", max_slices=1),
    }
    autoscaler = local_autoscaler(groups)
    assert autoscaler.feasibility(tpu_demand("t", "v5litepod-16", 4)) is None
    assert autoscaler.feasibility(constrained("b", "zone=b")) is None
    assert autoscaler.feasibility(constrained("p", "preemptible=true")) is None
    assert autoscaler.feasibility(tpu_demand("t8", "v5litepod-16", 8)) == (
        "no scale group can serve it (tpu v5litepod-16): tpu: a gang of 8 needs 8 VMs per slice, its slices have 4"
    )


def test_feasibility_ignores_backoff_quota_and_max_but_not_max_slices_zero() -> None:
    groups = {"full": attrs.evolve(CPU, max_slices=1), "flaky": attrs.evolve(CPU, max_slices=1, priority=1), "off": attrs.evolve(CPU, max_slices=0)}
    autoscaler, manager, _ = make(groups)
    manager.fail_next_creates(1)
    autoscaler.run_once([cpu_demand(tasks=8)], set())
    assert group(autoscaler, "flaky").state is GroupState.BACKOFF
    assert group(autoscaler, "full").state is GroupState.AT_MAX
    assert autoscaler.feasibility(cpu_demand(tasks=100)) is None
    only_off = make({"off": attrs.evolve(CPU, max_slices=0)})[0]
    assert only_off.feasibility(cpu_demand()) == "no scale group can serve it (cpu): off: max_slices is 0"


def test_run_once_demand_spills_to_next_group_while_first_backs_off() -> None:
    groups = {"first": ScaleGroupConfig(cpu=4, memory="16GB", priority=1), "second": ScaleGroupConfig(cpu=4, memory="16GB")}
    autoscaler, manager, clock = make(groups)
    manager.fail_next_creates(1)
    autoscaler.run_once([cpu_demand()], set())  # first fails -> BACKOFF
    assert group(autoscaler, "first").state is GroupState.BACKOFF
    clock.advance(1)
    report = autoscaler.run_once([cpu_demand()], set())
    assert report.requested == ("iris-second-0",)


# --- limits -----------------------------------------------------------------------------


def test_run_once_never_exceeds_max_slices_and_reports_at_max() -> None:
    autoscaler, manager, clock = make({"cpu": attrs.evolve(CPU, max_slices=3)})
    demand = [cpu_demand(tasks=40)]  # 10 slices' worth
    report = autoscaler.run_once(demand, set())
    assert len(report.requested) == 3
    clock.advance(5)
    busy = set(live(manager))
    assert autoscaler.run_once(demand, busy).requested == ()
    status = group(autoscaler, "cpu")
    assert status.state is GroupState.AT_MAX
    assert status.counts == {"READY": 3}
    assert autoscaler.route(demand[0])[1] == "waiting for the autoscaler: scale group cpu is AT_MAX (3/3 slices)"
    assert len(live(manager)) == 3


def test_run_once_keeps_min_slices_up_and_replaces_a_lost_one() -> None:
    autoscaler, manager, clock = make({"cpu": attrs.evolve(CPU, min_slices=2)})
    assert len(autoscaler.run_once([], set()).requested) == 2
    clock.advance(1)
    autoscaler.run_once([], set())
    clock.advance(1000)  # idle far past the threshold: min_slices are kept
    assert autoscaler.run_once([], set()).deleted == ()
    assert len(live(manager)) == 2
    manager.die_after_ready("iris-cpu-0")
    report = autoscaler.run_once([], set())
    assert report.failed == ("iris-cpu-0",)
    assert report.requested == ("iris-cpu-2",)
    assert live(manager) == ["iris-cpu-1", "iris-cpu-2"]


# --- scale down -------------------------------------------------------------------------


def test_run_once_deletes_slice_after_idle_threshold_once_not_busy() -> None:
    autoscaler, manager, clock = make({"cpu": CPU})
    autoscaler.run_once([cpu_demand()], set())
    for _ in range(10):  # busy for a long time: kept
        clock.advance(30)
        assert autoscaler.run_once([], {"iris-cpu-0"}).deleted == ()
    clock.advance(1)
    autoscaler.run_once([], set())  # idle from now
    idle_since = group(autoscaler, "cpu").slices[0].idle_since
    assert idle_since == clock.now
    clock.advance(59)
    assert autoscaler.run_once([], set()).deleted == ()
    clock.advance(1)
    assert autoscaler.run_once([], set()).deleted == ("iris-cpu-0",)
    assert manager.deleted == ["iris-cpu-0"]
    assert group(autoscaler, "cpu").slices == ()


def test_run_once_busy_again_resets_idle_time() -> None:
    autoscaler, manager, clock = make({"cpu": CPU})
    autoscaler.run_once([cpu_demand()], set())
    clock.advance(1)
    autoscaler.run_once([], set())
    clock.advance(50)
    autoscaler.run_once([], {"iris-cpu-0"})
    clock.advance(50)
    assert autoscaler.run_once([], set()).deleted == ()
    assert manager.deleted == []


# --- failures, backoff, quota -----------------------------------------------------------


def test_run_once_two_failed_creates_back_off_doubling_then_succeed() -> None:
    autoscaler, manager, clock = make({"cpu": CPU})
    manager.fail_next_creates(2)
    demand = [cpu_demand()]
    attempts: list[float] = []
    start = clock.now
    for _ in range(40):  # one cycle per second
        before = manager.calls["create_slice"]
        autoscaler.run_once(demand, set())
        if manager.calls["create_slice"] > before:
            attempts.append(clock.now - start)
        if manager.created:
            break
        clock.advance(1)
    # fail at 0 -> wait 5; fail at 5 -> wait 10; succeed at 15
    assert attempts == [0, 5, 15]
    assert manager.created == ["iris-cpu-2"]
    clock.advance(1)
    autoscaler.run_once(demand, set())  # the slice is READY: backoff resets
    status = group(autoscaler, "cpu")
    assert status.failures == 0 and status.backoff_until is None


def test_run_once_backoff_is_capped_at_backoff_max() -> None:
    autoscaler, manager, clock = make({"cpu": CPU})
    manager.fail_next_creates(10)
    waits = []
    for _ in range(6):
        autoscaler.run_once([cpu_demand()], set())
        status = group(autoscaler, "cpu")
        assert status.state is GroupState.BACKOFF
        waits.append(status.backoff_until - clock.now)
        clock.now = status.backoff_until
    assert waits == [5, 10, 20, 40, 40, 40]
    assert "injected create failure" in group(autoscaler, "cpu").last_error


def test_run_once_quota_error_holds_group_then_retries_after_hold() -> None:
    autoscaler, manager, clock = make({"cpu": CPU})
    manager.quota_exceeded_next_creates(1)
    demand = [cpu_demand()]
    assert autoscaler.run_once(demand, set()).requested == ("iris-cpu-0",)
    status = group(autoscaler, "cpu")
    assert status.state is GroupState.QUOTA_EXCEEDED
    assert status.quota_until == clock.now + 100
    assert status.slices == ()  # nothing was created
    assert "quota exceeded" in autoscaler.route(demand[0])[1]
    clock.advance(99)
    assert autoscaler.run_once(demand, set()).requested == ()
    assert manager.calls["create_slice"] == 1
    clock.advance(1)
    assert autoscaler.run_once(demand, set()).requested == ("iris-cpu-1",)
    assert manager.created == ["iris-cpu-1"]
    assert group(autoscaler, "cpu").failures == 0  # quota is not a failure


def test_run_once_early_dying_slice_triggers_backoff() -> None:
    autoscaler, manager, clock = make({"cpu": CPU})
    demand = [cpu_demand()]
    autoscaler.run_once(demand, set())
    clock.advance(1)
    autoscaler.run_once(demand, set())  # READY seen
    manager.die_after_ready("iris-cpu-0", after=10, state=SliceState.FAILED, error="kernel panic")
    clock.advance(10)
    report = autoscaler.run_once(demand, set())
    assert report.failed == ("iris-cpu-0",) and report.requested == ()
    assert manager.deleted == ["iris-cpu-0"]
    status = group(autoscaler, "cpu")
    assert (status.state, status.failures, status.last_error) == (GroupState.BACKOFF, 1, "kernel panic")
    clock.advance(5)
    assert autoscaler.run_once(demand, set()).requested == ("iris-cpu-1",)
    # dying early again continues the count (10 s), though READY reset it in between
    clock.advance(1)
    autoscaler.run_once(demand, set())
    manager.die_after_ready("iris-cpu-1")
    autoscaler.run_once(demand, set())
    assert group(autoscaler, "cpu").backoff_until == clock.now + 10


def test_run_once_late_preemption_is_replaced_without_backoff() -> None:
    autoscaler, manager, clock = make({"cpu": CPU})
    demand = [cpu_demand()]
    autoscaler.run_once(demand, set())
    clock.advance(1)
    autoscaler.run_once([], {"iris-cpu-0"})
    clock.advance(3600)
    manager.set_state("iris-cpu-0", SliceState.PREEMPTED, error="spot reclaimed")
    report = autoscaler.run_once(demand, set())
    assert report.failed == ("iris-cpu-0",)
    assert report.requested == ("iris-cpu-1",)
    assert group(autoscaler, "cpu").failures == 0


def test_run_once_slice_not_ready_within_boot_timeout_is_deleted_and_backs_off() -> None:
    clock = Clock()
    manager = InMemoryVmManager(clock=clock, boot_delay=10_000)
    autoscaler, _, _ = make({"cpu": CPU}, clock=clock, manager=manager)
    autoscaler.run_once([cpu_demand()], set())
    clock.advance(299)
    assert autoscaler.run_once([cpu_demand()], set()).failed == ()
    clock.advance(1)
    report = autoscaler.run_once([cpu_demand()], set())
    assert report.failed == ("iris-cpu-0",)
    assert manager.deleted == ["iris-cpu-0"]
    status = group(autoscaler, "cpu")
    assert status.state is GroupState.BACKOFF
    assert "boot_timeout_seconds" in status.last_error


def test_run_once_polls_booting_slices_until_ready() -> None:
    clock = Clock()
    manager = InMemoryVmManager(clock=clock, boot_delay=30)
    autoscaler, _, _ = make({"cpu": CPU}, clock=clock, manager=manager)
    autoscaler.run_once([cpu_demand()], set())
    assert manager.calls["describe_slice"] == 0
    clock.advance(10)
    autoscaler.run_once([cpu_demand()], set())
    assert manager.calls["describe_slice"] == 1
    assert group(autoscaler, "cpu").slices[0].state is SliceState.BOOTING
    clock.advance(20)
    autoscaler.run_once([cpu_demand()], set())
    slice_status = group(autoscaler, "cpu").slices[0]
    assert slice_status.state is SliceState.READY and slice_status.ready_at == clock.now


# --- cooldowns --------------------------------------------------------------------------


def test_run_once_scale_up_cooldown_defers_next_scale_up() -> None:
    autoscaler, _, clock = make({"cpu": CPU}, config=attrs.evolve(FAST, scale_up_cooldown_seconds=30))
    assert len(autoscaler.run_once([cpu_demand("a")], set()).requested) == 1
    clock.advance(10)
    demand = [cpu_demand("b", tasks=4)]  # a runs on iris-cpu-0; b needs another slice
    assert autoscaler.run_once(demand, {"iris-cpu-0"}).requested == ()
    assert "scale-up cooldown" in autoscaler.route(demand[0])[1]
    clock.advance(20)
    assert autoscaler.run_once(demand, {"iris-cpu-0"}).requested == ("iris-cpu-1",)


def test_run_once_scale_down_cooldown_spaces_deletions_and_follows_scale_up() -> None:
    config = attrs.evolve(FAST, scale_down_cooldown_seconds=100)
    autoscaler, manager, clock = make({"cpu": CPU}, config=config)
    autoscaler.run_once([cpu_demand(tasks=8)], set())  # 2 slices at t=0
    clock.advance(1)
    autoscaler.run_once([], {"iris-cpu-1"})  # iris-cpu-0 idle from t=1
    clock.advance(60)
    # idle past the threshold (60 s) but within 100 s of the scale-up: kept
    assert autoscaler.run_once([], {"iris-cpu-1"}).deleted == ()
    clock.advance(40)
    assert autoscaler.run_once([], {"iris-cpu-1"}).deleted == ("iris-cpu-0",)
    autoscaler.run_once([], set())  # iris-cpu-1 idle from now
    clock.advance(60)
    assert autoscaler.run_once([], set()).deleted == ()  # 60 s after the last scale-down
    clock.advance(40)
    assert autoscaler.run_once([], set()).deleted == ("iris-cpu-1",)
    assert manager.deleted == ["iris-cpu-0", "iris-cpu-1"]


# --- adoption, ids, operator actions ----------------------------------------------------


def test_adopt_new_autoscaler_rediscovers_slices_and_continues_ids() -> None:
    clock = Clock()
    manager = InMemoryVmManager(clock=clock)
    first, _, _ = make({"cpu": CPU, "tpu": TPU4}, clock=clock, manager=manager)
    first.run_once([cpu_demand(tasks=8), tpu_demand("g", "v5litepod-16", 4)], set())
    manager.create_slice(
        SliceRequest(slice_id="iris-old-0", scale_group="old", labels={"iris.cluster": "test", "iris.scale-group": "old"})
    )
    manager.create_slice(SliceRequest(slice_id="other", scale_group="cpu", labels={"iris.cluster": "elsewhere"}))
    first.shutdown()

    second, _, _ = make({"cpu": CPU, "tpu": TPU4}, clock=clock, manager=manager)
    adopted = second.adopt()

    assert sorted(s.slice_id for s in adopted) == ["iris-cpu-0", "iris-cpu-1", "iris-tpu-0"]
    assert [s.slice_id for s in second.strays] == ["iris-old-0"]
    assert {s.slice_id: s.state for s in second.slices()} == {
        "iris-cpu-0": SliceState.READY,
        "iris-cpu-1": SliceState.READY,
        "iris-tpu-0": SliceState.READY,
    }
    assert all(s.adopted for s in group(second, "cpu").slices)
    # adopted capacity serves demand; new ids continue after the adopted ones
    clock.advance(1)
    busy = {"iris-cpu-0", "iris-cpu-1"}
    assert second.run_once([cpu_demand("more", tasks=4)], busy).requested == ("iris-cpu-2",)
    assert manager.deleted == []  # strays are not deleted


def test_slice_ids_replace_underscores_and_skip_existing_ids() -> None:
    clock = Clock()
    manager = InMemoryVmManager(clock=clock)
    manager.create_slice(
        SliceRequest(slice_id="iris-big-cpu-1", scale_group="big_cpu", labels={"iris.cluster": "test", "iris.scale-group": "stray"})
    )
    autoscaler, _, _ = make({"big_cpu": CPU}, clock=clock, manager=manager)
    autoscaler.adopt()
    report = autoscaler.run_once([cpu_demand(tasks=12)], set())
    assert report.requested == ("iris-big-cpu-0", "iris-big-cpu-2", "iris-big-cpu-3")


def test_request_slice_and_terminate_operator_actions() -> None:
    autoscaler, manager, _ = make({"cpu": attrs.evolve(CPU, max_slices=1)})
    assert autoscaler.request_slice("cpu") == "iris-cpu-0"
    with pytest.raises(IrisError, match="at max_slices"):
        autoscaler.request_slice("cpu")
    with pytest.raises(IrisError, match="unknown scale group 'gpu'; choose one of: cpu"):
        autoscaler.request_slice("gpu")
    with pytest.raises(IrisError, match="unknown slice"):
        autoscaler.terminate(["nope"])
    assert autoscaler.terminate(None) == ["iris-cpu-0"]
    assert manager.deleted == ["iris-cpu-0"]
    assert group(autoscaler, "cpu").failures == 0


def test_terminate_during_create_deletes_what_the_create_made() -> None:
    executor = ManualExecutor()
    autoscaler, manager, _ = make({"cpu": CPU}, submit=executor)
    autoscaler.run_once([cpu_demand()], set())
    autoscaler.terminate(["iris-cpu-0"])
    executor.run_all()
    assert manager.list_slices({}) == []


# --- request building, default executor -------------------------------------------------


def test_slice_request_for_uses_cluster_provider_zone_and_group_shape() -> None:
    cluster = ClusterConfig(name="c", provider=ProviderConfig(type="local"), scale_groups={"tpu": TPU4})
    request = slice_request_for(cluster)("tpu", TPU4, "iris-tpu-0")
    assert request.vm_count == 4
    assert request.labels == {"iris.cluster": "c", "iris.scale-group": "tpu"}
    assert request.attributes["zone"] == "local"
    assert request.attributes["device-variant"] == "v5litepod-16"


def test_slice_request_for_local_group_without_size_is_machine_sized_elsewhere_unknown() -> None:
    sized = ScaleGroupConfig(cpu=3, memory="5GB")
    local = slice_request_for(ClusterConfig(name="c", provider=ProviderConfig(type="local")))
    cloud = slice_request_for(ClusterConfig(name="c", provider=ProviderConfig(type="gcp")))
    assert (local("g", ScaleGroupConfig(), "s").cpu, local("g", ScaleGroupConfig(), "s").memory_bytes) == machine_size()
    assert (local("g", sized, "s").cpu, local("g", sized, "s").memory_bytes) == (3, parse_memory("5GB"))
    assert (cloud("g", ScaleGroupConfig(), "s").cpu, cloud("g", ScaleGroupConfig(), "s").memory_bytes) == (0, 0)


def test_default_submit_runs_creates_on_a_thread_pool() -> None:
    manager = InMemoryVmManager()
    autoscaler = Autoscaler({"cpu": CPU}, manager, cluster_name="test", config=FAST)
    try:
        assert autoscaler.run_once([cpu_demand()], set()).requested == ("iris-cpu-0",)
        assert autoscaler.settle(timeout=10)
        assert manager.created == ["iris-cpu-0"]
        assert group(autoscaler, "cpu").slices[0].state is SliceState.READY
    finally:
        autoscaler.shutdown()


# --- the fake VmManager's knobs ---------------------------------------------------------


def test_in_memory_vm_manager_boot_delay_follows_the_clock() -> None:
    clock = Clock()
    manager = InMemoryVmManager(clock=clock, boot_delay=30)
    assert manager.create_slice(SliceRequest(slice_id="s", scale_group="g", vm_count=2)).state is SliceState.BOOTING
    clock.advance(29)
    assert manager.describe_slice("s").state is SliceState.BOOTING
    clock.advance(1)
    info = manager.describe_slice("s")
    assert info.state is SliceState.READY and {vm.state for vm in info.vms} == {SliceState.READY}
    manager.die_after_ready("s", after=5, state=SliceState.FAILED)
    clock.advance(5)
    assert manager.list_slices({})[0].state is SliceState.FAILED
    assert manager.calls == {"create_slice": 1, "describe_slice": 2, "list_slices": 1}


class TestBootingInMemoryVmManagerContract(VmManagerContract):
    @pytest.fixture
    def vm_manager(self) -> InMemoryVmManager:
        return InMemoryVmManager(boot_delay=3600)

    def kill_slice(self, vm_manager: InMemoryVmManager, info: Any) -> None:
        vm_manager.set_state(info.slice_id, SliceState.FAILED, "boot failed (injected)")


def test_run_once_adopted_ready_slice_dying_is_replaced_without_backoff() -> None:
    clock = Clock()
    manager = InMemoryVmManager(clock=clock)
    first, _, _ = make({"cpu": attrs.evolve(CPU, min_slices=1)}, clock=clock, manager=manager)
    first.run_once([], set())
    first.shutdown()
    second, _, _ = make({"cpu": attrs.evolve(CPU, min_slices=1)}, clock=clock, manager=manager)
    second.adopt()
    manager.set_state("iris-cpu-0", SliceState.PREEMPTED, error="spot reclaimed")
    report = second.run_once([], set())
    assert (report.failed, report.requested) == (("iris-cpu-0",), ("iris-cpu-1",))
    assert group(second, "cpu").failures == 0


def test_run_once_slice_deleted_behind_its_back_is_replaced() -> None:
    autoscaler, manager, clock = make({"cpu": attrs.evolve(CPU, min_slices=1)})
    autoscaler.run_once([], set())
    clock.advance(1)
    autoscaler.run_once([], set())
    manager.delete_slice("iris-cpu-0")
    clock.advance(1000)
    report = autoscaler.run_once([], set())
    assert report.failed == ("iris-cpu-0",)
    assert report.requested == ("iris-cpu-1",)
    assert group(autoscaler, "cpu").failures == 0  # READY for 1000 s: not an early death


class MachinesGoneVmManager(InMemoryVmManager):
    """Lists the slices in ``gone`` READY but with every VM FAILED: a provider that has not yet
    noticed that the machines of a slice vanished."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.gone: set[str] = set()

    def list_slices(self, labels: Any) -> list[SliceInfo]:
        dead_vms = lambda s: attrs.evolve(s, vms=tuple(attrs.evolve(vm, state=SliceState.FAILED) for vm in s.vms))  # noqa: E731
        return [dead_vms(s) if s.slice_id in self.gone else s for s in super().list_slices(labels)]


@pytest.mark.parametrize("death", ["FAILED", "PREEMPTED", "machines gone"])
def test_adopt_slices_dead_at_adoption_are_replaced_at_once_without_backoff(death: str) -> None:
    clock = Clock()
    manager = MachinesGoneVmManager(clock=clock)
    groups = {"cpu": attrs.evolve(CPU, min_slices=3, max_slices=3)}
    first, _, _ = make(groups, clock=clock, manager=manager)
    first.run_once([], set())
    first.shutdown()
    dead = live(manager)
    for slice_id in dead:  # the whole cluster crashed: every slice's machines died with it
        if death == "machines gone":
            manager.gone.add(slice_id)
        else:
            manager.set_state(slice_id, SliceState[death], error="the worker process is not running")
    clock.advance(600)

    second, _, _ = make(groups, clock=clock, manager=manager)
    assert sorted(s.slice_id for s in second.adopt()) == dead
    report = second.run_once([], set())

    assert sorted(report.deleted) == dead == ["iris-cpu-0", "iris-cpu-1", "iris-cpu-2"]
    assert report.requested == ("iris-cpu-3", "iris-cpu-4", "iris-cpu-5")
    status = group(second, "cpu")
    assert (status.state, status.failures, status.backoff_until) == (GroupState.AT_MAX, 0, None)
    assert status.counts == {"READY": 3}
    assert live(manager) == ["iris-cpu-3", "iris-cpu-4", "iris-cpu-5"]


def test_adopt_booting_slice_that_then_fails_still_counts_as_a_failure() -> None:
    clock = Clock()
    manager = InMemoryVmManager(clock=clock, boot_delay=60)
    first, _, _ = make({"cpu": attrs.evolve(CPU, min_slices=1)}, clock=clock, manager=manager)
    first.run_once([], set())
    first.shutdown()
    second, _, _ = make({"cpu": attrs.evolve(CPU, min_slices=1)}, clock=clock, manager=manager)
    second.adopt()  # BOOTING: alive when adopted
    manager.set_state("iris-cpu-0", SliceState.FAILED, error="boot failed")
    clock.advance(1)
    assert second.run_once([], set()).failed == ("iris-cpu-0",)
    assert group(second, "cpu").state is GroupState.BACKOFF
