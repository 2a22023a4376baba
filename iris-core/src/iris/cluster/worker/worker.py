"""The worker agent.

One loop: send the controller everything this worker observes (every attempt, its state and
the log bytes the controller has not acknowledged), receive the full desired set, start what is
missing, kill what is no longer wanted, forget what the controller has fully recorded. The call
long-polls while nothing changes; a local change (an attempt ended, new output) cancels the
call and sends a fresh one at once.

No thread is held per attempt, so a worker runs as many attempts as its capacity allows: one
monitor thread watches every running attempt (``status()``, which does not block); starts run on
a small pool of their own; each kill gets a short-lived thread, so a kill never waits behind
another kill, a start or a watch; cleanups run on their own pool.

Before it starts, an attempt's Python environment is built (or found cached) from its bundle
while the attempt is BUILDING (:mod:`iris.cluster.worker.environment`); what the build prints is
the start of the attempt's log.

An attempt that cannot start is FAILED when the cause is the task's own (its bundle does not
unpack or is not what was uploaded, its environment does not build, its command cannot be
run: :class:`~iris.plugin.protocols.TaskStartError`), so the job's ``max_retries`` applies; it is
WORKER_FAILED when the cause is this machine's (the bundle store
cannot be reached, the runtime fails), so it is retried on the preemption budget.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import select
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import grpc

from iris import faults
from iris.bundle import BAD_ZIP_ERRORS, bundle_problem, extract_bundle, split_bundle_url
from iris.job.records import BundleLimits, ObservedAttempt, WorkerIdentity
from iris.cluster.worker.environment import BuildCancelled, EnvironmentBuilder, TaskEnvironment
from iris.cluster.worker.ports import PortAllocator, shared_allocator
from iris.cluster.types import TaskState
from iris.errors import BundleCorrupt, BundleError
from iris.plugin.protocols import ContainerHandle, ContainerRuntime, ContainerSpec, ContainerStatus, TaskStartError
from iris.auth import TOKEN_ENV, WORKER_TOKEN_ENV
from iris.plugin.worker_host import ATTRIBUTE_MEMORY_LIMITS, LABEL_WORKER, WorkerLaunch
from iris.rpc import convert, worker_pb2, worker_pb2_grpc
from iris.rpc.channel import authorized_channel
from iris.runtime.spare_directories import SpareDirectories

logger = logging.getLogger(__name__)

BUNDLE_TRIES = 4
MAX_LOG_CHUNK = 1 << 20  # per attempt per exchange
MAX_REQUEST_LOG_BYTES = 8 << 20  # all attempts together per exchange
LOG_POLL_SECONDS = 0.02
MONITOR_POLL_SECONDS = 0.05
# A started attempt is reported RUNNING this long after it starts, unless it has ended by then:
# a short task then costs one report (its end), not two.
RUNNING_REPORT_DELAY = 0.005
RESULT_FILE = "result.pkl"  # where run_callable leaves a callable's outcome (see run_callable.py)
ENVIRONMENT_LOG = "environment.log"  # the environment build's output (env records): the start of the attempt's log
MAX_RESULT_BYTES = 16 << 20
SPARE_ATTEMPT_DIRECTORIES = 64  # emptied attempt directories kept for reuse (see iris.runtime.spare_directories)
START_THREADS = 8
CLEANUP_THREADS = 2
AUTH_RETRY_SECONDS = 5.0  # a refused credential is retried slowly: someone has to fix it
KILL_GRACE_SECONDS = 5.0
LABEL_TASK = "iris.task"
LABEL_ATTEMPT = "iris.attempt"
_STAMP_SETTLE_NS = 100_000_000  # a cached bundle's file stamp younger than this is not trusted
# Errors unpacking a bundle that say this machine is in trouble, not that the bundle is bad.
_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


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
    exit_fd: int | None = None  # readable once the container ends (the handle's, if it has one)
    report_at: float = 0.0  # when to tell the controller it runs (monotonic; 0 = nothing due)
    result: bytes = b""  # a callable's outcome (opaque), sent with its end
    result_is_error: bool = False
    result_note: str = ""  # why a result could not be kept
    acked_offset: int = 0
    kill_requested: bool = False
    ports: dict[str, int] = attrs.field(factory=dict)
    watch_failing: bool = False  # the last status() call raised (logged once per streak)
    # The attempt's log is the environment build's output (this file) followed by the
    # container's, both records of iris.runtime.output_log (so each line keeps its stream);
    # build_log_size is that file's final size once the container has started.
    build_log: Path | None = None
    build_log_size: int = -1

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.attempt_id)


def _safe_name(task_id: str, attempt_id: int) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", task_id.strip("/")) + f".{attempt_id}"


def _unpack_error(bundle_id: str, cause: object) -> TaskStartError:
    return TaskStartError(f"bundle {bundle_id} does not unpack: {cause}")


def _check_bundle(path: Path, bundle_id: str) -> None:
    """Refuse, as the task's fault, a bundle that is not a zip or names a path outside its
    directory, before it enters the cache."""
    problem = bundle_problem(path)
    if problem is not None:
        raise _unpack_error(bundle_id, problem)


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
        task_python: str = "",
        env_dir: Path | None = None,
        ports: PortAllocator | None = None,
        task_image: str = "",
        token: str = "",
    ):
        """``bundle_store_for(url_prefix)`` returns the BundleStore serving that prefix;
        ``token`` is the worker's credential (bound to ``worker_id``; empty when auth is off).

        Task environments are built from ``task_python`` (default: ``$IRIS_TASK_PYTHON``, else
        :func:`~iris.cluster.worker.environment.default_task_python`) and cached in ``env_dir``
        (default: ``$IRIS_ENV_DIR``, else ``work_dir/envs``; workers on one machine may share it).
        ``task_image`` is the image of tasks whose job names none (runtimes that run images)."""
        self.worker_id = worker_id
        self._token = token
        self._address = controller_address.removeprefix("http://")
        self._runtime = runtime
        self._bundle_store_for = bundle_store_for
        self._work_dir = Path(work_dir)
        attributes = dict(attributes or {})
        enforcement = getattr(runtime, "memory_enforcement", None)  # optional: how memory limits hold
        if isinstance(enforcement, str) and enforcement:
            attributes.setdefault(ATTRIBUTE_MEMORY_LIMITS, enforcement)
        self._identity = WorkerIdentity(
            worker_id=worker_id, slice_id=slice_id, cpu=cpu, memory_bytes=memory_bytes, attributes=attributes
        )
        self._wait_seconds = wait_seconds
        self._environments = EnvironmentBuilder(
            Path(env_dir or os.environ.get("IRIS_ENV_DIR") or self._work_dir / "envs"),
            task_python=task_python or os.environ.get("IRIS_TASK_PYTHON", ""),
        )
        self._ports = ports or shared_allocator()
        self._task_image = task_image
        self._attempts: dict[tuple[str, int], LocalAttempt] = {}
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._local_news = False
        self._stop = threading.Event()
        self._starts = ThreadPoolExecutor(max_workers=START_THREADS, thread_name_prefix=f"iris-{worker_id}-start")
        self._cleanups = ThreadPoolExecutor(max_workers=CLEANUP_THREADS, thread_name_prefix=f"iris-{worker_id}-cleanup")
        self._thread: threading.Thread | None = None
        self._monitor_thread: threading.Thread | None = None
        self._monitor_wake_r, self._monitor_wake_w = os.pipe()  # a byte wakes the monitor
        os.set_blocking(self._monitor_wake_r, False)
        os.set_blocking(self._monitor_wake_w, False)
        self._channel: grpc.Channel | None = None
        self._bundle_lock = threading.Lock()
        self._verified: dict[str, tuple[int, ...]] = {}  # bundle id -> stamp of its cached copy when it hashed right
        self._known_version = 0
        # ended attempts' directories, emptied (their environment log kept while empty), for reuse
        self._spares = SpareDirectories(
            self._work_dir / "attempts" / ".spare", SPARE_ATTEMPT_DIRECTORIES, keep_files=frozenset({ENVIRONMENT_LOG})
        )
        # What the last request carried, per attempt (touched by the loop thread only).
        self._sent_offsets: dict[tuple[str, int], int] = {}
        self._sent_states: dict[tuple[str, int], TaskState] = {}

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        # attempts hold the tasks' environments and logs: the worker's user only
        self._work_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._work_dir, 0o700)
        (self._work_dir / "attempts").mkdir(parents=True, exist_ok=True)
        (self._work_dir / "bundles").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._spares.spare_dir, ignore_errors=True)  # an earlier process's spares
        self._adopt()
        self._channel = authorized_channel(
            self._address,
            self._token,
            options=[("grpc.max_receive_message_length", 512 << 20), ("grpc.max_send_message_length", 512 << 20)],
        )
        self._monitor_thread = threading.Thread(target=self._monitor_loop, name=f"iris-monitor-{self.worker_id}", daemon=True)
        self._monitor_thread.start()
        self._thread = threading.Thread(target=self._run, name=f"iris-worker-{self.worker_id}", daemon=True)
        self._thread.start()

    def stop(self, kill_attempts: bool = True) -> None:
        self._stop.set()
        self._spares.close()  # from here ended attempts' directories are removed, not kept
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if kill_attempts:
            with self._lock:
                for attempt in self._attempts.values():
                    attempt.kill_requested = True  # one still starting kills itself once started
                handles = [a.handle for a in self._attempts.values() if a.handle is not None]
            killers = [self._spawn_kill(handle, grace_seconds=1.0) for handle in handles]
            for killer in killers:
                killer.join()
        self._starts.shutdown(wait=True, cancel_futures=True)
        self._wake_monitor()
        if self._monitor_thread is not None:
            self._monitor_thread.join(timeout=10)
        os.close(self._monitor_wake_r)
        os.close(self._monitor_wake_w)
        self._cleanups.shutdown(wait=True)
        if kill_attempts:  # nothing of theirs stays: containers, attempt directories, ports
            with self._lock:
                attempts = list(self._attempts.values())
                self._attempts.clear()
            for attempt in attempts:
                self._cleanup_attempt(attempt)
        self._spares.close()
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
            try:
                if request.wait_seconds:
                    response = self._long_poll(stub, request)
                    if response is None:
                        if self._stop.is_set():
                            return
                        continue  # cut short by local news
                else:
                    # an answer is awaited at once: a blocking call, served on this thread (a
                    # future would start a channel thread each time the channel has no other call)
                    response = stub.Reconcile(request, timeout=self._wait_seconds + 10)
            except grpc.FutureCancelledError:
                continue
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    continue
                logger.warning("worker %s: reconcile failed: %s; retrying", self.worker_id, exc.details() or exc.code())
                refused = exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
                self._stop.wait(AUTH_RETRY_SECONDS if refused else backoff)
                backoff = min(backoff * 2, 0.5)  # a restarted controller is found within half a second
                continue
            if self._stop.is_set():
                return
            backoff = 0.05
            try:
                faults.inject("worker.reconcile_receive")
            except faults.FaultInjected:
                continue  # as if the answer was lost: the next exchange carries the same facts
            if self._apply_response(response):
                # attempts were just started: until one of them has something to say (it ended, or
                # has run RUNNING_REPORT_DELAY), at most LOG_POLL_SECONDS, the controller need not
                # hear that they build, so a short task costs one report (its end), not two
                with self._cv:
                    self._cv.wait_for(lambda: self._local_news or self._stop.is_set(), LOG_POLL_SECONDS)

    def _long_poll(self, stub: Any, request: worker_pb2.ReconcileRequest) -> worker_pb2.ReconcileResponse | None:
        """Send a long-polled reconcile; its answer, or None once local news (or a stop) cut it short.

        The call is cut short by local news (checked before each wait, so news that came first is
        not slept on) and by new output once LOG_POLL_SECONDS have passed (output is shipped at
        that pace: a line written just now need not cost an exchange of its own)."""
        future = stub.Reconcile.future(request, timeout=self._wait_seconds + 10)
        future.add_done_callback(self._notify)
        sent = time.monotonic()
        with self._cv:
            while not future.done() and not self._stop.is_set():
                if self._local_news or (time.monotonic() - sent >= LOG_POLL_SECONDS and self._has_new_output()):
                    break
                self._cv.wait(LOG_POLL_SECONDS)
        if not future.done():
            future.cancel()
            return None
        if self._stop.is_set():
            return None
        return future.result()

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
            if (a.handle is not None or a.build_log is not None) and _log_size(a) > self._sent_offsets.get(a.key, 0):
                return True
        return False

    def _build_request(self) -> tuple[worker_pb2.ReconcileRequest, bool]:
        """Everything this worker observes, and whether any of it is news (sent at once, cutting
        short a long-poll). It long-polls unless it needs an answer now: acknowledgements of log
        bytes or of an ended attempt. A state that only moved on (BUILDING, RUNNING) is told
        without waiting for one, so a short task costs one exchange that returns at once."""
        observed = []
        has_news = False
        needs_answer = False
        budget = MAX_REQUEST_LOG_BYTES
        with self._lock:
            attempts = list(self._attempts.values())
        for a in attempts:
            state = a.state  # read the state before the log so a terminal log is complete
            size = _log_size(a)
            data = _read_log(a, a.acked_offset, min(MAX_LOG_CHUNK, budget)) if budget > 0 and size > a.acked_offset else b""
            budget -= len(data)
            complete = state.is_terminal and a.acked_offset + len(data) >= size
            if data or self._sent_states.get(a.key) is not state:
                has_news = True
                needs_answer = needs_answer or bool(data) or state.is_terminal
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
                    result=a.result if state.is_terminal else b"",
                    result_is_error=a.result_is_error,
                )
            )
        wait = 0.0 if needs_answer else self._wait_seconds
        return convert.reconcile_request_to_proto(self._identity, observed, self._known_version, wait), has_news

    def _apply_response(self, response: worker_pb2.ReconcileResponse) -> int:
        """Start, kill and forget what the answer says; returns how many attempts were started."""
        self._known_version = response.version
        desired = {(d.task_id, d.attempt_id): d for d in response.attempts}
        to_start: list[LocalAttempt] = []
        to_kill: list[ContainerHandle] = []
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
                # the controller's offset, even below what was acknowledged before: a controller
                # restored from a checkpoint may have lost bytes its predecessor acknowledged, and
                # refuses every later send as a gap until they come again
                attempt.acked_offset = ack.log_offset
                if ack.done and attempt.state.is_terminal:
                    del self._attempts[attempt.key]
                    self._sent_offsets.pop(attempt.key, None)
                    self._sent_states.pop(attempt.key, None)
                    forgotten.append(attempt)
            for key, attempt in self._attempts.items():
                if key not in desired and not attempt.state.is_terminal and not attempt.kill_requested:
                    attempt.kill_requested = True
                    if attempt.handle is not None:  # else its start sees kill_requested (under this lock)
                        to_kill.append(attempt.handle)
        for handle in to_kill:
            self._spawn_kill(handle)
        for attempt in to_start:
            self._starts.submit(self._run_attempt, attempt)
        for attempt in forgotten:
            self._cleanups.submit(self._cleanup_attempt, attempt)
        return len(to_start)

    # --- attempts -----------------------------------------------------------------------

    def _run_attempt(self, attempt: LocalAttempt) -> None:
        if attempt.kill_requested:  # killed while it queued to start
            self._finish(attempt, TaskState.KILLED, None, "killed before it started")
            return
        try:
            container = self._prepare(attempt)
            if attempt.kill_requested:
                self._finish(attempt, TaskState.KILLED, None, "killed before it started")
                return
            faults.inject("worker.container_start")
            handle = self._runtime.start(container)
        except BuildCancelled as exc:
            self._finish(attempt, TaskState.KILLED, None, str(exc))
            return
        except TaskStartError as exc:  # the task's own fault: the job's max_retries applies
            logger.info("attempt %s/%d cannot start: %s", attempt.task_id, attempt.attempt_id, exc)
            self._finish(attempt, TaskState.FAILED, exc.exit_code, str(exc))
            return
        except Exception as exc:  # this machine's fault: retried elsewhere on the preemption budget
            logger.warning("attempt %s/%d could not be started here: %s", attempt.task_id, attempt.attempt_id, exc)
            self._finish(attempt, TaskState.WORKER_FAILED, None, f"worker {self.worker_id} could not start it: {exc}")
            return
        exit_fd = getattr(handle, "exit_fd", None)
        with self._lock:
            if attempt.build_log is not None:  # the build's part of the log is final: the container's follows
                attempt.build_log_size = _file_size(attempt.build_log)
            attempt.handle = handle
            attempt.exit_fd = exit_fd() if exit_fd is not None else None
            attempt.state = TaskState.RUNNING  # from here the monitor thread watches it
            attempt.report_at = time.monotonic() + RUNNING_REPORT_DELAY
            kill = attempt.kill_requested
        self._wake_monitor()
        if kill:  # the kill came while it was starting; on this thread, so stop() waits for it
            self._kill(handle, KILL_GRACE_SECONDS)

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
            directory = self._work_dir / "attempts" / _safe_name(*key)
            build_log = directory / ENVIRONMENT_LOG
            has_build_log = build_log.exists()
            self._attempts[key] = LocalAttempt(
                task_id=key[0],
                attempt_id=key[1],
                spec=worker_pb2.AttemptSpec(),
                directory=directory,
                state=TaskState.RUNNING,
                handle=handle,
                build_log=build_log if has_build_log else None,
                build_log_size=_file_size(build_log) if has_build_log else -1,
                exit_fd=getattr(handle, "exit_fd", lambda: None)(),
            )
            logger.info("worker %s adopted attempt %s/%d", self.worker_id, *key)

    def _monitor_loop(self) -> None:
        """Watch every running attempt from one thread and record how each one ends.

        Handles that offer an ``exit_fd`` are waited on together (``poll``), so an ending is seen
        at once; the others are looked at every ``MONITOR_POLL_SECONDS``. A started attempt wakes
        the loop (``_monitor_wake``) so its descriptor is watched from the start."""
        exits = ExitWatch(self._monitor_wake_r)
        while not self._stop.is_set():
            with self._lock:
                running = [a for a in self._attempts.values() if a.state is TaskState.RUNNING and a.handle is not None]
            polled = exits.watch(running)
            due = [a.report_at for a in running if a.report_at]
            timeout = MONITOR_POLL_SECONDS if not due else max(0.0, min(MONITOR_POLL_SECONDS, min(due) - time.monotonic()))
            ended = exits.wait(timeout)
            for attempt in [*ended, *polled]:
                if self._stop.is_set():
                    return
                if attempt.state is not TaskState.RUNNING:  # recorded already (its descriptor is let go next round)
                    continue
                status = self._watch(attempt)
                if status is not None and not status.running:
                    attempt.report_at = 0.0  # its end is the report
                    self._record_end(attempt, status)
            now = time.monotonic()
            if any(a.report_at and a.report_at <= now for a in running):
                for attempt in running:
                    if attempt.report_at and attempt.report_at <= now:
                        attempt.report_at = 0.0
                self._wake()  # still running: tell the controller now

    def _wake_monitor(self) -> None:
        try:
            os.write(self._monitor_wake_w, b"x")
        except BlockingIOError:
            pass  # already woken

    def _watch(self, attempt: LocalAttempt) -> ContainerStatus | None:
        """The attempt's status, or None if it cannot be read now (it is looked at again next round)."""
        assert attempt.handle is not None
        try:
            faults.inject("worker.task_monitor")
            status = attempt.handle.status()
        except Exception as exc:
            if not attempt.watch_failing:
                logger.warning("watching %s failed: %s; retrying", attempt.handle.container_id, exc)
            attempt.watch_failing = True
            return None
        attempt.watch_failing = False
        return status

    def _read_result(self, attempt: LocalAttempt) -> None:
        """A callable's outcome, as run_callable left it, to send with the attempt's end (opaque
        bytes: the worker never unpickles them)."""
        if not attempt.spec.entrypoint.callable:
            return
        for name, is_error in ((RESULT_FILE, False), (RESULT_FILE + ".error", True)):
            path = attempt.directory / name
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if size > MAX_RESULT_BYTES:
                attempt.result_note = f"the callable's result is {size} bytes, over the {MAX_RESULT_BYTES}-byte limit; it was not kept"
                return
            try:
                attempt.result, attempt.result_is_error = path.read_bytes(), is_error
            except OSError as exc:
                attempt.result_note = f"the callable's result could not be read: {exc}"
            return

    def _record_end(self, attempt: LocalAttempt, status: ContainerStatus) -> None:
        self._read_result(attempt)
        if attempt.result_note and status.exit_code == 0 and not attempt.kill_requested:
            self._finish(attempt, TaskState.FAILED, status.exit_code, attempt.result_note)
            return
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
        # the task's working directory: the unpacked bundle, or the attempt's own empty directory
        app = attempt.directory / "app" if spec.bundle_url else attempt.directory
        self._make_directory(attempt.directory)
        if spec.bundle_url:
            app.mkdir()
            self._unpack_bundle(spec.bundle_url, app, convert.bundle_limits_from_attempt_spec(spec))
        environment = self._build_environment(attempt, app if spec.bundle_url else None)
        if spec.entrypoint.callable:
            payload = attempt.directory / "entrypoint.pkl"
            payload.write_bytes(spec.entrypoint.callable)
            argv = [str(environment.python), str(environment.runner), str(payload), str(attempt.directory / RESULT_FILE)]
        else:
            argv = list(spec.entrypoint.argv)
        if not argv:
            raise TaskStartError("the task has no command to run", exit_code=127)
        if spec.ports and not attempt.ports:
            attempt.ports = self._ports.allocate(list(spec.ports))
        env = _task_env(environment, spec.env)  # no credential of this process: the task gets its own below
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
        if spec.token:
            env[TOKEN_ENV] = spec.token
        return ContainerSpec(
            container_id=f"{self.worker_id}.{_safe_name(attempt.task_id, attempt.attempt_id)}",
            argv=argv,
            cwd=app,
            env=env,
            cpu=spec.resources.cpu,
            memory_bytes=spec.resources.memory_bytes,
            device_kind=spec.resources.device_kind or "cpu",
            device_variant=spec.resources.device_variant,
            device_count=spec.resources.device_count,
            labels={LABEL_WORKER: self.worker_id, LABEL_TASK: attempt.task_id, LABEL_ATTEMPT: str(attempt.attempt_id)},
            image=spec.task_image or self._task_image,
            # what the task reads outside its cwd: its environment, and the attempt's directory
            # (a callable's payload, where its result goes)
            mounts=(environment.path,),
            writable_mounts=(attempt.directory,),
        )

    def _build_environment(self, attempt: LocalAttempt, app: Path | None) -> TaskEnvironment:
        """The attempt's Python environment (cached, or built now while the attempt is BUILDING,
        the build's output streaming into the attempt's log).

        The controller is not told at once that the attempt builds: a cached environment is found
        in well under a millisecond and the task usually ends soon after, so its end carries the
        state and these lines in one exchange; a real build's lines are seen by the reconcile
        loop's output check (every ``LOG_POLL_SECONDS``) and sent then, with the state."""
        spec = attempt.spec
        log_path = attempt.directory / ENVIRONMENT_LOG
        with open(log_path, "ab") as log:
            attempt.build_log = log_path
            environment = self._environments.prepare(
                app, list(spec.extras), list(spec.pip_packages), log, cancelled=lambda: attempt.kill_requested
            )
        if not environment.cached:
            logger.info("attempt %s/%d: built environment %s", attempt.task_id, attempt.attempt_id, environment.key[:12])
        return environment

    # --- bundles ------------------------------------------------------------------------

    def _unpack_bundle(self, url: str, dest: Path, limits: BundleLimits) -> None:
        """Fetch (or reuse) the bundle and unpack it into ``dest``, at most ``limits``.

        Content that does not unpack is the task's fault (TaskStartError) and the copy leaves the
        cache; a store that cannot be reached, or a full disk, is this machine's."""
        try:
            prefix, bundle_id = split_bundle_url(url)
        except BundleError as exc:
            raise TaskStartError(str(exc)) from exc
        with self._open_bundle(prefix, bundle_id) as copy:
            try:
                extract_bundle(copy, dest, limits)
            except OSError as exc:
                if exc.errno in _MACHINE_ERRNOS:
                    raise
                self._evict_bundle(bundle_id)
                raise _unpack_error(bundle_id, exc) from exc
            except (BundleError, *BAD_ZIP_ERRORS) as exc:
                self._evict_bundle(bundle_id)
                raise _unpack_error(bundle_id, exc) from exc

    def _cached_path(self, bundle_id: str) -> Path:
        return self._work_dir / "bundles" / f"{bundle_id}.zip"

    def _evict_bundle(self, bundle_id: str) -> None:
        with self._bundle_lock:
            self._cached_path(bundle_id).unlink(missing_ok=True)
            self._verified.pop(bundle_id, None)

    def _open_bundle(self, prefix: str, bundle_id: str) -> BinaryIO:
        """An open copy of the bundle whose sha256 is its id: the cached one if it still is (a
        damaged cached copy is evicted), else a fresh one fetched and checked into the cache.
        Open, so an eviction by another start cannot pull it away while it is unpacked."""
        cached = self._cached_path(bundle_id)
        with self._bundle_lock:
            copy = self._open_cached(cached, bundle_id)
            if copy is not None:
                return copy
            staging = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".fetch-"))
            try:
                fetched = self._download_bundle(prefix, bundle_id, staging)
                _check_bundle(fetched, bundle_id)
                os.replace(fetched, cached)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            copy = open(cached, "rb")  # noqa: SIM115 (the caller closes it)
            self._remember_verified(bundle_id, os.fstat(copy.fileno()))
            return copy

    def _open_cached(self, cached: Path, bundle_id: str) -> BinaryIO | None:
        """The cached copy, open, if its bytes still hash to its id (called under the lock).

        Hashing a copy on every use would cost a read of the whole bundle per task start, so a
        copy verified once is trusted while its file stamp (inode, size, mtime, ctime) is the
        one seen then: any write to the file, or a replacement, changes its ctime, which no
        user can set back. A stamp less than ``_STAMP_SETTLE_NS`` old when checked is not
        trusted (a write in the same timestamp tick, up to a jiffy on Linux filesystems, could
        leave it unchanged; git treats "racily clean" index entries the same way), so such a
        copy is hashed again at its next use."""
        try:
            copy = open(cached, "rb")  # noqa: SIM115 (the caller closes it)
        except FileNotFoundError:
            return None
        stat = os.fstat(copy.fileno())
        if self._verified.get(bundle_id) == _stamp(stat):
            return copy
        digest, size = _sha256(copy)
        copy.seek(0)
        if digest == bundle_id:
            self._remember_verified(bundle_id, stat)
            return copy
        copy.close()
        logger.warning("the cached copy of bundle %s is damaged (%d bytes, sha256 %s); evicting it and fetching it again", bundle_id, size, digest)
        cached.unlink(missing_ok=True)
        self._verified.pop(bundle_id, None)
        return None

    def _remember_verified(self, bundle_id: str, stat: os.stat_result) -> None:
        if time.time_ns() - stat.st_ctime_ns > _STAMP_SETTLE_NS:
            self._verified[bundle_id] = _stamp(stat)
        else:
            self._verified.pop(bundle_id, None)

    def _download_bundle(self, prefix: str, bundle_id: str, staging: Path) -> Path:
        """A copy of the bundle in ``staging`` whose sha256 is its id, retrying a few times with
        backoff. A store that cannot serve it is this machine's trouble (OSError: WORKER_FAILED);
        a store that serves other bytes on every try holds a bundle changed or truncated after
        upload, which is never run (TaskStartError: FAILED, on the job's retries)."""
        delay = 0.05
        copy = staging / "bundle.zip"
        wrong = ""
        error: BaseException | None = None
        for attempt in range(BUNDLE_TRIES):
            try:
                faults.inject("worker.bundle_download")
                path = Path(self._bundle_store_for(prefix).get(bundle_id, staging))
                if path != copy:
                    if path.parent == staging:
                        os.replace(path, copy)
                    else:
                        shutil.copyfile(path, copy)
                with open(copy, "rb") as f:
                    digest, size = _sha256(f)
                if digest == bundle_id:
                    return copy
                wrong, error = f"{size} bytes with sha256 {digest}", None
            except BundleCorrupt as exc:  # a store that verifies what it serves said the same
                wrong, error = exc.held or str(exc), None
            except Exception as exc:
                wrong, error = "", exc
            if attempt < BUNDLE_TRIES - 1:
                logger.warning("fetching bundle %s failed (%s); retrying", bundle_id, wrong or error)
                time.sleep(delay)
                delay *= 2
        if wrong:
            raise TaskStartError(
                f"bundle {bundle_id} in the store is not the bundle that was uploaded (the store holds {wrong}): "
                f"it was changed or truncated after upload, so it is not run; restore or delete {prefix}/{bundle_id}.zip "
                "and upload it again"
            )
        raise OSError(f"could not fetch bundle {bundle_id} after {BUNDLE_TRIES} tries: {error}") from error

    # --- kills and cleanups -------------------------------------------------------------

    def _spawn_kill(self, handle: ContainerHandle, grace_seconds: float = KILL_GRACE_SECONDS) -> threading.Thread:
        """Kill on a thread of its own: a kill may take its whole grace period, and must wait
        neither for other kills nor for starts."""
        thread = threading.Thread(
            target=self._kill, args=(handle, grace_seconds), name=f"iris-kill-{handle.container_id}", daemon=True
        )
        thread.start()
        return thread

    def _kill(self, handle: ContainerHandle, grace_seconds: float) -> None:
        try:
            handle.kill(grace_seconds)
        except Exception:
            logger.exception("failed to kill %s", handle.container_id)

    def _cleanup_attempt(self, attempt: LocalAttempt) -> None:
        self._ports.release(attempt.ports)
        if attempt.handle is not None:
            try:
                attempt.handle.remove()
            except Exception:
                logger.exception("failed to remove container %s", attempt.handle.container_id)
            # a runtime that proves nothing of the container runs any more (``contained``, read
            # after removal) lets the directory it worked in be reused
            if getattr(attempt.handle, "contained", False) is True and self._spares.recycle(attempt.directory):
                return
        try:  # an attempt without a bundle or output files leaves one empty directory
            os.rmdir(attempt.directory)
        except FileNotFoundError:
            pass
        except OSError:
            shutil.rmtree(attempt.directory, ignore_errors=True)


    # --- reused attempt directories -----------------------------------------------------

    def _make_directory(self, directory: Path) -> None:
        """Make an attempt's directory: a spare one renamed into place, else a new one."""
        if os.path.lexists(directory):  # left by an earlier process of this worker
            shutil.rmtree(directory)
        if not self._spares.take(directory):
            directory.mkdir()


