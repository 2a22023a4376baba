"""The controller's gRPC server: ``ControllerService`` and ``WorkerService`` on grpc.aio.

One asyncio loop, in one background thread, serves every RPC. Short RPCs call the controller
on the loop (each call is short, under its lock); calls that may wait on a disk, a bucket or a
cloud provider (bundles, the autoscaler's RPCs) run on a small thread pool. A long-poll
(``WaitJob``, ``GetLogs`` with ``wait_seconds``, ``Reconcile`` with ``wait_seconds``) holds no
thread: it re-checks with a non-blocking controller read each time one of the keys it waits on
is announced (:class:`Wakeups`), and ends at its deadline, when the server stops, or when the
caller cancels.

Every RPC passes through one interceptor (``_Door``): it authenticates the call's token
(``authorization: Bearer ...``) into a :class:`~iris.auth.Principal` the handler reads with
:func:`principal`, and turns user-facing errors into gRPC status codes with the message intact,
so clients can print them as one line. What a principal may do is decided in
:mod:`iris.cluster.controller.access`; with auth off every call is :data:`iris.auth.OPEN`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import io
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from iris import faults
from iris.auth import OPEN, GRANTABLE, Authenticator, PermissionDenied, Principal, Role, Unauthenticated, bearer
from iris.bundle import bundle_problem
from iris.cluster.controller import access
from iris.cluster.controller.controller import AlreadyExists, BadCursor, Controller, InvalidRequest
from iris.job.validation import JOB_NAME_RE
from iris.cluster.controller.state import worker_key
from iris.errors import IrisError, JobNotFound, VmNotFound
from iris.job.records import DesiredAttempt
from iris.rpc import controller_pb2, controller_pb2_grpc, convert, worker_pb2_grpc
from iris.rpc.channel import ERROR_KIND_KEY
from iris.rpc.validate import check_request

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
MAX_WAIT_SECONDS = 30.0
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]
# Calls that arrived but that the loop has not picked up yet: grpc sheds them (CANCELLED) at
# random above 1,000 and all above 3,000 by default. The loop picks up one call per turn, so a
# burst (every worker reconnecting after a controller restart) would be shed; queue it instead.
SERVER_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]

_STATUS = {
    JobNotFound: grpc.StatusCode.NOT_FOUND,
    VmNotFound: grpc.StatusCode.NOT_FOUND,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    BadCursor: grpc.StatusCode.INVALID_ARGUMENT,
    ValueError: grpc.StatusCode.INVALID_ARGUMENT,  # ConstraintError, ResourceError
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}

T = TypeVar("T")


def status_for(exc: IrisError) -> grpc.StatusCode:
    return next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), grpc.StatusCode.FAILED_PRECONDITION)


_PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("iris_principal", default=OPEN)

NO_TOKEN = (
    "unauthenticated: this controller requires a token; run `iris login --controller-url URL`, "
    "set IRIS_TOKEN, or pass token= to IrisClient.remote"
)
BAD_TOKEN = "unauthenticated: the token is not valid for this controller (expired, rotated, or from another cluster)"


def principal() -> Principal:
    """Who the RPC being handled comes from (set by the interceptor for this call)."""
    return _PRINCIPAL.get()


class _Door(grpc.aio.ServerInterceptor):
    """The one door every RPC passes: authenticates the caller (when ``auth`` is set), checks the
    request's fields (:func:`iris.rpc.validate.check_request`; a caller who may not call learns
    nothing about them), and maps Iris errors to status codes."""

    def __init__(self, auth: Authenticator | None) -> None:
        self._auth = auth
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        method = handler_call_details.method
        if method in self._wrapped:
            return self._wrapped[method]
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        auth = self._auth

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if auth is not None:
                token = bearer(context.invocation_metadata())
                who = auth.authenticate(token) if token else None
                if who is None:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, BAD_TOKEN if token else NO_TOKEN)
                _PRINCIPAL.set(who)  # this call's task only
            try:
                check_request(method, request)  # a rejected request changes nothing: no handler ran
                return await inner(request, context)
            except IrisError as exc:
                await context.abort(status_for(exc), str(exc), trailing_metadata=((ERROR_KIND_KEY, type(exc).__name__),))

        self._wrapped[method] = grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return self._wrapped[method]


class Wakeups:
    """Long-polls parked on controller keys (a job id, ``worker:<id>``), woken when one is announced.

    :meth:`announce` is the controller's listener (``Controller.subscribe``): it runs on any
    thread under the controller's lock and only hands the keys to the loop. Everything else runs
    on the loop. A waiter re-checks the controller after each wake-up, so a spurious wake-up
    costs one read and a missed one cannot happen: :meth:`wait` is called right after the
    non-blocking read, with no ``await`` between, and a commit after that read announces its keys
    to the loop, which runs the wake-up only after the waiter has parked.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        """Made on the loop's thread (the server is built there)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self.parked = 0  # long-polls waiting now
        self.closed = False

    def announce(self, keys: frozenset[str]) -> None:
        try:
            if threading.get_ident() == self._loop_thread:  # a commit by an RPC on the loop (most are)
                self._loop.call_soon(self._wake, keys)  # no self-pipe write, no wake-up of the loop
            else:
                self._loop.call_soon_threadsafe(self._wake, keys)
        except RuntimeError:  # the loop is closed: the server has stopped
            pass

    def _wake(self, keys: frozenset[str]) -> None:
        if "*" in keys:  # the controller is shutting down: release everyone
            self.closed = True
            keys = frozenset(self._waiting)
        for key in keys:
            for future in self._waiting.pop(key, ()):
                if not future.done():
                    future.set_result(None)

    async def wait(self, keys: Iterable[str], deadline: float) -> bool:
        """Park until one of ``keys`` is announced or ``deadline`` (loop time) passes. False when
        the long-poll should answer now: the deadline passed or the server is stopping."""
        keys = tuple(keys)
        if self.closed or self._loop.time() >= deadline:
            return False
        future: asyncio.Future[None] = self._loop.create_future()
        for key in keys:
            self._waiting.setdefault(key, set()).add(future)
        timer = self._loop.call_at(deadline, _settle, future)
        self.parked += 1
        try:
            await future  # a cancelled RPC raises CancelledError here
        finally:
            self.parked -= 1
            timer.cancel()
            for key in keys:
                waiters = self._waiting.get(key)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._waiting[key]
        return not self.closed and self._loop.time() < deadline


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Servicer:
    def __init__(
        self, controller: Controller, bundle_store: Any, wakeups: Wakeups, pool: ThreadPoolExecutor, auth: Authenticator | None = None
    ):
        self._controller = controller
        self._bundles = bundle_store
        self._wakeups = wakeups
        self._pool = pool
        self._auth = auth

    def _off_loop(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
        """Run a call that may block on I/O (a bundle store, a provider) on the thread pool."""
        return asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    @staticmethod
    def _deadline(wait_seconds: float) -> float:
        return asyncio.get_running_loop().time() + max(0.0, min(wait_seconds, MAX_WAIT_SECONDS))


class ControllerServicer(_Servicer, controller_pb2_grpc.ControllerServiceServicer):
    def __init__(
        self,
        controller: Controller,
        bundle_store: Any,
        wakeups: Wakeups,
        pool: ThreadPoolExecutor,
        cluster: Any = None,
        auth: Authenticator | None = None,
    ):
        """``cluster`` (the ClusterManager) answers the autoscaler RPCs; None = no autoscaler."""
        super().__init__(controller, bundle_store, wakeups, pool, auth)
        self.cluster = cluster

    def _job(self, job_id: str, what: str) -> str:
        """The full id of ``job_id`` once the caller may ``what`` it (see access.check_job)."""
        who = principal()
        if who.role is Role.OPEN:
            return job_id
        full_id, owner = self._controller.job_owner(job_id)
        access.check_job(who, full_id, owner, what)
        return full_id

    async def WhoAmI(self, request, context):  # noqa: N802
        who = principal()
        return controller_pb2.WhoAmIResponse(role=who.role.value, name=who.name, job_id=who.job_id, auth_enabled=self._auth is not None)

    async def CreateToken(self, request, context):  # noqa: N802
        accepted = ", ".join(r.value for r in GRANTABLE)
        try:
            role = Role(request.role or "user")
        except ValueError:
            role = None
        access.check_mint(principal(), role or Role.USER, request.name)
        if role not in GRANTABLE:
            raise InvalidRequest(f"role {request.role!r} is not one of: {accepted}")
        if not JOB_NAME_RE.match(request.name):
            raise InvalidRequest(f"name {request.name!r} is not a valid user name; use letters, digits, '.', '_' or '-'")
        if request.ttl_seconds < 0:
            raise InvalidRequest(f"ttl_seconds {request.ttl_seconds:g}: must be >= 0 (0 = does not expire)")
        if self._auth is None:
            raise InvalidRequest("this controller runs without auth; there are no tokens to create")
        token = self._auth.mint(Principal(role, request.name), request.ttl_seconds)
        logger.info("%s created a %s token for %s", principal().describe(), role.value, request.name)
        return controller_pb2.CreateTokenResponse(token=token)

    def _need_cluster(self) -> Any:
        if self.cluster is None:
            raise InvalidRequest("this controller runs without an autoscaler")
        return self.cluster

    async def GetAutoscalerStatus(self, request, context):  # noqa: N802
        access.require_person(principal(), "read the autoscaler's status")
        return convert.autoscaler_status_to_proto(await self._off_loop(self._need_cluster().autoscaler_status))

    async def CreateSlice(self, request, context):  # noqa: N802
        access.require_admin(principal(), "create slices")
        slice_id = await self._off_loop(self._need_cluster().create_slice, request.scale_group)
        return controller_pb2.CreateSliceResponse(slice_id=slice_id)

    async def TerminateSlices(self, request, context):  # noqa: N802
        access.require_admin(principal(), "terminate slices")
        ids = await self._off_loop(self._need_cluster().terminate_slices, list(request.slice_ids), all_slices=request.all)
        return controller_pb2.TerminateSlicesResponse(slice_ids=ids)

    async def ListVms(self, request, context):  # noqa: N802
        access.require_person(principal(), "list VMs")
        return convert.vms_to_proto(await self._off_loop(self._need_cluster().list_vms))

    async def GetVmLogs(self, request, context):  # noqa: N802
        access.require_admin(principal(), f"read the worker log of VM {request.vm_id!r}")  # it shows every user's task lines
        text = await self._off_loop(self._need_cluster().vm_logs, request.vm_id, request.tail or 100)
        return controller_pb2.GetVmLogsResponse(text=text)

    async def LaunchJob(self, request, context):  # noqa: N802
        spec = convert.job_spec_from_proto(request.spec)
        who = principal()
        if who.role is not Role.OPEN:
            parent = None
            if spec.parent_job_id:
                try:
                    parent = self._controller.job_owner(spec.parent_job_id)
                except JobNotFound:
                    raise InvalidRequest(f"parent job {spec.parent_job_id!r} not found") from None
            spec = access.check_launch(who, spec, parent)
        elif not spec.user and not spec.parent_job_id:  # without auth the client names the user
            raise InvalidRequest("user is empty; a top-level job needs a user (its id is /USER/NAME); the client sends the login name")
        if spec.bundle_id and not await self._off_loop(self._bundles.exists, spec.bundle_id):
            raise InvalidRequest(f"bundle {spec.bundle_id} is not uploaded; upload it before launching the job")
        return controller_pb2.LaunchJobResponse(job_id=self._controller.launch_job(spec))

    async def GetJob(self, request, context):  # noqa: N802
        return convert.job_view_to_proto(self._controller.get_job(self._job(request.job_id, "read")))

    async def GetResults(self, request, context):  # noqa: N802
        return convert.task_results_to_proto(self._controller.task_results(self._job(request.job_id, "read the results of")))

    async def WaitJob(self, request, context):  # noqa: N802
        """Long-poll: answers once the job is terminal or the wait has elapsed."""
        deadline = self._deadline(request.timeout_seconds)
        job_id, state = self._controller.job_state(self._job(request.job_id, "wait for"))
        while not state.is_terminal and await self._wakeups.wait((job_id,), deadline):
            job_id, state = self._controller.job_state(job_id)
        return convert.job_view_to_proto(self._controller.get_job(job_id))

    async def ListJobs(self, request, context):  # noqa: N802
        states = [convert.job_state_from_proto(s) for s in request.states]
        who = principal()
        access.require_person(who, "list jobs")
        visible = None if who.role in (Role.ADMIN, Role.OPEN) else functools.partial(access.may_see, who)
        jobs = self._controller.list_jobs(states=states, prefix=request.prefix, visible=visible)
        return controller_pb2.ListJobsResponse(jobs=[convert.job_view_to_proto(j) for j in jobs])

    async def KillJob(self, request, context):  # noqa: N802
        job_id = self._job(request.job_id, "kill")
        job = self._controller.kill_job(job_id, keep_children=request.keep_children, reason=request.reason)
        return controller_pb2.KillJobResponse(state=convert.job_state_to_proto(job.state))

    async def HasBundle(self, request, context):  # noqa: N802
        access.require_person(principal(), "read bundles")
        return controller_pb2.HasBundleResponse(exists=await self._off_loop(self._bundles.exists, request.bundle_id))

    async def UploadBundle(self, request, context):  # noqa: N802
        access.require_person(principal(), "upload bundles")
        url = await self._off_loop(self._store_bundle, request.bundle_id, request.data)
        return controller_pb2.UploadBundleResponse(bundle_url=url)

    def _store_bundle(self, bundle_id: str, data: bytes) -> str:
        actual = hashlib.sha256(data).hexdigest()
        if actual != bundle_id:
            raise InvalidRequest(f"bundle id {bundle_id} does not match its content (sha256 {actual})")
        problem = bundle_problem(io.BytesIO(data), self._controller.bundle_limits)
        if problem is not None:  # it could never be unpacked: refuse it now, not 101 attempts later
            raise InvalidRequest(f"bundle {bundle_id} is not a usable bundle: {problem}")
        url = self._bundles.put(bundle_id, data)
        self._controller.record_bundle(bundle_id, len(data))
        return url

    async def GetLogs(self, request, context):  # noqa: N802
        """Cursor-based log reads; with ``wait_seconds``, waits for a line when there is none yet."""
        deadline = self._deadline(request.wait_seconds)
        cursor = request.cursor
        job_id = self._job(request.job_id, "read the logs of")
        while True:
            lines, cursor_after, finished, keys = self._controller.read_logs(
                job_id,
                cursor,
                request.max_lines,
                include_children=request.include_children,
                since=request.since,
                tail=request.tail,  # applied to the first read only (an empty cursor)
            )
            if lines or finished or not await self._wakeups.wait(keys, deadline):
                return convert.logs_to_proto(lines, cursor_after, finished)
            cursor = cursor_after

    async def RegisterEndpoint(self, request, context):  # noqa: N802
        endpoint = convert.endpoint_from_proto(request.endpoint)
        if principal().role is not Role.OPEN:
            self._job(endpoint.job_id, "register an endpoint for")
        self._controller.register_endpoint(endpoint)
        return controller_pb2.RegisterEndpointResponse()

    async def LookupEndpoint(self, request, context):  # noqa: N802
        access.require_person(principal(), "look up endpoints")
        endpoints = self._controller.lookup_endpoint(request.name)
        return controller_pb2.LookupEndpointResponse(endpoints=[convert.endpoint_to_proto(e) for e in endpoints])

    async def ListWorkers(self, request, context):  # noqa: N802
        access.require_person(principal(), "list workers")
        workers = self._controller.list_workers()
        return controller_pb2.ListWorkersResponse(workers=[convert.worker_view_to_proto(w) for w in workers])


class WorkerServicer(_Servicer, worker_pb2_grpc.WorkerServiceServicer):
    async def Reconcile(self, request, context):  # noqa: N802
        """Record what the worker observes; answer its desired set, held while nothing changed
        for it and it already has the current one."""
        controller = self._controller
        identity = convert.worker_identity_from_proto(request.worker)
        access.check_reconcile(principal(), identity.worker_id)
        observed = [convert.observed_attempt_from_proto(o) for o in request.attempts]
        version, acks, awaited = controller.exchange(identity, observed)
        known = request.known_version
        if not awaited and version == known and request.wait_seconds > 0:
            deadline, key = self._deadline(request.wait_seconds), worker_key(identity.worker_id)
            lost = False
            while version == known and not lost and await self._wakeups.wait((key,), deadline):
                version, lost = controller.worker_version(identity.worker_id)
        result = controller.desired(identity.worker_id, observed, acks)
        response = convert.reconcile_result_to_proto(result, self._bundles.url_for, self._task_token if self._auth else None)
        await faults.inject_async("controller.dispatch")  # the exchange is recorded; the answer may be lost
        return response


    def _task_token(self, d: DesiredAttempt) -> str:
        """The credential of the task attempt ``d`` runs: bound to its job, as the job's owner."""
        assert self._auth is not None and d.spec is not None
        return self._auth.mint(Principal(Role.TASK, d.spec.user, d.job_id))


