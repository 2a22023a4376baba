"""Throughput: many no-op jobs submitted at once, jobs per second until the last one SUCCEEDED.

For each ``--cpu`` value, starts a fresh local cluster (``--cluster in-process``: everything in
this process, ``IrisClient.local()``; ``--cluster processes``: a controller process and one
worker process per core, as ``iris cluster start --local`` runs them, this process the client),
runs a few warm-up jobs, then submits ``--jobs`` jobs of ``true`` from ``--threads`` threads
as fast as they go and waits for every one. The figure is

    jobs/s = jobs / (last job's finished_at - first submit)

where ``finished_at`` is the controller's record of the job reaching SUCCEEDED (same process,
same clock). The workers advertise this machine's CPU count in all, so the scheduler places at
most ``floor(nproc / cpu)`` jobs at a time; the output shows that bound and
how many jobs were placed at once (sampled from ListWorkers every 20 ms). Also printed: CPU time
per job of this process and of the task processes. Every job must SUCCEED, else the script
exits non-zero. The cluster's state directory is a temporary directory, so ``TMPDIR`` picks the
filesystem it lives on (the worker creates and removes several files per job).
Targets: at least 100 jobs/s; at ``cpu=0.1``, at least 400 jobs/s (the controller renovation,
issue 8; the floor on this machine is about 700/s, set by spawning ``sh`` and ``true``).

    uv run python benchmarks/throughput.py [--runs 3] [--jobs 500] [--cpu 1 --cpu 0.1] [--cluster processes]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from clusters import CLUSTER_KINDS, add_auth_option, cluster, cluster_cpu
from stats import load_line, machine_line, verdict

TARGET_JOBS_PER_S = 100.0
TARGETS = {0.1: 400.0}  # cpu per job -> jobs/s, where an issue set a higher one


class ConcurrencySampler:
    """Polls ListWorkers every ``interval`` seconds: the most cpu the scheduler had handed out.

    (Attempt start times from the controller cannot be used: an attempt whose first report is
    already terminal never gets a ``started_at``; see docs/performance.md.)
    """

    def __init__(self, client: IrisClient, cpu_per_job: float, interval: float = 0.02):
        self._client = client
        self._cpu = cpu_per_job
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[float] = []
        self._thread = threading.Thread(target=self._run, name="concurrency-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            used = sum(w.used.cpu for w in self._client.list_workers())
            self.samples.append(used / self._cpu if self._cpu else 0.0)

    def __enter__(self) -> ConcurrencySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_run(cpu: float, memory: str, jobs: int, threads: int, kind: str, auth: str = "default") -> dict[str, float]:
    entrypoint = Entrypoint.from_command("true")
    resources = ResourceSpec(cpu=cpu, memory=memory)
    with cluster(kind, auth) as client:
        worker_cpu = _wait_for_worker_cpu(client)
        for i in range(5):
            if client.submit(entrypoint, f"warmup-{i}", resources).wait(timeout=60).state is not JobState.SUCCEEDED:
                raise SystemExit("a warm-up job did not succeed")

        cpu_before = os.times()
        cluster_before = cluster_cpu(client)
        first_submit = time.time()
        started = time.perf_counter()
        with ConcurrencySampler(client, cpu) as sampler:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                # Submit everything first, as fast as the threads go; jobs start running meanwhile.
                # Named explicitly: default names carry only a 24-bit random suffix per second and
                # collide in about 0.6% of 500-job bursts (see docs/performance.md).
                futures = [pool.submit(client.submit, entrypoint, f"job-{i}", resources) for i in range(jobs)]
                handles = [f.result() for f in futures]
            all_submitted = time.perf_counter()
            with ThreadPoolExecutor(max_workers=threads) as pool:
                statuses = list(pool.map(lambda job: job.wait(timeout=300), handles))
            all_seen = time.perf_counter()
            cpu_after = os.times()
            cluster_after = cluster_cpu(client)

    bad = [s for s in statuses if s.state is not JobState.SUCCEEDED]
    if bad:
        for s in bad[:5]:
            print(f"  job {s.job_id} ended {s.state.value}: {s.error}", file=sys.stderr)
        raise SystemExit(f"{len(bad)} of {jobs} jobs did not SUCCEED")
    last_finished = max(s.finished_at for s in statuses)
    return {
        "jobs_per_s": jobs / (last_finished - first_submit),
        "submit_s": all_submitted - started,
        "client_seen_s": all_seen - started,
        "span_s": last_finished - first_submit,
        "worker_cpu": worker_cpu,
        "max_concurrency": max(sampler.samples, default=0.0),
        "mean_concurrency": statistics.mean(sampler.samples) if sampler.samples else 0.0,
        # CPU time of this process (client, controller and worker threads) and of the reaped
        # task processes (`sh` wrapper plus `true`), per job.
        "cpu_ms_per_job": (own_cpu(cpu_after) - own_cpu(cpu_before)) / jobs * 1000,
        "child_cpu_ms_per_job": (child_cpu(cpu_after) - child_cpu(cpu_before)) / jobs * 1000,
        # processes cluster: the controller's and the workers' (with their tasks) CPU per job
        **{f"{role}_cpu_ms_per_job": (cluster_after[role] - cluster_before[role]) / jobs * 1000 for role in cluster_after},
    }


def own_cpu(t: os.times_result) -> float:
    return t.user + t.system


def child_cpu(t: os.times_result) -> float:
    return t.children_user + t.children_system


def _wait_for_worker_cpu(client: IrisClient, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpu = sum(w.capacity.cpu for w in client.list_workers())
        if cpu:
            return cpu
        time.sleep(0.02)
    raise SystemExit("no worker registered within 10 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh clusters per cpu value (default 3)")
    parser.add_argument("--jobs", type=int, default=500, help="jobs per run (default 500)")
    parser.add_argument("--threads", type=int, default=4, help="client threads submitting and waiting (default 4)")
    parser.add_argument("--cpu", type=float, action="append", help="cpu per job; repeat for several (default: 1 and 0.1)")
    parser.add_argument("--memory", default="16MB", help="memory per job (default 16MB)")
    parser.add_argument(
        "--cluster", choices=CLUSTER_KINDS, default="in-process",
        help="in-process: IrisClient.local(); processes: controller and worker as their own processes (default in-process)",
    )
    add_auth_option(parser)
    args = parser.parse_args()
    cpus = args.cpu or [1.0, 0.1]
    logging.basicConfig(level=logging.WARNING)

    print(machine_line())
    print(f"cluster state (attempt and container directories) under {tempfile.gettempdir()} (set TMPDIR to move it)")
    print(f"{args.jobs} jobs of `true` per run, memory={args.memory}, {args.threads} client threads, {args.runs} runs, cluster {args.cluster}, auth {args.auth}")
    print()
    medians = []
    for cpu in cpus:
        results = []
        for i in range(args.runs):
            r = one_run(cpu, args.memory, args.jobs, args.threads, args.cluster, args.auth)
            results.append(r)
            print(
                f"cpu={cpu:g} run {i + 1}: {r['jobs_per_s']:.0f} jobs/s "
                f"({args.jobs} SUCCEEDED in {r['span_s']:.2f} s; all submitted after {r['submit_s']:.2f} s; "
                f"client saw all done after {r['client_seen_s']:.2f} s; "
                f"jobs placed at once: max {r['max_concurrency']:.0f}, mean {r['mean_concurrency']:.1f}, "
                f"capacity {math.floor(r['worker_cpu'] / cpu + 1e-9) if cpu else 'unbounded'} "
                f"on workers of {r['worker_cpu']:g} cpu in all"
                + (
                    f"; CPU per job {r['cpu_ms_per_job']:.1f} ms in-process + {r['child_cpu_ms_per_job']:.1f} ms task processes)"
                    if args.cluster == "in-process" else
                    f"; CPU per job: client {r['cpu_ms_per_job']:.1f} ms, controller {r['controller_cpu_ms_per_job']:.1f} ms, "
                    f"workers with their tasks {r['workers_cpu_ms_per_job']:.1f} ms)"
                )
            )
        rates = [r["jobs_per_s"] for r in results]
        median = statistics.median(rates)
        medians.append((cpu, median, min(rates), max(rates)))
        print()

    for cpu, median, low, high in medians:
        print(
            f"cpu={cpu:g} per job: median {median:.0f} jobs/s (min {low:.0f}, max {high:.0f}); "
            f"target >= {TARGETS.get(cpu, TARGET_JOBS_PER_S):g} jobs/s: "
            f"{verdict(median, TARGETS.get(cpu, TARGET_JOBS_PER_S), lower_is_better=False)}"
        )
    print("(comparison: Ray Jobs about 1 job/s)")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
