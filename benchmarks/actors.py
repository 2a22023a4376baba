"""Actor calls and WorkerPool: latency, throughput from 8 threads, and a 10,000-call map.

1. An ``ActorServer`` in a child process hosting one object; this process calls it through
   ``ActorClient`` and ``FixedResolver`` (the process's pooled actor connections, shared by its
   threads): ``--calls`` sequential tiny calls after a warm-up (p50/p90/p99), then 8 threads
   making ``--calls`` calls each (calls/s, and the CPU each process spends per call).
2. ``WorkerPool.map`` of 10,000 tiny calls (``x + 1``) on an in-process local cluster
   (``IrisClient.local()``) with ``--workers`` worker tasks, after a warm-up map; wall time of
   the map alone (the pool's job is started and its workers registered before timing).

Each is repeated ``--runs`` times (a fresh server / pool each run) and the median reported, side
by side with Ray 2.60 on the same machine kind (TESTBED.md): call p50 0.97 ms, 1,680 calls/s
from 8 threads, 10,000 tiny tasks in 7.3 s. Targets (issue 14): p50 <= 0.5 ms, >= 5,000 calls/s,
map <= 2 s.

    uv run python benchmarks/actors.py [--runs 5] [--calls 2000] [--workers 2] [--skip-pool] [--auth]

``--auth``: the server checks each call's credential as an ActorServer inside a task of a
cluster with auth does (``ActorGate``; the controller's WhoAmI answer is cached after the first
call, so here a local token check stands in for that one round trip).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from stats import load_line, machine_line, percentile, verdict

RAY = {"p50_ms": 0.97, "calls_per_s": 1680.0, "map_s": 7.3}
TARGET = {"p50_ms": 0.5, "calls_per_s": 5000.0, "map_s": 2.0}

SERVER = """
import sys
import tempfile
from iris.actor import ActorServer

class Echo:
    def ping(self, x):
        return x

gate = None
if sys.argv[1:] == ["--auth"]:  # the check a task's server makes (its WhoAmI answers cached after the first call)
    from iris.actor import ActorGate
    from iris.auth import Authenticator, Principal, Role, TokenSigner

    auth = Authenticator(TokenSigner(b"benchmark-secret-0123456789abcdef"))
    gate = ActorGate("", auth.mint(Principal(Role.TASK, "bench", "/bench/actors")), "/bench/actors", who_is=auth.authenticate)
