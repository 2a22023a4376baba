"""WorkerPool: run Python callables on N worker tasks, as futures.

    with WorkerPool(client, num_workers=4, resources=ResourceSpec(cpu=1, memory="1GB")) as pool:
        future = pool.submit(fn, 1, 2)
        squares = list(pool.map(square, range(10_000)))

The pool is one Iris job of N tasks, each an actor hosting a worker. Calls queue in this process
and go to workers in batches (the function is pickled once per batch), so many tiny calls cost a
few RPCs. When a worker task is lost, the calls it held run again on the others (and on the
worker once Iris restarts its task); a call that loses ``max_call_retries`` workers fails with
:class:`WorkerLost`. It is a ``concurrent.futures.Executor``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any

from iris.actor import protocol
from iris.actor.client import CallMetadata, _Retryable, connection, invoke
from iris.errors import IrisError

if TYPE_CHECKING:
    from collections.abc import Callable

    from iris.client.client import IrisClient, Job
    from iris.cluster.types import EnvironmentSpec, ResourceSpec

__all__ = ["WorkerLost", "WorkerPool"]

logger = logging.getLogger(__name__)

WORKER_ACTOR = "iris-pool-worker"
_SLOTS_PER_WORKER = 2  # batches in flight per worker: one running while the next travels
_WATCH_SECONDS = 0.2


class WorkerLost(IrisError):
    """A call's worker was lost more times than the pool retries a call."""


class _PoolWorker:
    """The actor each worker task hosts: runs a batch of ``(fn, args, kwargs)`` in order."""

    def run_batch(self, calls: list[tuple[Callable[..., Any], tuple, dict]]) -> list[bytes]:
        outcomes = []
        for fn, args, kwargs in calls:
            try:
                outcomes.append(protocol.encode_value(fn(*args, **kwargs)))
            except BaseException as exc:  # noqa: BLE001 - each call's exception goes back to its future
                outcomes.append(protocol.encode_exception(exc))
        return outcomes

    def ping(self) -> int:
        import os

        return os.getpid()


def serve_pool_worker() -> None:
    """The body of a worker task (see :class:`WorkerPool`)."""
    from iris.actor.server import serve_forever

    serve_forever({WORKER_ACTOR: _PoolWorker()}, port="actor")


class _Item:
    __slots__ = ("fn", "args", "kwargs", "future", "losses")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.future: Future[Any] = Future()
        self.losses = 0


