"""Actors over real gRPC on loopback, without a cluster: ActorServer, ActorClient, ActorPool and
FixedResolver; the errors a caller meets; long-running operations. The task context is read
from an environment given explicitly."""

from __future__ import annotations

import threading
import time

import pytest

from iris.actor import (
    ActorCallError,
    ActorClient,
    ActorMethodNotFound,
    ActorNotFound,
    ActorPool,
    ActorServer,
    ActorTimeout,
    FixedResolver,
    OperationCancelled,
    RemoteTraceback,
    operation_cancelled,
)
from iris.client import ClusterResolver, NotInTask, get_job_info, iris_ctx
from iris.errors import IrisError


COUNTING = threading.Event()  # a Counter's count_until_cancelled has started (its server is in this process)


class Counter:
    def __init__(self, start: int = 0):
        self.value = start
        self._lock = threading.Lock()

    def add(self, n: int = 1, *, times: int = 1) -> int:
        with self._lock:
            self.value += n * times
            return self.value

    def divide(self, a: float, b: float) -> float:
        return a / b

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def lock(self) -> threading.Lock:
        return threading.Lock()

    def count_until_cancelled(self, limit: float) -> str:
        COUNTING.set()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if operation_cancelled():
                raise OperationCancelled("stopped early")
            time.sleep(0.01)
        return "ran to the end"


@pytest.fixture(scope="module")
def server():
    with ActorServer() as s:
        s.register("counter", Counter())
        yield s


@pytest.fixture
def counter(server: ActorServer) -> ActorClient:
    return ActorClient(FixedResolver({"counter": server.address}), "counter", connect_timeout=2.0)


def test_actor_call_passes_positional_and_keyword_arguments_and_returns_result(counter: ActorClient) -> None:
    before = counter.add(0)
    assert counter.add(2, times=3) == before + 6


def test_actor_server_binds_loopback_by_default(server: ActorServer) -> None:
    assert server.address.startswith("127.0.0.1:")


def test_remote_exception_reraises_as_its_own_type_with_remote_traceback(counter: ActorClient) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        counter.divide(1, 0)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "in divide" in str(info.value.__cause__) and "return a / b" in str(info.value.__cause__)


def test_unknown_method_names_the_method_and_the_actors_methods(counter: ActorClient) -> None:
    with pytest.raises(ActorMethodNotFound, match=r"no method 'nope'; its methods: .*add.*divide") as info:
        counter.nope()
    assert isinstance(info.value, AttributeError)


def test_private_methods_are_not_callable(counter: ActorClient) -> None:
    with pytest.raises(ActorMethodNotFound, match="_lock"):
        counter._call("_lock", (), {})


def test_unknown_actor_name_in_fixed_resolver_lists_known_names(server: ActorServer) -> None:
    with pytest.raises(ActorNotFound, match=r"no actor named 'countr'; it knows: counter"):
        ActorClient(FixedResolver({"counter": server.address}), "countr").add()


def test_server_that_does_not_host_the_name_is_not_found_with_what_it_hosts(server: ActorServer) -> None:
    client = ActorClient(FixedResolver({"other": server.address}), "other", connect_timeout=0.3)
    with pytest.raises(ActorNotFound, match=r"no actor named 'other' .* it hosts: counter"):
        client.add()


def test_unpicklable_argument_is_named_before_sending(counter: ActorClient) -> None:
    with pytest.raises(ActorCallError, match=r"counter.add: argument 'times' \(lock\) cannot be pickled"):
        counter.add(1, times=threading.Lock())


def test_unpicklable_result_comes_back_as_a_clear_error(counter: ActorClient) -> None:
    with pytest.raises(ActorCallError, match=r"the result \(lock\) cannot be pickled"):
        counter.lock()


def test_per_call_timeout_raises_actor_timeout(counter: ActorClient) -> None:
    with pytest.raises(ActorTimeout, match=r"counter.sleep did not finish within 0.2s") as info:
        counter.with_timeout(0.2).sleep(2)
    assert isinstance(info.value, TimeoutError)
    assert counter.with_timeout(5).sleep(0) == 0


def test_unreachable_endpoint_retries_until_connect_timeout_then_names_the_actor() -> None:
    client = ActorClient(FixedResolver({"gone": "127.0.0.1:1"}), "gone", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ActorNotFound, match=r"no endpoint for actor 'gone' answered within 0.5s.*last error"):
        client.ping()
    assert time.monotonic() - started >= 0.4


