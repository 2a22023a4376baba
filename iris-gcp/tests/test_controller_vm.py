"""The controller VM on the real ``google.cloud.compute_v1`` client against the fake Compute API.

API level (the fake boots nothing): create, find by label, restart, delete, the metadata the VM
gets, and each Google error as one line. End to end: ``iris cluster controller start|status|
restart|stop`` and ``iris --config C job list`` with the controller placed on a fake VM whose
"boot" runs the real controller process on the VM's own loopback address, reached through a
real sshd there (the ``ssh`` tunnel). What is not covered here is the container the startup
script starts (the hosts engineer's booter runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("google.cloud.compute_v1", reason="needs google-cloud-compute (an iris-gcp dependency)")

from iris.cluster.lifecycle import config_digest
from iris.config import parse_config
from iris.errors import ConfigError, IrisError, OtherConfigError
from iris.testing.polling import wait_until
from iris.testing.sshd import SshdUnavailable, SshServer, ensure_sshd
from iris_gcp import bootstrap
from iris_gcp.compute_errors import ComputeError, ComputeQuotaExceeded
from iris_gcp.controller_vm import ControllerVm
from iris_gcp.testing.boot import AddressOnlyBooter, HostSpec
from iris_gcp.testing.fake_compute import FakeCompute
from iris_gcp.testing.gcs_pytest import fake_gcs, gcs_bucket  # noqa: F401 (fixtures)

PROJECT, ZONE = "proj", "europe-west4-a"
REGION = "europe-west4"
IRIS = str(Path(sys.executable).parent / "iris")


def gcp_config(endpoint: str, name: str = "c1", **extra: Any) -> Any:
    data = {
        "name": name,
        "provider": {"type": "gcp", "project_id": PROJECT, "zone": ZONE, "options": {"compute_api_endpoint": endpoint}},
        "controller": {"vm": {"enabled": True, "image": "127.0.0.1:5000/iris-controller:test", "machine_type": "n2-standard-2"}},
    }
    for key, value in extra.items():
        data[key] = value
    return parse_config(data)


@pytest.fixture
def booter() -> Iterator[AddressOnlyBooter]:
    booter = AddressOnlyBooter(first=220, last=230)
    yield booter
    booter.close()


@pytest.fixture
def fake(booter: AddressOnlyBooter) -> Iterator[FakeCompute]:
    with FakeCompute(booter, operation_delay=0.1) as fake:
        yield fake


def progress_lines() -> tuple[list[str], Any]:
    lines: list[str] = []
    return lines, lines.append


def test_controller_vm_create_find_restart_delete_by_label(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    config = gcp_config(fake.endpoint)
    vm = ControllerVm(config)
    assert vm.find() is None
    lines, progress = progress_lines()
    placement = vm.start(config, progress)
    assert placement.url == "http://127.0.0.220:10000" and placement.http_url == "http://127.0.0.220:10001"
    assert placement.state == "RUNNING" and placement.where == f"instance iris-c1-controller in {ZONE}"
    assert "get-serial-port-output iris-c1-controller" in placement.logs_hint
    assert any("creating the controller VM iris-c1-controller" in line for line in lines)
    created = fake.instance(PROJECT, ZONE, "iris-c1-controller")
    assert created is not None and created["labels"] == {"iris-cluster": "c1", "iris-role": "controller", "iris-config": config_digest(config)[:16]}
    assert created["machineType"].endswith("/machineTypes/n2-standard-2")
    # on the static internal address reserved for it first, which the VM holds
    assert created["networkInterfaces"][0]["networkIP"] == "127.0.0.220"
    assert any("reserving the controller's internal address iris-c1-controller-ip in europe-west4" in line for line in lines)
    address = fake.address(PROJECT, REGION, "iris-c1-controller-ip")
    assert address["address"] == "127.0.0.220" and address["addressType"] == "INTERNAL" and address["status"] == "IN_USE"
    assert address["users"] == [created["selfLink"]] and address["subnetwork"].endswith(f"/regions/{REGION}/subnetworks/default")
    assert ControllerVm(config).find() == placement  # found again by label, from another object
    assert vm.start(config, progress) == placement and fake.calls.count("insert") == 1  # idempotent
    assert ControllerVm(gcp_config(fake.endpoint, name="c2")).find() is None  # another cluster's VM is not this one

    restarted = vm.restart(progress)
    assert restarted.state == "RUNNING" and len(booter.booted) == 2 and fake.calls.count("reset") == 1

    assert vm.stop(progress) is True
    assert fake.instance(PROJECT, ZONE, "iris-c1-controller") is None
    assert not booter.running(f"{ZONE}/iris-c1-controller")
    assert vm.find() is None and vm.stop(progress) is False
    # the address stays (the slices' workers know it), RESERVED, and no other machine gets it
    assert fake.address(PROJECT, REGION, "iris-c1-controller-ip")["status"] == "RESERVED"
    assert booter.boot(HostSpec("someone-else")) != "127.0.0.220"
    assert vm.release(progress) is True and fake.address(PROJECT, REGION, "iris-c1-controller-ip") is None
    assert vm.release(progress) is False


def test_controller_vm_lost_and_created_again_gets_the_same_address(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    """The VM is deleted outside Iris (lost); ``start`` creates a new one on the reserved address,
    which is where the workers it was given to look for the controller."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    config = gcp_config(fake.endpoint)
    first = ControllerVm(config).start(config, lambda line: None)
    instances = compute_v1.InstancesClient(credentials=AnonymousCredentials(), client_options={"api_endpoint": fake.endpoint})
    instances.delete_unary(project=PROJECT, zone=ZONE, instance="iris-c1-controller")
    assert wait_until(lambda: fake.instance(PROJECT, ZONE, "iris-c1-controller") is None, 10)
    others = [booter.boot(HostSpec(f"tpu-host-{i}")) for i in range(3)]  # machines made meanwhile get other addresses
    assert "127.0.0.220" not in others
    lines, progress = progress_lines()
    again = ControllerVm(config).start(config, progress)
    assert again.url == first.url == "http://127.0.0.220:10000"
    assert fake.calls.count("insert") == 2 and fake.calls.count("addresses.insert") == 1  # the address was reused
    assert not any("reserving" in line for line in lines)


