"""Restart recovery: time from a controller's restart until every worker has reconciled with it again.

The controller is a real process, ``python -m iris.cluster.controller.main serve --state-dir D
--port P`` (default config: the local provider, which also starts one local worker inside the
controller process). This process runs ``--workers`` simulated workers, each a thread with its
own gRPC channel that behaves like the real worker's loop (``iris.cluster.worker.worker``):
a long-polling ``Reconcile`` (``wait_seconds`` 2, as the worker's default), a fresh request at
once when something new arrived, and on failure a retry after a backoff of 0.05 s doubling up
to 2 s. They run every attempt the controller wants (reported RUNNING); attempts of jobs named
``done-*`` finish at once (SUCCEEDED, one log line).

Set-up: ``--finished`` jobs that run to completion and ``--running`` jobs that keep running
(1 cpu each, constrained to the simulated workers) are launched, then the workers start and run
them. Then ``--runs`` times: SIGKILL the controller, start it again on the same port and state
directory, and measure

    recovery = last worker's first successful Reconcile sent after the restart - process spawn

Also printed: the time until the new process prints that it serves, and a check that every
running attempt is still running on its worker afterwards (none lost or retried). Note: the
controller serves RPCs from 64 threads and a long-poll holds one for up to ``wait_seconds``, so
with more workers than that, requests queue behind long-polls (see benchmarks/README.md).

    uv run python benchmarks/restart_recovery.py [--runs 3] [--workers 200] [--finished 1000] [--running 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from iris.testing.processes import kill_strays  # noqa: E402
from stats import load_line, machine_line, percentile, summary_line  # noqa: E402

import grpc  # noqa: E402

from iris.auth import OWNER_TOKEN_FILE, Principal, Role, TokenSigner, cluster_secret, read_token_file  # noqa: E402
from iris.cluster.types import TaskState  # noqa: E402
from iris.rpc.channel import authorized_channel  # noqa: E402
from iris.rpc import common_pb2, controller_pb2, controller_pb2_grpc, worker_pb2, worker_pb2_grpc  # noqa: E402
from iris.rpc.convert import task_state_to_proto  # noqa: E402

GB = 1 << 30
RUNNING = task_state_to_proto(TaskState.RUNNING)
SUCCEEDED = task_state_to_proto(TaskState.SUCCEEDED)
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 512 << 20), ("grpc.max_send_message_length", 512 << 20)]


class SimulatedWorker:
    """The real worker's reconcile loop, with attempts that run (or finish) only on paper."""

    def __init__(self, index: int, address: str, wait_seconds: float):
        self.identity = worker_pb2.WorkerIdentity(
            worker_id=f"sim-{index:04d}",
            slice_id=f"sim-slice-{index}",
            capacity=common_pb2.ResourceSpec(cpu=4, memory_bytes=16 * GB),
            attributes={"sim": "yes"},
        )
        self._address = address
        self._wait = wait_seconds
        self.token = ""  # the worker's credential (the controller checks tokens): set before start()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.attempts: dict[tuple[str, int], int] = {}  # -> proto state
        self._sent: dict[tuple[str, int], int] = {}
        self.version = 0
        self.finished = 0  # attempts the controller acknowledged as done
        self.mark = float("inf")  # count successes of requests sent after this instant
        self.first_ok: float | None = None
        self.first_rtt = 0.0  # how long the controller took to answer that request
        self._thread = threading.Thread(target=self._run, name=f"sim-{index}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        self._thread.join(timeout=self._wait + 15)

    def running(self) -> int:
        with self._lock:
            return sum(1 for s in self.attempts.values() if s == RUNNING)

    def arm(self, instant: float) -> None:
        with self._lock:
            self.mark, self.first_ok = instant, None

    def _request(self) -> tuple[worker_pb2.ReconcileRequest, bool]:
        request = worker_pb2.ReconcileRequest(worker=self.identity, known_version=self.version)
        news = False
        for key, state in self.attempts.items():
            done = state == SUCCEEDED
            request.attempts.add(
                task_id=key[0], attempt_id=key[1], state=state,
                log_data=b"finished\n" if done else b"", log_complete=done,
            )
            news = news or self._sent.get(key) != state
            self._sent[key] = state
        request.wait_seconds = 0.0 if news else self._wait
        return request, news

    def _run(self) -> None:
        channel = authorized_channel(self._address, self.token, options=CHANNEL_OPTIONS)
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        backoff = 0.05
        while not self._stop.is_set():
            request, _ = self._request()
            sent = time.monotonic()
            try:
                response = stub.Reconcile(request, timeout=self._wait + 10)
            except grpc.RpcError:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            now = time.monotonic()
            with self._lock:
                if self.first_ok is None and sent > self.mark:
                    self.first_ok, self.first_rtt = now, now - sent
                self.version = response.version
                desired = {(d.task_id, d.attempt_id) for d in response.attempts}
                for key in desired - self.attempts.keys():
                    self.attempts[key] = SUCCEEDED if "/done-" in key[0] else RUNNING  # /done-N, or /<user>/done-N with auth
                for ack in response.acks:
                    key = (ack.task_id, ack.attempt_id)
                    if ack.done and self.attempts.get(key) == SUCCEEDED:
                        del self.attempts[key]
                        self._sent.pop(key, None)
                        self.finished += 1
                for key in [k for k, s in self.attempts.items() if k not in desired and s == RUNNING]:
                    del self.attempts[key]  # killed: not wanted any more
                    self._sent.pop(key, None)
        channel.close()


class ControllerProcess:
    def __init__(self, state_dir: Path, port: int):
        self._argv = [sys.executable, "-m", "iris.cluster.controller.main", "serve", "--state-dir", str(state_dir), "--port", str(port)]
        self._log = state_dir / "controller.log"
        self.proc: subprocess.Popen | None = None
        self.serving_at: float | None = None

    def spawn(self) -> float:
        self.serving_at = None
        log = open(self._log, "a")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self._argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, preexec_fn=_die_with_parent
        )
        log.close()
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return started

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            if "serving at" in line and self.serving_at is None:
                self.serving_at = time.monotonic()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self) -> str:
        return "\n".join(self._log.read_text().splitlines()[-20:]) if self._log.exists() else ""


