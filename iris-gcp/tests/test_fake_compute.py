"""The fake Compute API against the real ``google.cloud.compute_v1`` client: each call the
controller VM uses, the zone operations, and each error it can inject (as Google's bodies)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("google.cloud.compute_v1", reason="needs google-cloud-compute (an iris-gcp dependency)")

from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from iris_gcp.testing.boot import AddressOnlyBooter
from iris_gcp.testing.fake_compute import FakeCompute, InjectedError

PROJECT, ZONE = "proj", "europe-west4-a"


@pytest.fixture
def booter() -> Iterator[AddressOnlyBooter]:
    booter = AddressOnlyBooter(first=200, last=210)
    yield booter
    booter.close()


@pytest.fixture
def fake(booter: AddressOnlyBooter) -> Iterator[FakeCompute]:
    with FakeCompute(booter, operation_delay=0.2) as fake:
        yield fake


def clients(fake: FakeCompute) -> tuple[compute_v1.InstancesClient, compute_v1.ZoneOperationsClient]:
    kwargs = {"credentials": AnonymousCredentials(), "client_options": {"api_endpoint": fake.endpoint}}
    return compute_v1.InstancesClient(**kwargs), compute_v1.ZoneOperationsClient(**kwargs)


def instance(name: str = "vm-1", labels: dict[str, str] | None = None, machine_type: str = "n2-standard-4") -> compute_v1.Instance:
    return compute_v1.Instance(
        name=name,
        machine_type=f"zones/{ZONE}/machineTypes/{machine_type}",
        labels=labels or {"iris-cluster": "c1", "iris-role": "controller"},
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="startup-script", value="#!/bin/bash\necho hi"),
                                            compute_v1.Items(key="iris-role", value="controller")]),  # fmt: skip
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
    )


def done(operations: compute_v1.ZoneOperationsClient, op: compute_v1.Operation) -> compute_v1.Operation:
    while op.status != compute_v1.Operation.Status.DONE:
        op = operations.wait(project=PROJECT, zone=ZONE, operation=op.name)
    return op


def test_fake_compute_insert_boots_instance_with_its_metadata_and_address(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    instances, operations = clients(fake)
    op = instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance())
    assert op.status != compute_v1.Operation.Status.DONE  # the operation takes operation_delay
    assert not booter.booted
    op = done(operations, op)
    assert not op.error.errors
    got = instances.get(project=PROJECT, zone=ZONE, instance="vm-1")
    assert got.status == "RUNNING"
    assert got.network_interfaces[0].network_i_p == "127.0.0.200"
    assert [h.host_id for h in booter.booted] == [f"{ZONE}/vm-1"]
    assert booter.booted[0].metadata == {"startup-script": "#!/bin/bash\necho hi", "iris-role": "controller"}
    assert booter.booted[0].labels == {"iris-cluster": "c1", "iris-role": "controller"}
    assert operations.get(project=PROJECT, zone=ZONE, operation=op.name).status == compute_v1.Operation.Status.DONE


def test_fake_compute_list_filters_by_labels(fake: FakeCompute) -> None:
    instances, operations = clients(fake)
    done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance("a", {"iris-cluster": "one", "iris-role": "controller"})))
    done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance("b", {"iris-cluster": "two", "iris-role": "controller"})))

    def names(text: str) -> list[str]:
        request = compute_v1.ListInstancesRequest(project=PROJECT, zone=ZONE, filter=text)
        return [i.name for i in instances.list(request=request)]

    assert names("labels.iris-cluster=one") == ["a"]
    assert names("labels.iris-role=controller AND labels.iris-cluster=two") == ["b"]
    assert names('(labels.iris-role = "controller") (labels.iris-cluster != "two")') == ["a"]
    assert names("labels.iris-cluster=three") == []
    assert names("") == ["a", "b"]
    aggregated = instances.aggregated_list(request=compute_v1.AggregatedListInstancesRequest(project=PROJECT, filter="labels.iris-cluster=two"))
    assert [(zone, [i.name for i in scoped.instances]) for zone, scoped in aggregated] == [(f"zones/{ZONE}", ["b"])]
    with pytest.raises(gexc.BadRequest, match="filter"):
        names("name=a OR name=b")


def test_fake_compute_delete_halts_and_reset_reboots(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    instances, operations = clients(fake)
    done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance()))
    done(operations, instances.reset_unary(project=PROJECT, zone=ZONE, instance="vm-1"))
    assert len(booter.booted) == 2 and booter.running(f"{ZONE}/vm-1")
    assert instances.get(project=PROJECT, zone=ZONE, instance="vm-1").status == "RUNNING"
    done(operations, instances.delete_unary(project=PROJECT, zone=ZONE, instance="vm-1"))
    assert not booter.running(f"{ZONE}/vm-1")
    with pytest.raises(gexc.NotFound, match="projects/proj/zones/europe-west4-a/instances/vm-1' was not found"):
        instances.get(project=PROJECT, zone=ZONE, instance="vm-1")


def test_fake_compute_refuses_bad_requests_as_google_does(fake: FakeCompute) -> None:
    instances, _ = clients(fake)
    with pytest.raises(gexc.NotFound, match="zones/nowhere-1a' was not found"):
        instances.insert_unary(project=PROJECT, zone="nowhere-1a", instance_resource=instance())
    with pytest.raises(gexc.BadRequest, match="Machine type with name 'n9-huge-1' does not exist"):
        instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance(machine_type="n9-huge-1"))
    with pytest.raises(gexc.BadRequest, match="resource.labels"):
        instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance(labels={"iris.cluster": "x"}))
    with pytest.raises(gexc.BadRequest, match="resource.name"):
        instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance(name="Bad_Name"))
    fake.operation_delay = 0
    instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance())
    with pytest.raises(gexc.Conflict, match="already exists"):
        instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance())


@pytest.mark.parametrize(
    ("kind", "exception", "reason"),
    [
        ("permission", gexc.Forbidden, "forbidden"),
        ("quota", gexc.Forbidden, "quotaExceeded"),
        ("not_found", gexc.NotFound, "notFound"),
        ("bad_zone", gexc.BadRequest, "invalid"),
        ("bad_machine_type", gexc.BadRequest, "invalid"),
    ],
)
def test_fake_compute_injected_error_fails_next_call_only(fake: FakeCompute, kind: str, exception: type, reason: str) -> None:
    instances, operations = clients(fake)
    fake.fail_next("insert", kind)
    with pytest.raises(exception) as caught:
        instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance())
    assert caught.value.errors[0]["reason"] == reason  # parsed from the body's errors[0].reason
    done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance()))


def test_fake_compute_injected_error_on_operations_and_custom_error(fake: FakeCompute) -> None:
    instances, operations = clients(fake)
    op = instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance())
    fake.fail_next("operations.wait", InjectedError(503, "backendError", "try again", "UNAVAILABLE"))
    with pytest.raises(gexc.ServiceUnavailable, match="try again"):
        operations.wait(project=PROJECT, zone=ZONE, operation=op.name)
    assert done(operations, op).status == compute_v1.Operation.Status.DONE
    fake.fail_next("list", "permission")
    with pytest.raises(gexc.Forbidden, match="compute.instances.list"):
        list(instances.list(request=compute_v1.ListInstancesRequest(project=PROJECT, zone=ZONE)))


def test_fake_compute_close_halts_every_host(booter: AddressOnlyBooter) -> None:
    fake = FakeCompute(booter).start()
    instances, _ = clients(fake)
    instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance())
    assert booter.running(f"{ZONE}/vm-1")
    fake.close()
    assert not booter.running(f"{ZONE}/vm-1")


class RebootingBooter(AddressOnlyBooter):
    """Can power-cycle a host in place (as the container booter does)."""

    def __init__(self) -> None:
        super().__init__(first=211, last=215)
        self.rebooted: list[str] = []

    def reboot(self, host_id: str) -> None:
        self.rebooted.append(host_id)


def test_fake_compute_reset_reboots_in_place_when_the_booter_can() -> None:
    booter = RebootingBooter()
    with FakeCompute(booter) as fake:
        instances, operations = clients(fake)
        done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance()))
        done(operations, instances.reset_unary(project=PROJECT, zone=ZONE, instance="vm-1"))
        assert booter.rebooted == [f"{ZONE}/vm-1"] and len(booter.booted) == 1 and booter.running(f"{ZONE}/vm-1")
        got = instances.get(project=PROJECT, zone=ZONE, instance="vm-1")
        assert got.status == "RUNNING" and got.network_interfaces[0].network_i_p == "127.0.0.211"


# --- addresses and the requested networkIP ---------------------------------------------------

REGION = "europe-west4"


def address_clients(fake: FakeCompute) -> tuple[compute_v1.AddressesClient, compute_v1.RegionOperationsClient]:
    kwargs = {"credentials": AnonymousCredentials(), "client_options": {"api_endpoint": fake.endpoint}}
    return compute_v1.AddressesClient(**kwargs), compute_v1.RegionOperationsClient(**kwargs)


def region_done(operations: compute_v1.RegionOperationsClient, op: compute_v1.Operation) -> compute_v1.Operation:
    while op.status != compute_v1.Operation.Status.DONE:
        op = operations.wait(project=PROJECT, region=REGION, operation=op.name)
    return op


def with_ip(name: str, ip: str) -> compute_v1.Instance:
    body = instance(name)
    body.network_interfaces[0].network_i_p = ip
    return body


def test_fake_compute_reserved_internal_address_goes_only_to_the_instance_asking_and_outlives_it(
    fake: FakeCompute, booter: AddressOnlyBooter
) -> None:
    addresses, region_ops = address_clients(fake)
    instances, operations = clients(fake)
    body = compute_v1.Address(name="ctl-ip", address_type="INTERNAL", purpose="GCE_ENDPOINT",
                              subnetwork=f"regions/{REGION}/subnetworks/default", labels={"iris-cluster": "c1"})  # fmt: skip
    op = region_done(region_ops, addresses.insert_unary(project=PROJECT, region=REGION, address_resource=body))
    assert not op.error.errors and op.region.endswith(f"/regions/{REGION}")
    reserved = addresses.get(project=PROJECT, region=REGION, address="ctl-ip")
    assert (reserved.address, reserved.status, list(reserved.users)) == ("127.0.0.200", "RESERVED", [])
    assert [a.name for a in addresses.list(request=compute_v1.ListAddressesRequest(
        project=PROJECT, region=REGION, filter="labels.iris-cluster=c1"))] == ["ctl-ip"]  # fmt: skip
    # an instance that asks for no address never gets the reserved one
    done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance("other")))
    assert instances.get(project=PROJECT, zone=ZONE, instance="other").network_interfaces[0].network_i_p == "127.0.0.201"
    # the one asking for it (by IP) gets it; the address shows IN_USE by it
    done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=with_ip("ctl", "127.0.0.200")))
    assert booter.address(f"{ZONE}/ctl") == "127.0.0.200"
    used = addresses.get(project=PROJECT, region=REGION, address="ctl-ip")
    assert used.status == "IN_USE" and [u.rsplit("/", 1)[-1] for u in used.users] == ["ctl"]
    with pytest.raises(gexc.BadRequest, match="is already being used by 'projects/proj/zones/europe-west4-a/instances/ctl'"):
        addresses.delete_unary(project=PROJECT, region=REGION, address="ctl-ip")
    # deleted, the instance leaves the address RESERVED; a new one asking by the address's URL gets it again
    done(operations, instances.delete_unary(project=PROJECT, zone=ZONE, instance="ctl"))
    assert addresses.get(project=PROJECT, region=REGION, address="ctl-ip").status == "RESERVED"
    again = with_ip("ctl", f"projects/{PROJECT}/regions/{REGION}/addresses/ctl-ip")
    done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=again))
    assert instances.get(project=PROJECT, zone=ZONE, instance="ctl").network_interfaces[0].network_i_p == "127.0.0.200"
    done(operations, instances.delete_unary(project=PROJECT, zone=ZONE, instance="ctl"))
    region_done(region_ops, addresses.delete_unary(project=PROJECT, region=REGION, address="ctl-ip"))
    with pytest.raises(gexc.NotFound, match="addresses/ctl-ip' was not found"):
        addresses.get(project=PROJECT, region=REGION, address="ctl-ip")
    assert "127.0.0.200" not in booter.pool.reserved()


def test_fake_compute_requested_ip_in_use_fails_the_insert_as_google_does(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    instances, operations = clients(fake)
    done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance("first")))
    taken = instances.get(project=PROJECT, zone=ZONE, instance="first").network_interfaces[0].network_i_p
    op = done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=with_ip("second", taken)))
    assert op.http_error_status_code == 400
    assert [(e.code, e.message) for e in op.error.errors] == [
        ("IP_IN_USE_BY_ANOTHER_RESOURCE", f"IP '{taken}' is already being used by another resource.")
    ]
    assert fake.instance(PROJECT, ZONE, "second") is None and not booter.running(f"{ZONE}/second")  # nothing left
    outside = done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=with_ip("third", "127.0.0.99")))
    assert "Requested internal IP address '127.0.0.99' is outside the subnetwork CIDR range" in outside.error.errors[0].message
    with pytest.raises(gexc.BadRequest, match="networkIP': 'not-an-ip'"):
        instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=with_ip("fourth", "not-an-ip"))


def test_fake_compute_addresses_refuse_what_google_refuses(fake: FakeCompute) -> None:
    addresses, region_ops = address_clients(fake)
    with pytest.raises(gexc.BadRequest, match="INTERNAL addresses only"):
        addresses.insert_unary(project=PROJECT, region=REGION, address_resource=compute_v1.Address(name="ext"))
    with pytest.raises(gexc.NotFound, match="regions/nowhere' was not found"):
        addresses.insert_unary(project=PROJECT, region="nowhere", address_resource=compute_v1.Address(name="a", address_type="INTERNAL"))
    body = compute_v1.Address(name="fixed", address_type="INTERNAL", address="127.0.0.205")
    region_done(region_ops, addresses.insert_unary(project=PROJECT, region=REGION, address_resource=body))
    assert addresses.get(project=PROJECT, region=REGION, address="fixed").address == "127.0.0.205"
    with pytest.raises(gexc.Conflict, match="already exists"):
        addresses.insert_unary(project=PROJECT, region=REGION, address_resource=body)
    twice = compute_v1.Address(name="twice", address_type="INTERNAL", address="127.0.0.205")
    op = region_done(region_ops, addresses.insert_unary(project=PROJECT, region=REGION, address_resource=twice))
    assert op.error.errors[0].code == "IP_IN_USE_BY_ANOTHER_RESOURCE" and fake.address(PROJECT, REGION, "twice") is None


class MetadataRecordingBooter(AddressOnlyBooter):
    """A booter that offers ``set_metadata`` (as ``ContainerBooter`` does) and records each call."""

    def __init__(self) -> None:
        super().__init__(first=211, last=215)
        self.updates: list[tuple[str, dict[str, str]]] = []

    def set_metadata(self, host_id: str, metadata: dict[str, str]) -> None:
        self.updates.append((host_id, dict(metadata)))


def test_fake_compute_set_metadata_and_labels_need_the_current_fingerprint_and_reach_the_booter() -> None:
    booter = MetadataRecordingBooter()
    try:
        with FakeCompute(booter, operation_delay=0.1) as fake:
            instances, operations = clients(fake)
            done(operations, instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=instance()))
            got = instances.get(project=PROJECT, zone=ZONE, instance="vm-1")
            assert got.metadata.fingerprint and got.label_fingerprint
            items = [compute_v1.Items(key="iris-role", value="controller"), compute_v1.Items(key="iris-config", value="name: c1\n")]
            op = instances.set_metadata_unary(project=PROJECT, zone=ZONE, instance="vm-1",
                                              metadata_resource=compute_v1.Metadata(fingerprint=got.metadata.fingerprint, items=items))  # fmt: skip
            assert not done(operations, op).error.errors
            after = instances.get(project=PROJECT, zone=ZONE, instance="vm-1")
            assert {i.key: i.value for i in after.metadata.items} == {"iris-role": "controller", "iris-config": "name: c1\n"}
            assert after.metadata.fingerprint != got.metadata.fingerprint
            assert booter.updates == [(f"{ZONE}/vm-1", {"iris-role": "controller", "iris-config": "name: c1\n"})]
            with pytest.raises(gexc.PreconditionFailed, match="fingerprint"):  # the one read before the change
                instances.set_metadata_unary(project=PROJECT, zone=ZONE, instance="vm-1",
                                             metadata_resource=compute_v1.Metadata(fingerprint=got.metadata.fingerprint, items=[]))  # fmt: skip

            request = compute_v1.InstancesSetLabelsRequest(label_fingerprint=got.label_fingerprint, labels={"iris-cluster": "c1", "x": "1"})
            done(operations, instances.set_labels_unary(project=PROJECT, zone=ZONE, instance="vm-1", instances_set_labels_request_resource=request))
            relabelled = instances.get(project=PROJECT, zone=ZONE, instance="vm-1")
            assert dict(relabelled.labels) == {"iris-cluster": "c1", "x": "1"} and relabelled.label_fingerprint != got.label_fingerprint
            with pytest.raises(gexc.PreconditionFailed):
                instances.set_labels_unary(project=PROJECT, zone=ZONE, instance="vm-1", instances_set_labels_request_resource=request)
            listed = instances.list(request=compute_v1.ListInstancesRequest(project=PROJECT, zone=ZONE, filter="labels.x=1"))
            assert {i.name for i in listed} == {"vm-1"}  # found by its new label
    finally:
        booter.close()