def test_controller_vm_address_held_by_another_instance_is_one_line_naming_it(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    config = gcp_config(fake.endpoint)
    vm = ControllerVm(config)
    address = vm.reserve_address(lambda line: None)
    instances = compute_v1.InstancesClient(credentials=AnonymousCredentials(), client_options={"api_endpoint": fake.endpoint})
    squatter = compute_v1.Instance(
        name="squatter", machine_type=f"zones/{ZONE}/machineTypes/e2-small",
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default", network_i_p=address)],
    )  # fmt: skip
    instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=squatter)
    assert wait_until(lambda: (fake.instance(PROJECT, ZONE, "squatter") or {}).get("status") == "RUNNING", 10)
    with pytest.raises(ComputeError) as caught:
        vm.start(config, lambda line: None)
    message = str(caught.value)
    assert message.startswith(f"cannot create the controller VM: its address {address} (address iris-c1-controller-ip in {REGION}) "
                              f"is in use by projects/{PROJECT}/zones/{ZONE}/instances/squatter;")  # fmt: skip
    assert "\n" not in message and fake.instance(PROJECT, ZONE, "iris-c1-controller") is None
    with pytest.raises(ComputeError, match="is already being used by 'projects/proj/zones/europe-west4-a/instances/squatter'"):
        vm.release(lambda line: None)  # an address in use is not released