def _die_with_parent() -> None:
    """In the child: SIGKILL it if this benchmark dies first (Linux), so no controller outlives it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def launch(address: str, finished: int, running: int, token: str) -> None:
    with authorized_channel(address, token) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        for prefix, count in (("done", finished), ("run", running)):
            for i in range(count):
                spec = controller_pb2.JobSpec(
                    name=f"{prefix}-{i}",
                    entrypoint=common_pb2.Entrypoint(argv=["true"] if prefix == "done" else ["sleep", "infinity"]),
                    resources=common_pb2.ResourceSpec(cpu=1, memory_bytes=GB),
                    constraints=[common_pb2.Constraint(key="sim", op=common_pb2.Constraint.EQ, values=["yes"])],
                    replicas=1,
                )
                stub.LaunchJob(controller_pb2.LaunchJobRequest(spec=spec), timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="restarts measured (default 3)")
    parser.add_argument("--workers", type=int, default=200, help="simulated workers (default 200)")
    parser.add_argument("--finished", type=int, default=1000, help="jobs run to completion before the restarts (default 1000)")
    parser.add_argument("--running", type=int, default=200, help="jobs left running across the restarts (default 200)")
    parser.add_argument("--wait-seconds", type=float, default=2.0, help="the workers' long-poll (default 2, the worker's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up (finally) when terminated

    print(machine_line())
    print(
        f"{args.workers} simulated workers (long-poll {args.wait_seconds:g} s, retry backoff 0.05-2 s); "
        f"{args.finished} finished and {args.running} running jobs in the controller's state"
    )
    state_dir = Path(tempfile.mkdtemp(prefix="iris-restart-"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    controller = ControllerProcess(state_dir, port)
    sims = [SimulatedWorker(i, address, args.wait_seconds) for i in range(args.workers)]
    recoveries, ready, medians = [], [], []
    try:
        controller.spawn()
        wait_for(lambda: controller.serving_at is not None, 60, "the controller to serve")
        # each simulated worker presents a credential for its own id, minted from the cluster's secret
        signer = TokenSigner(cluster_secret(state_dir))
        for sim in sims:
            sim.token = signer.mint(Principal(Role.WORKER, sim.identity.worker_id))
        # The workers join first: a job constrained to `sim=yes` with no such worker and no scale
        # group that offers one would end UNSCHEDULABLE at once.
        for sim in sims:
            sim.start()
        wait_for(lambda: all(s.version for s in sims), 60, "every simulated worker to register")
        launch(address, args.finished, args.running, read_token_file(state_dir / OWNER_TOKEN_FILE))
        wait_for(
            lambda: sum(s.finished for s in sims) >= args.finished and sum(s.running() for s in sims) >= args.running,
            300, "the finished jobs to finish and the running ones to run",
        )
        print(f"set up: {args.finished} jobs finished, {args.running} attempts running; {load_line()}")
        for run in range(args.runs):
            controller.kill()
            killed = time.monotonic()
            for sim in sims:
                sim.arm(killed)
            spawned = controller.spawn()
            try:
                wait_for(lambda: all(s.first_ok is not None for s in sims), 120, "every worker to reconcile again")
            except SystemExit:
                print(controller.log_tail(), file=sys.stderr)
                raise
            firsts = [s.first_ok - spawned for s in sims]
            recoveries.append(max(firsts))
            medians.append(statistics.median(firsts))
            ready.append((controller.serving_at or float("nan")) - spawned)
            still = sum(s.running() for s in sims)
            held = sum(1 for s in sims if s.first_rtt >= 1.0)
            print(
                f"restart {run + 1}: serving after {ready[-1]:.2f} s; workers reconciled after median "
                f"{medians[-1]:.2f} s, p90 {percentile(firsts, 90):.2f} s, all after {recoveries[-1]:.2f} s "
                f"({held} first answers took >= 1 s: held as a long-poll or queued); "
                f"{still} of {args.running} attempts still running; {load_line()}"
            )
            if still != args.running:
                print(f"warning: {args.running - still} running attempts were lost across the restart", file=sys.stderr)
            time.sleep(args.wait_seconds + 1)  # settle: every worker back in its long-poll
    finally:
        for sim in sims:
            sim.stop()
        controller.stop()
        for sim in sims:
            sim.join()
        kill_strays(str(state_dir))  # the controller's own local worker outlives it, by design
        shutil.rmtree(state_dir, ignore_errors=True)

    print()
    print(summary_line("controller serving after spawn", ready, unit="s", digits=2))
    print(summary_line("median worker reconciled after spawn", medians, unit="s", digits=2))
    print(summary_line("every worker reconciled after spawn", recoveries, unit="s", digits=2))
    print(f"restart to all {args.workers} workers reconciled: median {statistics.median(recoveries):.2f} s")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
