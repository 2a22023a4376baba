"""Scheduling: placements per second of the controller's scheduling pass, 10,000 tasks onto 1,000 workers.

In one process, no gRPC: a ``Controller`` (no store) gets ``--tasks`` pending tasks, queued by
``launch_job`` while no worker is registered, and ``--workers`` simulated workers (4 cpu, 16 GB
each), registered through ``Controller.reconcile(WorkerIdentity(...), [], 0, wait=0)`` while the
queue is held aside so that registering places nothing. Then one scheduling pass
(``Scheduler.schedule`` under the controller's lock) is timed, with the placement index dropped
first so the pass builds it from nothing:

    placements/s = tasks placed by the pass / duration of the pass

Cases (each ``--runs`` times on a fresh controller):

* many jobs: 10,000 single-task jobs of 0.25 cpu / 512 MB (16 fit per worker: all placed);
* few large jobs: 10 jobs of 1,000 tasks each, same size;
* mixed: 10,000 single-task jobs, each constrained to one of 4 zones and of one of 3 sizes;
* oversubscribed: 10,000 single-task jobs of 1 cpu / 1 GB: 4,000 placed, 6,000 left waiting
  (each with its reason).

Also timed, as context: queueing the jobs (``launch_job`` with its scheduling pass, no workers);
1,000 workers joining one at a time under a 10,000-task backlog (a pass per registration);
10,000 jobs launched one at a time into the 1,000 registered workers (a pass per launch).
Target: at least 10,000 placements/s (Slurm's published figure: 500 simple jobs/s fully executed).

    uv run python benchmarks/scheduling.py [--runs 5] [--tasks 10000] [--workers 1000]
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import load_line, machine_line, summary_line, verdict  # noqa: E402

from iris.cluster.constraints import Constraint, Op  # noqa: E402
from iris.cluster.controller.controller import Controller, WorkerIdentity  # noqa: E402
from iris.cluster.controller.state import JobSpec  # noqa: E402
from iris.cluster.types import Entrypoint, ResourceSpec, TaskState  # noqa: E402

TARGET_PLACEMENTS_PER_S = 10_000
GB = 1 << 30
ZONES = ("a", "b", "c", "d")
TRUE = Entrypoint.from_command("true")

# A case: jobs (replicas, resources, constraints) for a number of tasks.
Case = Callable[[int], list[JobSpec]]


def many_jobs(tasks: int) -> list[JobSpec]:
    return [JobSpec(name=f"j{i}", entrypoint=TRUE, resources=ResourceSpec(cpu=0.25, memory="512MiB")) for i in range(tasks)]


def few_large_jobs(tasks: int) -> list[JobSpec]:
    per_job = max(1, tasks // 10)
    return [
        JobSpec(name=f"j{i}", entrypoint=TRUE, resources=ResourceSpec(cpu=0.25, memory="512MiB"), replicas=per_job)
        for i in range(tasks // per_job)
    ]


def mixed(tasks: int) -> list[JobSpec]:
    sizes = [ResourceSpec(cpu=0.25, memory="512MiB"), ResourceSpec(cpu=0.5, memory="512MiB"), ResourceSpec(cpu=0.25, memory="1GiB")]
    return [
        JobSpec(
            name=f"j{i}",
            entrypoint=TRUE,
            resources=sizes[i % 3],
            constraints=(Constraint("zone", Op.EQ, (ZONES[(i // 3) % 4],)),),
        )
        for i in range(tasks)
    ]


def oversubscribed(tasks: int) -> list[JobSpec]:
    return [JobSpec(name=f"j{i}", entrypoint=TRUE, resources=ResourceSpec(cpu=1, memory="1GiB")) for i in range(tasks)]


CASES: dict[str, Case] = {
    "many jobs (10,000 x 1 task)": many_jobs,
    "few large jobs (10 x 1,000 tasks)": few_large_jobs,
    "mixed (4 zones x 3 sizes)": mixed,
    "oversubscribed (1 cpu each)": oversubscribed,
}


def identity(i: int) -> WorkerIdentity:
    return WorkerIdentity(
        worker_id=f"w{i:04d}", slice_id=f"s{i // 4}", cpu=4.0, memory_bytes=16 * GB, attributes={"zone": ZONES[i % 4]}
    )


def count_tasks(controller: Controller, state: TaskState) -> int:
    return sum(1 for job in controller.list_jobs() for t in job.tasks if t.state is state)


def one_pass(specs: list[JobSpec], workers: int) -> dict[str, float]:
    controller = Controller()
    gc.collect()
    started = time.perf_counter()
    for spec in specs:
        controller.launch_job(spec)
    queued = time.perf_counter() - started
    state = controller._state  # the benchmark reaches inside to time one pass alone
    with controller._lock:  # register the workers without placing anything yet
        backlog, state.pending = state.pending, OrderedDict()
        for i in range(workers):
            controller.reconcile(identity(i), [], 0, wait=0)
        state.pending = backlog
        controller._scheduler.reset()  # the pass builds its placement index from nothing
        gc.collect()
        started = time.perf_counter()
        controller._scheduler.schedule()
        elapsed = time.perf_counter() - started
    placed = count_tasks(controller, TaskState.ASSIGNED)
    return {
        "queue_s": queued,
        "pass_s": elapsed,
        "placed": placed,
        "waiting": count_tasks(controller, TaskState.PENDING),
        "rate": placed / elapsed,
    }


def workers_join(specs: list[JobSpec], workers: int) -> tuple[float, int]:
    """A backlog, then workers registering one at a time (each registration runs a pass)."""
    controller = Controller()
    for spec in specs:
        controller.launch_job(spec)
    gc.collect()
    started = time.perf_counter()
    for i in range(workers):
        controller.reconcile(identity(i), [], 0, wait=0)
    elapsed = time.perf_counter() - started
    return elapsed, count_tasks(controller, TaskState.ASSIGNED)


def launches_into_cluster(specs: list[JobSpec], workers: int) -> tuple[float, int]:
    """Workers registered, then jobs launched one at a time (each launch runs a pass)."""
    controller = Controller()
    for i in range(workers):
        controller.reconcile(identity(i), [], 0, wait=0)
    gc.collect()
    started = time.perf_counter()
    for spec in specs:
        controller.launch_job(spec)
    elapsed = time.perf_counter() - started
    return elapsed, count_tasks(controller, TaskState.ASSIGNED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh controllers per case (default 5)")
    parser.add_argument("--tasks", type=int, default=10_000, help="pending tasks (default 10,000)")
    parser.add_argument("--workers", type=int, default=1_000, help="simulated workers, 4 cpu / 16 GB each (default 1,000)")
    parser.add_argument("--context-runs", type=int, default=3, help="runs of the join and launch figures (default 3; 0 skips them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    print(machine_line())
    print(f"{args.tasks} pending tasks onto {args.workers} workers (4 cpu, 16 GB, 4 zones); {args.runs} runs per case")
    print()
    medians = []
    for name, case in CASES.items():
        specs = case(args.tasks)
        results = [one_pass(specs, args.workers) for _ in range(args.runs)]
        rates = [r["rate"] for r in results]
        medians.append(statistics.median(rates))
        r = results[0]
        print(f"{name}: {len(specs)} jobs, {r['placed']:.0f} placed by the pass, {r['waiting']:.0f} left waiting")
        print("  " + summary_line("pass", [r["pass_s"] for r in results], unit="ms", scale=1000, digits=1, width=22))
        print("  " + summary_line("placements/s", rates, unit="/s", digits=0, width=22))
        print("  " + summary_line("queueing (no workers)", [r["queue_s"] for r in results], unit="s", digits=2, width=22))
    if args.context_runs:
        specs = many_jobs(args.tasks)
        joins = [workers_join(specs, args.workers) for _ in range(args.context_runs)]
        launches = [launches_into_cluster(specs, args.workers) for _ in range(args.context_runs)]
        print()
        print(f"context: {args.workers} workers joining one at a time under a {args.tasks}-task backlog (a pass each)")
        print("  " + summary_line("placements/s", [p / s for s, p in joins], unit="/s", digits=0, width=22))
        print(f"context: {args.tasks} single-task jobs launched one at a time into {args.workers} idle workers (a pass each)")
        print("  " + summary_line("launches/s", [p / s for s, p in launches], unit="/s", digits=0, width=22))
    worst = min(medians)
    print()
    print(
        f"slowest case median {worst:,.0f} placements/s; target >= {TARGET_PLACEMENTS_PER_S:,} placements/s: "
        f"{verdict(worst, TARGET_PLACEMENTS_PER_S, lower_is_better=False)}"
    )
    print("(comparison: Slurm's published figure, 500 simple jobs/s fully executed)")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