EVENT_LOOPS = ("asyncio", "uvloop")


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new loop of ``kind`` (one of EVENT_LOOPS). grpc.aio runs on either; uvloop spends about
    a sixth less CPU per call on this machine (docs/performance.md)."""
    if kind == "uvloop":
        import uvloop  # only the controller process pays for the import

        return uvloop.new_event_loop()
    if kind != "asyncio":
        raise ValueError(f"event_loop {kind!r} is not one of: {', '.join(EVENT_LOOPS)}")
    return asyncio.new_event_loop()


class ControllerServer:
    """The controller's gRPC server (an asyncio loop in one thread) plus its periodic tick thread."""

    def __init__(
        self,
        controller: Controller,
        bundle_store: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        blocking_threads: int = 4,
        auth: Authenticator | None = None,
        event_loop: str = "asyncio",
    ):
        """``blocking_threads`` serve the calls that may block on I/O (bundles, the autoscaler's
        RPCs); long-polls hold no thread however many there are. ``auth`` None serves every
        call (the in-process local cluster); otherwise each call must carry a valid token.
        ``event_loop`` ``uvloop`` serves on uvloop's loop (less CPU per call: the controller
        process uses it); ``asyncio`` on the standard one (nothing more to import in-process)."""
        self.controller = controller
        self.auth = auth
        self._pool = ThreadPoolExecutor(max_workers=blocking_threads, thread_name_prefix="iris-rpc")
        self._loop = new_event_loop(event_loop)
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="iris-rpc-loop", daemon=True)
        self._loop_thread.start()
        self._stopped = False
        try:
            self.port = self._run(self._build(bundle_store, host, port))
        except BaseException:
            self._close_loop()
            self._pool.shutdown(wait=False)
            raise
        self.address = f"http://{host}:{self.port}"
        controller.address = self.address
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="iris-controller-tick", daemon=True)

    async def _build(self, bundle_store: Any, host: str, port: int) -> int:
        """Create the server on the loop (grpc.aio binds a server to the loop it is made on)."""
        self.wakeups = Wakeups(asyncio.get_running_loop())
        self._server = grpc.aio.server(interceptors=[_Door(self.auth)], options=SERVER_OPTIONS)
        self.servicer = ControllerServicer(self.controller, bundle_store, self.wakeups, self._pool, auth=self.auth)
        controller_pb2_grpc.add_ControllerServiceServicer_to_server(self.servicer, self._server)
        worker_servicer = WorkerServicer(self.controller, bundle_store, self.wakeups, self._pool, self.auth)
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(worker_servicer, self._server)
        try:
            bound = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise IrisError(f"controller: cannot listen on {host}:{port} (address in use or not allowed)")
        return bound

    def _run(self, coroutine: Awaitable[T], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the server's loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)  # type: ignore[arg-type]

    def start(self) -> str:
        self.controller.subscribe(self.wakeups.announce)
        self._run(self._server.start())
        self._ticker.start()
        return self.address

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.controller.tick()
            except Exception:  # keep ticking; the log says what broke
                logger.exception("controller tick failed")

    def stop(self, grace: float = 1.0) -> None:
        """Release every long-poll (they answer with what they have), then stop serving."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self.controller.shutdown()
        try:
            self._run(self._server.stop(grace), timeout=grace + 10)
        finally:
            self.controller.unsubscribe(self.wakeups.announce)
            self._close_loop()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._ticker.is_alive():
                self._ticker.join(timeout=2)

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()
