"""ActorPool: the N endpoints of a replicated actor job as one thing to call.

    pool = ActorPool(resolver, "shard")
    pool.wait_for_size(4, timeout=60)     # until 4 replicas are registered
    pool.call.lookup(key)                 # one replica: the least loaded (ties round-robin)
    pool.broadcast.reload()               # every replica, results by task index
    futures = pool.broadcast.reload.submit()

A replica that does not answer is skipped for a moment and the call goes to another; a broadcast
call to a replica whose task is being retried waits (up to ``connect_timeout``) for it to return.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from typing import Any

from iris.actor import protocol
from iris.actor.auth import default_credentials
from iris.actor.client import (
    DEFAULT_CONNECT_TIMEOUT,
    CallMetadata,
    _Retryable,
    backoff_delays,
    connection,
    executor,
    invoke,
    not_found_message,
)
from iris.actor.protocol import ActorNotFound, ActorTimeout
from iris.actor.resolver import ResolvedEndpoint, Resolver

__all__ = ["ActorPool"]

_REFRESH_SECONDS = 5.0  # how stale the endpoint list may get while every call succeeds
_SKIP_SECONDS = 1.0  # how long a replica that did not answer is passed over


class ActorPool:
    """Calls over the endpoints registered as ``name`` (see the module docstring)."""

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
        self._lock = threading.Lock()
        self._endpoints: list[ResolvedEndpoint] = []
        self._resolved_at = 0.0
        self._inflight: dict[str, int] = {}
        self._skip_until: dict[str, float] = {}
        self._turn = itertools.count()

    def __repr__(self) -> str:
        return f"ActorPool({self._name!r}, {self._resolver!r}, size={len(self._endpoints)})"

    # --- membership ---------------------------------------------------------------------

    def endpoints(self) -> list[ResolvedEndpoint]:
        """The endpoints registered now (asks the resolver)."""
        endpoints = self._resolver.resolve(self._name)
        with self._lock:
            self._endpoints, self._resolved_at = endpoints, time.monotonic()
        return list(endpoints)

    @property
    def size(self) -> int:
        return len(self.endpoints())

    def wait_for_size(self, n: int, timeout: float = 60.0) -> list[ResolvedEndpoint]:
        """Wait until at least ``n`` endpoints are registered; return them (ActorTimeout if not)."""
        deadline = time.monotonic() + timeout
        for delay in backoff_delays():
            endpoints = self.endpoints()
            if len(endpoints) >= n:
                return endpoints
            if time.monotonic() >= deadline:
                raise ActorTimeout(f"actor pool {self._name!r}: {len(endpoints)} of {n} endpoints registered after {timeout:g}s")
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
        raise AssertionError("unreachable")

    # --- calls --------------------------------------------------------------------------

    @property
    def call(self) -> _PoolProxy:
        """``pool.call.method(...)``: call one replica."""
        return _PoolProxy(self, broadcast=False)

    @property
    def broadcast(self) -> _PoolProxy:
        """``pool.broadcast.method(...)``: call every replica; results ordered by task index."""
        return _PoolProxy(self, broadcast=True)

    def _pick(self) -> str | None:
        now = time.monotonic()
        with self._lock:
            stale = now - self._resolved_at > _REFRESH_SECONDS or not self._endpoints
        if stale:
            self.endpoints()
        with self._lock:
            candidates = [e.address for e in self._endpoints if self._skip_until.get(e.address, 0.0) <= now]
            if not candidates:
                return None
            start = next(self._turn) % len(candidates)
            ordered = candidates[start:] + candidates[:start]
            address = min(ordered, key=lambda a: self._inflight.get(a, 0))
            self._inflight[address] = self._inflight.get(address, 0) + 1
            return address

    def _release(self, address: str, failed: bool) -> None:
        with self._lock:
            self._inflight[address] -= 1
            if failed:
                self._skip_until[address] = time.monotonic() + _SKIP_SECONDS
                self._resolved_at = 0.0  # re-resolve before the next pick

    def _call_one(self, method: str, args: tuple, kwargs: dict) -> Any:
        where = f"{self._name}.{method}"
        payload = protocol.encode_request(self._name, method, args, kwargs)
        give_up = time.monotonic() + self._connect_timeout
        last_error = ""
        for delay in backoff_delays():
            address = self._pick()
            if address is not None:
                failed = True
                try:
                    answer = invoke(address, connection(address).call, payload, timeout=self._timeout, metadata=self._metadata, where=where)
                    failed = False
                    return protocol.decode_outcome(answer, where)
                except _Retryable as exc:
                    last_error = str(exc)
                finally:
                    self._release(address, failed)
                continue  # another replica may answer at once
            if time.monotonic() >= give_up:
                raise ActorNotFound(not_found_message(self._resolver, self._name, self._connect_timeout, last_error))
            time.sleep(max(0.0, min(delay, give_up - time.monotonic())))
        raise AssertionError("unreachable")

    def _call_replica(self, endpoint: ResolvedEndpoint, payload: bytes, where: str) -> Any:
        """Call the replica ``endpoint`` names (job, task index), following it if it moves."""
        give_up = time.monotonic() + self._connect_timeout
        address: str | None = endpoint.address
        last_error = ""
        for delay in backoff_delays():
            if address is not None:
                try:
                    answer = invoke(address, connection(address).call, payload, timeout=self._timeout, metadata=self._metadata, where=where)
                    return protocol.decode_outcome(answer, f"{where} (task {endpoint.task_index})")
                except _Retryable as exc:
                    last_error = str(exc)
            if time.monotonic() >= give_up:
                raise ActorNotFound(
                    f"replica {endpoint.task_index} of {self._name!r} did not answer within {self._connect_timeout:g}s; last error: {last_error}"
                )
            time.sleep(max(0.0, min(delay, give_up - time.monotonic())))
            same = [e for e in self._resolver.resolve(self._name) if (e.job_id, e.task_index) == (endpoint.job_id, endpoint.task_index)]
            address = same[0].address if same else None
        raise AssertionError("unreachable")

    def _broadcast(self, method: str, args: tuple, kwargs: dict) -> list[Future[Any]]:
        where = f"{self._name}.{method}"
        payload = protocol.encode_request(self._name, method, args, kwargs)
        endpoints = self.endpoints()
        if not endpoints:
            raise ActorNotFound(not_found_message(self._resolver, self._name, 0, ""))
        return [executor().submit(self._call_replica, e, payload, where) for e in endpoints]


class _PoolProxy:
    __slots__ = ("_pool", "_broadcast")

    def __init__(self, pool: ActorPool, broadcast: bool):
        self._pool = pool
        self._broadcast = broadcast

    def __getattr__(self, method: str) -> _PoolMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _PoolMethod(self._pool, method, self._broadcast)


class _PoolMethod:
    __slots__ = ("_pool", "_method", "_broadcast")

    def __init__(self, pool: ActorPool, method: str, broadcast: bool):
        self._pool = pool
        self._method = method
        self._broadcast = broadcast

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._broadcast:
            return [f.result() for f in self._pool._broadcast(self._method, args, kwargs)]
        return self._pool._call_one(self._method, args, kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """A Future (one replica), or a list of Futures by task index (broadcast)."""
        if self._broadcast:
            return self._pool._broadcast(self._method, args, kwargs)
        return executor().submit(self._pool._call_one, self._method, args, kwargs)
