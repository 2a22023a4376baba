"""ActorClient: call the methods of an actor found through a resolver.

    counter = ActorClient(resolver, "counter")
    counter.incr(5)                         # blocks, returns the result or raises the remote exception
    counter.with_timeout(2.0).slow()        # ActorTimeout after 2 s
    future = counter.incr.submit(1)         # a concurrent.futures.Future
    op = counter.train.start(steps=1000)    # a long-running operation: op.poll(), op.result(), op.cancel()

A call that finds no endpoint, or one that does not answer (its task died and is being retried on
another worker), resolves the name again and retries with backoff for up to ``connect_timeout``
seconds. So a call is delivered at least once: one in flight when its actor died may run again.

Connections are pooled per (address, credential) for the whole process and shared by every
client and thread: a call takes an idle connection (or opens one), sends its request and reads
the answer on its own thread, then puts the connection back (:mod:`iris.actor.wire`).
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from iris.actor import protocol, wire
from iris.actor.auth import default_credentials
from iris.actor.protocol import ActorCallError, ActorNotFound, ActorPermissionDenied, ActorTimeout
from iris.actor.resolver import Resolver

__all__ = ["ActorClient", "Operation"]

# Credential hook: returns the metadata a connection presents (e.g. an authorization header).
CallMetadata = Callable[[], Sequence[tuple[str, str]]]

DEFAULT_CONNECT_TIMEOUT = 300.0
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 1.0
_RETRYABLE = ("UNAVAILABLE", "NOT_FOUND")


class _Kinds:
    """``connection(address).call`` and friends: the request kinds :func:`invoke` sends."""

    __slots__ = ("address",)
    call, start, poll, cancel = wire.CALL, wire.START, wire.POLL, wire.CANCEL

    def __init__(self, address: str):
        self.address = address


def connection(address: str) -> _Kinds:
    """The requests one can send to ``address`` (``.call``, ``.start``, ``.poll``, ``.cancel``)."""
    return _Kinds(address)


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """The shared thread pool behind ``submit`` and broadcasts."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="iris-actor-call")
        return _executor


class _Retryable(Exception):
    """The endpoint cannot serve the call now (unreachable, or no longer hosts the actor)."""


def invoke(
    address: str,
    kind: int,
    payload: bytes,
    *,
    timeout: float | None,
    metadata: CallMetadata | None,
    where: str,
) -> bytes:
    """One request and its answer; a transport failure that a retry elsewhere may fix raises
    :class:`_Retryable`."""
    if len(payload) > protocol.MAX_MESSAGE:
        raise ActorCallError(f"{where}: the request is {len(payload)} bytes, over the {protocol.MAX_MESSAGE}-byte limit of actor messages")
    try:
        return wire.endpoint(address, tuple(metadata()) if metadata else ()).request(
            kind, payload, None if timeout is None else max(timeout, 1e-3)
        )
    except wire.RemoteStatus as exc:
        status, details = exc.status, exc.details
        if status in _RETRYABLE:
            raise _Retryable(f"{address}: {details or status}") from None
        if status in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            raise ActorPermissionDenied(f"{where} at {address} failed: {status}: {details}") from None
        if status == "DEADLINE_EXCEEDED":
            raise ActorTimeout(f"{where} did not finish within {timeout:g}s (at {address}): {details}") from None
        raise ActorCallError(f"{where} at {address} failed: {status}: {details}") from None
    except wire.ConnectionLost as exc:
        raise _Retryable(f"{address}: {exc}") from None
    except TimeoutError:
        raise ActorTimeout(f"{where} did not finish within {timeout:g}s (at {address})") from None


def backoff_delays() -> Any:
    delay = _BACKOFF_FIRST
    while True:
        yield delay
        delay = min(delay * 2, _BACKOFF_MAX)


def not_found_message(resolver: Resolver, name: str, waited: float, last_error: str) -> str:
    message = f"no endpoint for actor {name!r} answered within {waited:g}s ({resolver!r})"
    return message + (f"; last error: {last_error}" if last_error else "; none is registered")


