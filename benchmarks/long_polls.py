"""Long-polls: how a controller with thousands of idle long-polls answers other RPCs, and how
many threads it runs.

The controller (an in-memory ``Controller`` served by ``ControllerServer`` on 127.0.0.1, port 0,
no autoscaler) runs in a child process, so its thread count is its own (``Threads:`` in
``/proc/<pid>/status``). This process opens ``--polls`` long-polls with the grpc.aio client
(one asyncio loop, ``--channels`` connections), in three equal kinds, each re-issued as soon as
it answers so that they stay open:

* ``WaitJob`` (30 s) on one of ``--jobs`` jobs that no worker can take (they stay PENDING);
* ``GetLogs`` with ``wait_seconds=30`` on those jobs;
* ``Reconcile`` with ``known_version`` and ``wait_seconds=30``, one per simulated worker
  (registered first with one non-waiting Reconcile each).

Once every long-poll is waiting inside the server, ``--calls`` sequential ``ListJobs`` (returning
the ``--jobs`` jobs) and ``--calls / 4`` ``ListWorkers`` (one entry per simulated worker) are
timed from a separate channel; the same is measured with no long-poll open first. Thread counts
are taken before, while the long-polls wait, and after they are cancelled. ``--runs`` fresh
controllers; medians over runs. Each run is bounded (``--timeout``).

Target: ListJobs p99 < 100 ms with 5,000 idle long-polls; the thread count does not grow with them.

    uv run python benchmarks/long_polls.py [--polls 5000] [--runs 3] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import load_line, machine_line, percentile, verdict  # noqa: E402

TARGET_P99 = 0.100
WAIT = 30.0


def serve() -> int:
    """The child: a controller server; prints its port, answers ``stats`` lines until stdin closes."""
    logging.basicConfig(level=logging.WARNING)
    from iris.cluster.controller.controller import Controller
    from iris.cluster.controller.service import ControllerServer
    from iris.testing.fakes import InMemoryBundleStore

    server = ControllerServer(Controller(), InMemoryBundleStore(), host="127.0.0.1", port=0)
    server.start()
    print(server.port, flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps({"parked": server.wakeups.parked}), flush=True)
    server.stop()
    return 0


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Threads: line for pid {pid}")


class Child:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.port = int(self.process.stdout.readline())  # type: ignore[union-attr]

    def parked(self) -> int:
        self.process.stdin.write("stats\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.process.stdout.readline())["parked"]  # type: ignore[union-attr]

    @property
    def threads(self) -> int:
        return threads_of(self.process.pid)

    def close(self) -> None:
        try:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


async def timed(call, request, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await call(request, timeout=60)
        latencies.append(time.perf_counter() - started)
    return latencies


async def until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return bool(predicate())


async def run_once(args: argparse.Namespace) -> dict[str, float]:
    import grpc

    from iris.job.records import JobSpec, WorkerIdentity
    from iris.cluster.types import Entrypoint, ResourceSpec
    from iris.rpc import controller_pb2, controller_pb2_grpc, convert, worker_pb2_grpc

    child = Child()
    target = f"127.0.0.1:{child.port}"
    # distinct connections: channels with the same target share one unless told not to
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(args.channels)]
    probe = grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    polls: list[asyncio.Task] = []
    stop = asyncio.Event()
    try:
        out: dict[str, float] = {}
        stub = controller_pb2_grpc.ControllerServiceStub(probe)
        job_ids = []
        for i in range(args.jobs):
            spec = JobSpec(name=f"idle-{i}", entrypoint=Entrypoint(argv=("true",)), resources=ResourceSpec(cpu=10_000), user="bench")
            job_ids.append((await stub.LaunchJob(controller_pb2.LaunchJobRequest(spec=convert.job_spec_to_proto(spec)), timeout=30)).job_id)
        per_kind = args.polls // 3
        workers = [WorkerIdentity(f"sim-{i:05d}", cpu=4, memory_bytes=16 << 30) for i in range(args.polls - 2 * per_kind)]
        worker_stubs = [worker_pb2_grpc.WorkerServiceStub(c) for c in channels]
        versions: dict[str, int] = {}

        async def register(k: int, w: WorkerIdentity) -> None:
            request = convert.reconcile_request_to_proto(w, [], 0, 0.0)
            versions[w.worker_id] = (await worker_stubs[k % len(worker_stubs)].Reconcile(request, timeout=60)).version

        for start in range(0, len(workers), 200):
            await asyncio.gather(*(register(start + k, w) for k, w in enumerate(workers[start : start + 200])))

        list_jobs, list_workers = controller_pb2.ListJobsRequest(), controller_pb2.ListWorkersRequest()
        idle_jobs = await timed(stub.ListJobs, list_jobs, args.calls)
        idle_workers = await timed(stub.ListWorkers, list_workers, max(1, args.calls // 4))
        out["threads_before"] = child.threads

        async def keep_polling(k: int, make) -> None:  # type: ignore[no-untyped-def]
            """One long-poll, re-issued whenever it answers, until the measurement is over."""
            while not stop.is_set():
                await make(k)

        controller_stubs = [controller_pb2_grpc.ControllerServiceStub(c) for c in channels]

        def wait_job(k: int):  # type: ignore[no-untyped-def]
            request = controller_pb2.WaitJobRequest(job_id=job_ids[k % len(job_ids)], timeout_seconds=WAIT)
            return controller_stubs[k % len(channels)].WaitJob(request, timeout=WAIT + 30)

        def get_logs(k: int):  # type: ignore[no-untyped-def]
            request = controller_pb2.GetLogsRequest(job_id=job_ids[k % len(job_ids)], wait_seconds=WAIT)
            return controller_stubs[k % len(channels)].GetLogs(request, timeout=WAIT + 30)

        async def reconcile(k: int) -> None:
            w = workers[k]
            request = convert.reconcile_request_to_proto(w, [], versions[w.worker_id], WAIT)
            versions[w.worker_id] = (await worker_stubs[k % len(channels)].Reconcile(request, timeout=WAIT + 30)).version

        opened = time.perf_counter()
        polls = [asyncio.create_task(keep_polling(k, wait_job)) for k in range(per_kind)]
        polls += [asyncio.create_task(keep_polling(k, get_logs)) for k in range(per_kind)]
        polls += [asyncio.create_task(keep_polling(k, reconcile)) for k in range(len(workers))]
        if not await until(lambda: child.parked() >= args.polls, timeout=60):
            failed = [p.exception() for p in polls if p.done() and not p.cancelled() and p.exception()]
            raise RuntimeError(
                f"only {child.parked()} of {args.polls} long-polls are waiting in the server after 60 s; "
                f"{len(failed)} failed, e.g. {failed[:1]}"
            )
        out["open_seconds"] = time.perf_counter() - opened
        out["threads_during"] = child.threads
        busy_jobs = await timed(stub.ListJobs, list_jobs, args.calls)
        busy_workers = await timed(stub.ListWorkers, list_workers, max(1, args.calls // 4))
        out["parked_at_end"] = child.parked()
        out["threads_during"] = max(out["threads_during"], child.threads)
        stop.set()
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        await until(lambda: child.parked() == 0, timeout=30)
        await asyncio.sleep(1.0)  # let the server retire whatever the cancelled calls used
        out["threads_after"] = child.threads
        for name, values in (
            ("list_jobs_idle", idle_jobs), ("list_workers_idle", idle_workers),
            ("list_jobs", busy_jobs), ("list_workers", busy_workers),
        ):  # fmt: skip
            out[f"{name}_p50"] = percentile(values, 50)
            out[f"{name}_p99"] = percentile(values, 99)
        return out
    finally:
        stop.set()
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        for channel in [*channels, probe]:
            await channel.close()
        child.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=5000, help="idle long-polls held open (default 5000)")
    parser.add_argument("--channels", type=int, default=50, help="client connections they share (default 50)")
    parser.add_argument("--jobs", type=int, default=10, help="idle jobs WaitJob and GetLogs wait on; ListJobs returns them (default 10)")
    parser.add_argument("--calls", type=int, default=200, help="ListJobs calls timed per phase; ListWorkers a quarter (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="fresh controllers (default 3)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds one run may take before it is abandoned (default 180)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    logging.basicConfig(level=logging.WARNING)

    print(machine_line())
    print(
        f"{args.polls} idle long-polls (WaitJob, GetLogs, Reconcile; {WAIT:g} s waits) over {args.channels} connections; "
        f"{args.jobs} jobs, {args.polls - 2 * (args.polls // 3)} simulated workers; {args.calls} ListJobs per phase"
    )
    results = []
    for run in range(args.runs):
        r = asyncio.run(asyncio.wait_for(run_once(args), args.timeout))
        results.append(r)
        print(
            f"run {run + 1}: {args.polls} long-polls waiting after {r['open_seconds']:.1f} s "
            f"(still waiting at the end: {r['parked_at_end']:.0f}); "
            f"ListJobs p50 {ms(r['list_jobs_p50'])} p99 {ms(r['list_jobs_p99'])} "
            f"(none open: p50 {ms(r['list_jobs_idle_p50'])} p99 {ms(r['list_jobs_idle_p99'])}); "
            f"ListWorkers p50 {ms(r['list_workers_p50'])} p99 {ms(r['list_workers_p99'])} "
            f"(none open: p50 {ms(r['list_workers_idle_p50'])} p99 {ms(r['list_workers_idle_p99'])}); "
            f"controller threads before {r['threads_before']:.0f}, during {r['threads_during']:.0f}, after {r['threads_after']:.0f}; "
            f"{load_line()}"
        )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    print()
    print(
        f"median of {len(results)} runs: ListJobs p50 {ms(median('list_jobs_p50'))}, p99 {ms(median('list_jobs_p99'))} "
        f"with {args.polls} long-polls open (none open: p99 {ms(median('list_jobs_idle_p99'))}); "
        f"ListWorkers p50 {ms(median('list_workers_p50'))}, p99 {ms(median('list_workers_p99'))} "
        f"(none open: p50 {ms(median('list_workers_idle_p50'))}, p99 {ms(median('list_workers_idle_p99'))})"
    )
    print(
        f"controller threads: before {median('threads_before'):.0f}, during {median('threads_during'):.0f}, "
        f"after {median('threads_after'):.0f}"
    )
    p99 = median("list_jobs_p99")
    print(f"ListJobs p99 target < {TARGET_P99 * 1000:.0f} ms: {verdict(p99, TARGET_P99)}")
    grew = median("threads_during") - median("threads_before")
    print(f"threads do not grow with long-polls: {'MET' if grew <= 2 else f'MISSED (+{grew:.0f})'}")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