server = ActorServer(0, gate=gate if gate is not None else False)
server.register("echo", Echo())
server.serve()
print(server.address, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
server.stop()
"""


def process_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds (``/proc/<pid>/stat``)."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def actor_run(calls: int, threads: int, auth: bool = False) -> tuple[list[float], float, float, float]:
    """(sequential call latencies in seconds, calls/s from ``threads`` threads, client and server
    CPU seconds per call in the threaded phase) on a fresh server; with ``auth`` the server checks
    each call's task credential (a task of the same job tree, as inside a cluster with auth)."""
    from iris.actor import ActorClient, FixedResolver

    server = subprocess.Popen([sys.executable, "-c", SERVER, *(["--auth"] if auth else [])], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = server.stdout.readline().strip()
        metadata = None
        if auth:
            from iris.auth import METADATA_KEY, Authenticator, Principal, Role, TokenSigner

            token = Authenticator(TokenSigner(b"benchmark-secret-0123456789abcdef")).mint(Principal(Role.TASK, "bench", "/bench/actors/caller"))
            sent = ((METADATA_KEY, f"Bearer {token}"),)
            metadata = lambda: sent  # noqa: E731
        client = ActorClient(FixedResolver({"echo": address}), "echo", metadata=metadata)
        for i in range(200):
            client.ping(i)
        latencies = []
        for i in range(calls):
            started = time.perf_counter()
            client.ping(i)
            latencies.append(time.perf_counter() - started)

        def hammer() -> None:
            for i in range(calls):
                client.ping(i)

        workers = [threading.Thread(target=hammer) for _ in range(threads)]
        cpu_client, cpu_server = time.process_time(), process_cpu(server.pid)
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        rate = threads * calls / (time.perf_counter() - started)
        total = threads * calls
        return latencies, rate, (time.process_time() - cpu_client) / total, (process_cpu(server.pid) - cpu_server) / total
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def plus_one(x: int) -> int:
    return x + 1


def pool_run(client, workers: int, n: int) -> float:
    """Seconds for ``WorkerPool.map`` of ``n`` tiny calls on a fresh, warmed-up pool."""
    from iris.client import WorkerPool
    from iris.cluster.types import ResourceSpec

    with WorkerPool(client, workers, resources=ResourceSpec(cpu=0.1, memory="200MB")) as pool:
        assert list(pool.map(plus_one, range(100), timeout=120)) == list(range(1, 101))
        pool_size = 0
        deadline = time.monotonic() + 60
        while pool_size < workers and time.monotonic() < deadline:  # every worker registered
            pool_size = len(pool._resolver.resolve("iris-pool-worker"))
            time.sleep(0.05)
        started = time.perf_counter()
        out = list(pool.map(plus_one, range(n), timeout=300))
        elapsed = time.perf_counter() - started
        if out != list(range(1, n + 1)):
            raise SystemExit("WorkerPool.map returned wrong results")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls, and calls per thread")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="WorkerPool worker tasks")
    parser.add_argument("--map-calls", type=int, default=10_000)
    parser.add_argument("--skip-pool", action="store_true")
    parser.add_argument("--auth", action="store_true", help="the server checks each call's task credential (cluster with auth)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(machine_line())
    checking = "checks each call's task credential (--auth)" if args.auth else "no credential check (auth off)"
    print(f"actor server: {checking}")

    p50s, p90s, p99s, rates, client_cpu, server_cpu = [], [], [], [], [], []
    for run in range(args.runs):
        latencies, rate, per_client, per_server = actor_run(args.calls, args.threads, args.auth)
        client_cpu.append(per_client * 1e6)
        server_cpu.append(per_server * 1e6)
        p50s.append(percentile(latencies, 50) * 1e3)
        p90s.append(percentile(latencies, 90) * 1e3)
        p99s.append(percentile(latencies, 99) * 1e3)
        rates.append(rate)
        print(f"run {run + 1}: call p50 {p50s[-1]:.3f} ms, p90 {p90s[-1]:.3f} ms, p99 {p99s[-1]:.3f} ms; "
              f"{rate:,.0f} calls/s from {args.threads} threads (CPU per call: client {client_cpu[-1]:.0f} us, "
              f"server {server_cpu[-1]:.0f} us); {load_line()}")
    p50, rate = statistics.median(p50s), statistics.median(rates)
    print(f"actor call p50: median {p50:.3f} ms (runs {', '.join(f'{x:.3f}' for x in p50s)}; p90 {statistics.median(p90s):.3f}, "
          f"p99 {statistics.median(p99s):.3f}) | Ray 2.60 {RAY['p50_ms']} ms | target <= {TARGET['p50_ms']} ms: {verdict(p50, TARGET['p50_ms'])}")
    print(f"calls/s from {args.threads} threads: median {rate:,.0f} (runs {', '.join(f'{x:,.0f}' for x in rates)}) | "
          f"Ray 2.60 {RAY['calls_per_s']:,.0f} | target >= {TARGET['calls_per_s']:,.0f}: "
          f"{verdict(rate, TARGET['calls_per_s'], lower_is_better=False)}")

    worst = max(statistics.median(client_cpu), statistics.median(server_cpu))
    print(f"CPU per call from {args.threads} threads: client {statistics.median(client_cpu):.0f} us, server "
          f"{statistics.median(server_cpu):.0f} us (median): with a core each, at most {1e6 / worst:,.0f} calls/s")

    if not args.skip_pool:
        from iris.client import IrisClient

        times = []
        # the pool's worker tasks run Iris's pool code: their workspace declares iris-core (docs/actors.md)
        workspace = Path(tempfile.mkdtemp(prefix="iris-bench-pool-"))
        iris_core = Path(__file__).resolve().parents[1] / "iris-core"
        (workspace / "pyproject.toml").write_text(
            '[project]\nname = "bench-pool"\nversion = "0"\nrequires-python = ">=3.11"\ndependencies = ["iris-core"]\n\n'
            f'[tool.uv.sources]\niris-core = {{ path = "{iris_core}", editable = true }}\n'
        )
        with IrisClient.local(workspace=workspace) as client:
            for run in range(args.runs):
                times.append(pool_run(client, args.workers, args.map_calls))
                print(f"run {run + 1}: WorkerPool.map of {args.map_calls:,} calls on {args.workers} workers: {times[-1]:.3f} s; {load_line()}")
        median = statistics.median(times)
        print(f"WorkerPool.map of {args.map_calls:,}: median {median:.3f} s (runs {', '.join(f'{x:.3f}' for x in times)}) | "
              f"Ray 2.60 {RAY['map_s']} s | target <= {TARGET['map_s']} s: {verdict(median, TARGET['map_s'])}")
        shutil.rmtree(workspace, ignore_errors=True)
    print(f"end: {load_line()}")


if __name__ == "__main__":
    main()
