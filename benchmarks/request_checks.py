"""What the issue-11 checks cost: the request check each RPC passes before its handler, and a
worker's check of its cached bundle before each use.

Request checks (``iris.rpc.validate.check_request``, in this process, no gRPC): a typical
``LaunchJob`` and ``Reconcile`` with 1, 10 and 100 reported attempts. Bundle checks
(``Worker._open_cached`` on a real worker's cache directory, no controller): a cached copy whose
file stamp was seen (the usual warm start) against hashing it anew (the first use after a
download, a restart or a change), for bundles of ``--sizes`` bytes. Median of ``--runs`` rounds.

    uv run python benchmarks/request_checks.py [--runs 5] [--sizes 100000,20000000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from iris.cluster.types import Entrypoint, ResourceSpec, TaskState
from iris.cluster.worker.worker import Worker
from iris.job.records import JobSpec, ObservedAttempt, WorkerIdentity
from iris.rpc import controller_pb2, convert
from iris.rpc.validate import check_request
from stats import machine_line


def per_call_us(fn, calls: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def request_checks(runs: int) -> None:
    spec = JobSpec(
        name="train", entrypoint=Entrypoint(argv=("python", "train.py")), resources=ResourceSpec(cpu=1, memory="2GB"), user="alice"
    )
    launch = controller_pb2.LaunchJobRequest(spec=convert.job_spec_to_proto(spec))
    identity = WorkerIdentity("slice-0-0", cpu=8, memory_bytes=32 << 30, attributes={"zone": "a", "device": "cpu"})
    cases = [("LaunchJob", "/iris.v1.ControllerService/LaunchJob", launch)]
    for n in (1, 10, 100):
        observed = [ObservedAttempt(f"/alice/job{i}/0", 0, TaskState.RUNNING, log_offset=100, log_data=b"line\n") for i in range(n)]
        request = convert.reconcile_request_to_proto(identity, observed, 7, 2.0)
        cases.append((f"Reconcile, {n} attempts", "/iris.v1.WorkerService/Reconcile", request))
    print()
    print(f"{'request check':<28}{'us per call':>12}")
    for label, method, request in cases:
        figures = [per_call_us(lambda: check_request(method, request), 2000) for _ in range(runs)]
        print(f"{label:<28}{statistics.median(figures):>12.1f}")


def bundle_checks(runs: int, sizes: list[int]) -> None:
    print()
    print(f"{'cached bundle check':<28}{'stamp seen ms':>14}{'hashed ms':>12}")
    with tempfile.TemporaryDirectory(prefix="iris-bench-bundle-") as tmp:
        worker = Worker(
            worker_id="bench", controller_address="127.0.0.1:1", runtime=None, bundle_store_for=None, work_dir=Path(tmp),
            cpu=1.0, memory_bytes=1 << 30,
        )  # fmt: skip
        cache = Path(tmp) / "bundles"
        cache.mkdir()
        for size in sizes:
            data = os.urandom(size)
            bundle_id = hashlib.sha256(data).hexdigest()
            path = cache / f"{bundle_id}.zip"
            path.write_bytes(data)
            old = time.time() - 60  # older than the stamp's settle time, as a copy in use is
            os.utime(path, (old, old))
            time.sleep(0.2)  # ctime (set by the write) must be older than the settle time too

            def check(forget: bool) -> None:
                with worker._bundle_lock:
                    if forget:
                        worker._verified.pop(bundle_id, None)
                    copy = worker._open_cached(path, bundle_id)
                assert copy is not None
                copy.close()

            check(False)  # remember the stamp
            seen = [per_call_us(lambda: check(False), 200) / 1000 for _ in range(runs)]
            hashed = [per_call_us(lambda: check(True), 5) / 1000 for _ in range(runs)]
            print(f"{f'{size / 1e6:g} MB':<28}{statistics.median(seen):>14.3f}{statistics.median(hashed):>12.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds, median taken (default 5)")
    parser.add_argument("--sizes", default="100000,20000000", help="bundle sizes in bytes, comma-separated")
    args = parser.parse_args()
    print(machine_line())
    request_checks(args.runs)
    bundle_checks(args.runs, [int(s) for s in args.sizes.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