class WorkerPool(Executor):
    """N worker tasks running submitted callables (see the module docstring).

    ``client``: where to submit the workers' job (inside a task, ``iris_ctx().client`` makes it
    a child job). ``batch_size``: the most calls one RPC carries. ``max_call_retries``: how many
    lost workers a call survives. ``metadata``: the credential hook, as for ``ActorClient``.
    Call :meth:`shutdown` (or use ``with``): until then the workers' job runs."""

    def __init__(
        self,
        client: IrisClient,
        num_workers: int,
        *,
        resources: ResourceSpec | None = None,
        environment: EnvironmentSpec | None = None,
        name: str | None = None,
        batch_size: int = 256,
        max_call_retries: int = 3,
        max_task_retries: int = 3,
        metadata: CallMetadata | None = None,
    ):
        from iris.client.resolver import ClusterResolver
        from iris.cluster.types import Entrypoint, ResourceSpec

        if num_workers < 1:
            raise IrisError(f"WorkerPool: num_workers must be at least 1, not {num_workers}")
        self._batch_size = max(1, batch_size)
        self._max_call_retries = max_call_retries
        self._metadata = metadata
        self._pending: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._shutdown = False
        self._slots: dict[str, int] = {}  # address -> running slot threads
        self._lost: set[str] = set()  # addresses whose worker was lost
        self.job: Job = client.submit(
            Entrypoint.from_callable(serve_pool_worker),
            name=name,
            resources=resources or ResourceSpec(cpu=1, memory="1GB"),
            environment=environment,
            replicas=num_workers,
            ports=["actor"],
            max_retries=max_task_retries,
            # a worker lost for good leaves the others running
            max_task_failures=num_workers - 1,
        )
        self._resolver = ClusterResolver(client, namespace=self.job.job_id)
        if metadata is None:  # the task's credential inside a task, else the client's (the workers' owner)
            from iris.actor.auth import default_credentials

            self._metadata = default_credentials(self._resolver, self.job.job_id)
        self._watcher = threading.Thread(target=self._watch, name="iris-worker-pool-watch", daemon=True)
        self._watcher.start()

    def __repr__(self) -> str:
        return f"WorkerPool({self.job.job_id!r}, workers={len(self._slots)})"

    # --- Executor -----------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker; the Future holds its result or exception."""
        if not callable(fn):
            raise TypeError(f"WorkerPool.submit: {fn!r} is not callable")
        item = _Item(fn, args, kwargs)
        with self._cond:
            if self._shutdown:
                raise RuntimeError("WorkerPool.submit: the pool is shut down")
            self._pending.append(item)
            self._cond.notify()
        return item.future

    def map(self, fn: Callable[..., Any], *iterables: Any, timeout: float | None = None, chunksize: int = 1) -> Any:
        """As ``Executor.map``: results in order; every call queued at once (``chunksize`` is
        ignored: the pool batches by itself)."""
        items = [_Item(fn, args, {}) for args in zip(*iterables)]
        with self._cond:
            if self._shutdown:
                raise RuntimeError("WorkerPool.map: the pool is shut down")
            self._pending.extend(items)
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout

        def results() -> Any:
            for item in items:
                yield item.future.result(None if deadline is None else max(0.0, deadline - time.monotonic()))

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; with ``wait``, let queued calls finish first; then end the workers' job."""
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft().future.cancel()
            self._cond.notify_all()
        if wait:
            with self._cond:
                # slots leave once the queue is empty and the pool is shut down
                while self._pending or any(self._slots.values()):
                    self._cond.wait(0.5)
        try:
            self.job.kill(reason="worker pool shut down")
        except IrisError as exc:
            logger.warning("could not stop worker pool job %s: %s", self.job.job_id, exc)
        with self._cond:
            while self._pending:
                item = self._pending.popleft()
                if not item.future.done():
                    item.future.set_exception(RuntimeError("the worker pool shut down before this call ran"))
            self._cond.notify_all()

    # --- dispatch -----------------------------------------------------------------------

    def _watch(self) -> None:
        """Start slots for every registered worker that has none (new, or back after a loss)."""
        while True:
            with self._cond:
                if self._shutdown and not self._pending:
                    return
            try:
                endpoints = self._resolver.resolve(WORKER_ACTOR)
            except IrisError as exc:
                logger.warning("worker pool %s: cannot look up workers: %s", self.job.job_id, exc)
                endpoints = []
            for endpoint in endpoints:
                with self._cond:
                    if self._slots.get(endpoint.address, 0) or self._shutdown:
                        continue
                # an address that lost its worker may still be registered until the task is back
                if endpoint.address in self._lost and not self._answers(endpoint.address):
                    continue
                with self._cond:
                    self._lost.discard(endpoint.address)
                    self._slots[endpoint.address] = _SLOTS_PER_WORKER
                for _ in range(_SLOTS_PER_WORKER):
                    threading.Thread(target=self._slot, args=(endpoint.address,), daemon=True, name="iris-worker-pool-slot").start()
            if not endpoints and self._job_over():
                self._fail_pending(IrisError(f"worker pool job {self.job.job_id} ended: {self.job.status().error or 'no workers left'}"))
                return
            time.sleep(_WATCH_SECONDS)

    def _answers(self, address: str) -> bool:
        payload = protocol.encode_request(WORKER_ACTOR, "ping", (), {})
        try:
            invoke(address, connection(address).call, payload, timeout=2.0, metadata=self._metadata, where="worker ping")
        except (_Retryable, protocol.ActorError):
            return False
        return True

    def _job_over(self) -> bool:
        try:
            return self.job.status().state.is_terminal
        except IrisError:
            return False

    def _fail_pending(self, error: Exception) -> None:
        with self._cond:
            while self._pending:
                item = self._pending.popleft()
                if not item.future.done():
                    item.future.set_exception(error)
            self._cond.notify_all()

    def _take(self) -> list[_Item] | None:
        """The next batch: a fair share of the queue, at most ``batch_size``; None to stop."""
        with self._cond:
            while not self._pending:
                if self._shutdown:
                    return None
                self._cond.wait(1.0)
            slots = max(1, sum(self._slots.values()))
            n = min(self._batch_size, max(1, -(-len(self._pending) // slots)))
            batch = []
            while self._pending and len(batch) < n:
                item = self._pending.popleft()
                if item.losses or item.future.set_running_or_notify_cancel():
                    batch.append(item)
            return batch

    def _slot(self, address: str) -> None:
        try:
            while True:
                batch = self._take()
                if batch is None:
                    return
                if batch and not self._run(address, batch):
                    return  # the worker is gone: the watcher starts new slots when it is back
        finally:
            with self._cond:
                self._slots[address] -= 1
                self._cond.notify_all()

    def _run(self, address: str, batch: list[_Item]) -> bool:
        calls = [(item.fn, item.args, item.kwargs) for item in batch]
        try:
            payload = protocol.encode_request(WORKER_ACTOR, "run_batch", (calls,), {})
        except protocol.ActorCallError:
            # find the call(s) that cannot be pickled; the rest go on
            for item in batch:
                try:
                    payload = protocol.encode_request(WORKER_ACTOR, "run_batch", ([(item.fn, item.args, item.kwargs)],), {})
                except protocol.ActorCallError as exc:
                    item.future.set_exception(exc)
                    continue
                if not self._run(address, [item]):
                    return False
            return True
        try:
            answer = invoke(
                address, connection(address).call, payload, timeout=None, metadata=self._metadata, where=f"worker pool {self.job.job_id}"
            )
            outcomes = protocol.decode_outcome(answer, f"worker at {address}")
        except (_Retryable, protocol.ActorCallError) as exc:
            self._requeue_lost(address, batch, exc)
            return False
        for item, outcome in zip(batch, outcomes):
            try:
                item.future.set_result(protocol.decode_outcome(outcome, f"worker pool call {getattr(item.fn, '__name__', item.fn)!r}"))
            except BaseException as exc:  # noqa: BLE001
                item.future.set_exception(exc)
        return True

    def _requeue_lost(self, address: str, batch: list[_Item], exc: Exception) -> None:
        logger.warning("worker pool %s: worker at %s lost (%s); %d call(s) run again", self.job.job_id, address, exc, len(batch))
        with self._cond:
            self._lost.add(address)
            for item in reversed(batch):
                item.losses += 1
                if item.losses > self._max_call_retries:
                    item.future.set_exception(WorkerLost(f"call lost {item.losses} workers; last: {address}: {exc}"))
                else:
                    self._pending.appendleft(item)
            self._cond.notify_all()

    def __exit__(self, *exc: object) -> bool | None:
        self.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)
        return None
