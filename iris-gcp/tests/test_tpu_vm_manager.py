"""The TPU VmManager against the fake TPU API through the real ``google-cloud-tpu`` client: the
VmManager contract, what a created node carries, state mapping, error mapping and the number
of API calls one autoscaler cycle costs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from google.cloud import tpu_v2

from iris.cluster.autoscaler import Autoscaler
from iris.config import parse_config
from iris.cluster.scale_groups import slice_request_for
from iris.errors import PluginError
from iris.plugin.protocols import QuotaExceeded, SliceInfo, SliceRequest, SliceState
from iris.plugin.records import ProviderContext
from iris.plugin.registry import get_registry
from iris.testing.contracts import VmManagerContract
from iris.testing.polling import wait_until
from iris_gcp import bootstrap
from iris_gcp.errors import CapacityUnavailable
from iris_gcp.testing.boot import AddressOnlyBooter
from iris_gcp.testing.fake_tpu import FakeTpuServer
from iris_gcp.tpu import TpuVmManager, gcp_label, gcp_labels, node_id

PROJECT = "test-project"
ZONE = "europe-west4-b"


@pytest.fixture
def booter() -> Iterator[AddressOnlyBooter]:
    booter = AddressOnlyBooter()
    yield booter
    booter.close()


@pytest.fixture
def fake(booter: AddressOnlyBooter) -> Iterator[FakeTpuServer]:
    with FakeTpuServer(booter, create_delay=0.02, delete_delay=0.02) as server:
        yield server


def context(tmp_path: Path, fake: FakeTpuServer, **section: Any) -> ProviderContext:
    tokens: list[str] = []
    return ProviderContext(
        controller_address="http://10.0.0.2:10000",
        state_dir=tmp_path,
        options={
            "type": "gcp",
            "project_id": PROJECT,
            "zone": ZONE,
            "runtime": "docker",
            "docker_image": "127.0.0.1:5000/task:latest",
            "options": {"tpu_api_endpoint": fake.address, "worker_image": "127.0.0.1:5000/iris-worker:1", **section},
        },
        worker_token=lambda worker_id: tokens.append(worker_id) or f"token-{worker_id}",
    )


def manager_for(tmp_path: Path, fake: FakeTpuServer, **section: Any) -> TpuVmManager:
    """Built the way the controller builds it: through the registered ``gcp`` factory."""
    return get_registry().vm_manager("gcp").factory(context(tmp_path, fake, **section))


@pytest.fixture
def manager(tmp_path: Path, fake: FakeTpuServer) -> Iterator[TpuVmManager]:
    manager = manager_for(tmp_path, fake)
    yield manager
    manager.close()


def request(slice_id: str, variant: str = "v5litepod-16", *, labels: Mapping[str, str] | None = None, **attributes: str) -> SliceRequest:
    return SliceRequest(
        slice_id=slice_id,
        scale_group="tpu_v5e_16",
        vm_count=4 if variant == "v5litepod-16" else 1,
        labels=dict(labels or {"iris.cluster": "c1", "iris.scale-group": "tpu_v5e_16"}),
        attributes={"device": "tpu", "device-variant": variant, "zone": ZONE, "preemptible": "true", **attributes},
        template={"runtime_version": "v2-alpha-tpuv5-lite"},
    )


class TestTpuVmManagerContract(VmManagerContract):
    vm_count = 4
    settle_timeout = 30.0

    @pytest.fixture
    def vm_manager(self, manager: TpuVmManager) -> TpuVmManager:
        return manager

    @pytest.fixture(autouse=True)
    def _fake(self, fake: FakeTpuServer) -> None:
        self.fake = fake

    def slice_request(self, slice_id: str, labels: Mapping[str, str]) -> SliceRequest:
        return SliceRequest(
            slice_id=slice_id,
            scale_group=self.scale_group,
            vm_count=self.vm_count,
            labels=dict(labels),
            attributes={"device": "tpu", "device-variant": "v5litepod-16", "zone": ZONE},
        )

    def kill_slice(self, vm_manager: Any, info: SliceInfo) -> None:
        self.fake.preempt(node_id(info.slice_id))


# --- what a created node carries ----------------------------------------------------------------


def test_create_slice_multi_host_reports_one_vm_per_host_with_index_and_address(manager, fake, booter) -> None:
    info = manager.create_slice(request("iris-tpu-v5e-16-0"))
    assert info.state is SliceState.READY
    assert [vm.vm_id for vm in info.vms] == [bootstrap.worker_id("iris-tpu-v5e-16-0", i) for i in range(4)]
    assert [vm.attributes["worker-index"] for vm in info.vms] == ["0", "1", "2", "3"]
    by_index = {h.metadata[bootstrap.WORKER_INDEX]: booter._hosts[h.host_id] for h in booter.booted}
    assert [vm.address for vm in info.vms] == [by_index[str(i)] for i in range(4)]


def test_create_slice_node_has_type_zone_runtime_scheduling_labels_and_worker_metadata(manager, fake) -> None:
    manager.create_slice(request("iris-tpu-v5e-16-0"))
    node = fake.node("iris-tpu-v5e-16-0")
    assert node.name == f"projects/{PROJECT}/locations/{ZONE}/nodes/iris-tpu-v5e-16-0"
    assert node.accelerator_type == "v5litepod-16"
    assert node.runtime_version == "v2-alpha-tpuv5-lite"
    assert node.scheduling_config.preemptible and not node.scheduling_config.spot
    assert dict(node.labels) == {"iris-cluster": "c1", "iris-scale-group": "tpu_v5e_16", "iris-slice-id": "iris-tpu-v5e-16-0"}
    metadata = dict(node.metadata)
    assert metadata[bootstrap.STARTUP_SCRIPT] == bootstrap.startup_script()
    assert metadata[bootstrap.ROLE] == "worker"
    assert metadata[bootstrap.IMAGE] == "127.0.0.1:5000/iris-worker:1"
    assert metadata[bootstrap.CONTROLLER_ADDRESS] == "http://10.0.0.2:10000"
    worker = json.loads(metadata[bootstrap.WORKER])
    assert worker["slice_id"] == "iris-tpu-v5e-16-0"
    assert worker["task_image"] == "127.0.0.1:5000/task:latest"
    assert worker["attributes"]["device-variant"] == "v5litepod-16"
    assert worker["tokens"] == {str(i): f"token-iris-tpu-v5e-16-0-w{i}" for i in range(4)}


def test_create_slice_spot_network_and_default_runtime_version_from_template(manager, fake) -> None:
    req = request("spot-0", "v4-8", preemptible="false")
    req = attrs.evolve(req, template={"tpu": {"spot": True, "network": "iris-net", "subnetwork": "iris-sub"}})
    manager.create_slice(req)
    node = fake.node("spot-0")
    assert node.scheduling_config.spot and not node.scheduling_config.preemptible
    assert node.runtime_version == "tpu-ubuntu2204-base"
    assert (node.network_config.network, node.network_config.subnetwork) == ("iris-net", "iris-sub")
    assert node.network_config.enable_external_ips


def test_labels_round_trip_exactly_and_gcp_labels_follow_gcp_rules(manager, fake) -> None:
    labels = {"iris.cluster": "My_Cluster.Prod", "iris.scale-group": "tpu_v5e_16", "Team/Owner": "Ann@Example.com", "long": "x" * 80}
    info = manager.create_slice(request("labelled-0", "v5litepod-1", labels=labels))
    assert info.labels == labels
    assert manager.list_slices({"Team/Owner": "Ann@Example.com"})[0].labels == labels
    assert manager.list_slices({"Team/Owner": "ann@example.com"}) == []
    node_labels = dict(fake.node("labelled-0").labels)
    assert node_labels["iris-cluster"] == "my_cluster-prod"
    assert node_labels["team-owner"] == "ann-example-com"
    assert len(node_labels["long"]) <= 63
    assert gcp_label("9lives", key=True) == "x9lives"
    assert gcp_labels({"a": "x" * 63}) == {"a": "x" * 63}
    assert gcp_label("x" * 64, key=False) != gcp_label("x" * 65, key=False)


def test_slice_id_that_is_no_valid_node_id_gets_a_distinct_valid_one(manager, fake) -> None:
    info = manager.create_slice(request("Iris_TPU.0", "v5litepod-1"))
    assert info.slice_id == "Iris_TPU.0"
    assert node_id("Iris_TPU.0") != node_id("iris-tpu-0")
    assert fake.node(node_id("Iris_TPU.0")) is not None
    assert manager.describe_slice("Iris_TPU.0").slice_id == "Iris_TPU.0"


def test_slices_created_by_another_manager_are_listed_and_deleted(tmp_path, fake) -> None:
    first, second = manager_for(tmp_path, fake), manager_for(tmp_path, fake)
    try:
        first.create_slice(request("adopted-0", "v5litepod-8"))
        listed = second.list_slices({"iris.cluster": "c1"})
        assert [s.slice_id for s in listed] == ["adopted-0"]
        assert listed[0].scale_group == "tpu_v5e_16"
        second.delete_slice("adopted-0")
        assert wait_until(lambda: fake.node("adopted-0") is None, 10)
    finally:
        first.close()
        second.close()


def test_slices_are_listed_across_the_scale_groups_zones(tmp_path, fake) -> None:
    ctx = context(tmp_path, fake)
    ctx.options["scale_group_zones"] = ["us-central2-b"]
    manager = TpuVmManager(ctx, fake.client())
    try:
        manager.create_slice(request("east-0", "v4-8", zone="us-central2-b"))
        manager.create_slice(request("west-0", "v5litepod-1"))
        other = TpuVmManager(ctx, fake.client())  # a restarted controller: knows no slice yet
        assert [s.slice_id for s in other.list_slices({"iris.cluster": "c1"})] == ["east-0", "west-0"]
        assert other.describe_slice("east-0").vms[0].address
        other.close()
    finally:
        manager.close()


# --- states -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected", "error"),
    [
        (tpu_v2.Node.State.CREATING, SliceState.BOOTING, ""),
        (tpu_v2.Node.State.RESTARTING, SliceState.BOOTING, ""),
        (tpu_v2.Node.State.REPAIRING, SliceState.FAILED, "repairing"),
        (tpu_v2.Node.State.STOPPED, SliceState.FAILED, "stopped"),
        (tpu_v2.Node.State.TERMINATED, SliceState.FAILED, "terminated"),
        (tpu_v2.Node.State.PREEMPTED, SliceState.PREEMPTED, "preempted"),
        (tpu_v2.Node.State.DELETING, SliceState.DELETING, ""),
        (tpu_v2.Node.State.UNKNOWN, SliceState.FAILED, "UNKNOWN"),
    ],
)
def test_node_state_maps_to_slice_state(manager, fake, state, expected, error) -> None:
    manager.create_slice(request("s-0", "v5litepod-1"))
    fake.set_state("s-0", state)
    assert wait_until(lambda: manager.describe_slice("s-0").state is expected, 10)
    info = manager.describe_slice("s-0")
    assert error.lower() in info.error.lower()
    assert bool(info.error) == bool(error)


def test_create_that_outlasts_create_timeout_returns_booting_then_becomes_ready(tmp_path, booter) -> None:
    with FakeTpuServer(booter, create_delay=1.0) as fake:
        manager = manager_for(tmp_path, fake, create_timeout_seconds=0.1)
        try:
            info = manager.create_slice(request("slow-0"))
            assert info.state is SliceState.BOOTING
            assert len(info.vms) == 4 and not any(vm.address for vm in info.vms)
            assert wait_until(lambda: manager.describe_slice("slow-0").state is SliceState.READY, 20, interval=0.1)
        finally:
            manager.close()


def test_delete_missing_slice_is_not_an_error_and_deleting_twice_is_fine(manager, fake) -> None:
    manager.delete_slice("never-created")
    manager.create_slice(request("d-0", "v5litepod-1"))
    manager.delete_slice("d-0")
    manager.delete_slice("d-0")
    assert wait_until(lambda: manager.describe_slice("d-0") is None, 10, interval=0.05)


# --- errors -------------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    for internal in ("grpc", "_InactiveRpcError", "debug_error_string", "Traceback", "EID"):
        assert internal not in text, text
    return text


def test_quota_error_raises_quota_exceeded_naming_the_node(manager, fake) -> None:
    fake.fail_next_create("quota")
    with pytest.raises(QuotaExceeded) as raised:
        manager.create_slice(request("q-0"))
    text = one_line(raised.value)
    assert "nodes/q-0" in text and "quota" in text.lower()


def test_stockout_raises_capacity_unavailable_for_backoff(manager, fake) -> None:
    fake.fail_next_create("stockout")
    with pytest.raises(CapacityUnavailable) as raised:
        manager.create_slice(request("so-0"))
    assert not isinstance(raised.value, QuotaExceeded)
    text = one_line(raised.value)
    assert "no capacity" in text and ZONE in text and "zones" in text


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("permission", ("permission denied", "tpu.nodes.create", "roles/tpu.admin")),
        ("accelerator", ("rejected", "v5litepod-16", "not available")),
        ("zone", ("not found", ZONE, "zones")),
    ],
)
def test_google_errors_become_one_line_plugin_errors(manager, fake, kind, words) -> None:
    fake.fail_next_create(kind)
    with pytest.raises(PluginError) as raised:
        manager.create_slice(request("e-0"))
    text = one_line(raised.value)
    assert "create TPU node" in text and "nodes/e-0" in text
    for word in words:
        assert word in text, text


def test_unknown_zone_for_real_is_one_line_naming_the_zone(manager) -> None:
    with pytest.raises(PluginError) as raised:
        manager.create_slice(request("z-0", zone="europe-west9-z"))
    text = one_line(raised.value)
    assert "europe-west9-z" in text and "not found" in text


def test_missing_project_worker_image_or_accelerator_name_the_config_field(tmp_path, fake, manager) -> None:
    ctx = context(tmp_path, fake)
    with pytest.raises(PluginError, match="provider.project_id"):
        TpuVmManager(ProviderContext(controller_address="x", state_dir=tmp_path, options={**ctx.options, "project_id": ""}), None)
    bare = TpuVmManager(
        ProviderContext(controller_address="x", state_dir=tmp_path, options={**ctx.options, "docker_image": "", "options": {}}), fake.client()
    )
    with pytest.raises(PluginError, match="provider.options.worker_image"):
        bare.create_slice(request("i-0"))
    bare.close()
    cpu = SliceRequest(slice_id="c-0", scale_group="cpu", attributes={"zone": ZONE})
    with pytest.raises(PluginError, match="scale_groups.cpu.accelerator_variant"):
        manager.create_slice(cpu)


def test_list_failure_is_one_line(manager, fake) -> None:
    import grpc

    fake.fail_next("ListNodes", grpc.StatusCode.PERMISSION_DENIED, "Permission 'tpu.nodes.list' denied on 'projects/test-project/locations/europe-west4-b'")
    with pytest.raises(PluginError) as raised:
        manager.list_slices({})
    assert "tpu.nodes.list" in one_line(raised.value)


# --- API calls per autoscaler cycle -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_list_per_zone_per_cycle_whatever_the_number_of_slices(tmp_path, fake) -> None:
    clock = Clock()
    manager = TpuVmManager(context(tmp_path, fake), fake.client(), clock=clock)
    for i in range(10):
        manager.create_slice(request(f"cycle-{i}", "v5litepod-1"))
    fake.set_state("cycle-0", tpu_v2.Node.State.CREATING)  # some booting: the autoscaler describes them
    fake.set_state("cycle-1", tpu_v2.Node.State.CREATING)
    clock.now += 1.5  # the manager's snapshot is older than list_max_age_seconds: the next cycle lists
    fake.reset_calls()
    listed = manager.list_slices({"iris.cluster": "c1"})
    described = [manager.describe_slice(f"cycle-{i}") for i in range(10)]
    assert len(listed) == 10 and all(d is not None for d in described)
    assert [d.state for d in described[:3]] == [SliceState.BOOTING, SliceState.BOOTING, SliceState.READY]
    assert dict(fake.calls) == {"ListNodes": 1}
    manager.close()


def test_autoscaler_cycle_against_the_fake_costs_one_list_per_zone(tmp_path, fake) -> None:
    config = parse_config(
        {
            "name": "c1",
            "provider": {"type": "gcp", "project_id": PROJECT, "zone": ZONE},
            "scale_groups": {
                "west": {"accelerator_type": "tpu", "accelerator_variant": "v5litepod-1", "min_slices": 3, "max_slices": 3, "zones": [ZONE]},
                "central": {"accelerator_type": "tpu", "accelerator_variant": "v4-8", "min_slices": 2, "max_slices": 2, "zones": ["us-central2-b"]},
            },
        }
    )
    ctx = context(tmp_path, fake)
    ctx.options["scale_group_zones"] = ["us-central2-b", ZONE]
    clock = Clock()
    manager = TpuVmManager(ctx, fake.client(), clock=clock)
    autoscaler = Autoscaler(config.scale_groups, manager, request_for=slice_request_for(config), cluster_name="c1", submit=lambda fn: fn())
    try:
        autoscaler.adopt()
        autoscaler.run_once([], set())
        assert sorted(n.name.rsplit("/", 1)[-1] for n in fake.nodes()) == ["iris-central-0", "iris-central-1", "iris-west-0", "iris-west-1", "iris-west-2"]
        assert {n.runtime_version for n in fake.nodes()} == {"v2-alpha-tpuv5-lite", "tpu-ubuntu2204-base"}
        fake.set_state("iris-west-0", tpu_v2.Node.State.CREATING)  # booting again: described each cycle
        for _ in range(3):
            clock.now += 1.5
            fake.reset_calls()
            autoscaler.run_once([], set())
            assert dict(fake.calls) == {"ListNodes": 2}
    finally:
        autoscaler.shutdown()
        for info in manager.list_slices({"iris.cluster": "c1"}):
            manager.delete_slice(info.slice_id)
        manager.close()


def test_concurrent_describes_share_one_list(tmp_path, fake) -> None:
    import threading

    clock = Clock()
    manager = TpuVmManager(context(tmp_path, fake), fake.client(), clock=clock)
    try:
        for i in range(4):
            manager.create_slice(request(f"par-{i}", "v5litepod-1"))
        clock.now += 5
        fake.reset_calls()
        results: list[object] = []
        start = threading.Barrier(8)

        def describe(i: int) -> None:
            start.wait()
            results.append(manager.describe_slice(f"par-{i % 4}"))

        threads = [threading.Thread(target=describe, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 8 and all(r is not None for r in results)
        assert dict(fake.calls) == {"ListNodes": 1}
    finally:
        manager.close()


def test_vm_manager_of_a_served_gcp_config_finds_slices_in_every_group_zone(tmp_path, fake) -> None:
    """``iris cluster stop`` builds its VmManager this way (lifecycle.open_vm_manager) to delete
    every slice of the cluster: the groups' zones reach it, not only provider.zone."""
    from iris.cluster.lifecycle import open_vm_manager

    config = parse_config(
        {
            "name": "c1",
            "provider": {
                "type": "gcp",
                "project_id": PROJECT,
                "zone": ZONE,
                "options": {"tpu_api_endpoint": fake.address, "worker_image": "127.0.0.1:5000/iris-worker:1"},
            },
            "controller": {"state_dir": str(tmp_path / "state")},
            "scale_groups": {"central": {"accelerator_type": "tpu", "accelerator_variant": "v4-8", "zones": ["us-central2-b"]}},
        }
    )
    creator = manager_for(tmp_path, fake)
    creator.create_slice(request("iris-central-0", "v4-8", zone="us-central2-b"))
    creator.close()
    manager = open_vm_manager(config)
    try:
        assert [s.slice_id for s in manager.list_slices({"iris.cluster": "c1"})] == ["iris-central-0"]
        manager.delete_slice("iris-central-0")
        assert wait_until(lambda: fake.nodes() == [], 10)
    finally:
        manager.close()


