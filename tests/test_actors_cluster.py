"""Actors, pools and the task context on a local cluster (one cluster for the module): actor
jobs with named ports found through ClusterResolver, remote exceptions, an actor task killed
mid-run, the seed 003 coordinator-and-workers shape, and WorkerPool."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from iris.actor import ActorClient, ActorPool, ActorServer, RemoteTraceback
from iris.actor.server import serve_forever
from iris.client import ClusterResolver, IrisClient, WorkerPool, iris_ctx
from iris.cluster.types import Entrypoint, EnvironmentSpec, ResourceSpec, TaskState

SMALL = ResourceSpec(cpu=0.1, memory="200MB")


@pytest.fixture(scope="module")
def client():
    # the workspace is the directory this module imports from, so tasks can unpickle its functions
    root = Path(__file__).parents[__name__.count(".")]
    with IrisClient.local(workspace=root) as c:
        yield c


# --- actor bodies (module level: tasks import them from the bundle) ----------------------


class Replica:
    def __init__(self) -> None:
        ctx = iris_ctx()
        self.task_index, self.attempt_id = ctx.task_index, ctx.attempt_id
        self.total = 0
        self._lock = threading.Lock()

    def whoami(self) -> tuple[int, int, int]:
        return self.task_index, self.attempt_id, os.getpid()

    def add(self, n: int) -> int:
        with self._lock:
            self.total += n
            return self.total

    def divide(self, a: float, b: float) -> float:
        return a / b

    def slow_echo(self, value: object, seconds: float) -> tuple[object, int]:
        time.sleep(seconds)
        return value, self.attempt_id


def serve_replica() -> None:
    serve_forever({"replica": Replica()})


def wait_endpoints(resolver: ClusterResolver, name: str, n: int, timeout: float = 60) -> None:
    ActorPool(resolver, name).wait_for_size(n, timeout=timeout)


def test_actor_job_with_four_replicas_serves_through_cluster_resolver_and_actor_pool(client: IrisClient) -> None:
    job = client.submit(Entrypoint.from_callable(serve_replica), name="replicas", resources=SMALL, replicas=4, ports=["actor"])
    try:
        resolver = ClusterResolver(client, namespace=job.job_id)
        pool = ActorPool(resolver, "replica", timeout=30)
        endpoints = pool.wait_for_size(4, timeout=90)
        assert sorted(e.task_index for e in endpoints) == [0, 1, 2, 3]
        assert all(e.address.startswith("127.0.0.1:") for e in endpoints)
        ports = {int(e.address.rsplit(":", 1)[1]) for e in endpoints}
        recorded = {a.ports["actor"] for t in job.status().tasks for a in t.attempts}
        assert ports == recorded  # served on the named port the worker gave each task

        seen = {pool.call.whoami()[0] for _ in range(40)}
        assert seen == {0, 1, 2, 3}
        assert [who[0] for who in pool.broadcast.whoami()] == [0, 1, 2, 3]
        assert sum(pool.broadcast.add(0)) == 0
        for _ in range(20):
            pool.call.add(1)
        assert sum(pool.broadcast.add(0)) == 20

        with pytest.raises(ZeroDivisionError) as info:
            ActorClient(resolver, "replica").divide(1, 0)
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "return a / b" in str(info.value.__cause__)

        # another job's namespace does not see these endpoints
        assert ClusterResolver(client, namespace="/nobody/else").resolve("replica") == []
    finally:
        job.kill()
    # an endpoint is visible only while its job runs
    assert ClusterResolver(client, namespace=job.job_id).resolve("replica") == []


def test_actor_task_killed_mid_run_comes_back_and_calls_resume(client: IrisClient) -> None:
    job = client.submit(
        Entrypoint.from_callable(serve_replica), name="phoenix", resources=SMALL, ports=["actor"], max_retries=2
    )
    try:
        actor = ActorClient(ClusterResolver(client, namespace=job.job_id), "replica", connect_timeout=120)
        index, attempt, pid = actor.whoami()
        assert (index, attempt) == (0, 0)
        in_flight = actor.slow_echo.submit("survives", 2.0)
        time.sleep(0.5)  # the call is running in the actor when it dies
        os.kill(pid, signal.SIGKILL)
        # the call is retried on the restarted actor (at-least-once), and new calls reach it
        assert in_flight.result(timeout=120) == ("survives", 1)
        index, attempt, new_pid = actor.whoami()
        assert (index, attempt) == (0, 1) and new_pid != pid
        assert actor.add(5) == 5
        task = job.status().tasks[0]
        assert [a.attempt_id for a in task.attempts] == [0, 1]
        assert task.state is TaskState.RUNNING
    finally:
        job.kill()


def serve_then_leave_on_task_one() -> None:
    """Task 0 serves; task 1 registers the same actor, then ends (its endpoint must go)."""
    if iris_ctx().task_index == 0:
        serve_forever({"replica": Replica()})
    server = ActorServer("actor")
    server.register("replica", Replica())
    server.serve()
    server.stop()


def test_endpoint_of_an_ended_task_disappears_while_its_job_runs(client: IrisClient) -> None:
    job = client.submit(Entrypoint.from_callable(serve_then_leave_on_task_one), name="leaver", resources=SMALL, replicas=2, ports=["actor"])
    try:
        resolver = ClusterResolver(client, namespace=job.job_id)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            tasks = job.status().tasks
            if tasks[1].state is TaskState.SUCCEEDED and tasks[0].state is TaskState.RUNNING and resolver.resolve("replica"):
                break
            time.sleep(0.1)
        assert [t.state for t in job.status().tasks] == [TaskState.RUNNING, TaskState.SUCCEEDED]
        assert [e.task_index for e in resolver.resolve("replica")] == [0]
    finally:
        job.kill()


# --- seed 003: a coordinator actor and 8 worker tasks --------------------------------------


class Coordinator:
    def __init__(self, items: int) -> None:
        self._next = 0
        self._items = items
        self._done: dict[int, int] = {}
        self._tags: set[str] = set()
        self._lock = threading.Lock()

    def next_item(self) -> int | None:
        with self._lock:
            if self._next >= self._items:
                return None
            self._next += 1
            return self._next - 1

    def report(self, item: int, value: int, tag: str) -> None:
        with self._lock:
            self._done[item] = value
            self._tags.add(tag)

    def summary(self) -> dict[str, object]:
        with self._lock:
            return {"done": len(self._done), "total": sum(self._done.values()), "tags": sorted(self._tags)}


def serve_coordinator(items: int) -> None:
    serve_forever({"coordinator": Coordinator(items)})


def work_loop() -> int:
    ctx = iris_ctx()
    coordinator = ActorClient(ctx.resolver, "coordinator", timeout=60)
    handled = 0
    while (item := coordinator.next_item()) is not None:
        coordinator.report(item, item * item, os.environ.get("PIPELINE_TAG", "missing"))
        handled += 1
    return handled


def run_pipeline(items: int, workers: int) -> dict[str, object]:
    """The driver: starts the coordinator and the workers as children through iris_ctx().client."""
    ctx = iris_ctx()
    small = ResourceSpec(cpu=0.1, memory="200MB")
    coordinator_job = ctx.client.submit(
        Entrypoint.from_callable(serve_coordinator, items), name="coordinator", resources=small, ports=["actor"]
    )
    worker_job = ctx.client.submit(Entrypoint.from_callable(work_loop), name="workers", resources=small, replicas=workers)
    handled = worker_job.results(timeout=600)
    summary = ActorClient(ctx.resolver, "coordinator", timeout=60).summary()
    coordinator_job.kill()
    return {**summary, "handled": handled}


def test_coordinator_and_eight_workers_exchange_ten_thousand_calls_without_timeout(client: IrisClient) -> None:
    items = 5_000  # each item is two calls: next_item and report
    job = client.submit(
        Entrypoint.from_callable(run_pipeline, items, 8),
        name="pipeline",
        resources=SMALL,
        environment=EnvironmentSpec(env={"PIPELINE_TAG": "from-the-driver"}),
    )
    outcome = job.result(timeout=600)
    assert outcome["done"] == items
    assert outcome["total"] == sum(i * i for i in range(items))
    assert sum(outcome["handled"]) == items and len(outcome["handled"]) == 8
    assert outcome["tags"] == ["from-the-driver"]  # the driver's env reached its children's children


def test_child_job_inherits_parents_env_and_extras(client: IrisClient) -> None:
    parent = client.submit(
        Entrypoint.from_command("sleep", "60"), name="parent-env", resources=SMALL,
        environment=EnvironmentSpec(env={"A": "parent", "B": "parent"}, extras=["gpu", "eval"]),
    )
    try:
        child = client.submit(
            Entrypoint.from_command("true"), name="child", resources=SMALL, parent_job_id=parent.job_id,
            environment=EnvironmentSpec(env={"B": "child"}, extras=["eval", "extra"]),
        )
        spec = client._cluster.controller.get_job(child.job_id).spec  # what the controller runs it with
        assert spec.environment.env == {"A": "parent", "B": "child"}
        assert spec.environment.extras == ["eval", "extra"]  # its own extras replace the parent's
        plain = client.submit(Entrypoint.from_command("true"), name="plain-child", resources=SMALL, parent_job_id=parent.job_id)
        assert client._cluster.controller.get_job(plain.job_id).spec.environment.extras == ["gpu", "eval"]  # inherited
    finally:
        parent.kill()


# --- WorkerPool ---------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def slow_square_with_pid(x: int) -> tuple[int, int]:
    time.sleep(0.01)
    return x * x, os.getpid()


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError(f"seven is not allowed ({x})")
    return x


def pid_then_sleep(marker: str, seconds: float) -> int:
    """Say which process runs this call (the first run only), then keep it busy."""
    path = Path(marker)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.rename(path)
    time.sleep(seconds)
    return os.getpid()


def test_worker_pool_maps_a_thousand_calls_and_survives_losing_a_worker(
    client: IrisClient, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level("WARNING", logger="iris.client.worker_pool")
    with WorkerPool(client, 4, resources=SMALL, name="pool") as pool:
        assert list(pool.map(square, range(1000), timeout=120)) == [x * x for x in range(1000)]

        # kill the worker while it is known to be running a call (the call says where it runs):
        # killing one after its first answer raced with the others having taken all the work
        marker = tmp_path / "victim"
        doomed = pool.submit(pid_then_sleep, str(marker), 2.0)
        futures = [pool.submit(slow_square_with_pid, x) for x in range(1000)]
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = int(marker.read_text())
        os.kill(victim, signal.SIGKILL)
        results = [f.result(timeout=180) for f in futures]
        assert [value for value, _ in results] == [x * x for x in range(1000)]
        assert len({pid for _, pid in results} - {victim}) >= 2  # the others carried on
        assert doomed.result(timeout=180) != victim  # the call the lost worker held ran again elsewhere
        assert any("lost" in r.getMessage() and "run again" in r.getMessage() for r in caplog.records)

        with pytest.raises(ValueError, match=r"seven is not allowed") as info:
            list(pool.map(fail_on_seven, range(10), timeout=60))
        assert isinstance(info.value.__cause__, RemoteTraceback)
        job = pool.job
    assert job.wait(timeout=60, raise_on_failure=False).state.is_terminal
