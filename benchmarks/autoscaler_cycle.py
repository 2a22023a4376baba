"""One autoscaler cycle over a large cluster: 20 scale groups, 1,000 slices.

Runs :meth:`Autoscaler.run_once` against the in-memory VmManager with an inline ``submit`` (every
provider call happens inside the cycle, so the figure includes the fake's describe/list/create/
delete), and times three kinds of cycle, ``--runs`` of each, each on a freshly adopted cluster:

- steady, no demand: 1,000 READY busy slices, nothing to do (one list of the cluster's slices);
- steady, demand unchanged: the same plus 100 jobs the groups cannot serve because every group
  is AT_MAX (routing runs for each, nothing changes);
- changes: 60 new jobs (10 TPU gangs, 50 jobs of packed CPU tasks) that need about 50 new slices, while
  50 slices have been idle past the threshold and are deleted.

In the changes cycle it also times unmet demand -> slice request: from entering ``run_once``
with the new demand to the first ``create_slice`` call. The autoscaler runs every
``evaluation_interval_seconds`` (2 s by default), so demand waits at most one interval plus this.
Target: median cycle < 50 ms.

    uv run python benchmarks/autoscaler_cycle.py [--runs 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from iris.cluster.autoscaler import Autoscaler, Demand
from iris.cluster.constraints import parse_constraint
from iris.config import AutoscalerConfig, ScaleGroupConfig
from iris.plugin.protocols import SliceRequest
from iris.testing.fakes import InMemoryVmManager
from stats import load_line, machine_line, summary_line, verdict

TARGET_MS = 50.0
GROUPS = 20
SLICES_PER_GROUP = 50
GB = 1 << 30
CONFIG = AutoscalerConfig(idle_threshold_seconds=300, scale_down_cooldown_seconds=60)


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def groups(max_slices: int) -> dict[str, ScaleGroupConfig]:
    """10 CPU groups (1 VM of 8 cpu / 32GB per slice) and 10 TPU groups (v5litepod-16: 4 VMs)."""
    out = {}
    for i in range(GROUPS // 2):
        out[f"cpu_{i}"] = ScaleGroupConfig(cpu=8, memory=32 * GB, max_slices=max_slices, priority=i % 3, zones=[f"z{i % 4}"])
        out[f"tpu_{i}"] = ScaleGroupConfig(
            accelerator_type="tpu", accelerator_variant="v5litepod-16", cpu=8, memory=32 * GB, max_slices=max_slices, priority=i % 3
        )
    return out


def cluster(max_slices: int) -> tuple[Autoscaler, InMemoryVmManager, Clock, set[str]]:
    """An autoscaler that adopted 1,000 READY slices, after one warm cycle with all of them busy."""
    clock = Clock()
    manager = InMemoryVmManager(clock=clock)
    config = groups(max_slices)
    for name, group in config.items():
        vms = 4 if group.accelerator_type == "tpu" else 1
        for n in range(SLICES_PER_GROUP):
            slice_id = f"iris-{name}-{n}".replace("_", "-")
            labels = {"iris.cluster": "bench", "iris.scale-group": name}
            manager.create_slice(SliceRequest(slice_id=slice_id, scale_group=name, vm_count=vms, labels=labels))
    autoscaler = Autoscaler(config, manager, cluster_name="bench", config=CONFIG, clock=clock, submit=lambda fn: fn())
    assert len(autoscaler.adopt()) == GROUPS * SLICES_PER_GROUP
    busy = {s.slice_id for s in manager.list_slices({})}
    autoscaler.run_once([], busy)
    clock.now += 1
    return autoscaler, manager, clock, busy


def unservable_demand() -> list[Demand]:
    return [
        Demand(key=f"/u/wait-{i}", tasks=4, cpu=1, memory_bytes=GB, device="tpu" if i % 2 else "cpu", gang=bool(i % 2))
        for i in range(100)
    ]


def new_demand(run: int) -> list[Demand]:
    """About 50 slices' worth: 10 TPU gangs of 4, 50 CPU jobs of 3 x 2-cpu tasks (8-cpu VMs)."""
    gangs = [Demand(key=f"/u/gang-{run}-{i}", tasks=4, cpu=4, memory_bytes=8 * GB, device="tpu", gang=True) for i in range(10)]
    packed = [Demand(key=f"/u/job-{run}-{i}", tasks=3, cpu=2, memory_bytes=4 * GB, constraints=(parse_constraint(f"zone=z{i % 4}"),)) for i in range(50)]
    return [*gangs, *packed]


def timed(autoscaler: Autoscaler, demand: list[Demand], busy: set[str]) -> tuple[float, object]:
    started = time.perf_counter()
    report = autoscaler.run_once(demand, busy)
    return time.perf_counter() - started, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="cycles of each kind (default 9)")
    args = parser.parse_args()
    print(machine_line())
    print(f"{GROUPS} scale groups, {GROUPS * SLICES_PER_GROUP} slices (half 1-VM CPU, half 4-VM TPU), inline submit")

    idle, unchanged, changes, to_request = [], [], [], []
    requested = deleted = 0
    for run in range(args.runs):
        autoscaler, _, clock, busy = cluster(max_slices=SLICES_PER_GROUP)
        seconds, _ = timed(autoscaler, [], busy)
        idle.append(seconds)
        clock.now += 1
        demand = unservable_demand()
        autoscaler.run_once(demand, busy)  # the first cycle with this demand settles the routes
        clock.now += 1
        seconds, report = timed(autoscaler, demand, busy)
        assert report.requested == () and report.deleted == (), report
        unchanged.append(seconds)

        autoscaler, manager, clock, busy = cluster(max_slices=SLICES_PER_GROUP + 10)
        now_idle = {f"iris-cpu-{g}-{n}" for g in range(5) for n in range(10)}
        autoscaler.run_once([], busy - now_idle)  # idle from here
        clock.now += CONFIG.idle_threshold_seconds + 1
        first_create: list[float] = []
        create = manager.create_slice

        def create_and_time(request: SliceRequest, create=create, first_create=first_create) -> object:  # noqa: ANN001
            if not first_create:
                first_create.append(time.perf_counter())
            return create(request)

        manager.create_slice = create_and_time  # type: ignore[method-assign]
        started = time.perf_counter()
        report = autoscaler.run_once(new_demand(run), busy - now_idle)
        changes.append(time.perf_counter() - started)
        to_request.append(first_create[0] - started)
        requested, deleted = len(report.requested), len(report.deleted)
        assert requested and deleted == len(now_idle), report

    width = 36
    print(summary_line("steady, no demand", idle, unit="ms", scale=1000, digits=2, width=width))
    print(summary_line("steady, 100 unservable jobs", unchanged, unit="ms", scale=1000, digits=2, width=width))
    print(summary_line(f"changes ({requested} creates, {deleted} deletes)", changes, unit="ms", scale=1000, digits=2, width=width))
    print(summary_line("demand -> create_slice call", to_request, unit="ms", scale=1000, digits=2, width=width))
    worst = max(statistics.median(v) for v in (idle, unchanged, changes)) * 1000
    print()
    print(f"slowest median cycle {worst:.2f} ms; target < {TARGET_MS:g} ms: {verdict(worst, TARGET_MS)}")
    print(
        "unmet demand -> slice request: the same cycle; with the controller's loop that is at most "
        f"evaluation_interval_seconds ({AutoscalerConfig().evaluation_interval_seconds:g} s) + "
        f"{statistics.median(to_request) * 1000:.2f} ms"
    )
    print(f"at the end: {load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
