"""One job of many tasks through the controller: tasks per second and controller CPU per task.

Each run is a fresh child process holding a ``Controller`` with a SQLite ``Store`` in a
temporary directory, driven through its in-process API (no gRPC). ``--workers`` simulated
workers register through ``Controller.reconcile`` with room for ``--slots`` one-cpu tasks each.
Then one job of ``--tasks`` tasks (cpu 1) is launched, and the workers reconcile round-robin as
real ones would: each receives the attempts it should run, reports them RUNNING, then SUCCEEDED
with one log line and the log complete, and forgets them once acknowledged. The figure is

    tasks/s = tasks / (time from launch until the job is SUCCEEDED)

and the controller's CPU time per task over the same span (this process does nothing else;
the simulated workers' own bookkeeping is included, so it is an upper bound). For comparison
the same number of single-task jobs is run (``--compare``). Target (issue 8): a 10,000-task
job at least 1,000 tasks/s (before the renovation: 14 tasks/s, 62 ms of CPU per task).

    uv run python benchmarks/big_job.py [--runs 3] [--tasks 10000] [--workers 100] [--slots 20] [--compare]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import load_line, machine_line, verdict  # noqa: E402

TARGET_TASKS_PER_S = 1000.0
GB = 1 << 30


def child(state_dir: Path, tasks: int, workers: int, slots: int, single: bool) -> dict[str, float]:
    logging.basicConfig(level=logging.WARNING)
    from iris.cluster.controller.controller import Controller, ObservedAttempt, WorkerIdentity
    from iris.cluster.controller.state import JobSpec
    from iris.cluster.controller.store import Store
    from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState

    controller = Controller(store=Store(state_dir / "controller.db"))
    identities = [WorkerIdentity(f"w{i}", cpu=float(slots), memory_bytes=64 * GB) for i in range(workers)]
    versions = {w.worker_id: controller.reconcile(w, [], 0).version for w in identities}
    running: dict[str, dict[tuple[str, int], str]] = {w.worker_id: {} for w in identities}  # key -> phase
    resources = ResourceSpec(cpu=1, memory=GB)
    entry = Entrypoint.from_command("true")
    start_cpu, start = time.process_time(), time.perf_counter()
    if single:
        job_ids = [controller.launch_job(JobSpec(name=f"t{i}", entrypoint=entry, resources=resources)) for i in range(tasks)]
    else:
        job_ids = [controller.launch_job(JobSpec(name="big", entrypoint=entry, resources=resources, replicas=tasks))]
    done = 0
    while done < tasks:
        for w in identities:
            mine = running[w.worker_id]
            observed = []
            for key, phase in mine.items():
                if phase == "new":
                    observed.append(ObservedAttempt(key[0], key[1], TaskState.RUNNING))
                    mine[key] = "running"
                else:
                    observed.append(
                        ObservedAttempt(key[0], key[1], TaskState.SUCCEEDED, exit_code=0, log_data=b"done\n", log_complete=True)
                    )
                    mine[key] = "ended"
            result = controller.reconcile(w, observed, versions[w.worker_id])
            versions[w.worker_id] = result.version
            for ack in result.acks:
                key = (ack.task_id, ack.attempt_id)
                if ack.done and mine.get(key) == "ended":
                    del mine[key]
                    done += 1
            for d in result.desired:
                mine.setdefault((d.task_id, d.attempt_id), "new")
    states = {controller.job_state(j)[1] for j in job_ids}
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    assert states == {JobState.SUCCEEDED}, states
    return {"tasks_per_s": tasks / elapsed, "cpu_ms_per_task": cpu / tasks * 1000, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--compare", action="store_true", help="also run as many single-task jobs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, state_dir = args.child.split(":", 1)
        print(json.dumps(child(Path(state_dir), args.tasks, args.workers, args.slots, mode == "single")))
        return
    print(machine_line())
    modes = ["big", "single"] if args.compare else ["big"]
    for mode in modes:
        figures = []
        for _ in range(args.runs):
            print(load_line())
            state_dir = Path(tempfile.mkdtemp(prefix="iris-bench-bigjob-"))
            try:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", f"{mode}:{state_dir}", "--tasks", str(args.tasks),
                     "--workers", str(args.workers), "--slots", str(args.slots)],
                    check=True, capture_output=True, text=True, timeout=900,
                ).stdout
            finally:
                shutil.rmtree(state_dir, ignore_errors=True)
            figure = json.loads(out.strip().splitlines()[-1])
            figures.append(figure)
            label = f"one job of {args.tasks} tasks" if mode == "big" else f"{args.tasks} single-task jobs"
            print(f"{label}: {figure['tasks_per_s']:.0f} tasks/s, {figure['cpu_ms_per_task']:.2f} ms CPU per task, {figure['seconds']:.1f} s")
        median = statistics.median(f["tasks_per_s"] for f in figures)
        cpu = statistics.median(f["cpu_ms_per_task"] for f in figures)
        print(f"{mode}: median {median:.0f} tasks/s, {cpu:.2f} ms CPU per task over {len(figures)} runs")
        if mode == "big":
            print(f"target >= {TARGET_TASKS_PER_S:.0f} tasks/s: {verdict(median, TARGET_TASKS_PER_S, lower_is_better=False)}")


if __name__ == "__main__":
    main()
