"""The worker agent.

One loop: send the controller everything this worker observes (every attempt, its state and
the log bytes the controller has not acknowledged), receive the full desired set, start what is
missing, kill what is no longer wanted, forget what the controller has fully recorded. The call
long-polls while nothing changes; a local change (an attempt ended, new output) cancels the
call and sends a fresh one at once.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import grpc

from iris import faults
from iris.bundle import extract_bundle, split_bundle_url
from iris.cluster.records import ObservedAttempt, WorkerIdentity
from iris.cluster.worker.ports import PortAllocator, shared_allocator
from iris.cluster.types import TaskState
from iris.errors import BundleError
from iris.plugin.protocols import ContainerHandle, ContainerRuntime, ContainerSpec
from iris.rpc import convert, worker_pb2, worker_pb2_grpc

logger = logging.getLogger(__name__)

BUNDLE_TRIES = 4
MAX_LOG_CHUNK = 1 << 20  # per attempt per exchange
MAX_REQUEST_LOG_BYTES = 8 << 20  # all attempts together per exchange
LOG_POLL_SECONDS = 0.02
KILL_GRACE_SECONDS = 5.0
LABEL_WORKER = "iris.worker"
LABEL_TASK = "iris.task"
LABEL_ATTEMPT = "iris.attempt"


@attrs.define(eq=False)
class LocalAttempt:
    task_id: str
    attempt_id: int
    spec: worker_pb2.AttemptSpec
    directory: Path
    state: TaskState = TaskState.BUILDING
    exit_code: int | None = None
    error: str = ""
    oom: bool = False
    handle: ContainerHandle | None = None
    acked_offset: int = 0
    kill_requested: bool = False
    ports: dict[str, int] = attrs.field(factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.attempt_id)


def _safe_name(task_id: str, attempt_id: int) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", task_id.strip("/")) + f".{attempt_id}"


class Worker:
    def __init__(
        self,
        *,
        worker_id: str,
        controller_address: str,
        runtime: ContainerRuntime,
        bundle_store_for: Any,
        work_dir: Path,
        cpu: float,
        memory_bytes: int,
        attributes: Mapping[str, str] | None = None,
        slice_id: str = "",
        wait_seconds: float = 2.0,
        python: str = sys.executable,
        ports: PortAllocator | None = None,
    ):
        """``bundle_store_for(url_prefix)`` returns the BundleStore serving that prefix."""
        self.worker_id = worker_id
        self._address = controller_address.removeprefix("http://")
        self._runtime = runtime
        self._bundle_store_for = bundle_store_for
        self._work_dir = Path(work_dir)
        self._identity = WorkerIdentity(
            worker_id=worker_id, slice_id=slice_id, cpu=cpu, memory_bytes=memory_bytes, attributes=dict(attributes or {})
        )
        self._wait_seconds = wait_seconds
        self._python = python
        self._ports = ports or shared_allocator()
        self._attempts: dict[tuple[str, int], LocalAttempt] = {}
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._local_news = False
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix=f"iris-{worker_id}")
        self._thread: threading.Thread | None = None
        self._channel: grpc.Channel | None = None
        self._bundle_lock = threading.Lock()
        self._known_version = 0
        # What the last request carried, per attempt (touched by the loop thread only).
        self._sent_offsets: dict[tuple[str, int], int] = {}
        self._sent_states: dict[tuple[str, int], TaskState] = {}

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        (self._work_dir / "attempts").mkdir(parents=True, exist_ok=True)
        (self._work_dir / "bundles").mkdir(parents=True, exist_ok=True)
        self._adopt()
        self._channel = grpc.insecure_channel(
            self._address,
            options=[("grpc.max_receive_message_length", 512 << 20), ("grpc.max_send_message_length", 512 << 20)],
        )
        self._thread = threading.Thread(target=self._run, name=f"iris-worker-{self.worker_id}", daemon=True)
        self._thread.start()

    def stop(self, kill_attempts: bool = True) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if kill_attempts:
            with self._lock:
                for attempt in self._attempts.values():
                    attempt.kill_requested = True  # one still starting kills itself once started
                handles = [a.handle for a in self._attempts.values() if a.handle is not None]
            for handle in handles:
                try:
                    handle.kill(grace_seconds=1.0)
                except Exception:
                    logger.exception("failed to kill %s", handle.container_id)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._channel is not None:
            self._channel.close()

    # --- the reconcile loop -------------------------------------------------------------

    def _run(self) -> None:
        assert self._channel is not None
        stub = worker_pb2_grpc.WorkerServiceStub(self._channel)
        backoff = 0.05
        while not self._stop.is_set():
            with self._cv:
                self._local_news = False
            request, has_news = self._build_request()
            try:
                faults.inject("worker.reconcile_send")
            except faults.FaultInjected:
                self._stop.wait(backoff)
                continue
            future = stub.Reconcile.future(request, timeout=self._wait_seconds + 10)
            future.add_done_callback(self._notify)
            with self._cv:
                while not future.done() and not self._stop.is_set():
                    # a long-poll is cut short by local news (checked before each wait, so news that
                    # came first is not slept on); a call that answers at once is awaited
                    if request.wait_seconds and (self._local_news or self._has_new_output()):
                        break
                    self._cv.wait(LOG_POLL_SECONDS)
            if not future.done():
                future.cancel()
            if self._stop.is_set():
                return
            try:
                response = future.result()
            except grpc.FutureCancelledError:
                continue
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    continue
                logger.warning("worker %s: reconcile failed: %s; retrying", self.worker_id, exc.details() or exc.code())
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 0.5)  # a restarted controller is found within half a second
                continue
            backoff = 0.05
            try:
                faults.inject("worker.reconcile_receive")
            except faults.FaultInjected:
                continue  # as if the answer was lost: the next exchange carries the same facts
            self._apply_response(response)

    def _notify(self, _: object = None) -> None:
        with self._cv:
            self._cv.notify_all()

    def _wake(self) -> None:
        """A local change the controller should hear about now."""
        with self._cv:
            self._local_news = True
            self._cv.notify_all()

    def _has_new_output(self) -> bool:
        with self._lock:
            attempts = list(self._attempts.values())
        for a in attempts:
            if a.handle is not None and a.handle.log_size() > self._sent_offsets.get(a.key, 0):
                return True
        return False

    def _build_request(self) -> tuple[worker_pb2.ReconcileRequest, bool]:
        """Everything this worker observes; it long-polls unless something is news."""
        observed = []
        has_news = False
        budget = MAX_REQUEST_LOG_BYTES
        with self._lock:
            attempts = list(self._attempts.values())
        for a in attempts:
            state = a.state  # read the state before the log so a terminal log is complete
            data = b""
            complete = False
            if a.handle is not None:
                data = a.handle.read_logs(a.acked_offset, min(MAX_LOG_CHUNK, budget)) if budget > 0 else b""
                budget -= len(data)
                complete = state.is_terminal and a.acked_offset + len(data) >= a.handle.log_size()
            elif state.is_terminal:
                complete = True
            if data or self._sent_states.get(a.key) is not state:
                has_news = True
            self._sent_offsets[a.key] = a.acked_offset + len(data)
            self._sent_states[a.key] = state
            observed.append(
                ObservedAttempt(
                    task_id=a.task_id,
                    attempt_id=a.attempt_id,
                    state=state,
                    exit_code=a.exit_code,
                    error=a.error,
                    log_offset=a.acked_offset,
                    log_data=data,
                    log_complete=complete,
                    oom=a.oom,
                    ports=a.ports,
                )
            )
        wait = 0.0 if has_news else self._wait_seconds
        return convert.reconcile_request_to_proto(self._identity, observed, self._known_version, wait), has_news

    def _apply_response(self, response: worker_pb2.ReconcileResponse) -> None:
        self._known_version = response.version
        desired = {(d.task_id, d.attempt_id): d for d in response.attempts}
        to_start: list[LocalAttempt] = []
        to_kill: list[LocalAttempt] = []
        forgotten: list[LocalAttempt] = []
        with self._lock:
            for key, d in desired.items():
                if key not in self._attempts and d.HasField("spec"):
                    attempt = LocalAttempt(
                        task_id=d.task_id,
                        attempt_id=d.attempt_id,
                        spec=d.spec,
                        directory=self._work_dir / "attempts" / _safe_name(d.task_id, d.attempt_id),
                    )
                    self._attempts[key] = attempt
                    to_start.append(attempt)
            for ack in map(convert.attempt_ack_from_proto, response.acks):
                attempt = self._attempts.get((ack.task_id, ack.attempt_id))
                if attempt is None:
                    continue
                attempt.acked_offset = max(attempt.acked_offset, ack.log_offset)
                if ack.done and attempt.state.is_terminal:
                    del self._attempts[attempt.key]
                    self._sent_offsets.pop(attempt.key, None)
                    self._sent_states.pop(attempt.key, None)
                    forgotten.append(attempt)
            for key, attempt in self._attempts.items():
                if key not in desired and not attempt.state.is_terminal and not attempt.kill_requested:
                    attempt.kill_requested = True
                    to_kill.append(attempt)
        for attempt in to_start:
            self._pool.submit(self._run_attempt, attempt)
        for attempt in to_kill:
            self._pool.submit(self._kill_attempt, attempt)
        for attempt in forgotten:
            self._pool.submit(self._cleanup_attempt, attempt)

    # --- attempts -----------------------------------------------------------------------

    def _run_attempt(self, attempt: LocalAttempt) -> None:
        try:
            container = self._prepare(attempt)
            if attempt.kill_requested:
                self._finish(attempt, TaskState.KILLED, None, "killed before it started")
                return
            faults.inject("worker.container_start")
            handle = self._runtime.start(container)
        except BundleError as exc:  # the bundle itself is unusable: the job's fault
            logger.info("attempt %s/%d failed to start: %s", attempt.task_id, attempt.attempt_id, exc)
            self._finish(attempt, TaskState.FAILED, None, f"failed to start: {exc}")
            return
        except Exception as exc:  # this machine's fault: retried elsewhere on the preemption budget
            logger.warning("attempt %s/%d could not be started here: %s", attempt.task_id, attempt.attempt_id, exc)
            self._finish(attempt, TaskState.WORKER_FAILED, None, f"worker {self.worker_id} could not start it: {exc}")
            return
        with self._lock:
            attempt.handle = handle
            attempt.state = TaskState.RUNNING
        self._wake()
        self._monitor(attempt, handle)

    def _adopt(self) -> None:
        """Take back the containers an earlier process of this worker left (found by label).

        Running ones are watched as if this process had started them; ended ones are reported
        with their real exit status. The first reconcile tells the controller about all of them;
        any it no longer wants there are killed and forgotten like any other unwanted attempt.
        """
        for handle in self._runtime.list_containers({LABEL_WORKER: self.worker_id}):
            labels = handle.labels
            try:
                key = (labels[LABEL_TASK], int(labels[LABEL_ATTEMPT]))
            except (KeyError, ValueError):
                continue
            attempt = LocalAttempt(
                task_id=key[0],
                attempt_id=key[1],
                spec=worker_pb2.AttemptSpec(),
                directory=self._work_dir / "attempts" / _safe_name(*key),
                state=TaskState.RUNNING,
                handle=handle,
            )
            self._attempts[key] = attempt
            logger.info("worker %s adopted attempt %s/%d", self.worker_id, *key)
            self._pool.submit(self._monitor, attempt, handle)

    def _monitor(self, attempt: LocalAttempt, handle: ContainerHandle) -> None:
        """Wait for a started container to end and record how it ended."""
        if attempt.kill_requested:
            handle.kill(KILL_GRACE_SECONDS)
        while True:
            try:
                faults.inject("worker.task_monitor")
                status = handle.wait()
                break
            except Exception as exc:  # the container is still there: look again
                logger.warning("watching %s failed: %s; retrying", handle.container_id, exc)
                time.sleep(0.1)
        if attempt.kill_requested:
            self._finish(attempt, TaskState.KILLED, status.exit_code, "killed")
        elif status.exit_code == 0 and not status.oom:
            self._finish(attempt, TaskState.SUCCEEDED, 0, "")
        else:
            error = status.error or (
                "out of memory: killed for exceeding its memory limit" if status.oom else f"exited with code {status.exit_code}"
            )
            self._finish(attempt, TaskState.FAILED, status.exit_code, error, oom=status.oom)

    def _finish(self, attempt: LocalAttempt, state: TaskState, exit_code: int | None, error: str, oom: bool = False) -> None:
        with self._lock:
            attempt.exit_code = exit_code
            attempt.error = error
            attempt.oom = oom
            attempt.state = state
        self._wake()

    def _prepare(self, attempt: LocalAttempt) -> ContainerSpec:
        spec = attempt.spec
        app = attempt.directory / "app"
        if attempt.directory.exists():
            shutil.rmtree(attempt.directory)
        app.mkdir(parents=True)
        if spec.bundle_url:
            extract_bundle(self._fetch_bundle(spec.bundle_url), app)
        if spec.entrypoint.callable:
            payload = attempt.directory / "entrypoint.pkl"
            payload.write_bytes(spec.entrypoint.callable)
            argv = [self._python, "-m", "iris.cluster.worker.run_callable", str(payload)]
        else:
            argv = list(spec.entrypoint.argv)
        if spec.ports and not attempt.ports:
            attempt.ports = self._ports.allocate(list(spec.ports))
        env = dict(os.environ)
        # `python` in a task is the interpreter running this worker, so tasks can import iris
        python_dir = os.path.dirname(self._python)
        if env.get("PATH", "").split(os.pathsep)[0] != python_dir:
            env["PATH"] = os.pathsep.join(filter(None, (python_dir, env.get("PATH", ""))))
        env.update(spec.env)
        env.update({f"IRIS_PORT_{name.upper()}": str(port) for name, port in attempt.ports.items()})
        env.update(
            {
                "IRIS_JOB_ID": spec.job_id,
                "IRIS_TASK_ID": attempt.task_id,
                "IRIS_TASK_INDEX": str(spec.task_index),
                "IRIS_NUM_TASKS": str(spec.num_tasks),
                "IRIS_ATTEMPT_ID": str(attempt.attempt_id),
                "IRIS_WORKER_ID": self.worker_id,
                "IRIS_CONTROLLER_ADDRESS": f"http://{self._address}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return ContainerSpec(
            container_id=f"{self.worker_id}.{_safe_name(attempt.task_id, attempt.attempt_id)}",
            argv=argv,
            cwd=app,
            env=env,
            cpu=spec.resources.cpu,
            memory_bytes=spec.resources.memory_bytes,
            labels={LABEL_WORKER: self.worker_id, LABEL_TASK: attempt.task_id, LABEL_ATTEMPT: str(attempt.attempt_id)},
        )

    def _fetch_bundle(self, url: str) -> Path:
        prefix, bundle_id = split_bundle_url(url)
        cache_dir = self._work_dir / "bundles"
        cached = cache_dir / f"{bundle_id}.zip"
        with self._bundle_lock:
            if not cached.exists():
                path = self._download_bundle(prefix, bundle_id, cache_dir)
                if Path(path) != cached:
                    tmp = cached.with_suffix(".tmp")
                    shutil.copyfile(path, tmp)
                    os.replace(tmp, cached)
        return cached

    def _download_bundle(self, prefix: str, bundle_id: str, cache_dir: Path) -> Path:
        """Fetch a bundle, retrying a few times with backoff before giving up on this machine."""
        delay = 0.05
        for attempt in range(BUNDLE_TRIES):
            try:
                faults.inject("worker.bundle_download")
                return Path(self._bundle_store_for(prefix).get(bundle_id, cache_dir))
            except BundleError:
                raise
            except Exception as exc:
                if attempt == BUNDLE_TRIES - 1:
                    raise OSError(f"could not fetch bundle {bundle_id} after {BUNDLE_TRIES} tries: {exc}") from exc
                logger.warning("fetching bundle %s failed (%s); retrying", bundle_id, exc)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _kill_attempt(self, attempt: LocalAttempt) -> None:
        handle = attempt.handle
        if handle is not None:
            handle.kill(KILL_GRACE_SECONDS)

    def _cleanup_attempt(self, attempt: LocalAttempt) -> None:
        self._ports.release(attempt.ports)
        if attempt.handle is not None:
            try:
                attempt.handle.remove()
            except Exception:
                logger.exception("failed to remove container %s", attempt.handle.container_id)
        shutil.rmtree(attempt.directory, ignore_errors=True)

