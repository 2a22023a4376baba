"""ActorServer: host Python objects so other processes can call their methods.

    server = ActorServer(port="actor")      # the task's named port (job submitted with ports=["actor"])
    server.register("counter", Counter())
    server.serve()                          # listens, then registers "counter" as an endpoint of the job
    server.wait()                           # until stop() (or the task ends)

Inside a task of a cluster with auth, only tasks of the same job tree, the job's owner and admins
may call (:class:`~iris.actor.auth.ActorGate`; docs/actors.md). Calls run concurrently on a
thread per caller connection (at most ``max_workers`` at once; :mod:`iris.actor.wire`), so an actor
shared by many callers must be thread-safe. Long-running operations (``ActorClient.method.start``) run on their own
threads and may check :func:`operation_cancelled` to stop early.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from iris.actor import protocol, wire
from iris.actor.auth import ActorGate, task_gate
from iris.errors import IrisError

if TYPE_CHECKING:
    from iris.client.client import IrisClient

__all__ = ["ActorServer", "operation_cancelled"]

logger = logging.getLogger(__name__)

_op_local = threading.local()
# a finished operation nobody polls is forgotten after this long
_OPERATION_TTL = 3600.0


def operation_cancelled() -> bool:
    """Inside a long-running operation: whether its caller asked to cancel it."""
    event = getattr(_op_local, "cancel", None)
    return bool(event is not None and event.is_set())


class _Operation:
    def __init__(self, where: str):
        self.where = where
        self.cancel = threading.Event()
        self.future: Future[bytes] | None = None
        self.finished_at = 0.0


class ActorServer:
    """Hosts actors on one port. ``port``: a task's named port (``"actor"`` reads
    ``IRIS_PORT_ACTOR``), a number, or ``None``/0 for any free port. ``host``: the address to
    bind and advertise (default: the worker's ``IRIS_ADVERTISE_HOST``, else 127.0.0.1).
    ``interceptors`` are more checks of your own, written as gRPC server interceptors: each sees
    the call's method name and the connection's credential metadata, and may answer instead of
    the actor (``context.abort(code, details)``); only unary handlers are supported.
    ``max_message``: the largest request accepted and answer sent, in bytes (a larger one is
    refused with a clear error, not retried; the server keeps serving).
    ``gate`` checks each caller's credential: None (the default) is the task's own inside a task
    of a cluster with auth (only its job tree, its owner and admins may call), and no check
    otherwise; ``False`` lets every caller in (an actor meant for other users' jobs).
    ``client``: where to register endpoints (default inside a task: ``iris_ctx().client``; outside
    a task nothing is registered unless a client and ``job_id`` are given)."""

    def __init__(
        self,
        port: int | str | None = None,
        *,
        host: str | None = None,
        max_workers: int = 64,
        interceptors: Sequence[Any] = (),
        max_message: int = protocol.MAX_MESSAGE,
        client: IrisClient | None = None,
        job_id: str | None = None,
        gate: ActorGate | None | bool = None,
    ):
        from iris.client.job_info import get_job_info

        self._info = get_job_info()
        self._host = host or (self._info.advertise_host if self._info else "127.0.0.1")
        self._port = self._port_number(port)
        self._max_workers = max_workers
        self._interceptors = tuple(interceptors)
        self._client = client
        self._job_id = job_id or (self._info.job_id if self._info else "")
        self._actors: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._max_message = max_message
        self._running = 0  # calls running now, at most max_workers (a counter: cheaper than a semaphore)
        self._waiting = 0
        self._slots = threading.Condition(threading.Lock())
        self._server: wire.FrameServer | None = None
        self._bound_port = 0
        self._stopped = threading.Event()
        self._operations: dict[str, _Operation] = {}
        self._op_pool: ThreadPoolExecutor | None = None
        if gate is True:
            raise IrisError("ActorServer(gate=True): pass an ActorGate, None (the task's own) or False (no check)")
        self._gate: ActorGate | None = task_gate() if gate is None else (gate or None)

    def _port_number(self, port: int | str | None) -> int:
        if port is None:
            return 0
        if isinstance(port, int):
            return port
        if port.isdigit():
            return int(port)
        if self._info is None:
            raise IrisError(f"ActorServer(port={port!r}): a named port exists only inside an Iris task; give a number or None")
        return self._info.port(port)

    # --- hosting ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` once serving."""
        if self._server is None:
            raise IrisError("ActorServer.address: call serve() first")
        return f"{self._host}:{self._bound_port}"

    def register(self, name: str, actor: Any) -> None:
        """Host ``actor`` under ``name``; when serving (inside a task), publish it as an endpoint."""
        if not name or not isinstance(name, str):
            raise IrisError(f"ActorServer.register: the actor name must be a non-empty string, not {name!r}")
        with self._lock:
            if name in self._actors:
                raise IrisError(f"ActorServer.register: an actor named {name!r} is already hosted here")
            self._actors[name] = actor
            serving = self._server is not None
        if serving:
            self._publish(name)

    def serve(self) -> ActorServer:
        """Start listening and publish the hosted actors; returns self."""
        with self._lock:
            if self._server is not None:
                return self
            if self._gate is not None:
                self._gate.start()  # who owns this job (one controller call); auth off: no checks
                if not self._gate.enabled:
                    self._gate = None
            try:
                server = wire.FrameServer(self._host, self._port, self._handle, max_message=self._max_message)
            except OSError as exc:
                raise IrisError(f"ActorServer: {exc}") from None
            self._server, self._bound_port = server, server.port
            names = list(self._actors)
        for name in names:
            self._publish(name)
        return self

    def _publish(self, name: str) -> None:
        client = self._client
        if client is None:
            if self._info is None:
                return  # outside a task, with no client: a FixedResolver is how callers find us
            from iris.client.context import iris_ctx

            client = iris_ctx().client
        if not self._job_id:
            raise IrisError("ActorServer: a client was given without job_id; endpoints are registered under a job")
        task_index = self._info.task_index if self._info and self._info.job_id == self._job_id else 0
        client.register_endpoint(name, self.address, job_id=self._job_id, task_index=task_index, metadata={"actor": name})
        logger.info("actor %r serving at %s", name, self.address)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` (True) or ``timeout`` (False)."""
        return self._stopped.wait(timeout)

    def stop(self, grace: float | None = 1.0) -> None:
        with self._lock:
            server, self._server = self._server, None
            pool, self._op_pool = self._op_pool, None
        if server is not None:
            server.stop(grace)
        if pool is not None:
            for op in list(self._operations.values()):
                op.cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    def __enter__(self) -> ActorServer:
        return self.serve()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- handlers -----------------------------------------------------------------------

    def _handle(self, kind: int, request: bytes, context: wire.ServerConnection, timeout: float | None) -> bytes:
        """One request of a connection (run on the connection's thread): admit the caller, then
        run the call while holding one of ``max_workers`` slots (waiting at most the call's
        timeout for one)."""
        handler = self._handlers.get(kind)
        if handler is None:
            context.abort("UNIMPLEMENTED", f"unknown request kind {kind}")
        if self._interceptors:
            answered = _intercept(self._interceptors, _METHOD_NAMES[kind], request, context)
            if answered is not None:
                return answered
        slots = self._slots
        with slots:
            if self._running >= self._max_workers:
                self._waiting += 1
                try:
                    if not slots.wait_for(lambda: self._running < self._max_workers, timeout):
                        context.abort("DEADLINE_EXCEEDED", f"no free worker among {self._max_workers} within the call's timeout")
                finally:
                    self._waiting -= 1
            self._running += 1
        try:
            return handler(self, request, context)
        finally:
            with slots:
                self._running -= 1
                if self._waiting:
                    slots.notify()

    def _admit(self, context: wire.ServerConnection) -> None:
        """Refuse a caller the gate does not let in (UNAUTHENTICATED / PERMISSION_DENIED)."""
        gate = self._gate
        if gate is not None:
            refused = gate.check(context.invocation_metadata())
            if refused is not None:
                context.abort(*refused)

    def _actor(self, actor_name: str, context: wire.ServerConnection) -> Any:
        actor = self._actors.get(actor_name)
        if actor is None:
            hosted = ", ".join(sorted(self._actors)) or "none"
            # NOT_FOUND tells the client that this endpoint does not (or no longer) serve the actor
            context.abort("NOT_FOUND", f"no actor named {actor_name!r} at {self._host}:{self._bound_port}; it hosts: {hosted}")
        return actor

    @staticmethod
    def _method(actor_name: str, actor: Any, method: str) -> Any:
        target = getattr(actor, method, None) if not method.startswith("_") else None
        if target is None or not callable(target):
            public = sorted(m for m in dir(actor) if not m.startswith("_") and callable(getattr(actor, m, None)))
            raise protocol.ActorMethodNotFound(
                f"actor {actor_name!r} ({type(actor).__name__}) has no method {method!r}; its methods: {', '.join(public) or 'none'}"
            )
        return target

    def _call(self, request: bytes, context: wire.ServerConnection) -> bytes:
        self._admit(context)
        try:
            actor_name, method, args, kwargs = protocol.decode_request(request)
        except Exception as exc:  # noqa: BLE001 - e.g. an argument whose class cannot be imported here
            return protocol.encode_exception(protocol.ActorCallError(f"the arguments cannot be unpickled by the actor: {exc!r}"))
        actor = self._actor(actor_name, context)
        try:
            value = self._method(actor_name, actor, method)(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every exception goes back to the caller
            return protocol.encode_exception(exc)
        return protocol.encode_value(value)

    # --- long-running operations ------------------------------------------------------------

    def _start(self, request: bytes, context: wire.ServerConnection) -> bytes:
        self._admit(context)
        actor_name, method, args, kwargs = protocol.decode_request(request)
        actor = self._actor(actor_name, context)
        try:
            target = self._method(actor_name, actor, method)
        except protocol.ActorMethodNotFound as exc:
            return pickle.dumps(("", protocol.encode_exception(exc)))
        op = _Operation(f"{actor_name}.{method}")
        op_id = uuid.uuid4().hex

        def run() -> bytes:
            _op_local.cancel = op.cancel
            try:
                return self._call_outcome(target, args, kwargs)
            finally:
                _op_local.cancel = None
                op.finished_at = time.monotonic()

        with self._lock:
            if self._op_pool is None:
                self._op_pool = ThreadPoolExecutor(thread_name_prefix="actor-op")
            self._forget_stale_operations()
            self._operations[op_id] = op
            op.future = self._op_pool.submit(run)
        return pickle.dumps((op_id, b""))

    @staticmethod
    def _call_outcome(target: Any, args: tuple, kwargs: dict) -> bytes:
        try:
            return protocol.encode_value(target(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001
            return protocol.encode_exception(exc)

    def _forget_stale_operations(self) -> None:
        now = time.monotonic()
        for op_id, op in list(self._operations.items()):
            if op.finished_at and now - op.finished_at > _OPERATION_TTL:
                del self._operations[op_id]

    def _poll(self, request: bytes, context: wire.ServerConnection) -> bytes:
        self._admit(context)
        op_id, wait = pickle.loads(request)
        op = self._operations.get(op_id)
        if op is None or op.future is None:
            context.abort("NOT_FOUND", f"no operation {op_id!r} at {self._host}:{self._bound_port} (finished and collected, or the actor restarted)")
        try:
            outcome = op.future.result(timeout=max(0.0, min(wait, 30.0)))
        except TimeoutError:
            return pickle.dumps((False, b""))
        except Exception:  # noqa: BLE001 - cancelled before it started
            outcome = protocol.encode_exception(protocol.OperationCancelled(f"{op.where} was cancelled"), "")
        with self._lock:
            self._operations.pop(op_id, None)
        return pickle.dumps((True, outcome))

    def _cancel(self, request: bytes, context: wire.ServerConnection) -> bytes:
        self._admit(context)
        op_id = pickle.loads(request)
        op = self._operations.get(op_id)
        if op is not None:
            op.cancel.set()
            if op.future is not None:
                op.future.cancel()
        return pickle.dumps(op is not None)

    _handlers = {wire.CALL: _call, wire.START: _start, wire.POLL: _poll, wire.CANCEL: _cancel}


_METHOD_NAMES = {wire.CALL: "/iris.actor.Actor/Call", wire.START: "/iris.actor.Actor/Start", wire.POLL: "/iris.actor.Actor/Poll", wire.CANCEL: "/iris.actor.Actor/Cancel"}


class _CallDetails:
    """What a gRPC server interceptor reads of a call: its method and metadata."""

    __slots__ = ("method", "invocation_metadata")

    def __init__(self, method: str, metadata: tuple):
        self.method = method
        self.invocation_metadata = metadata


_PROCEED = object()


def _intercept(interceptors: Sequence[Any], method: str, request: bytes, context: wire.ServerConnection) -> bytes | None:
    """Run gRPC-style server interceptors: each either passes the call on (``continuation``;
    then None) or answers with a unary handler of its own (its answer, or its ``context.abort``
    refuses the call)."""
    details = _CallDetails(method, context.metadata)
    for interceptor in interceptors:
        handler = interceptor.intercept_service(lambda _details: _PROCEED, details)
        if handler is _PROCEED:
            continue
        unary = getattr(handler, "unary_unary", None)
        if unary is None:
            context.abort("UNIMPLEMENTED", f"interceptor {type(interceptor).__name__} answered with a non-unary handler")
        return unary(request, context)
    return None


def serve_forever(actors: dict[str, Any], port: int | str | None = "actor") -> None:
    """Host ``actors`` (name -> object) until the task is killed: the body of an actor job."""
    server = ActorServer(port)
    for name, actor in actors.items():
        server.register(name, actor)
    server.serve()
    logger.info("serving %s in pid %d", ", ".join(actors), os.getpid())
    server.wait()