class ActorClient:
    """Calls the methods of the actor registered as ``name``. ``timeout``: seconds each call may
    run (None: no limit). ``connect_timeout``: how long a call keeps retrying while no endpoint is
    registered or the registered one does not answer. ``metadata``: the credential hook, called
    per call for the metadata its connection presents (a connection carries one credential, so
    calls presenting different metadata use different connections); None presents the task's credential inside a task,
    else the resolver's client's token to actors of its own jobs (:func:`~iris.actor.auth.default_credentials`)."""

    def __init__(
        self,
        resolver: Resolver,
        name: str,
        *,
        timeout: float | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        metadata: CallMetadata | None = None,
    ):
        self._resolver = resolver
        self._name = name
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._metadata = metadata if metadata is not None else default_credentials(resolver)
        self._shared = {"address": None}  # shared with with_timeout() copies

    def __repr__(self) -> str:
        return f"ActorClient({self._name!r}, {self._resolver!r})"

    def with_timeout(self, timeout: float | None) -> ActorClient:
        """The same client with another per-call timeout (shares its resolved endpoint)."""
        other = ActorClient(
            self._resolver, self._name, timeout=timeout, connect_timeout=self._connect_timeout, metadata=self._metadata
        )
        other._shared = self._shared
        return other

    def __getattr__(self, method: str) -> _Method:
        if method.startswith("_"):
            raise AttributeError(method)
        return _Method(self, method)

    # --- calls --------------------------------------------------------------------------

    def _address(self) -> str | None:
        address = self._shared["address"]
        if address is None:
            endpoints = self._resolver.resolve(self._name)
            if endpoints:
                address = self._shared["address"] = endpoints[0].address
        return address

    def _forget(self, address: str) -> None:
        if self._shared["address"] == address:
            self._shared["address"] = None

    def _rpc(self, kind: str, payload: bytes, where: str, timeout: float | None) -> tuple[str, bytes]:
        """Send to the current endpoint, re-resolving and backing off while it is unavailable."""
        give_up = time.monotonic() + self._connect_timeout
        last_error = ""
        for delay in backoff_delays():
            address = self._address()
            if address is not None:
                try:
                    return address, invoke(
                        address, getattr(connection(address), kind), payload, timeout=timeout, metadata=self._metadata, where=where
                    )
                except _Retryable as exc:
                    last_error = str(exc)
                    self._forget(address)
            if time.monotonic() >= give_up:
                raise ActorNotFound(not_found_message(self._resolver, self._name, self._connect_timeout, last_error))
            time.sleep(max(0.0, min(delay, give_up - time.monotonic())))
        raise AssertionError("unreachable")

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        where = f"{self._name}.{method}"
        payload = protocol.encode_request(self._name, method, args, kwargs)
        _, answer = self._rpc("call", payload, where, self._timeout)
        return protocol.decode_outcome(answer, where)

    def _start(self, method: str, args: tuple, kwargs: dict) -> Operation:
        where = f"{self._name}.{method}"
        payload = protocol.encode_request(self._name, method, args, kwargs)
        address, answer = self._rpc("start", payload, where, 30.0)
        op_id, error = pickle.loads(answer)
        if not op_id:
            protocol.decode_outcome(error, where)
        return Operation(address, op_id, where, self._metadata)


class _Method:
    """``client.method``: call it, ``submit`` it for a Future, or ``start`` a long-running operation."""

    __slots__ = ("_client", "_method")

    def __init__(self, client: ActorClient, method: str):
        self._client = client
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._client._call(self._method, args, kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
        return executor().submit(self._client._call, self._method, args, kwargs)

    def start(self, *args: Any, **kwargs: Any) -> Operation:
        return self._client._start(self._method, args, kwargs)


class Operation:
    """A long-running call on one actor endpoint: ``poll()``, ``result(timeout)``, ``cancel()``.
    If that actor's task is lost, the operation is lost with it (:class:`ActorCallError`)."""

    def __init__(self, address: str, op_id: str, where: str, metadata: CallMetadata | None):
        self.address = address
        self.op_id = op_id
        self._where = where
        self._metadata = metadata
        self._done = False
        self._outcome = b""

    def __repr__(self) -> str:
        return f"Operation({self._where}, {self.op_id}, done={self._done})"

    def _poll_once(self, wait: float) -> bool:
        if self._done:
            return True
        try:
            answer = invoke(
                self.address, connection(self.address).poll, pickle.dumps((self.op_id, wait)),
                timeout=wait + 30.0, metadata=self._metadata, where=self._where,
            )
        except _Retryable as exc:
            raise ActorCallError(f"{self._where}: operation {self.op_id} was lost with its actor ({exc}); start it again") from None
        done, outcome = pickle.loads(answer)
        if done:
            self._done, self._outcome = True, outcome
        return done

    def poll(self) -> bool:
        """Whether the operation has finished (does not wait)."""
        return self._poll_once(0.0)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the operation and return its value (or raise its exception)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._poll_once(10.0 if deadline is None else max(0.0, min(10.0, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                raise ActorTimeout(f"{self._where}: operation {self.op_id} still running after {timeout:g}s")
        return protocol.decode_outcome(self._outcome, self._where)

    def cancel(self) -> bool:
        """Ask the operation to stop (it sees :func:`iris.actor.operation_cancelled`); True if the
        actor still knew it."""
        try:
            answer = invoke(
                self.address, connection(self.address).cancel, pickle.dumps(self.op_id),
                timeout=30.0, metadata=self._metadata, where=self._where,
            )
        except _Retryable:
            return False
        return bool(pickle.loads(answer))
