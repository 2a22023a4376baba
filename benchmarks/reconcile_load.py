"""Reconcile load: CPU the controller spends serving 1,000 workers that reconcile every 5 seconds.

The controller (``Controller`` with a SQLite ``Store`` in a temporary directory, served by
``ControllerServer`` on 127.0.0.1, port 0, with its tick thread) runs in a child process, so its
CPU time is its own: utime + stime from ``/proc/<pid>/stat``. This process simulates the workers:
``--workers`` identities (4 cpu, 16 GB), driven by ``--threads`` threads (one gRPC channel each),
each worker sending ``Reconcile`` every ``--period`` seconds with ``wait_seconds=0`` (no
long-poll), phases staggered evenly over the period. Like real workers they report every
attempt the controller wants them to run as RUNNING, at once when a new one arrives (a real
worker's local change sends a fresh request) and then on every exchange.

Before measuring, ``--jobs`` single-task jobs of 2 cpu are launched over gRPC, so that
``jobs / 2`` workers each run two attempts (the rest are idle), and one full period passes so
every attempt is reported RUNNING. Then ``--runs`` consecutive windows of ``--window`` seconds:

    cores = controller CPU seconds in the window / window seconds

The reconcile rate achieved and the RPC latency seen by the simulated workers are printed too.
Target: under 0.5 of one core.

    uv run python benchmarks/reconcile_load.py [--workers 1000] [--period 5] [--jobs 500] [--window 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import load_line, machine_line, percentile, summary_line, verdict  # noqa: E402

TARGET_CORES = 0.5
GB = 1 << 30


def serve(state_dir: Path) -> int:
    """The child: a controller server until stdin closes; prints its port, then its pid's figures."""
    logging.basicConfig(level=logging.WARNING)
    from iris.cluster.controller.controller import Controller
    from iris.cluster.controller.service import ControllerServer
    from iris.cluster.controller.store import Store
    from iris.plugin.registry import get_registry

    bundles = get_registry().open_bundle_store(f"file://{state_dir / 'bundles'}")
    store = Store(state_dir / "controller.db")
    server = ControllerServer(Controller(store=store), bundles, host="127.0.0.1", port=0)
    server.start()
    print(server.port, flush=True)
    sys.stdin.read()  # until the parent closes it (or dies)
    server.stop()
    store.close()
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SimulatedWorker:
    def __init__(self, index: int, count: int, period: float):
        from iris.rpc import common_pb2, worker_pb2

        self.identity = worker_pb2.WorkerIdentity(
            worker_id=f"sim-{index:04d}",
            slice_id=f"sim-slice-{index // 4}",
            capacity=common_pb2.ResourceSpec(cpu=4, memory_bytes=16 * GB),
            attributes={"zone": "zone-" + "abcd"[index % 4]},
        )
        self.phase = period * index / count
        self.version = 0
        self.attempts: set[tuple[str, int]] = set()


class Driver:
    """Threads that reconcile their share of the simulated workers on a fixed schedule."""

    def __init__(self, port: int, workers: int, threads: int, period: float):
        import grpc

        from iris.cluster.types import TaskState
        from iris.rpc import worker_pb2, worker_pb2_grpc
        from iris.rpc.convert import task_state_to_proto

        self._pb = worker_pb2
        self._running = task_state_to_proto(TaskState.RUNNING)
        self.period = period
        self.sims = [SimulatedWorker(i, workers, period) for i in range(workers)]
        self._channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(threads)]
        self._stubs = [worker_pb2_grpc.WorkerServiceStub(c) for c in self._channels]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.calls = 0
        self.errors = 0
        self.latencies: list[float] = []
        self._threads: list[threading.Thread] = []

    def reconcile(self, sim: SimulatedWorker, stub: object) -> None:
        while True:
            request = self._pb.ReconcileRequest(worker=sim.identity, known_version=sim.version, wait_seconds=0)
            for task_id, attempt_id in sim.attempts:
                request.attempts.add(task_id=task_id, attempt_id=attempt_id, state=self._running)
            started = time.perf_counter()
            try:
                response = stub.Reconcile(request, timeout=30)
            except Exception:
                with self._lock:
                    self.errors += 1
                return
            elapsed = time.perf_counter() - started
            with self._lock:
                self.calls += 1
                self.latencies.append(elapsed)
            sim.version = response.version
            desired = {(d.task_id, d.attempt_id) for d in response.attempts}
            started_new = bool(desired - sim.attempts)
            sim.attempts = desired
            if not started_new:
                return
            # a real worker reports a newly started attempt at once

    def register_all(self) -> None:
        for i, sim in enumerate(self.sims):
            self.reconcile(sim, self._stubs[i % len(self._stubs)])

    def start(self) -> None:
        origin = time.monotonic() + 0.1
        for t, stub in enumerate(self._stubs):
            mine = self.sims[t :: len(self._stubs)]
            thread = threading.Thread(target=self._run, args=(mine, stub, origin), name=f"sim-{t}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, sims: list[SimulatedWorker], stub: object, origin: float) -> None:
        cycle = 0
        while not self._stop.is_set():
            for sim in sims:
                delay = origin + cycle * self.period + sim.phase - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                self.reconcile(sim, stub)
            cycle += 1

    def take(self) -> tuple[int, list[float]]:
        with self._lock:
            calls, latencies = self.calls, self.latencies
            self.calls, self.latencies = 0, []
        return calls, latencies

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=35)
        for channel in self._channels:
            channel.close()


