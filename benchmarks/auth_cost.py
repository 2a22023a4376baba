"""What the door costs: token checks alone, and a unary RPC with auth on against auth off.

1. ``Authenticator.authenticate`` in this process: a minted token seen for the first time
   (HMAC-SHA256 check and payload parse), the same token again (the cache), and a static token;
   then all the Python work the door and a job handler add to a call with auth on (read the
   bearer token from metadata, authenticate, look the job's owner up, check access).
2. Two real controller servers (``ControllerServer`` over gRPC on 127.0.0.1), one with auth and
   one without, each holding ``--jobs`` jobs; ``--rounds`` rounds, each timing ``--calls``
   sequential ``GetJob`` calls on each server in turn (alternating which goes first) (so load from other processes falls on
   both alike), then the median per-call latency of each, and the difference. Client and
   servers share this process, so its CPU time per call (client and server together) is
   printed too: on a loaded machine it moves much less than wall time.

    uv run python benchmarks/auth_cost.py [--calls 1000] [--rounds 11] [--jobs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from iris.auth import Authenticator, Principal, Role, TokenSigner
from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.types import Entrypoint
from iris.job.records import JobSpec
from iris.rpc import controller_pb2, controller_pb2_grpc
from iris.rpc.channel import authorized_channel
from iris.testing.fakes import InMemoryBundleStore
from stats import load_line, machine_line


def per_call_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    return per_call(fn, n)[0]


def per_call(fn, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall, CPU time of this process) per call, in microseconds."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6, (time.process_time() - cpu) / n * 1e6


def token_checks(n: int) -> None:
    import hashlib

    static = "s" * 32
    auth = Authenticator(TokenSigner(b"k" * 32), {hashlib.sha256(static.encode()).hexdigest(): Principal(Role.USER, "dana")})
    fresh = [auth.mint(Principal(Role.USER, f"u{i}")) for i in range(n)]
    started = time.perf_counter()
    for token in fresh:
        auth.signer.verify(token)
    first = (time.perf_counter() - started) / n * 1e6
    token = fresh[0]
    auth.authenticate(token)
    cached = per_call_us(lambda: auth.authenticate(token), n)
    static_us = per_call_us(lambda: auth.authenticate(static), n)
    print(f"token check: minted, first sight {first:.1f} us; minted, cached {cached:.2f} us; static, cached {static_us:.2f} us")
    from iris.auth import bearer
    from iris.cluster.controller import access

    controller = Controller()
    job_id = controller.launch_job(JobSpec(name="j", entrypoint=Entrypoint(argv=("true",)), user="u0"))
    metadata = (("authorization", f"Bearer {token}"), ("user-agent", "grpc-python"))

    def door() -> None:
        who = auth.authenticate(bearer(metadata))
        assert who is not None
        full_id, owner = controller.job_owner(job_id)
        access.check_job(who, full_id, owner, "read")

    print(f"door and handler checks with auth on, per call: {per_call_us(door, n * 10):.2f} us")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls per server per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=11, help="rounds (default 11)")
    parser.add_argument("--jobs", type=int, default=10, help="jobs each controller holds (default 10)")
    args = parser.parse_args()
    print(machine_line())
    token_checks(max(args.calls, 1000))

    auth = Authenticator(TokenSigner(b"k" * 32))
    servers = {"off": ControllerServer(Controller(), InMemoryBundleStore(), port=0), "on": ControllerServer(Controller(), InMemoryBundleStore(), port=0, auth=auth)}
    tokens = {"off": "", "on": auth.mint(Principal(Role.USER, "alice"))}
    stubs, channels, job_ids = {}, [], {}
    try:
        for kind, server in servers.items():
            server.start()
            channel = authorized_channel(server.address.removeprefix("http://"), tokens[kind])
            channels.append(channel)
            stub = controller_pb2_grpc.ControllerServiceStub(channel)
            for i in range(args.jobs):
                spec = controller_pb2.JobSpec(name=f"j{i}", entrypoint={"argv": ["true"]}, replicas=1, user="alice")
                job_ids[kind] = stub.LaunchJob(controller_pb2.LaunchJobRequest(spec=spec), timeout=30).job_id
            stubs[kind] = stub
        samples: dict[str, list[float]] = {"off": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(args.rounds):
            for kind in ("off", "on") if i % 2 else ("on", "off"):  # alternate who goes first
                request = controller_pb2.GetJobRequest(job_id=job_ids[kind])
                call = stubs[kind].GetJob
                call(request, timeout=30)  # warm
                wall, used = per_call(lambda: call(request, timeout=30), args.calls)
                samples[kind].append(wall)
                cpu[kind].append(used)
        print(f"{args.rounds} rounds of {args.calls} sequential GetJob calls per server")
        for label, figures in (("wall", samples), ("CPU (client + server)", cpu)):
            off, on = statistics.median(figures["off"]), statistics.median(figures["on"])
            for kind in ("off", "on"):
                print(f"  {label}, auth {kind:<3}: median {statistics.median(figures[kind]):.0f} us per call "
                      f"(rounds: {', '.join(f'{v:.0f}' for v in figures[kind])})")
            print(f"  {label}, difference: {on - off:+.0f} us per call ({(on - off) / off * 100:+.1f}%)")
    finally:
        for channel in channels:
            channel.close()
        for server in servers.values():
            server.stop()
    print(f"at the end: {load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