class ExitWatch:
    """The running attempts' exit descriptors, waited on together with ``poll`` (the monitor's).

    Kept by attempt, not by descriptor number alone: an ended attempt's descriptor may be closed
    (its container removed) and its number reused by a new attempt's before the monitor has let
    the old one go; the number then stands for the new attempt (else the new attempt's end would
    be taken for the old one's, and never recorded)."""

    def __init__(self, wake_fd: int):
        """``wake_fd`` (read and drained here) wakes a wait early."""
        self._poller = select.poll()
        self._wake_fd = wake_fd
        self._poller.register(wake_fd, select.POLLIN)
        self._watched: dict[int, LocalAttempt] = {}

    def watch(self, running: list[LocalAttempt]) -> list[LocalAttempt]:
        """Watch exactly these attempts' descriptors; returns those without one (to be polled)."""
        polled = []
        live: set[int] = set()
        for attempt in running:
            fd = attempt.exit_fd
            if fd is None:
                polled.append(attempt)
                continue
            live.add(fd)
            if self._watched.get(fd) is not attempt:
                self._poller.register(fd, select.POLLIN)  # registers, or re-registers a reused number
                self._watched[fd] = attempt
        for fd in [fd for fd in self._watched if fd not in live]:
            self._poller.unregister(fd)
            del self._watched[fd]
        return polled

    def wait(self, timeout: float) -> list[LocalAttempt]:
        """Wait up to ``timeout`` seconds; the watched attempts whose descriptor became readable."""
        ended = []
        for fd, _ in self._poller.poll(timeout * 1000):
            if fd == self._wake_fd:
                os.read(fd, 4096)
            elif fd in self._watched:
                ended.append(self._watched[fd])
        return ended


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_size(a: LocalAttempt) -> int:
    """Bytes of the attempt's log so far: its environment build's, then its container's."""
    prefix = a.build_log_size if a.build_log_size >= 0 else (_file_size(a.build_log) if a.build_log is not None else 0)
    return prefix + (a.handle.log_size() if a.handle is not None else 0)


