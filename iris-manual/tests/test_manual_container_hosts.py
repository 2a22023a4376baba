"""The manual provider against hosts that are machines of their own: Docker containers of the
test host image (``iris.testing.container_hosts``), each with its sshd on its own loopback
address, its own process table and a Python with Iris installed (this workspace's, mounted
read-only as a shared drive would hold it). Workers run as processes on the hosts; a host that
dies (``docker kill``) takes them with it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.cluster.controller.service import ControllerServer
from iris.plugin.protocols import SliceInfo, SliceRequest, SliceState
from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry
from iris.testing import wait_until
from iris.testing.container_hosts import ContainerHosts, interpreter_mounts, trusted_certificates
from iris.testing.contracts import VmManagerContract
from iris.testing.docker_engine import DockerEngine
from iris_manual.vm_manager import ManualVmManager

pytestmark = pytest.mark.docker

ADDRESSES = [f"127.0.0.{n}" for n in range(101, 105)]
NAMES = [f"h{i}" for i in range(len(ADDRESSES))]


@pytest.fixture(scope="module")
def hosts(docker_engine: DockerEngine, container_host_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerHosts]:
    env, certificates = trusted_certificates()
    root = tmp_path_factory.mktemp("container-hosts")
    with ContainerHosts(docker_engine, container_host_image, addresses=ADDRESSES, root=root, mounts=[*interpreter_mounts(), *certificates]) as hosts:
        for name in NAMES:
            hosts.start(name)
        yield hosts


def manager_for(hosts: ContainerHosts, controller: ControllerServer, tmp_path: Path, **options: Any) -> ManualVmManager:
    env, _ = trusted_certificates()
    section = {
        "type": "manual",
        "hosts": [f"{h.address}:{h.ssh.port}" for h in hosts.hosts()],
        "ssh_user": "root",
        "ssh_key": str(hosts.user_key),
        "options": {
            "python": sys.executable, "remote_dir": f"{hosts.root}/remote/{{host}}",
            "ssh_known_hosts": str(tmp_path / "known_hosts"), "stop_grace": 5,
            # task environments and uv's downloads shared by the hosts, as on an NFS home
            "env": {**env, "IRIS_ENV_DIR": f"{hosts.root}/envs", "UV_CACHE_DIR": f"{hosts.root}/uv-cache"},
            **options,
        },
    }  # fmt: skip
    context = ProviderContext(controller_address=controller.address, state_dir=tmp_path / "state", options=section, registry=PluginRegistry())
    return ManualVmManager(context)


class TestManualVmManagerOnContainerHostsContract(VmManagerContract):
    """The contract with slices of two hosts; a slice's machines die for real (their containers
    are killed), and are booted again afterwards for the next test."""

    vm_count = 2

    @pytest.fixture
    def vm_manager(self, hosts: ContainerHosts, controller: ControllerServer, tmp_path: Path) -> Iterator[ManualVmManager]:
        manager = manager_for(hosts, controller, tmp_path)
        self._killed: list[str] = []
        yield manager
        for name in self._killed:  # reboot the dead hosts, then remove what their slices left
            hosts.revive(name)
        for info in manager.list_slices({}):
            manager.delete_slice(info.slice_id)
        manager.close()

    def kill_slice(self, vm_manager: Any, info: SliceInfo) -> None:
        by_address = {h.address: h.name for h in self._hosts.hosts()}
        for vm in info.vms:
            self._killed.append(by_address[vm.address])
            self._hosts.kill(by_address[vm.address])

    @pytest.fixture(autouse=True)
    def _keep_hosts(self, hosts: ContainerHosts) -> None:
        self._hosts = hosts


def test_manual_host_killed_reports_its_slice_failed_naming_the_host_and_a_rebooted_one_its_dead_worker(
    hosts: ContainerHosts, controller: ControllerServer, tmp_path: Path
) -> None:
    manager = manager_for(hosts, controller, tmp_path)
    try:
        info = manager.create_slice(SliceRequest(slice_id="dies", scale_group="g", vm_count=1))
        assert info.state is SliceState.READY
        (name,) = [h.name for h in hosts.hosts() if h.address == info.vms[0].address]
        assert any("iris.cluster.worker.main" in p for p in hosts.processes(name))
        hosts.kill(name)
        failed = manager.describe_slice("dies")
        assert failed is not None and failed.state is SliceState.FAILED
        where = next(h.where for h in hosts.hosts() if h.name == name)
        assert failed.error.startswith("a host of the slice does not answer: ") and where in failed.error
        # a manager that never saw the host (a restarted controller) cannot know the slice
        fresh = manager_for(hosts, controller, tmp_path)
        assert fresh.describe_slice("dies") is None
        # the host reboots: its record is there, its worker is not
        hosts.revive(name)
        assert hosts.processes(name) == []
        rebooted = fresh.describe_slice("dies")
        assert rebooted is not None and rebooted.state is SliceState.FAILED and "worker.log" in rebooted.error
        fresh.delete_slice("dies")
        fresh.close()
        assert wait_until(lambda: manager.describe_slice("dies") is None, timeout=30)
        assert list((hosts.root / "remote").glob("*/dies-*")) == []
    finally:
        for host in hosts.hosts():
            if not hosts.running(host.name):
                hosts.revive(host.name)
        manager.delete_slice("dies")
        manager.close()
