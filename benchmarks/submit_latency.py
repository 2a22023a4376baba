"""Warm latency: one no-op job from ``submit()`` to ``wait()`` returning SUCCEEDED.

Starts a local cluster (``--cluster in-process``: ``IrisClient.local()``, everything in this
process; ``--cluster processes``: controller and workers as their own processes, this process the
client), runs ``--warmup`` jobs untimed,
then times ``--runs`` sequential ``submit()`` + ``wait()`` pairs of ``true`` and prints the
percentiles. Each job also reports the submit RPC alone and the wait alone, so a slow figure
says which half is slow. Targets: p50 at most 30 ms; at most 5 ms (the controller renovation,
issue 8).

    uv run python benchmarks/submit_latency.py [--runs 200] [--cpu 0.1] [--memory 16MB] [--cluster processes] [--bundle-bytes N]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
import zipfile

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from clusters import CLUSTER_KINDS, add_auth_option, cluster
from stats import load_line, machine_line, percentile, verdict

TARGET_P50_MS = 30.0
TARGET_P50_MS_RENOVATION = 5.0  # issue 8


def one_job(client: IrisClient, entrypoint: Entrypoint, resources: ResourceSpec) -> tuple[float, float]:
    """(submit seconds, wait seconds) for one job; fails loudly unless it SUCCEEDED."""
    started = time.perf_counter()
    job = client.submit(entrypoint, resources=resources)
    submitted = time.perf_counter()
    status = job.wait(timeout=60)
    done = time.perf_counter()
    if status.state is not JobState.SUCCEEDED:
        raise SystemExit(f"job {job.job_id} ended {status.state.value}: {status.error}")
    return submitted - started, done - submitted


def bundle_of(size: int) -> bytes:
    """A stored (uncompressed) zip holding ``size`` random bytes: unpacking it writes them all."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("data.bin", os.urandom(size))
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="timed jobs (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed jobs first (default 10)")
    parser.add_argument("--cpu", type=float, default=0.1, help="cpu requested per job (default 0.1)")
    parser.add_argument("--memory", default="16MB", help="memory requested per job (default 16MB)")
    parser.add_argument(
        "--bundle-bytes", type=int, default=0,
        help="ship a workspace bundle holding this many random bytes with every job (default 0: no bundle); "
        "the worker verifies its cached copy and unpacks it on every start",
    )
    parser.add_argument(
        "--cluster", choices=CLUSTER_KINDS, default="in-process",
        help="in-process: IrisClient.local(); processes: controller and worker as their own processes (default in-process)",
    )
    add_auth_option(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    entrypoint = Entrypoint.from_command("true")
    resources = ResourceSpec(cpu=args.cpu, memory=args.memory)
    print(machine_line())
    blob = bundle_of(args.bundle_bytes) if args.bundle_bytes > 0 else None
    bundle_note = f"a {args.bundle_bytes}-byte workspace bundle" if blob else "no workspace bundle"
    print(f"job: `true`, requested cpu={resources.cpu:g} memory={args.memory}; {bundle_note}")

    started = time.perf_counter()
    print(f"cluster {args.cluster}, auth {args.auth}")
    with cluster(args.cluster, args.auth) as cluster_client, IrisClient.remote(
        cluster_client.address, bundle_blob=blob, token=cluster_client.token
    ) as client:
        print(f"local cluster up in {time.perf_counter() - started:.3f} s")
        for _ in range(args.warmup):
            one_job(client, entrypoint, resources)
        submits, waits, totals = [], [], []
        started = time.perf_counter()
        for _ in range(args.runs):
            s, w = one_job(client, entrypoint, resources)
            submits.append(s)
            waits.append(w)
            totals.append(s + w)
        elapsed = time.perf_counter() - started

    print(f"{args.runs} sequential jobs in {elapsed:.2f} s ({args.warmup} warm-up jobs not counted)")
    print()
    print(f"{'ms':<24}{'p50':>8}{'p90':>8}{'p99':>8}{'min':>8}{'max':>8}")
    for label, values in (("submit() (LaunchJob)", submits), ("wait() until terminal", waits), ("submit-to-SUCCEEDED", totals)):
        row = [percentile(values, 50), percentile(values, 90), percentile(values, 99), min(values), max(values)]
        print(f"{label:<24}" + "".join(f"{v * 1000:>8.1f}" for v in row))
    p50_ms = percentile(totals, 50) * 1000
    print()
    print(f"submit-to-SUCCEEDED p50 {p50_ms:.1f} ms; target <= {TARGET_P50_MS:g} ms: {verdict(p50_ms, TARGET_P50_MS)}; "
          f"target <= {TARGET_P50_MS_RENOVATION:g} ms: {verdict(p50_ms, TARGET_P50_MS_RENOVATION)}")
    print("(comparison: Ray Jobs 1.08 s; Slurm `srun true` on loopback about 37 ms)")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