def _read_log(a: LocalAttempt, offset: int, max_bytes: int) -> bytes:
    """At most ``max_bytes`` of the attempt's log from ``offset`` (see :func:`_log_size`)."""
    handle = a.handle  # read before the prefix: once a handle is set, the prefix is final
    prefix = a.build_log_size if a.build_log_size >= 0 else (_file_size(a.build_log) if a.build_log is not None else 0)
    data = b""
    if offset < prefix and a.build_log is not None:
        with open(a.build_log, "rb") as f:
            f.seek(offset)
            data = f.read(min(max_bytes, prefix - offset))
    if handle is not None and len(data) < max_bytes and offset + len(data) >= prefix:
        data += handle.read_logs(offset + len(data) - prefix, max_bytes - len(data))
    return data


def _task_env(environment: TaskEnvironment, task_env: Mapping[str, str]) -> dict[str, str]:
    """The task's variables: this worker's, without what points at Iris's own virtualenv or is a
    credential of this process (the task gets its own token), with
    the environment's ``bin`` first on PATH and the bundle's projects on PYTHONPATH; then the
    job's own variables."""
    # the bin directory of Iris's virtualenv (when it runs in one; never e.g. /usr/bin)
    own_bin = os.path.join(sys.prefix, "bin") if sys.prefix != sys.base_prefix else None
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT", TOKEN_ENV, WORKER_TOKEN_ENV)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != own_bin]
    env["PATH"] = os.pathsep.join([str(environment.bin_dir), *path])
    env["VIRTUAL_ENV"] = str(environment.path)
    pythonpath = [str(p) for p in environment.source_paths]
    if task_env.get("PYTHONPATH"):
        pythonpath.append(task_env["PYTHONPATH"])
    env.update(task_env)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return env


def _sha256(f: BinaryIO) -> tuple[str, int]:
    """The sha256 hex digest and size of what ``f`` holds from its position on."""
    digest = hashlib.sha256()
    size = 0
    while chunk := f.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _stamp(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def start_in_process(launch: WorkerLaunch, *, runtime: ContainerRuntime, bundle_store_for: Any) -> Worker:
    """Run the worker ``launch`` describes inside this process (threads) over an already built
    ContainerRuntime; returns once it runs, ``stop()`` ends it. Hosts hand this to providers as
    ``ProviderContext.start_worker`` (:data:`iris.plugin.worker_host.StartInProcess`)."""
    cpu, memory = launch.capacity
    worker = Worker(
        worker_id=launch.worker_id,
        controller_address=launch.controller_address,
        runtime=runtime,
        bundle_store_for=bundle_store_for,
        work_dir=launch.work_dir,
        cpu=cpu,
        memory_bytes=memory,
        attributes=launch.attributes,
        slice_id=launch.slice_id,
        wait_seconds=launch.wait_seconds,
        task_python=launch.task_python,
        env_dir=launch.env_dir,
        task_image=launch.task_image,
        token=launch.token,
    )
    worker.start()
    return worker
