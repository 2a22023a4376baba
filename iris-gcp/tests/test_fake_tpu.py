"""The fake TPU API against the real ``google-cloud-tpu`` client: every call the VmManager makes,
over real gRPC on a loopback socket, with the client's own long-running operation polling."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tpu_v2

from iris_gcp.bootstrap import WORKER_INDEX
from iris_gcp.testing.boot import AddressOnlyBooter
from iris_gcp.testing.fake_tpu import FakeTpuServer

PARENT = "projects/test-project/locations/europe-west4-b"


@pytest.fixture
def booter() -> Iterator[AddressOnlyBooter]:
    booter = AddressOnlyBooter()
    yield booter
    booter.close()


@pytest.fixture
def fake(booter: AddressOnlyBooter) -> Iterator[FakeTpuServer]:
    with FakeTpuServer(booter, create_delay=0.02, delete_delay=0.02) as server:
        yield server


@pytest.fixture
def client(fake: FakeTpuServer) -> Iterator[tpu_v2.TpuClient]:
    client = fake.client()
    yield client
    client.transport.close()


def node(accelerator: str = "v5litepod-16", **fields: object) -> tpu_v2.Node:
    return tpu_v2.Node(accelerator_type=accelerator, runtime_version="v2-alpha-tpuv5-lite", **fields)


def test_create_node_operation_completes_with_ready_node_and_one_endpoint_per_host(client, fake, booter) -> None:
    operation = client.create_node(parent=PARENT, node_id="n1", node=node(metadata={"k": "v"}, labels={"team": "a"}))
    created = operation.result(timeout=30)
    assert created.name == f"{PARENT}/nodes/n1"
    assert created.state == tpu_v2.Node.State.READY
    assert len(created.network_endpoints) == 4
    assert [h.metadata[WORKER_INDEX] for h in booter.booted] == ["0", "1", "2", "3"]
    assert all(h.metadata["k"] == "v" and h.labels == {"team": "a"} for h in booter.booted)
    assert {e.ip_address for e in created.network_endpoints} == {booter._hosts[h.host_id] for h in booter.booted}
    assert client.get_node(name=created.name).labels == {"team": "a"}


def test_node_is_creating_until_its_operation_is_done(booter) -> None:
    with FakeTpuServer(booter, create_delay=30) as fake:
        client = fake.client()
        operation = client.create_node(parent=PARENT, node_id="slow", node=node("v5litepod-8"))
        assert not operation.done()
        assert client.get_node(name=f"{PARENT}/nodes/slow").state == tpu_v2.Node.State.CREATING
        assert booter.booted == []
        client.transport.close()


def test_list_nodes_pages_through_every_node_of_the_zone_only(client, fake) -> None:
    fake.page_size = 3
    for i in range(7):
        client.create_node(parent=PARENT, node_id=f"n{i}", node=node("v5litepod-1")).result(timeout=30)
    client.create_node(parent="projects/test-project/locations/us-central2-b", node_id="other", node=node("v4-8")).result(timeout=30)
    fake.reset_calls()
    names = [n.name.rsplit("/", 1)[-1] for n in client.list_nodes(parent=PARENT)]
    assert sorted(names) == [f"n{i}" for i in range(7)]
    assert fake.calls["ListNodes"] == 3  # pages of 3, 3 and 1


def test_delete_node_halts_hosts_and_removes_the_node(client, fake, booter) -> None:
    created = client.create_node(parent=PARENT, node_id="gone", node=node()).result(timeout=30)
    client.delete_node(name=created.name).result(timeout=30)
    assert list(client.list_nodes(parent=PARENT)) == []
    assert not any(booter.running(h.host_id) for h in booter.booted)
    with pytest.raises(gexc.NotFound):
        client.get_node(name=created.name)
    with pytest.raises(gexc.NotFound):
        client.delete_node(name=created.name)


def test_preempt_and_terminate_set_the_state_and_halt_hosts(client, fake, booter) -> None:
    a = client.create_node(parent=PARENT, node_id="a", node=node("v5litepod-8")).result(timeout=30)
    b = client.create_node(parent=PARENT, node_id="b", node=node("v5litepod-8")).result(timeout=30)
    fake.preempt("a")
    fake.terminate(b.name)
    assert client.get_node(name=a.name).state == tpu_v2.Node.State.PREEMPTED
    assert client.get_node(name=b.name).state == tpu_v2.Node.State.TERMINATED
    assert not any(booter.running(h.host_id) for h in booter.booted)


def test_create_in_unknown_zone_is_not_found(client) -> None:
    with pytest.raises(gexc.NotFound, match="projects/test-project/locations/mars-north1-a"):
        client.create_node(parent="projects/test-project/locations/mars-north1-a", node_id="n", node=node())


def test_create_with_accelerator_type_the_zone_lacks_is_invalid_argument(booter) -> None:
    with FakeTpuServer(booter, zones={"europe-west4-b": ["v5litepod-16"]}) as fake:
        client = fake.client()
        with pytest.raises(gexc.InvalidArgument, match="v4-8"):
            client.create_node(parent=PARENT, node_id="n", node=node("v4-8"))
        client.transport.close()


def test_create_with_invalid_node_id_or_labels_is_invalid_argument(client) -> None:
    with pytest.raises(gexc.InvalidArgument, match="node_id"):
        client.create_node(parent=PARENT, node_id="Bad_Name", node=node())
    with pytest.raises(gexc.InvalidArgument, match="label"):
        client.create_node(parent=PARENT, node_id="ok", node=node(labels={"iris.cluster": "x"}))


def test_create_existing_node_is_already_exists(client) -> None:
    client.create_node(parent=PARENT, node_id="twice", node=node("v5litepod-1")).result(timeout=30)
    with pytest.raises(gexc.AlreadyExists):
        client.create_node(parent=PARENT, node_id="twice", node=node("v5litepod-1"))


@pytest.mark.parametrize(
    ("kind", "error", "on_operation"),
    [
        ("quota", gexc.ResourceExhausted, False),
        ("stockout", gexc.ResourceExhausted, True),
        ("permission", gexc.PermissionDenied, False),
        ("accelerator", gexc.InvalidArgument, False),
        ("zone", gexc.NotFound, False),
    ],
)
def test_injected_create_failure_raises_on_the_call_or_the_operation(client, fake, kind, error, on_operation) -> None:
    fake.fail_next_create(kind)
    if on_operation:
        operation = client.create_node(parent=PARENT, node_id="n", node=node())
        with pytest.raises(error):
            operation.result(timeout=30)
    else:
        with pytest.raises(error):
            client.create_node(parent=PARENT, node_id="n", node=node())
    assert list(client.list_nodes(parent=PARENT)) == []
    client.create_node(parent=PARENT, node_id="n", node=node()).result(timeout=30)  # only the next one fails


def test_calls_are_counted_by_method(client, fake) -> None:
    client.create_node(parent=PARENT, node_id="n", node=node("v5litepod-1")).result(timeout=30)
    list(client.list_nodes(parent=PARENT))
    client.get_node(name=f"{PARENT}/nodes/n")
    assert fake.calls["CreateNode"] == 1
    assert fake.calls["ListNodes"] == 1
    assert fake.calls["GetNode"] == 1
    assert fake.calls["GetOperation"] >= 1
