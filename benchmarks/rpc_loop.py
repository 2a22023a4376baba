"""What serving one unary RPC costs the server, by kind of server: grpc.aio on asyncio's loop,
grpc.aio on uvloop's loop (what the controller process runs), and grpc's sync server with a
thread pool.

Each server has one generic unary method whose handler returns at once (so the figure is the
RPC machinery alone, no Iris code); a client in another process sends ``--calls`` calls from
``--threads`` threads. Prints the server process's CPU per call (user + system, from
``os.times``) and the wall time per call, per kind, alternating the kinds for ``--runs`` rounds;
the median per kind is the figure. Loopback only.

    uv run python benchmarks/rpc_loop.py [--runs 5] [--calls 3000] [--threads 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from stats import load_line, machine_line

KINDS = ("aio-asyncio", "aio-uvloop", "sync-pool")
_SERVICE, _METHOD = "bench.Echo", "Call"


def _same(data: bytes) -> bytes:
    return data


def _client(address: str, calls: int, threads: int) -> None:
    channel = grpc.insecure_channel(address)
    call = channel.unary_unary(f"/{_SERVICE}/{_METHOD}", request_serializer=_same, response_deserializer=_same)
    call(b"warm-up", timeout=10)

    def run(n: int) -> None:
        for _ in range(n):
            call(b"hello", timeout=10)

    workers = [threading.Thread(target=run, args=(calls // threads,)) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    channel.close()


def _serve(kind: str) -> tuple[int, object]:
    """Start a server of ``kind`` on 127.0.0.1; returns its port and a stop function."""
    if kind == "sync-pool":
        server = grpc.server(ThreadPoolExecutor(max_workers=8))
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(_SERVICE, {_METHOD: grpc.unary_unary_rpc_method_handler(lambda r, c: b"ok", _same, _same)})]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return port, lambda: server.stop(0).wait()
    if kind == "aio-uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def handler(request: bytes, context: object) -> bytes:
        return b"ok"

    async def build() -> tuple[object, int]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(_SERVICE, {_METHOD: grpc.unary_unary_rpc_method_handler(handler, _same, _same)})]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(build(), loop).result(30)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    return port, stop


def one_run(kind: str, calls: int, threads: int) -> tuple[float, float]:
    """(server CPU µs per call, wall µs per call)."""
    port, stop = _serve(kind)
    try:
        before, started = os.times(), time.perf_counter()
        subprocess.run([sys.executable, __file__, "--client", f"127.0.0.1:{port}", "--calls", str(calls), "--threads", str(threads)], check=True)
        wall, after = time.perf_counter() - started, os.times()
    finally:
        stop()  # type: ignore[operator]
    cpu = (after.user + after.system) - (before.user + before.system)
    return cpu / calls * 1e6, wall / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        _client(args.client, args.calls, args.threads)
        return 0
    print(machine_line())
    print(f"{args.calls} empty unary calls per run from {args.threads} client threads in another process; {args.runs} rounds, kinds alternating")
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    for i in range(args.runs):
        for kind in KINDS:
            cpu, wall = one_run(kind, args.calls, args.threads)
            results[kind].append((cpu, wall))
            print(f"round {i + 1} {kind:12s} server CPU {cpu:6.0f} us/call, wall {wall:6.0f} us/call")
    for kind in KINDS:
        cpus = [c for c, _ in results[kind]]
        walls = [w for _, w in results[kind]]
        print(f"median {kind:12s} server CPU {statistics.median(cpus):6.0f} us/call (runs {', '.join(f'{c:.0f}' for c in cpus)}), wall {statistics.median(walls):6.0f} us/call")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
