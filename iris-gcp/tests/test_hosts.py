"""Fake GCP machines that really boot (``ContainerBooter``), against a private Docker engine and a
registry on 127.0.0.1: each host is a container on its own loopback address that runs the real
startup script from a fake metadata server. A 4-host "TPU slice" pulls the Iris image from the
registry, its 4 workers register with a controller (auth on) as worker indices 0-3 and run a
4-task job in task containers through the mounted engine socket; halting a host kills its worker
and tasks and the controller sees the worker lost. A controller host runs the controller with
the config from its metadata mounted at /etc/iris/config.yaml. Nothing is left behind."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.auth import Principal, Role, TokenSigner, cluster_secret
from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.testing import wait_until
from iris.testing.docker_engine import DockerEngine
from iris.testing.processes import ControllerProcess, free_port
from iris_gcp import bootstrap
from iris_gcp.testing.boot import AddressInUse, AddressUnavailable, Booter, HostSpec
from iris_gcp.testing.hosts import LABEL_BOOTER, ContainerBooter

pytestmark = pytest.mark.docker

SLICE = "tpu-slice-1"


def _all_containers(engine: DockerEngine) -> set[str]:
    return set(engine.docker("ps", "-aq", "--no-trunc").stdout.decode().split())


def _ssh(endpoint, command: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        ["ssh", "-i", str(endpoint.key_path), "-p", str(endpoint.port), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         f"{endpoint.user}@{endpoint.address}", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_container_booter_runs_the_startup_script_on_its_own_address_and_halts_clean(
    docker_engine: DockerEngine, docker_base_image: str, container_booter: ContainerBooter
) -> None:
    assert isinstance(container_booter, Booter)
    before = _all_containers(docker_engine)
    script = textwrap.dedent(f"""\
        #!/bin/bash
        set -eu
        name=$(curl -sf -H 'Metadata-Flavor: Google' "$IRIS_METADATA_URL/instance/name")
        echo "hello from $name, role $(curl -sf -H 'Metadata-Flavor: Google' "$IRIS_METADATA_URL/instance/attributes/iris-role")"
        echo up > "$IRIS_ROOT/marker"
        docker run -d --label "iris.instance=$name" -v "$IRIS_ROOT:$IRIS_ROOT" {docker_base_image} sleep 600
        """)  # fmt: skip
    host = HostSpec("node-a/w-0", metadata={bootstrap.STARTUP_SCRIPT: script, bootstrap.ROLE: "test"})
    address = container_booter.boot(host)
    assert address == "127.0.0.11"
    assert container_booter.boot(host) == address  # booting a running host again: same host
    assert container_booter.running("node-a/w-0")
    root = container_booter.iris_root("node-a/w-0")
    assert wait_until(lambda: (root / "marker").exists() and container_booter.containers("node-a/w-0"), timeout=60), container_booter.console("node-a/w-0")
    console = container_booter.console("node-a/w-0")
    assert "hello from node-a-w-0, role test" in console
    # its sshd listens on its own address and runs commands on the machine
    endpoint = container_booter.ssh("node-a/w-0")
    assert endpoint.address == address
    result = _ssh(endpoint, f"cat {root / 'marker'}")
    assert result.returncode == 0 and result.stdout.strip() == "up", result.stderr
    # a second host gets the next address
    idle = {bootstrap.STARTUP_SCRIPT: "#!/bin/bash\ntrue\n"}
    assert container_booter.boot(HostSpec("node-a/w-1", metadata=idle)) == "127.0.0.12"
    # an address asked for (an instance's networkIP): refused while another host holds it ...
    with pytest.raises(AddressInUse, match="address 127.0.0.11 is in use by host node-a/w-0"):
        container_booter.boot(HostSpec("vm-b", metadata=idle, address=address))
    assert not container_booter.running("vm-b")
    # ... a reserved one (a static internal address) goes to no host but the one asking for it,
    # which really serves on it, and stays reserved when that host halts
    reserved = container_booter.reserve()
    assert reserved == "127.0.0.13"
    assert container_booter.boot(HostSpec("vm-c", metadata=idle)) == "127.0.0.14"
    assert container_booter.boot(HostSpec("vm-d", metadata=idle, address=reserved)) == reserved
    console = lambda: container_booter.console("vm-d")  # noqa: E731
    assert wait_until(lambda: f"booting vm-d at {reserved}" in console(), timeout=30), console()
    container_booter.halt("vm-d")
    assert container_booter.boot(HostSpec("vm-e", metadata=idle)) != reserved
    assert container_booter.boot(HostSpec("vm-d", metadata=idle, address=reserved)) == reserved  # a new machine, same address
    with pytest.raises(AddressUnavailable, match="address 127.0.0.250 is not in its range"):
        container_booter.boot(HostSpec("vm-f", metadata=idle, address="127.0.0.250"))
    for host_id in ("node-a/w-1", "vm-c", "vm-d", "vm-e"):
        container_booter.halt(host_id)
    container_booter.release(reserved)

    started = container_booter.containers("node-a/w-0")
    container_booter.halt("node-a/w-0")
    container_booter.halt("node-a/w-0")  # idempotent
    assert not container_booter.running("node-a/w-0")
    assert not root.exists()
    assert not (set(started) & _all_containers(docker_engine))
    assert "hello from node-a-w-0" in container_booter.console("node-a/w-0")  # the console outlives the host
    container_booter.close()
    assert _all_containers(docker_engine) <= before
    assert not docker_engine.docker("ps", "-aq", "--filter", f"label={LABEL_BOOTER}={container_booter.id}").stdout.strip()


@pytest.fixture
def controller(tmp_path: Path, container_booter: ContainerBooter) -> Iterator[ControllerProcess]:
    """A controller on 127.0.0.1 with auth on and no scale groups: the slice's workers are all it
    has. Its bundle store is in the booter's shared directory, which every host sees (on GCP it
    is a gs:// bucket)."""
    (tmp_path / "controller").mkdir()
    proc = ControllerProcess(tmp_path / "controller", auth=True)
    proc.config.write_text(
        "provider:\n  type: local\n  options: {worker_mode: process}\n"
        f"controller:\n  port: {proc.port}\n  state_dir: {proc.state_dir}\n  worker_timeout_seconds: 5\n"
        f"  bundle_prefix: file://{container_booter.shared / 'bundles'}\n"
        "auth: {enabled: true}\n"
        "scale_groups:\n  idle: {min_slices: 0, max_slices: 0}\n"  # no local workers: the slice's are all
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _worker_logs(engine: DockerEngine) -> str:
    """The last lines of every worker container's log (for failure messages)."""
    names = engine.docker("ps", "-a", "--filter", "label=iris.role=worker", "--format", "{{.Names}}").stdout.decode().split()
    return "\n".join(f"--- {n}\n{engine.docker('logs', '--tail', '30', n, check=False).stderr.decode()[-3000:]}" for n in names)


@pytest.mark.timeout(900)
def test_a_four_host_slice_boots_registers_runs_a_job_and_halts(
    docker_engine: DockerEngine,
    docker_base_image: str,
    iris_image: str,
    controller: ControllerProcess,
    container_booter: ContainerBooter,
    tmp_path: Path,
) -> None:
    before = _all_containers(docker_engine)
    signer = TokenSigner(cluster_secret(controller.state_dir))
    tokens = {i: signer.mint(Principal(Role.WORKER, bootstrap.worker_id(SLICE, i))) for i in range(4)}
    metadata = bootstrap.worker_metadata(
        image=iris_image, controller_address=controller.url, slice_id=SLICE, scale_group="v5litepod-16",
        attributes={"zone": "us-central2-b", "device": "tpu"}, runtime="docker", task_image=docker_base_image,
        cpu=1.0, memory_bytes=1 << 30, tokens=tokens,
    )  # fmt: skip
    hosts = [f"{SLICE}/w-{i}" for i in range(4)]
    addresses = [
        container_booter.boot(HostSpec(h, metadata={**metadata, bootstrap.WORKER_INDEX: str(i)}, labels={"iris-slice": SLICE}))
        for i, h in enumerate(hosts)
    ]
    assert len(set(addresses)) == 4

    with IrisClient.remote(controller.url, workspace=_workspace(tmp_path), token=controller.token) as client:

        def workers() -> dict[str, object]:
            return {w.worker_id: w for w in client.list_workers() if not w.lost}

        up = wait_until(lambda: len(workers()) == 4, timeout=300)
        assert up, "\n".join(f"--- {h}: {container_booter.startup_state(h)}\n{container_booter.console(h)[-2000:]}" for h in hosts)
        for h in hosts:
            assert wait_until(lambda h=h: container_booter.startup_state(h) == "running", timeout=30), container_booter.console(h)
            assert "iris-startup: state: pulling" in container_booter.console(h)
        registered = workers()
        assert sorted(registered) == [bootstrap.worker_id(SLICE, i) for i in range(4)]
        for i, address in enumerate(addresses):
            attributes = dict(registered[bootstrap.worker_id(SLICE, i)].attributes)
            assert attributes["tpu-worker-id"] == str(i) and attributes["hostname"] == address
            assert attributes["slice"] == SLICE and attributes["device"] == "tpu"
        # the image came from the registry: the machines pulled the tag the test had removed
        assert docker_engine.docker("image", "inspect", iris_image, check=False).returncode == 0

        job = client.submit(
            name="slice-job", entrypoint=Entrypoint.from_command("python3", "task.py"),
            resources=ResourceSpec(cpu=1, memory="64MB"), replicas=4, coscheduling=True,
        )  # fmt: skip
        status = job.wait(timeout=240, raise_on_failure=False)
        logs = sorted(line.data for line in job.logs())
        assert status.state is JobState.SUCCEEDED, (status, _worker_logs(docker_engine))
        # one task per host: every task index once, every worker once
        assert [line.split(" on ")[0] for line in logs] == [f"task {i} of 4" for i in range(4)], logs
        assert sorted(line.split(" on ")[1] for line in logs) == [bootstrap.worker_id(SLICE, i) for i in range(4)], logs

        # a long task on host 3, then host 3 goes away: its worker and task containers with it
        long = client.submit(
            name="long", entrypoint=Entrypoint.from_command("python3", "-c", "import time; print('up', flush=True); time.sleep(600)"),
            resources=ResourceSpec(cpu=1, memory="64MB"), constraints=["tpu-worker-id=3"], max_preemptions=0,
        )  # fmt: skip
        task_label = f"iris.worker={bootstrap.worker_id(SLICE, 3)}"
        assert wait_until(lambda: docker_engine.docker("ps", "-q", "--filter", f"label={task_label}").stdout.strip(), timeout=120)
        on_host_3 = container_booter.containers(hosts[3])
        assert len(on_host_3) >= 2  # the worker and its task
        container_booter.halt(hosts[3])
        assert not (set(on_host_3) & _all_containers(docker_engine))
        lost = wait_until(lambda: any(w.lost for w in client.list_workers() if w.worker_id == bootstrap.worker_id(SLICE, 3)), timeout=60)
        assert lost, [(w.worker_id, w.lost) for w in client.list_workers()]
        assert sorted(workers()) == [bootstrap.worker_id(SLICE, i) for i in range(3)]
        long.kill()

    container_booter.close()
    assert wait_until(lambda: _all_containers(docker_engine) <= before, timeout=60), _all_containers(docker_engine) - before
    assert not container_booter.root.exists()


def _workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "task.py").write_text(
        "import os\n"
        "print(f\"task {os.environ['IRIS_TASK_INDEX']} of {os.environ['IRIS_NUM_TASKS']} on {os.environ['IRIS_WORKER_ID']}\", flush=True)\n"
    )
    return workspace


