"""The controller VM booted as a fake machine that really boots: the fake Compute API creates
the instance, the container booter (``iris_gcp.testing.hosts``) runs the real startup script in
a Debian container on the instance's own loopback address, which pulls the Iris image from a
local registry and runs the controller with the config from the instance's metadata; the
controller answers its health check through the ssh tunnel to the machine's sshd, survives a
reset with its state, and deleting the instance leaves no container."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

pytest.importorskip("google.cloud.compute_v1", reason="needs google-cloud-compute (an iris-gcp dependency)")

from iris.client import IrisClient
from iris.cluster.lifecycle import ControllerProcessInfo, _owner_token, connect_controller, wait_healthy
from iris.config import parse_config
from iris.job.types import Entrypoint, ResourceSpec
from iris.testing.processes import free_port
from iris_gcp.controller_vm import ControllerVm
from iris_gcp.testing.fake_compute import FakeCompute
from iris_gcp.testing.hosts import ContainerBooter

PROJECT, ZONE = "proj", "europe-west4-a"


def test_controller_vm_boots_runs_the_startup_script_and_answers_through_its_sshd(
    tmp_path: Path, iris_image: str, container_booter: ContainerBooter
) -> None:
    with FakeCompute(container_booter, operation_delay=0.1) as fake:
        data = {
            "name": "boots",
            "provider": {"type": "local", "project_id": PROJECT, "zone": ZONE, "options": {"compute_api_endpoint": fake.endpoint}},
            "controller": {"state_dir": str(tmp_path / "client-state"), "tunnel": "ssh", "http_port": free_port(),
                           "vm": {"enabled": True, "image": iris_image, "port": free_port()}},
            "auth": {"enabled": True},
            "scale_groups": {"idle": {"min_slices": 0, "max_slices": 0}},
        }  # fmt: skip
        config = parse_config(data)
        served, token = _owner_token(config)
        vm = ControllerVm(config)
        placement = vm.start(served, print)
        host_id = f"{ZONE}/{vm.name}"
        try:
            endpoint = container_booter.ssh(host_id)
            assert endpoint.address == placement.url.split("//")[1].split(":")[0]  # sshd on the VM's own address
            provider = attrs.evolve(config.provider, ssh_user=endpoint.user, ssh_key=str(endpoint.key_path),
                                    options={**config.provider.options, "ssh_port": endpoint.port,
                                             "ssh_known_hosts": str(tmp_path / "known_hosts")})  # fmt: skip
            config = attrs.evolve(config, provider=provider)
            info = ControllerProcessInfo(0, placement.url, tmp_path / "client-state", placement.http_url, remote=True,
                                         where=placement.where, tunnel_host=placement.tunnel_host)  # fmt: skip
            wait_healthy(config, info, timeout=300, hint=container_booter.console(host_id))
            with connect_controller(config, info) as url, IrisClient.remote(url, token=token) as client:
                assert client.list_workers() == []
                job = client.submit(Entrypoint.from_command(["true"]), name="kept", resources=ResourceSpec(cpu=64))
            vm.restart(print)  # a reset: the disk (the controller's state) stays
            wait_healthy(config, info, timeout=300, hint=container_booter.console(host_id))
            with connect_controller(config, info) as url, IrisClient.remote(url, token=token) as client:
                assert job.job_id in [j.job_id for j in client.list_jobs()]
        finally:
            assert vm.stop(print)
        assert container_booter.hosts() == [] and fake.instance(PROJECT, ZONE, vm.name) is None