def test_call_waits_for_a_server_that_starts_later() -> None:
    with ActorServer() as probe:
        port = int(probe.address.rsplit(":", 1)[1])
    late = ActorServer(port)
    late.register("late", Counter(10))
    timer = threading.Timer(0.5, late.serve)
    timer.start()
    try:
        assert ActorClient(FixedResolver({"late": f"127.0.0.1:{port}"}), "late", connect_timeout=10).add(1) == 11
    finally:
        timer.join()
        late.stop()


def test_submit_returns_future_and_calls_from_threads_run_concurrently(counter: ActorClient) -> None:
    started = time.monotonic()
    futures = [counter.sleep.submit(0.3) for _ in range(8)]
    assert [f.result(timeout=10) for f in futures] == [0.3] * 8
    assert time.monotonic() - started < 2.0  # 8 x 0.3 s in sequence would be 2.4 s


def test_long_running_operation_polls_then_returns_result(counter: ActorClient) -> None:
    op = counter.sleep.start(0.3)
    assert op.poll() is False
    assert op.result(timeout=10) == 0.3
    assert op.poll() is True


def test_long_running_operation_cancel_stops_it(counter: ActorClient) -> None:
    COUNTING.clear()
    op = counter.count_until_cancelled.start(30)
    # cancel once it runs: a cancel that comes before the method starts means it never runs
    # ("... was cancelled", docs/actors.md), which is not what this test is about
    assert COUNTING.wait(timeout=10)
    assert op.cancel() is True
    with pytest.raises(OperationCancelled, match="stopped early"):
        op.result(timeout=10)


def test_long_running_operation_of_unknown_method_fails_at_start(counter: ActorClient) -> None:
    with pytest.raises(ActorMethodNotFound):
        counter.nope.start()


def test_actor_pool_spreads_calls_and_broadcasts_in_replica_order() -> None:
    servers = []
    try:
        for i in range(3):
            s = ActorServer().serve()
            s.register("shard", Counter(i * 100))
            servers.append(s)
        pool = ActorPool(FixedResolver({"shard": [s.address for s in servers]}), "shard", connect_timeout=2)
        assert len(pool.wait_for_size(3, timeout=5)) == 3
        for _ in range(30):
            pool.call.add(1)
        assert pool.broadcast.add(0) == [10, 110, 210]
        futures = pool.broadcast.add.submit(0)
        assert [f.result(timeout=5) for f in futures] == [10, 110, 210]
        with pytest.raises(ActorTimeout, match="3 of 4 endpoints"):
            pool.wait_for_size(4, timeout=0.2)
    finally:
        for s in servers:
            s.stop()


def test_actor_pool_call_skips_a_replica_that_does_not_answer() -> None:
    with ActorServer() as alive:
        alive.register("shard", Counter())
        pool = ActorPool(FixedResolver({"shard": ["127.0.0.1:1", alive.address]}), "shard", connect_timeout=5)
        assert [pool.call.add(1) for _ in range(5)] == [1, 2, 3, 4, 5]


def test_registering_a_name_twice_is_an_error(server: ActorServer) -> None:
    with pytest.raises(IrisError, match="already hosted"):
        server.register("counter", Counter())


def test_named_port_outside_a_task_says_to_use_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRIS_JOB_ID", raising=False)
    with pytest.raises(IrisError, match="named port exists only inside an Iris task"):
        ActorServer("actor")


# --- the task context ------------------------------------------------------------------


TASK_ENV = {
    "IRIS_JOB_ID": "/ada/train/workers",
    "IRIS_TASK_INDEX": "3",
    "IRIS_NUM_TASKS": "8",
    "IRIS_ATTEMPT_ID": "1",
    "IRIS_TASK_ID": "/ada/train/workers/3",
    "IRIS_WORKER_ID": "w-1",
    "IRIS_CONTROLLER_ADDRESS": "http://127.0.0.1:1",
    "IRIS_PORT_ACTOR": "30001",
    "IRIS_PORT_HTTP": "30002",
}


def test_get_job_info_reads_the_workers_variables() -> None:
    info = get_job_info(TASK_ENV)
    assert info is not None
    assert (info.job_id, info.task_index, info.num_tasks, info.attempt_id) == ("/ada/train/workers", 3, 8, 1)
    assert dict(info.ports) == {"actor": 30001, "http": 30002}
    assert info.root_job_id == "/ada/train"
    assert info.advertise_host == "127.0.0.1"
    assert get_job_info({}) is None


def test_iris_ctx_inside_a_task_gives_identity_ports_and_namespaced_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TASK_ENV.items():
        monkeypatch.setenv(key, value)
    ctx = iris_ctx()
    assert (ctx.job_id, ctx.task_index, ctx.num_tasks, ctx.attempt_id) == ("/ada/train/workers", 3, 8, 1)
    assert ctx.port("actor") == 30001
    with pytest.raises(IrisError, match=r"no port named 'grpc' \(it has: actor, http\)"):
        ctx.port("grpc")
    assert ctx.client.address == "http://127.0.0.1:1"
    assert isinstance(ctx.resolver, ClusterResolver) and ctx.resolver.namespace == "/ada/train"


