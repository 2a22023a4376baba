"""The manual provider on hosts that have Docker: each worker runs as a container from the worker
image (``provider.options.worker_image``), started over SSH with the host's ``docker`` command,
its tasks in containers of their own through the engine's socket. Real sshd hosts on loopback
addresses, a real engine and the image built from this workspace."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.client import IrisClient
from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.errors import PluginError
from iris.plugin.protocols import SliceRequest, SliceState
from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry
from iris.testing import wait_until
from iris.testing.container_hosts import trusted_certificates
from iris.testing.docker_engine import DockerEngine
from iris.testing.sshd import SshdUnavailable, SshServer, ensure_sshd
from iris_local.bundle_store import FileBundleStore
from iris_manual.vm_manager import ManualVmManager

pytestmark = pytest.mark.docker

ADDRESSES = ["127.0.0.27", "127.0.0.28"]


@pytest.fixture(scope="module")
def docker_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SshServer]]:
    try:
        ensure_sshd()
    except SshdUnavailable as exc:
        pytest.skip(str(exc))
    servers = [SshServer(tmp_path_factory.mktemp(f"dhost{i}"), address=a).start() for i, a in enumerate(ADDRESSES)]
    key = servers[0].key_path
    for server in servers[1:]:
        (server.directory / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    yield servers
    for server in servers:
        server.stop()


def manager(hosts: list[SshServer], address: str, tmp_path: Path, engine: DockerEngine, **options: Any) -> ManualVmManager:
    env, mounts = trusted_certificates()  # the worker's uv reaches the package index as this machine does
    section = {
        "type": "manual",
        "hosts": [f"{h.address}:{h.port}" for h in hosts],
        "ssh_user": hosts[0].user,
        "ssh_key": str(hosts[0].key_path),
        "runtime": "docker",
        "docker_image": options.pop("task_image", ""),
        "options": {
            "python": sys.executable, "remote_dir": str(tmp_path / "remote" / "{host}"),
            "ssh_known_hosts": str(tmp_path / "known_hosts"), "stop_grace": 5,
            "env": {"DOCKER_HOST": engine.url, **env}, "worker_mounts": [*mounts, str(tmp_path / "bundles")],
            **options,
        },
    }  # fmt: skip
    context = ProviderContext(
        controller_address=address, state_dir=tmp_path / "state", options=section, registry=PluginRegistry(),
        worker_token=lambda worker_id: f"secret-of-{worker_id}",
    )  # fmt: skip
    return ManualVmManager(context)


def out(engine: DockerEngine, *args: str) -> str:
    return engine.docker(*args).stdout.decode()


def containers(engine: DockerEngine, label: str) -> list[str]:
    return out(engine, "ps", "-aq", "--filter", f"label={label}").split()


def test_manual_docker_workers_run_tasks_in_containers_and_delete_leaves_nothing(
    docker_hosts: list[SshServer], docker_engine: DockerEngine, docker_worker_image: str, docker_base_image: str, tmp_path: Path
) -> None:
    (tmp_path / "bundles").mkdir()
    server = ControllerServer(Controller(), FileBundleStore(f"file://{tmp_path / 'bundles'}"), port=0)
    server.start()
    vms = manager(docker_hosts, server.address, tmp_path, docker_engine, worker_image=docker_worker_image, task_image=docker_base_image)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "task.py").write_text("import os\nprint('task', os.environ['IRIS_TASK_INDEX'], 'on', os.environ['IRIS_WORKER_ID'], flush=True)\n")
    try:
        info = vms.create_slice(SliceRequest(slice_id="d1", scale_group="g", vm_count=2, cpu=1, memory_bytes=1 << 30, labels={"k": "v"}))
        assert info.state is SliceState.READY, info
        # each worker is a container of the engine, named after its VM
        workers = {c: out(docker_engine, "inspect", "-f", "{{.Name}}", c).strip() for c in containers(docker_engine, "iris.worker")}
        assert sorted(workers.values()) == ["/iris-worker-d1-0", "/iris-worker-d1-1"]
        registered = lambda: {w.worker_id for w in server.controller.list_workers() if not w.lost}  # noqa: E731
        assert wait_until(lambda: {"d1-0", "d1-1"} <= registered(), timeout=60)
        # the worker's credential reaches it in its environment, never on a command line of the host
        for container, name in workers.items():
            env = out(docker_engine, "inspect", "-f", "{{json .Config.Env}}", container)
            args = out(docker_engine, "inspect", "-f", "{{json .Path}} {{json .Args}}", container)
            assert f"IRIS_WORKER_TOKEN=secret-of-{name.removeprefix('/iris-worker-')}" in env
            assert "secret-of" not in args
        with IrisClient.remote(server.address, workspace=workspace) as client:
            job = client.submit(
                name="on-docker-hosts", entrypoint=Entrypoint.from_command("python3", "task.py"),
                resources=ResourceSpec(cpu=1, memory="64MB"), replicas=2,
            )  # fmt: skip
            status = job.wait(timeout=180, raise_on_failure=False)
            lines = sorted(line.data for line in job.logs())
        assert status.state is JobState.SUCCEEDED, (status, vms.vm_logs("d1-0", 50))
        assert lines == ["task 0 on d1-0", "task 1 on d1-1"] or lines == ["task 0 on d1-1", "task 1 on d1-0"]
        # `iris cluster vm logs` reads the worker container's log on the host
        assert "d1-0" in vms.vm_logs("d1-0", 200)
        # a restarted controller finds the slice from the hosts alone, and deletes it
        again = manager(docker_hosts, server.address, tmp_path, docker_engine, worker_image=docker_worker_image)
        assert [s.slice_id for s in again.list_slices({"k": "v"})] == ["d1"]
        again.delete_slice("d1")
        again.close()
        assert vms.describe_slice("d1") is None
        assert containers(docker_engine, "iris.worker=d1-0") == [] and containers(docker_engine, "iris.worker=d1-1") == []
        assert list((tmp_path / "remote").glob("*/*")) == []
    finally:
        vms.delete_slice("d1")
        vms.close()
        server.stop()


def test_manual_worker_image_on_a_host_without_usable_docker_names_the_host_and_the_choice(
    docker_hosts: list[SshServer], docker_engine: DockerEngine, tmp_path: Path
) -> None:
    vms = manager(docker_hosts[:1], "http://127.0.0.1:9", tmp_path, docker_engine, worker_image="iris-worker:test")
    vms._env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"  # as a host whose engine is not running
    try:
        with pytest.raises(PluginError) as caught:
            vms.create_slice(SliceRequest(slice_id="x", scale_group="g"))
        message = str(caught.value)
        host = docker_hosts[0]
        assert message.startswith(f"{host.user}@{host.address}:{host.port}: Docker is not usable there (")
        assert "leave worker_image out to run workers as processes" in message and "\n" not in message
    finally:
        vms.close()
