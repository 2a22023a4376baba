"""Who may call an actor, on a served local cluster with auth on (process workers, real tasks
with their own credentials): tasks of the actor's job tree and its owner are let in; a task of
another user's job, another user, and a caller without a credential are refused with
``ActorPermissionDenied`` (a ``PermissionError``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.actor import ActorClient, ActorPermissionDenied, ActorPool
from iris.actor.server import serve_forever
from iris.auth import METADATA_KEY
from iris.client import ClusterResolver, IrisClient, iris_ctx
from iris.cluster.manager import ClusterManager
from iris.cluster.types import Entrypoint, ResourceSpec
from iris.config import parse_config

SMALL = ResourceSpec(cpu=0.1, memory="200MB")
ROOT = Path(__file__).parents[__name__.count(".")]  # tasks import this module's functions from the bundle


class Counter:
    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> int:
        with self._lock:
            self.total += n
            return self.total


def serve_counter() -> None:
    serve_forever({"counter": Counter()})


def call_counter(namespace: str) -> str:
    """A task's call to the counter of job ``namespace``: what happened, as text."""
    actor = ActorClient(ClusterResolver(iris_ctx().client, namespace=namespace), "counter", timeout=30, connect_timeout=60)
    try:
        return f"ok {actor.add(1)}"
    except ActorPermissionDenied as exc:
        return f"refused {isinstance(exc, PermissionError)} {exc}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterManager]:
    state = tmp_path_factory.mktemp("actors-auth") / "state"
    config = parse_config(
        {
            "controller": {"state_dir": str(state)},
            "provider": {"type": "local", "options": {"worker_mode": "process"}},
            "scale_groups": {"g": {"min_slices": 1, "max_slices": 1, "cpu": 2, "memory": "4GB"}},
        }
    )
    manager = ClusterManager(config)
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture(scope="module")
def users(cluster: ClusterManager) -> Iterator[dict[str, IrisClient]]:
    address = cluster.controller.address
    with IrisClient.remote(address, token=cluster.owner_token, workspace=ROOT) as admin:
        tokens = {name: admin.create_token(name) for name in ("alice", "bob")}
    clients = {name: IrisClient.remote(address, token=token, workspace=ROOT) for name, token in tokens.items()}
    clients["admin"] = IrisClient.remote(address, token=cluster.owner_token, workspace=ROOT)
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


@pytest.fixture(scope="module")
def counter_job(users: dict[str, IrisClient]) -> Iterator[str]:
    """alice's actor job, serving ``counter`` on its named port."""
    job = users["alice"].submit(Entrypoint.from_callable(serve_counter), name="counter", resources=SMALL, ports=["actor"])
    try:
        ActorPool(ClusterResolver(users["alice"], namespace=job.job_id), "counter").wait_for_size(1, timeout=120)
        yield job.job_id
    finally:
        job.kill()


def test_actor_auth_the_jobs_owner_calls_its_actor(users: dict[str, IrisClient], counter_job: str) -> None:
    actor = ActorClient(ClusterResolver(users["alice"], namespace=counter_job), "counter", timeout=30)
    assert actor.add(0) >= 0


def test_actor_auth_a_task_of_the_same_job_tree_calls_it(users: dict[str, IrisClient], counter_job: str) -> None:
    child = users["alice"].submit(
        Entrypoint.from_callable(call_counter, counter_job), name="caller", resources=SMALL, parent_job_id=counter_job
    )
    assert child.result(timeout=120).startswith("ok ")


def test_actor_auth_a_task_of_another_users_job_is_refused(users: dict[str, IrisClient], counter_job: str) -> None:
    before = ActorClient(ClusterResolver(users["alice"], namespace=counter_job), "counter", timeout=30).add(0)
    job = users["bob"].submit(Entrypoint.from_callable(call_counter, counter_job), name="intruder", resources=SMALL)
    outcome = job.result(timeout=120)
    assert outcome.startswith("refused True "), outcome
    assert f"a task of {job.job_id} may not call the actors of {counter_job}" in outcome
    assert ActorClient(ClusterResolver(users["alice"], namespace=counter_job), "counter", timeout=30).add(0) == before  # it never ran


def test_actor_auth_a_top_level_job_of_the_same_owner_is_another_tree(users: dict[str, IrisClient], counter_job: str) -> None:
    job = users["alice"].submit(Entrypoint.from_callable(call_counter, counter_job), name="other-tree", resources=SMALL)
    assert job.result(timeout=120).startswith("refused True ")


def test_actor_auth_another_user_and_no_credential_are_refused_and_an_admin_may_call(
    users: dict[str, IrisClient], counter_job: str
) -> None:
    bob = ClusterResolver(users["bob"], namespace=counter_job)
    with pytest.raises(ActorPermissionDenied, match="no credential"):  # bob's token is never sent to alice's actor
        ActorClient(bob, "counter", timeout=30).add(1)
    bobs_token = ((METADATA_KEY, f"Bearer {users['bob'].token}"),)
    with pytest.raises(PermissionError, match="user bob may not call the actors of"):
        ActorClient(bob, "counter", timeout=30, metadata=lambda: bobs_token).add(1)
    admin_token = ((METADATA_KEY, f"Bearer {users['admin'].token}"),)  # an admin hands over their token only explicitly
    assert ActorClient(ClusterResolver(users["admin"], namespace=counter_job), "counter", timeout=30, metadata=lambda: admin_token).add(0) >= 0


def test_actor_auth_a_forged_token_is_refused(users: dict[str, IrisClient], counter_job: str) -> None:
    forged = ((METADATA_KEY, "Bearer iris1.eyJyIjoiYWRtaW4ifQ.forged"),)
    with pytest.raises(ActorPermissionDenied, match="not valid for this cluster"):
        ActorClient(ClusterResolver(users["bob"], namespace=counter_job), "counter", timeout=30, metadata=lambda: forged).add(1)


def square(x: int) -> int:
    return x * x


def test_actor_auth_a_worker_pool_of_the_owner_runs_its_calls(users: dict[str, IrisClient]) -> None:
    from iris.client import WorkerPool

    with WorkerPool(users["alice"], 1, resources=SMALL, name="pool") as pool:  # the workers check alice's token
        assert list(pool.map(square, range(20), timeout=120)) == [x * x for x in range(20)]