def test_iris_ctx_outside_a_task_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRIS_JOB_ID", raising=False)
    with pytest.raises(NotInTask, match="not running inside an Iris task"):
        iris_ctx()
    with pytest.raises(IrisError, match=r"needs a client and a namespace"):
        ClusterResolver()


# --- the credential seam (issue 11 plugs its interceptor and token in here) ------------------


class RequireToken(__import__("grpc").ServerInterceptor):
    """A stand-in for the auth interceptor: rejects calls without ``authorization: Bearer s3cret``."""

    def intercept_service(self, continuation, handler_call_details):
        import grpc

        if ("authorization", "Bearer s3cret") in tuple(handler_call_details.invocation_metadata or ()):
            return continuation(handler_call_details)

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")

        return grpc.unary_unary_rpc_method_handler(deny)


def test_server_interceptor_and_client_metadata_hook_carry_a_credential() -> None:
    with ActorServer(interceptors=[RequireToken()]) as guarded:
        guarded.register("counter", Counter())
        resolver = FixedResolver({"counter": guarded.address})
        with_token = ActorClient(resolver, "counter", metadata=lambda: [("authorization", "Bearer s3cret")])
        assert with_token.add(1) == 1
        started = time.monotonic()
        with pytest.raises(ActorCallError, match=r"counter.add at .* failed: UNAUTHENTICATED: missing or wrong token"):
            ActorClient(resolver, "counter", connect_timeout=30).add(1)
        assert time.monotonic() - started < 5  # refused at once, not retried as if unavailable
        pool = ActorPool(resolver, "counter", metadata=lambda: [("authorization", "Bearer s3cret")])
        assert pool.call.add(1) == 2


def test_actor_gate_admits_the_job_tree_its_owner_and_admins_and_asks_once_per_token() -> None:
    """The check an actor server inside a task makes, with a real token checker standing in for
    the controller's WhoAmI (the cluster test, tests/test_actors_auth.py, asks a real controller)."""
    from iris.actor import ActorGate, ActorPermissionDenied
    from iris.auth import Authenticator, Principal, Role, TokenSigner

    auth = Authenticator(TokenSigner(b"s" * 32))
    asked: list[str] = []

    def who_is(token: str) -> Principal | None:
        asked.append(token)
        return auth.authenticate(token)

    own = auth.mint(Principal(Role.TASK, "alice", "/alice/train/coordinator"))
    gate = ActorGate("", own, "/alice/train/coordinator", who_is=who_is)
    tokens = {
        "sibling task": auth.mint(Principal(Role.TASK, "alice", "/alice/train/workers")),
        "driver task": auth.mint(Principal(Role.TASK, "alice", "/alice/train")),
        "owner": auth.mint(Principal(Role.USER, "alice")),
        "admin": auth.mint(Principal(Role.ADMIN, "root")),
        "other tree": auth.mint(Principal(Role.TASK, "alice", "/alice/eval")),
        "other user": auth.mint(Principal(Role.USER, "bob")),
        "other user's task": auth.mint(Principal(Role.TASK, "bob", "/bob/x")),
        "forged": "iris1.e30.forged",
        "none": "",
    }
    with ActorServer(gate=gate) as server:
        server.register("counter", Counter())
        resolver = FixedResolver({"counter": server.address})
        outcomes = {}
        for who, token in tokens.items():
            sent = [("authorization", f"Bearer {token}")] if token else []
            client = ActorClient(resolver, "counter", metadata=lambda sent=sent: sent)
            try:
                client.add(1)
                client.add(1)  # a second call is answered from the cache
                outcomes[who] = "ok"
            except ActorPermissionDenied as exc:
                assert isinstance(exc, PermissionError)
                outcomes[who] = str(exc).split(": ", 2)[-1]
    assert [w for w, o in outcomes.items() if o == "ok"] == ["sibling task", "driver task", "owner", "admin"]
    assert outcomes["other tree"].startswith("actor call refused: a task of /alice/eval may not call the actors of /alice/train/coordinator")
    assert "user bob may not call" in outcomes["other user"] and "a task of /bob/x" in outcomes["other user's task"]
    assert "not valid for this cluster" in outcomes["forged"] and "no credential" in outcomes["none"]
    assert asked == [own, *(t for t in tokens.values() if t)]  # once per token: no round trip per call