def test_controller_vm_start_with_another_config_of_the_same_name_is_refused(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    config = gcp_config(fake.endpoint)
    ControllerVm(config).start(config, lambda line: None)
    same = gcp_config(fake.endpoint, controller={"state_dir": "/elsewhere", "port": 1234,
                                                 "vm": {"enabled": True, "image": "127.0.0.1:5000/iris-controller:test", "machine_type": "n2-standard-2"}})  # fmt: skip
    assert ControllerVm(same).start(same, lambda line: None).url.startswith("http://127.0.0.220:")  # only local fields differ
    other = gcp_config(fake.endpoint, controller={"vm": {"enabled": True, "image": "127.0.0.1:5000/iris-controller:other"}})
    with pytest.raises(ConfigError) as caught:
        ControllerVm(other).start(other, lambda line: None)
    message = str(caught.value)
    theirs, ours = config_digest(config)[:12], config_digest(other)[:12]
    assert message.startswith(f"name: 'c1': the controller VM iris-c1-controller in project 'proj', zone '{ZONE}' runs another config "
                              f"with this name (config digest {theirs}, started by ")  # fmt: skip
    assert f"not this one (digest {ours}); give this config its own name" in message
    assert "--format='value(metadata.items.iris-config)'" in message and "\n" not in message
    assert message.endswith("; if this is your cluster and you edited its config, apply the edit with "
                            "`iris cluster --config PATH restart --force` (or stop it with `stop --force`)")  # fmt: skip
    for act in (lambda vm: vm.find(), lambda vm: vm.restart(lambda line: None), lambda vm: vm.stop(lambda line: None)):
        with pytest.raises(ConfigError, match="runs another config with this name"):  # run, job, status, restart, stop
            act(ControllerVm(other))
    assert fake.calls.count("insert") == 1 and "delete" not in fake.calls and "reset" not in fake.calls
    assert fake.instance(PROJECT, ZONE, "iris-c1-controller")["status"] == "RUNNING"
    assert ControllerVm(same).find() is not None  # the same config still finds it


def test_controller_vm_restart_with_an_edited_config_sets_its_metadata_and_resets_it(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    """``restart --force``: the user edited their config; the VM's config metadata, digest and
    label become the edit's before the reset, so the VM boots with it and it is the recorded
    config from then on (the old one is refused). ``stop(force=True)`` stops it whatever it runs."""
    group = {"accelerator_type": "tpu", "accelerator_variant": "v5litepod-16", "zones": [ZONE], "runtime_version": "v2-alpha-tpuv5-lite"}
    config = gcp_config(fake.endpoint, scale_groups={"tpu": {**group, "max_slices": 1}})
    ControllerVm(config).start(config, lambda line: None)
    created = fake.instance(PROJECT, ZONE, "iris-c1-controller")
    old_fingerprint = created["metadata"]["fingerprint"]
    edited = gcp_config(fake.endpoint, scale_groups={"tpu": {**group, "max_slices": 4}})
    with pytest.raises(OtherConfigError, match="apply the edit with `iris cluster --config PATH restart --force`"):
        ControllerVm(edited).restart(lambda line: None)
    assert "setMetadata" not in fake.calls and "reset" not in fake.calls

    lines, progress = progress_lines()
    placement = ControllerVm(edited).restart(progress, config=edited)
    assert placement.state == "RUNNING" and placement.url == "http://127.0.0.220:10000"
    assert [c for c in fake.calls if c in ("setMetadata", "setLabels", "reset")] == ["setMetadata", "setLabels", "reset"]
    assert any("setting the controller VM iris-c1-controller's config to this one" in line for line in lines)
    instance = fake.instance(PROJECT, ZONE, "iris-c1-controller")
    metadata = {i["key"]: i["value"] for i in instance["metadata"]["items"]}
    digest = config_digest(edited)
    assert metadata["iris-config-digest"] == digest != config_digest(config)
    assert yaml.safe_load(metadata[bootstrap.CONFIG])["scale_groups"]["tpu"]["max_slices"] == 4
    assert metadata[bootstrap.STARTUP_SCRIPT] and metadata[bootstrap.ROLE] == "controller"
    assert instance["labels"]["iris-config"] == digest[:16] and instance["metadata"]["fingerprint"] != old_fingerprint
    booted = booter.booted[-1]  # the reset booted the VM again: with the new metadata
    assert len(booter.booted) == 2 and booted.metadata["iris-config-digest"] == digest
    assert yaml.safe_load(booted.metadata[bootstrap.CONFIG])["scale_groups"]["tpu"]["max_slices"] == 4
    assert ControllerVm(edited).find() == placement
    with pytest.raises(OtherConfigError, match="runs another config with this name"):
        ControllerVm(config).find()  # the old config is the other one now

    # GCE's optimistic locking, as the fake has it: a stale fingerprint is refused
    from google.api_core import exceptions as gexc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    instances = compute_v1.InstancesClient(credentials=AnonymousCredentials(), client_options={"api_endpoint": fake.endpoint})
    with pytest.raises(gexc.PreconditionFailed, match="fingerprint"):
        instances.set_metadata_unary(project=PROJECT, zone=ZONE, instance="iris-c1-controller",
                                     metadata_resource=compute_v1.Metadata(fingerprint=old_fingerprint, items=[]))  # fmt: skip

    with pytest.raises(OtherConfigError):
        ControllerVm(config).stop(progress)
    assert ControllerVm(config).find(force=True) == placement
    assert ControllerVm(config).stop(progress, force=True) is True
    assert fake.instance(PROJECT, ZONE, "iris-c1-controller") is None and not booter.running(f"{ZONE}/iris-c1-controller")


def test_controller_vm_stopped_by_hand_is_started_again_not_recreated(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    config = gcp_config(fake.endpoint)
    vm = ControllerVm(config)
    vm.start(config, lambda line: None)
    instances = compute_v1.InstancesClient(credentials=AnonymousCredentials(), client_options={"api_endpoint": fake.endpoint})
    instances.stop_unary(project=PROJECT, zone=ZONE, instance="iris-c1-controller")
    assert wait_until(lambda: fake.instance(PROJECT, ZONE, "iris-c1-controller")["status"] == "TERMINATED", 10)
    assert not booter.running(f"{ZONE}/iris-c1-controller")
    lines, progress = progress_lines()
    placement = vm.start(config, progress)
    assert placement.state == "RUNNING" and booter.running(f"{ZONE}/iris-c1-controller")
    assert fake.calls.count("insert") == 1 and fake.calls.count("start") == 1
    assert any("starting the stopped controller VM iris-c1-controller" in line for line in lines)
    instances.stop_unary(project=PROJECT, zone=ZONE, instance="iris-c1-controller")
    assert wait_until(lambda: fake.instance(PROJECT, ZONE, "iris-c1-controller")["status"] == "TERMINATED", 10)
    assert vm.restart(progress).state == "RUNNING" and fake.calls.count("start") == 2 and fake.calls.count("reset") == 0


def test_controller_vm_metadata_carries_the_config_adapted_for_the_vm(fake: FakeCompute, booter: AddressOnlyBooter) -> None:
    config = gcp_config(fake.endpoint, controller={"port": 0, "state_dir": "/home/me/state", "vm": {
        "enabled": True, "image": "img:1", "port": 12000}})  # fmt: skip
    ControllerVm(config).start(config, lambda line: None)
    metadata = booter.booted[0].metadata
    assert metadata[bootstrap.ROLE] == "controller" and metadata[bootstrap.IMAGE] == "img:1"
    assert metadata[bootstrap.STARTUP_SCRIPT] == bootstrap.startup_script()
    assert metadata[bootstrap.CONTROLLER_PORT] == "12000"
    served = yaml.safe_load(metadata[bootstrap.CONFIG])["controller"]
    assert (served["host"], served["port"], served["http_port"]) == ("0.0.0.0", 12000, 12001)
    assert served["state_dir"] == "/var/lib/iris/controller" and served["vm"]["enabled"] is False
    created = fake.instance(PROJECT, ZONE, "iris-c1-controller")
    assert created["serviceAccounts"][0]["scopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert created["disks"][0]["initializeParams"]["sourceImage"] == "projects/debian-cloud/global/images/family/debian-12"


@pytest.mark.parametrize(
    ("method", "kind", "error_type", "says"),
    [
        ("insert", "permission", ComputeError, "permission denied on instance iris-c1-controller in project 'proj', zone 'europe-west4-a'; your account needs roles/compute.instanceAdmin.v1"),
        ("insert", "quota", ComputeQuotaExceeded, "quota exceeded in project 'proj', zone 'europe-west4-a'; request more at https://console.cloud.google.com/iam-admin/quotas?project=proj"),
        ("insert", "bad_zone", ComputeError, "zone 'europe-west4-a' is not valid; check provider.zone"),
        ("insert", "bad_machine_type", ComputeError, "the machine type is not available in zone 'europe-west4-a'; check controller.vm.machine_type"),
        ("list", "not_found", ComputeError, "was not found in project 'proj'"),
        ("operations.wait", "permission", ComputeError, "permission denied"),
    ],
)  # fmt: skip
def test_controller_vm_google_errors_are_one_line_naming_resource_and_fix(
    fake: FakeCompute, method: str, kind: str, error_type: type, says: str
) -> None:
    fake.operation_delay = 0.3  # so that the create waits on its operation
    config = gcp_config(fake.endpoint)
    fake.fail_next(method, kind)
    with pytest.raises(error_type) as caught:
        ControllerVm(config).start(config, lambda line: None)
    message = str(caught.value)
    assert says in message and "\n" not in message and "Traceback" not in message


def test_controller_vm_unknown_zone_and_config_errors_name_the_field(fake: FakeCompute) -> None:
    config = gcp_config(fake.endpoint)
    config.provider.zone = "nowhere-9z"
    with pytest.raises(ComputeError, match="zone 'nowhere-9z' does not exist in project 'proj'; check provider.zone"):
        ControllerVm(config).start(config, lambda line: None)
    no_image = gcp_config(fake.endpoint, controller={"vm": {"enabled": True}})
    with pytest.raises(ConfigError, match="controller.vm.image: empty"):
        ControllerVm(no_image).start(no_image, lambda line: None)
    no_project = gcp_config(fake.endpoint)
    no_project.provider.project_id = ""
    with pytest.raises(ConfigError, match="provider.project_id: empty"):
        ControllerVm(no_project)


def test_controller_vm_unreachable_api_is_one_line() -> None:
    config = gcp_config("http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ComputeError, match="the Compute API is unreachable .*compute_api_endpoint"):
        ControllerVm(config).find()


# --- end to end: the controller placed on a fake VM, reached through ssh --------------------

VM_ADDRESS = "127.0.0.71"


class ControllerProcessBooter:
    """Boots a controller 'VM' on ``VM_ADDRESS`` as the real controller process: the VM's
    ``iris-config`` metadata written to a file and served with ``--host`` the VM's address, as
    the startup script runs the controller container."""

    def __init__(self, root: Path):
        self.root = root
        self.processes: dict[str, subprocess.Popen] = {}
        self.boots = 0

    def reserve(self, address: str = "") -> str:  # the controller's static address: the one VM address there is
        assert address in ("", VM_ADDRESS)
        return VM_ADDRESS

    def release(self, address: str) -> None:
        assert address == VM_ADDRESS

    def boot(self, host: HostSpec) -> str:
        assert host.address in ("", VM_ADDRESS), host.address
        if host.host_id in self.processes:
            return VM_ADDRESS
        assert host.metadata[bootstrap.ROLE] == "controller" and host.metadata[bootstrap.STARTUP_SCRIPT]
        disk = self.root / "disk"  # the VM's boot disk: kept across a reset
        disk.mkdir(exist_ok=True)
        path = disk / "config.yaml"  # the startup script's /etc/iris/config.yaml
        path.write_text(host.metadata[bootstrap.CONFIG])
        log = open(disk / "controller.log", "ab")
        self.processes[host.host_id] = subprocess.Popen(
            [sys.executable, "-m", "iris.cluster.controller.main", "serve", "--config", str(path), "--host", VM_ADDRESS,
             "--state-dir", str(disk / "state")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.boots += 1
        return VM_ADDRESS

    def halt(self, host_id: str) -> None:
        proc = self.processes.pop(host_id, None)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def running(self, host_id: str) -> bool:
        proc = self.processes.get(host_id)
        return proc is not None and proc.poll() is None

    def close(self) -> None:
        for host_id in list(self.processes):
            self.halt(host_id)


@pytest.fixture(scope="module")
def vm_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    try:
        ensure_sshd()
    except SshdUnavailable as exc:
        pytest.skip(str(exc))
    with SshServer(tmp_path_factory.mktemp("vm-sshd"), address=VM_ADDRESS) as server:
        yield server


def free_port(address: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def cluster_data(path: Path, endpoint: str, sshd: SshServer, state_dir: Path, *, name: str = "vmtest", provider: str = "gcp",
                 tpu: str = "") -> dict:  # fmt: skip
    return {
        "name": name,
        "provider": {
            "type": provider, "project_id": PROJECT, "zone": ZONE, "ssh_user": sshd.user, "ssh_key": str(sshd.key_path),
            "options": {"compute_api_endpoint": endpoint, "ssh_port": sshd.port, "ssh_known_hosts": str(path.parent / "known_hosts"),
                        "connect_timeout": 5, "tpu_api_endpoint": tpu, "worker_image": "127.0.0.1:5000/iris-worker:test"},
        },
        "controller": {"state_dir": str(state_dir), "http_port": free_port(VM_ADDRESS),
                       "vm": {"enabled": True, "image": "127.0.0.1:5000/iris-controller:test", "port": free_port(VM_ADDRESS)}},
        "scale_groups": {"tpu": {"accelerator_type": "tpu", "accelerator_variant": "v5litepod-16", "zones": [ZONE],
                                 "runtime_version": "v2-alpha-tpuv5-lite", "min_slices": 0, "max_slices": 1}},
    }  # fmt: skip


def iris(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("IRIS_CONTROLLER_ADDRESS", "IRIS_TOKEN")}
    env["HOME"] = str(home)
    return subprocess.run([IRIS, *args], cwd=home, env=env, capture_output=True, text=True, timeout=timeout)


def test_cluster_commands_place_the_controller_on_a_vm_reach_it_through_ssh_and_stop_removes_everything(
    tmp_path: Path, vm_sshd: SshServer
) -> None:
    """``iris cluster start`` creates the controller VM (the real controller process on the VM's
    address, with the gcp provider against the fake TPU API); every later command finds it by
    label and reaches it through ssh; ``stop`` deletes the VM and the cluster's TPU slice."""
    from iris_gcp.testing.fake_tpu import FakeTpuServer

    home = tmp_path / "home"
    home.mkdir()
    booter = ControllerProcessBooter(tmp_path)
    tpu_hosts = AddressOnlyBooter(first=120, last=140)  # the TPU hosts are not booted here (the hosts' booter does that)
    with FakeCompute(booter, operation_delay=0.2) as fake, FakeTpuServer(tpu_hosts, create_delay=0.05, delete_delay=0.05) as tpu:
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(cluster_data(path, fake.endpoint, vm_sshd, tmp_path / "client-state", tpu=tpu.address)))
        config = str(path)
        try:
            started = iris("cluster", "--config", config, "start", home=home)
            assert started.returncode == 0, started.stderr + (tmp_path / "disk" / "controller.log").read_text(errors="replace")
            vm_url = started.stdout.strip()
            assert vm_url.startswith(f"http://{VM_ADDRESS}:")
            assert f"on instance iris-vmtest-controller in {ZONE}" in started.stderr
            assert "creating the controller VM iris-vmtest-controller" in started.stderr
            assert (tmp_path / "client-state" / "owner.token").exists()  # this user's admin token, kept here

            created = iris("cluster", "--config", config, "slice", "create", "--scale-group", "tpu", home=home)  # through the tunnel
            assert created.returncode == 0, created.stderr
            assert wait_until(lambda: len(tpu.nodes()) == 1, 30, interval=0.1)  # made by the controller on the VM

            status = iris("cluster", "--config", config, "status", "--json", home=home)
            assert status.returncode == 0, status.stderr
            report = json.loads(status.stdout)
            assert report["controller"]["healthy"] and report["controller"]["url"] == vm_url
            assert report["controller"]["where"].startswith("instance iris-vmtest-controller")
            assert [(s["slice_id"], s["vms"], s["unknown_to_controller"]) for s in report["slices"]] == [(created.stdout.strip(), 4, False)]

            jobs = iris("--config", config, "job", "list", home=home)  # no URL given: found by label, through the tunnel
            assert jobs.returncode == 0, jobs.stderr

            restarted = iris("cluster", "--config", config, "controller", "restart", home=home)  # returns once healthy again
            assert restarted.returncode == 0, restarted.stderr
            assert restarted.stdout.strip() == vm_url and booter.boots == 2 and fake.calls.count("reset") == 1

            # the user edits their config: refused until restart --force applies it to the VM
            data = yaml.safe_load(path.read_text())
            data["scale_groups"]["tpu"]["max_slices"] = 2
            path.write_text(yaml.safe_dump(data))
            for args in (("cluster", "--config", config, "controller", "restart"), ("--config", config, "job", "list")):
                refused = iris(*args, home=home)
                assert refused.returncode == 2 and "runs another config with this name" in refused.stderr, refused.stderr
                assert "restart --force`" in refused.stderr and "Traceback" not in refused.stderr
            forced = iris("cluster", "--config", config, "controller", "restart", "--force", home=home)
            assert forced.returncode == 0, forced.stderr
            assert forced.stdout.strip() == vm_url and booter.boots == 3 and fake.calls.count("reset") == 2
            assert "it runs this config from now on" in forced.stderr
            on_disk = yaml.safe_load((tmp_path / "disk" / "config.yaml").read_text())  # what the VM booted with
            assert on_disk["scale_groups"]["tpu"]["max_slices"] == 2
            status = iris("cluster", "--config", config, "status", "--json", home=home)
            assert status.returncode == 0, status.stderr
            groups = json.loads(status.stdout)["controller"]["scale_groups"]
            assert [(g["name"], g["max_slices"]) for g in groups] == [("tpu", 2)]

            stopped = iris("cluster", "--config", config, "stop", home=home)
            assert stopped.returncode == 0, stopped.stderr
            assert "controller stopped" in stopped.stderr and "deleted 1 slice(s)" in stopped.stderr
            assert fake.instance(PROJECT, ZONE, "iris-vmtest-controller") is None
            assert fake.address(PROJECT, REGION, "iris-vmtest-controller-ip") is None  # released once the slices were gone
            assert not booter.processes
            assert wait_until(lambda: tpu.nodes() == [], 10)
            gone = iris("cluster", "--config", config, "controller", "status", home=home)
            assert gone.returncode == 1 and "not running" in gone.stdout
        finally:
            booter.close()
            tpu_hosts.close()


def test_cluster_manager_connect_and_controller_tunnel_reach_the_controller_vm(tmp_path: Path, vm_sshd: SshServer) -> None:
    """Seed 004's ``ClusterManager(config).connect()`` starts the controller VM and yields the
    local end of the tunnel; seeds 000/002's ``controller_tunnel(zone, project)`` finds the VM by
    label; leaving ``connect()`` deletes the VM and the cluster's slices."""
    from iris.auth import read_token_file
    from iris.client import IrisClient
    from iris.cluster.manager import ClusterManager
    from iris.cluster.vm.debug import controller_tunnel
    from iris_gcp.testing.fake_tpu import FakeTpuServer

    booter = ControllerProcessBooter(tmp_path)
    tpu_hosts = AddressOnlyBooter(first=141, last=160)
    with FakeCompute(booter, operation_delay=0.2) as fake, FakeTpuServer(tpu_hosts, create_delay=0.05, delete_delay=0.05) as tpu:
        data = cluster_data(tmp_path / "c.yaml", fake.endpoint, vm_sshd, tmp_path / "client-state", name="vmtest2", tpu=tpu.address)
        config = parse_config(data)
        try:
            manager = ClusterManager(config)
            with manager.connect() as url:
                assert url.startswith("http://127.0.0.1:")  # the local end of the ssh tunnel
                token = read_token_file(tmp_path / "client-state" / "owner.token")
                assert token and manager.owner_token == token
                with IrisClient.remote(url, token=token) as client:
                    assert client.list_jobs() == []
                    client.create_slice("tpu")
                assert wait_until(lambda: len(tpu.nodes()) == 1, 30, interval=0.1)
                ssh = {k: data["provider"][k] for k in ("ssh_user", "ssh_key")} | data["provider"]["options"]
                with controller_tunnel(ZONE, PROJECT, cluster="vmtest2", tunnel_options=ssh, compute_api_endpoint=fake.endpoint) as seed_url:
                    with IrisClient.remote(seed_url, token=token) as client:
                        assert [w for w in client.list_workers() if not w.lost] == []
            assert fake.instance(PROJECT, ZONE, "iris-vmtest2-controller") is None  # leaving connect() deleted the VM
            assert not booter.processes
            assert wait_until(lambda: tpu.nodes() == [], 10)  # and every slice of the cluster
            with pytest.raises(IrisError, match="no Iris controller VM of cluster 'vmtest2' in project 'proj'"):
                with controller_tunnel(ZONE, PROJECT, cluster="vmtest2", compute_api_endpoint=fake.endpoint):
                    pass
        finally:
            booter.close()
            tpu_hosts.close()


def test_controller_is_placed_only_when_vm_enabled_and_the_provider_can(fake: FakeCompute) -> None:
    from iris.cluster.lifecycle import controller_host
    from iris.cluster.manager import make_local_config

    config = gcp_config(fake.endpoint)
    host = controller_host(config)
    assert isinstance(host, ControllerVm) and host.name == "iris-c1-controller"
    assert controller_host(make_local_config(config, process_workers=True)) is None  # --local: a process here
    config.controller.vm.enabled = False
    assert controller_host(config) is None
    local = parse_config({"provider": {"type": "local"}, "controller": {"vm": {"enabled": True}}})
    with pytest.raises(IrisError, match="provider 'local' cannot place the controller on a VM; set controller.vm.enabled: false"):
        controller_host(local)


def test_controller_vm_deleted_and_started_again_restores_every_job_from_gcs(tmp_path: Path, vm_sshd: SshServer, gcs_bucket: Any) -> None:
    """The controller checkpoints to (fake) GCS; its VM is deleted with its disk; a new VM
    restores the checkpoint before it serves, so the job submitted before is there again."""
    from iris.client import IrisClient
    from iris.cluster.lifecycle import connect_controller, start_cluster, stop_cluster, stop_controller
    from iris.job.types import Entrypoint, ResourceSpec, tpu_device
    from iris_gcp.testing.fake_tpu import FakeTpuServer

    booter = ControllerProcessBooter(tmp_path)  # its controller process inherits STORAGE_EMULATOR_HOST (the fake GCS)
    tpu_hosts = AddressOnlyBooter(first=161, last=180)
    with FakeCompute(booter, operation_delay=0.2) as fake, FakeTpuServer(tpu_hosts, create_delay=0.05, delete_delay=0.05) as tpu:
        data = cluster_data(tmp_path / "c.yaml", fake.endpoint, vm_sshd, tmp_path / "client-state", name="vmtest3", tpu=tpu.address)
        data["controller"]["checkpoint_url"] = f"{gcs_bucket.url}/checkpoints"
        config = parse_config(data)
        try:
            info = start_cluster(config)
            with connect_controller(config, info) as url, IrisClient.remote(url, token=info.token) as client:
                job = client.submit(Entrypoint.from_command(["echo", "hi"]), name="waits-for-a-tpu",
                                    resources=ResourceSpec(device=tpu_device("v5litepod-16")))  # fmt: skip
                job_id = job.job_id
            assert stop_controller(config)  # deletes the VM; the controller checkpoints as it stops
            assert fake.address(PROJECT, REGION, "iris-vmtest3-controller-ip")["status"] == "RESERVED"  # kept for the slices
            assert fake.instance(PROJECT, ZONE, "iris-vmtest3-controller") is None and not booter.processes
            shutil.rmtree(tmp_path / "disk")  # the boot disk went with the VM (auto_delete)

            again = start_cluster(config)  # a new VM, an empty state directory: restored from GCS
            assert booter.boots == 2 and fake.calls.count("insert") == 2
            with connect_controller(config, again) as url, IrisClient.remote(url, token=again.token) as client:
                assert job_id in [j.job_id for j in client.list_jobs()]
        finally:
            try:
                stop_cluster(config)
            finally:
                booter.close()
                tpu_hosts.close()
        assert wait_until(lambda: tpu.nodes() == [], 10)


def test_waiting_for_a_controller_vm_that_never_answers_ends_naming_where_to_look(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from iris.cluster.lifecycle import ControllerProcessInfo, wait_healthy

    config = gcp_config("http://127.0.0.1:9")
    config.controller.tunnel = "direct"
    free = free_port("127.0.0.9")  # nothing listens there
    info = ControllerProcessInfo(0, f"http://127.0.0.9:{free}", tmp_path, f"http://127.0.0.9:{free}", remote=True, where="instance iris-c1-controller in z")
    with pytest.raises(IrisError) as caught:
        wait_healthy(config, info, timeout=1.0, hint="its boot log: gcloud compute instances get-serial-port-output iris-c1-controller")
    message = str(caught.value)
    assert message.startswith("the controller on instance iris-c1-controller in z did not answer its health check within 1s")
    assert message.endswith("see its boot log: gcloud compute instances get-serial-port-output iris-c1-controller") and "\n" not in message
    assert "iris: waiting for the controller on instance iris-c1-controller in z to answer" in capsys.readouterr().err


def test_commands_against_a_vm_placed_controller_that_is_down_say_so_in_one_line(fake: FakeCompute, tmp_path: Path) -> None:
    """No controller VM: ``job list`` and ``run`` say no controller of this cluster runs, whatever
    ``controller.port`` says (a VM-placed controller is found by label, never at a fixed address)."""
    home = tmp_path / "home"
    home.mkdir()
    path = tmp_path / "c.yaml"
    for port in (0, 10000):
        path.write_text(yaml.safe_dump({
            "name": "down", "provider": {"type": "gcp", "project_id": PROJECT, "zone": ZONE, "options": {"compute_api_endpoint": fake.endpoint}},
            "controller": {"port": port, "vm": {"enabled": True, "image": "img:1"}},
        }))  # fmt: skip
        for argv in (("job", "list"), ("run", "--", "true")):
            result = iris("--config", str(path), *argv, home=home)
            assert result.returncode == 2, (argv, result.stderr)
            assert "no controller of this cluster is running" in result.stderr and "controller.port" not in result.stderr, (argv, port, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_forget_host_key_removes_plain_and_hashed_entries_of_that_host_only(tmp_path: Path) -> None:
    """A new controller VM at the reserved address has a new host key: the old one is forgotten
    (as ssh-keygen -R does), every other line stays."""
    import base64
    import hashlib
    import hmac

    from iris_gcp.controller_vm import forget_host_key

    salt = base64.b64encode(b"0123456789abcdefghij").decode()

    def hashed(name: str) -> str:
        return f"|1|{salt}|{base64.b64encode(hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()).decode()}"

    known = tmp_path / "known_hosts"
    kept = [
        "# a comment\n",
        "[10.0.0.2]:2222 ssh-ed25519 AAAAkept1\n",  # another port
        "10.0.0.3 ssh-ed25519 AAAAkept2\n",
        "@cert-authority [10.0.0.2]:22 ssh-ed25519 AAAAca\n",
        f"{hashed('10.0.0.3')} ssh-ed25519 AAAAkept3\n",
    ]
    gone = ["10.0.0.2 ssh-ed25519 AAAAold1\n", f"{hashed('10.0.0.2')} ecdsa-sha2-nistp256 AAAAold2\n"]
    known.write_text("".join([kept[0], gone[0], *kept[1:3], gone[1], *kept[3:]]))
    assert forget_host_key(known, "10.0.0.2", 22) is True
    assert known.read_text() == "".join(kept)
    assert forget_host_key(known, "10.0.0.2", 22) is False
    assert forget_host_key(known, "10.0.0.2", 2222) is True and "AAAAkept1" not in known.read_text()
    assert forget_host_key(tmp_path / "none", "10.0.0.2", 22) is False
