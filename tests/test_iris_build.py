"""``iris build`` against a real engine and a registry on 127.0.0.1: the worker image is built
from this workspace's wheels on a base made here, pushed, pulled back, and a worker started from
it (the engine's socket mounted, host networking, as on a VM) runs a job; the controller image
runs its controller. Nothing is pulled from the internet."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from iris.client import IrisClient
from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.plugin.worker_host import WorkerLaunch
from iris.testing import wait_until
from iris.testing.docker_engine import DockerEngine, LocalRegistry
from iris_local.bundle_store import FileBundleStore

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def engine_api(docker_engine: DockerEngine) -> Iterator[object]:
    client = docker_engine.client()
    with closing(client):
        yield client.api


def _remove_image(api, tag: str) -> None:  # type: ignore[no-untyped-def]
    try:
        api.remove_image(tag, force=True)
    except Exception:
        pass


def test_build_worker_image_push_then_a_worker_from_the_pushed_image_runs_a_job(
    iris, docker_engine: DockerEngine, docker_registry: LocalRegistry, docker_base_image: str, engine_api, tmp_path: Path
) -> None:
    tag = f"{docker_registry.address}/iris-worker:test"
    result = iris("build", "worker-image", "-t", tag, "--push", cwd=ROOT, env={"DOCKER_HOST": docker_engine.url}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tag} sha256:"), result.stdout
    for step in ("(uv build)", "(docker build)", f"pushing {tag} to {docker_registry.address}", "Step 1/"):
        assert step in result.stderr, result.stderr
    # what runs is what the registry holds
    _remove_image(engine_api, tag)
    engine_api.pull(tag)

    work_dir = tmp_path / "worker"
    work_dir.mkdir()
    # a file:// bundle store the worker sees: inside its work directory, which is mounted
    server = ControllerServer(Controller(), FileBundleStore(f"file://{work_dir / 'store'}"), port=0)
    server.start()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "task.py").write_text("import os\nprint('from a worker in a container:', os.environ['IRIS_WORKER_ID'], flush=True)\n")
    container = None
    try:
        launch = WorkerLaunch(
            worker_id="in-container", controller_address=server.address, work_dir=work_dir, cpu=1, memory_bytes=1 << 30,
            runtime="docker", task_image=docker_base_image,
        )  # fmt: skip
        # the worker builds each task's environment with uv, which reaches the package index as
        # this machine does: with its CA certificates (as a VM of this kind would have them)
        trust = {k: os.environ[k] for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if k in os.environ}
        certs = sorted({str(Path(v) if Path(v).is_dir() else Path(v).parent) for v in trust.values()})
        started = subprocess.run(
            launch.docker_argv(tag, socket=str(docker_engine.socket_path), env=trust, read_only=certs),
            env={**os.environ, "DOCKER_HOST": docker_engine.url}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        container = started.stdout.strip()
        with IrisClient.remote(server.address, workspace=workspace) as client:
            job = client.submit(
                name="from-image", entrypoint=Entrypoint.from_command("python3", "task.py"), resources=ResourceSpec(cpu=0.5, memory="64MB")
            )
            status = job.wait(timeout=120, raise_on_failure=False)
            logs = [line.data for line in job.logs()]
        assert status.state is JobState.SUCCEEDED, (status, engine_api.logs(container).decode()[-3000:])
        assert logs == ["from a worker in a container: in-container"]
        # the task ran in a container of its own, started by the worker through the mounted socket
        # (this worker's containers only: other tests' may still be going away on the shared engine)
        mine = {"label": ["iris.managed=true", "iris.worker=in-container"]}
        assert wait_until(lambda: not engine_api.containers(all=True, filters=mine), timeout=60)
    finally:
        if container is not None:
            engine_api.stop(container, timeout=10)  # SIGTERM: the worker kills its attempts and exits
            assert engine_api.wait(container, timeout=30)["StatusCode"] == 0, engine_api.logs(container).decode()[-3000:]
            engine_api.remove_container(container, force=True)
        server.stop()
        _remove_image(engine_api, tag)


def test_build_controller_image_on_a_named_base_runs_the_controller(
    iris, docker_engine: DockerEngine, docker_base_image: str, engine_api, tmp_path: Path
) -> None:
    tag = "iris-controller:test"
    env = {"DOCKER_HOST": docker_engine.url}
    result = iris("build", "controller-image", "-t", tag, "--base", docker_base_image, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"base image: {docker_base_image}" in result.stderr
    try:
        container = engine_api.create_container(tag, command=["--help"], host_config=engine_api.create_host_config(network_mode="none"))
        engine_api.start(container)
        assert engine_api.wait(container, timeout=60)["StatusCode"] == 0
        assert "run the controller until SIGTERM" in engine_api.logs(container).decode()
        engine_api.remove_container(container, force=True)
    finally:
        _remove_image(engine_api, tag)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["build", "worker-image", "-t", "Not Valid"], "Invalid value for '-t' / '--tag': 'Not Valid' is not a valid image reference"),
        (["build", "worker-image"], "Missing option '-t' / '--tag'"),
        (["build", "controller-image", "-t", "x:1", "--base", "UPPER"], "Invalid value for '--base': 'UPPER' is not a valid image reference"),
    ],
)
def test_build_bad_input_gets_one_line_and_exit_2(iris, args: list[str], expected: str) -> None:
    result = iris(*args, cwd=ROOT)
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_build_with_an_unknown_base_image_says_so(iris, docker_engine: DockerEngine, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": docker_engine.url}
    result = iris("build", "worker-image", "-t", "iris-worker:never", "--base", "no-such-base:1", cwd=ROOT, env=env, timeout=120)
    assert result.returncode != 0
    assert "base image 'no-such-base:1' is not on this Docker engine" in result.stderr
    assert "Traceback" not in result.stderr


def test_build_outside_a_workspace_says_what_it_needs(iris, docker_engine: DockerEngine, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": docker_engine.url}
    result = iris("build", "worker-image", "-t", "iris-worker:never", "--workspace", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "iris build needs the Iris source workspace" in result.stderr, result.stderr