def test_controller_with_gcp_provider_brings_up_min_slices_as_tpu_nodes_and_stop_deletes_them(tmp_path, fake) -> None:
    """The controller (ClusterManager, auth on as for every served gcp cluster) builds the TPU
    VmManager through the plugin, its autoscaler creates the group's min_slices as 4-host nodes
    carrying a worker token per host, and stop deletes every node of the cluster."""
    from iris.cluster.manager import ClusterManager

    config = parse_config(
        {
            "name": "ctl",
            "provider": {
                "type": "gcp",
                "project_id": PROJECT,
                "zone": ZONE,
                "options": {"tpu_api_endpoint": fake.address, "worker_image": "127.0.0.1:5000/iris-worker:1"},
            },
            "controller": {"state_dir": str(tmp_path / "state"), "port": 0},
            "scale_groups": {
                "tpu_v5e_16": {
                    "accelerator_type": "tpu",
                    "accelerator_variant": "v5litepod-16",
                    "runtime_version": "v2-alpha-tpuv5-lite",
                    "preemptible": True,
                    "zones": [ZONE],
                    "min_slices": 1,
                    "max_slices": 2,
                }
            },
        }
    )
    manager = ClusterManager(config)
    address = manager.start()
    try:
        assert wait_until(lambda: [n.state for n in fake.nodes()] == [tpu_v2.Node.State.READY], 60, interval=0.1), fake.nodes()
        node = fake.nodes()[0]
        assert node.name.endswith("/nodes/iris-tpu-v5e-16-0")
        assert len(node.network_endpoints) == 4
        worker = json.loads(node.metadata[bootstrap.WORKER])
        assert sorted(worker["tokens"]) == ["0", "1", "2", "3"] and all(worker["tokens"].values())
        assert node.metadata[bootstrap.CONTROLLER_ADDRESS] == address
        assert node.labels["iris-cluster"] == "ctl"
    finally:
        manager.stop()
    assert wait_until(lambda: fake.nodes() == [], 10)