def launch_jobs(port: int, jobs: int) -> None:
    import grpc

    from iris.rpc import common_pb2, controller_pb2, controller_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        for i in range(jobs):
            spec = controller_pb2.JobSpec(
                name=f"load-{i}",
                entrypoint=common_pb2.Entrypoint(argv=["sleep", "infinity"]),
                resources=common_pb2.ResourceSpec(cpu=2, memory_bytes=GB),
                replicas=1,
            )
            stub.LaunchJob(controller_pb2.LaunchJobRequest(spec=spec), timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000, help="simulated workers (default 1000)")
    parser.add_argument("--period", type=float, default=5.0, help="seconds between a worker's reconciles (default 5)")
    parser.add_argument("--threads", type=int, default=8, help="threads driving the workers (default 8)")
    parser.add_argument("--jobs", type=int, default=500, help="2-cpu jobs launched: two attempts on jobs/2 workers (default 500)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per measurement window (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="consecutive windows (default 3)")
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(Path(args.serve))
    logging.basicConfig(level=logging.WARNING)

    print(machine_line())
    print(
        f"{args.workers} simulated workers reconciling every {args.period:g} s (wait_seconds=0) from "
        f"{args.threads} threads; {args.jobs} running 2-cpu attempts on {min(args.workers, (args.jobs + 1) // 2)} of them"
    )
    state_dir = Path(tempfile.mkdtemp(prefix="iris-reconcile-load-"))
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(state_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    driver: Driver | None = None
    try:
        port = int(child.stdout.readline())
        started = time.perf_counter()
        driver = Driver(port, args.workers, args.threads, args.period)
        driver.register_all()
        launch_jobs(port, args.jobs)
        driver.start()
        time.sleep(args.period + 1)  # one full period: every attempt reported RUNNING
        running = sum(len(s.attempts) for s in driver.sims)
        print(f"set up in {time.perf_counter() - started:.1f} s; simulated workers run {running} attempts")
        if running != args.jobs:
            print(f"warning: {args.jobs} jobs launched but {running} attempts running", file=sys.stderr)
        driver.take()
        cores, rates, latencies = [], [], []
        for run in range(args.runs):
            cpu_before, wall_before = cpu_seconds(child.pid), time.monotonic()
            time.sleep(args.window)
            cpu_after, wall_after = cpu_seconds(child.pid), time.monotonic()
            calls, lat = driver.take()
            wall = wall_after - wall_before
            cores.append((cpu_after - cpu_before) / wall)
            rates.append(calls / wall)
            latencies.extend(lat)
            print(
                f"window {run + 1}: controller {cores[-1]:.3f} cores, {rates[-1]:.0f} reconciles/s, "
                f"RPC p50 {percentile(lat, 50) * 1000:.1f} ms p99 {percentile(lat, 99) * 1000:.1f} ms; {load_line()}"
            )
        if driver.errors:
            print(f"warning: {driver.errors} reconcile calls failed", file=sys.stderr)
    finally:
        if driver is not None:
            driver.stop()
        child.stdin.close()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        shutil.rmtree(state_dir, ignore_errors=True)

    print()
    print(summary_line("controller CPU", cores, unit="cores", digits=3))
    print(summary_line("reconciles/s", rates, unit="/s", digits=0))
    print(
        f"reconcile RPC latency: p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms (n={len(latencies)})"
    )
    median = statistics.median(cores)
    print(f"controller CPU median {median:.3f} cores; target < {TARGET_CORES:g} cores: {verdict(median, TARGET_CORES)}")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