def test_a_controller_host_runs_the_controller_with_the_config_from_metadata(
    docker_engine: DockerEngine, iris_image: str, container_booter: ContainerBooter
) -> None:
    before = _all_containers(docker_engine)
    port = free_port()  # free on 127.0.0.1, so on the host's 127.0.0.N too
    config = (
        f"name: fake-gcp\nprovider: {{type: local}}\ncontroller:\n  port: {port}\n  http_port: 0\nauth: {{enabled: true}}\n"
        "scale_groups:\n  idle: {min_slices: 0, max_slices: 0}\n"
    )
    address = container_booter.boot(HostSpec("iris-controller-fake", metadata=bootstrap.controller_metadata(image=iris_image, config_yaml=config, port=port)))
    state_dir = container_booter.iris_root("iris-controller-fake") / "controller"
    url_file = state_dir / "controller.url"
    assert wait_until(lambda: url_file.exists(), timeout=300), container_booter.console("iris-controller-fake")
    assert wait_until(lambda: container_booter.startup_state("iris-controller-fake") == "running", timeout=60)
    url = url_file.read_text().strip()
    assert url == f"http://{address}:{port}"
    token = (state_dir / "owner.token").read_text().strip()
    with IrisClient.remote(url, token=token) as client:
        assert client.list_workers() == []
    # the config it runs with is the metadata's, mounted read-only at /etc/iris/config.yaml
    (container,) = [c for c in container_booter.containers("iris-controller-fake")]
    mounts = json.loads(docker_engine.docker("inspect", "-f", "{{json .Mounts}}", container).stdout)
    config_mount = next(m for m in mounts if m["Destination"] == "/etc/iris/config.yaml")
    assert config_mount["RW"] is False
    assert docker_engine.docker("exec", container, "cat", "/etc/iris/config.yaml").stdout.decode() == config
    # and through an SSH tunnel to the machine, as the gcp provider's tunnel reaches it
    endpoint = container_booter.ssh("iris-controller-fake")
    local_port = free_port()
    tunnel = subprocess.Popen(
        ["ssh", "-N", "-L", f"127.0.0.1:{local_port}:{address}:{port}", "-i", str(endpoint.key_path), "-p", str(endpoint.port),
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
         f"{endpoint.user}@{endpoint.address}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_until(lambda: _listening(local_port) or tunnel.poll() is not None, timeout=30)
        assert tunnel.poll() is None, tunnel.stderr.read().decode() if tunnel.stderr else ""
        with IrisClient.remote(f"http://127.0.0.1:{local_port}", token=token) as client:
            assert client.list_workers() == []
    finally:
        tunnel.terminate()
        tunnel.wait(10)
    # a reboot runs the startup script again: a new controller container, the same state
    url_file.unlink()
    container_booter.reboot("iris-controller-fake")
    assert container not in _all_containers(docker_engine)  # the old controller died with the machine
    assert wait_until(lambda: url_file.exists(), timeout=120), container_booter.console("iris-controller-fake")
    assert container_booter.console("iris-controller-fake").count("fake-vm: running startup-script") == 2
    (again,) = container_booter.containers("iris-controller-fake")
    assert again != container
    with IrisClient.remote(url, token=token) as client:  # the owner token survived: same state directory
        assert client.list_workers() == []
    container_booter.halt("iris-controller-fake")
    assert _all_containers(docker_engine) <= before


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_container_booter_with_one_ssh_port_serves_every_host_on_it_with_the_key_known_before_boot(
    docker_engine: DockerEngine, fake_host_image: str, fake_metadata
) -> None:  # type: ignore[no-untyped-def]
    """A cluster config names the tunnel's port and key before the machine exists (as a real
    VM's port 22 and the user's key): ``ssh_port=`` gives every host's sshd that port, each on
    its own address, and ``ssh_user_key()`` is the key they accept, known before any boot."""
    from iris.testing.processes import free_port

    port = free_port()
    booter = ContainerBooter(docker_engine, fake_host_image, metadata=fake_metadata, addresses=["127.0.0.91", "127.0.0.92"],
                             ssh=True, ssh_port=port)  # fmt: skip
    try:
        key = booter.ssh_user_key()
        assert booter.ssh_port == port
        assert key.exists() and booter.ssh_user_key() == key
        script = "#!/bin/bash\necho ready > \"$IRIS_ROOT/ready\"\n"
        for name in ("a/w-0", "a/w-1"):
            booter.boot(HostSpec(name, metadata={bootstrap.STARTUP_SCRIPT: script}))
        for name, address in (("a/w-0", "127.0.0.91"), ("a/w-1", "127.0.0.92")):
            endpoint = booter.ssh(name)
            assert (endpoint.address, endpoint.port, endpoint.key_path) == (address, port, key)
            assert wait_until(lambda name=name: (booter.iris_root(name) / "ready").exists(), timeout=60), booter.console(name)
            result = _ssh(endpoint, f"cat {booter.iris_root(name) / 'ready'}")
            assert result.returncode == 0 and result.stdout.strip() == "ready", result.stderr
        assert booter.container_env["IRIS_DOCKER_TPU_ACCESS"] == "none"  # the fake hosts have no TPU chips
    finally:
        booter.close()
