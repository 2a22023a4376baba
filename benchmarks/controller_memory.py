"""Controller memory: RSS growth per 10,000 finished jobs.

Each run is a fresh child process holding a ``Controller`` with a SQLite ``Store`` in a
temporary directory, driven through its in-process API (no gRPC). ``--workers`` simulated
workers (4 cpu, 16 GB) register through ``Controller.reconcile``; jobs of 1 cpu are launched in
batches that fill them, and each worker then reconciles as a real one would: it receives the
attempts it should run, reports them RUNNING, then SUCCEEDED with two lines of log and the log
complete, and forgets them once acknowledged. ``--warmup`` jobs run first (imports, caches,
SQLite's page cache); then, after ``gc.collect()``, VmRSS is read from ``/proc/self/status``,
``--jobs`` more jobs run to completion, ``gc.collect()`` again and VmRSS again:

    MB per 10,000 finished jobs = (RSS after - RSS before) / jobs * 10,000

The controller keeps every finished job (with its log lines) in memory, so this is the growth
of its working set. Target: under 100 MB per 10,000 finished jobs (for comparison, Ray's job
supervisor is about 85 MB per running job).

    uv run python benchmarks/controller_memory.py [--runs 3] [--jobs 10000] [--workers 100]
"""

from __future__ import annotations

import argparse
import gc
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

from stats import load_line, machine_line, summary_line, verdict  # noqa: E402

TARGET_MB_PER_10K = 100.0
GB = 1 << 30
LOG = b"starting step 1 of 1\ndone: wrote 0 records\n"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(state_dir: Path, jobs: int, warmup: int, workers: int) -> dict[str, float]:
    logging.basicConfig(level=logging.WARNING)
    from iris.cluster.controller.controller import Controller, ObservedAttempt, WorkerIdentity
    from iris.cluster.controller.state import JobSpec
    from iris.cluster.controller.store import Store
    from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState

    store = Store(state_dir / "controller.db")
    controller = Controller(store=store)
    identities = [
        WorkerIdentity(f"sim-{i:04d}", slice_id=f"sim-slice-{i}", cpu=4, memory_bytes=16 * GB, attributes={"zone": "a"})
        for i in range(workers)
    ]
    versions = {w.worker_id: controller.reconcile(w, [], 0, wait=0).version for w in identities}
    entrypoint = Entrypoint.from_command(["python", "-c", "print('starting step 1 of 1'); print('done: wrote 0 records')"])
    resources = ResourceSpec(cpu=1, memory="1GB")
    launched = 0

    def run_jobs(count: int) -> None:
        nonlocal launched
        target = launched + count
        while launched < target:
            batch = min(target - launched, workers * 4)
            for _ in range(batch):
                controller.launch_job(JobSpec(name=f"job-{launched}", entrypoint=entrypoint, resources=resources))
                launched += 1
            for w in identities:
                result = controller.reconcile(w, [], versions[w.worker_id], wait=0)
                keys = [(d.task_id, d.attempt_id) for d in result.desired]
                if not keys:
                    continue
                running = [ObservedAttempt(t, a, TaskState.RUNNING) for t, a in keys]
                controller.reconcile(w, running, result.version, wait=0)
                finished = [
                    ObservedAttempt(t, a, TaskState.SUCCEEDED, exit_code=0, log_data=LOG, log_complete=True) for t, a in keys
                ]
                result = controller.reconcile(w, finished, result.version, wait=0)
                if not all(ack.done for ack in result.acks):
                    raise SystemExit("an attempt was not acknowledged as done")
                versions[w.worker_id] = result.version

    run_jobs(warmup)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    run_jobs(jobs)
    elapsed = time.perf_counter() - started
    gc.collect()
    after = rss_bytes()
    succeeded = sum(1 for j in controller.list_jobs() if j.state is JobState.SUCCEEDED)
    if succeeded != warmup + jobs:
        raise SystemExit(f"{succeeded} of {warmup + jobs} jobs SUCCEEDED")
    lines = sum(len(controller.read_logs(j.job_id, "")[0]) for j in controller.list_jobs())
    store.close()
    db_bytes = sum(p.stat().st_size for p in state_dir.glob("controller.db*"))
    return {
        "before": before,
        "after": after,
        "elapsed": elapsed,
        "jobs_per_s": jobs / elapsed,
        "db_bytes": db_bytes,
        "log_lines": lines,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh child processes (default 3)")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs measured per run (default 10,000)")
    parser.add_argument("--warmup", type=int, default=400, help="jobs run before the first reading (default 400)")
    parser.add_argument("--workers", type=int, default=100, help="simulated workers, 4 cpu each (default 100)")
    parser.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.jobs, args.warmup, args.workers)))
        return 0

    print(machine_line())
    print(f"{args.jobs} jobs (1 task, 2 log lines each) after {args.warmup} warm-up jobs, {args.workers} simulated workers")
    results = []
    for run in range(args.runs):
        state_dir = Path(tempfile.mkdtemp(prefix="iris-memory-"))
        try:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(state_dir), "--jobs", str(args.jobs),
                 "--warmup", str(args.warmup), "--workers", str(args.workers)],
                capture_output=True, text=True, check=False, timeout=1800,
            )
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(f"run {run + 1} failed")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["mb_per_10k"] = (r["after"] - r["before"]) / args.jobs * 10_000 / 1e6
        results.append(r)
        print(
            f"run {run + 1}: RSS {r['before'] / 1e6:.1f} MB -> {r['after'] / 1e6:.1f} MB = {r['mb_per_10k']:.1f} MB per 10,000 "
            f"finished jobs; {r['jobs_per_s']:.0f} jobs/s through the controller; state database "
            f"{r['db_bytes'] / 1e6:.1f} MB, {r['log_lines']} log lines; {load_line()}"
        )
    figures = [r["mb_per_10k"] for r in results]
    median = statistics.median(figures)
    print()
    print(summary_line("RSS growth per 10,000 finished jobs", figures, unit="MB", digits=1))
    print(f"per job: {median * 1e6 / 10_000 / 1024:.1f} KiB")
    print(f"median {median:.1f} MB per 10,000 finished jobs; target < {TARGET_MB_PER_10K:g} MB: {verdict(median, TARGET_MB_PER_10K)}")
    print("(comparison: Ray's job supervisor, about 85 MB per running job)")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
