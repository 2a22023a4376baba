"""Jobs on workers whose runtime is ``docker``, against a real engine (the session's own
dockerd and base image): output streams back from the container, a memory limit ends a task as
OOM, a killed task leaves no container, and a worker restarted while its container runs adopts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from iris.client import IrisClient
from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState
from iris.config import parse_config
from iris.runtime.docker import LABEL_MANAGED
from iris.testing import wait_until
from iris.testing.docker_engine import DockerEngine
from iris_local.bundle_store import FileBundleStore

pytestmark = pytest.mark.docker


@pytest.fixture
def docker_env(docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch) -> DockerEngine:
    """Workers built in this process (and their children) use the test engine."""
    monkeypatch.setenv("DOCKER_HOST", docker_engine.url)
    return docker_engine


def _managed(engine: DockerEngine, job_id: str = "") -> list[dict]:
    """The engine's Iris containers (of the job's tasks, if given), running or ended."""
    with closing(engine.client()) as client:
        found = client.api.containers(all=True, filters={"label": [f"{LABEL_MANAGED}=true"]})
    return [c for c in found if c["Labels"].get("iris.task", "").startswith(f"{job_id}/")]


@pytest.fixture
def docker_cluster(docker_env: DockerEngine, docker_base_image: str, tmp_path: Path) -> Iterator[IrisClient]:
    """An in-process local cluster whose workers run tasks with the docker runtime."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    config = parse_config({"worker": {"runtime": "docker"}, "docker": {"image": docker_base_image}})
    with IrisClient.local(config, workspace=workspace) as client:
        yield client


def test_docker_cli_run_streams_the_containers_output(iris, docker_env: DockerEngine, docker_base_image: str, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "hello.py").write_text(
        "import os, sys\n"
        "print('in a container:', os.path.exists('/.dockerenv'), flush=True)\n"
        "print('to stderr', file=sys.stderr, flush=True)\n"
        "print('python', sys.version_info[:2], flush=True)\n"
    )
    (workspace / "docker.yaml").write_text(f"worker:\n  runtime: docker\ndocker:\n  image: {docker_base_image}\n")
    result = iris("--config", "docker.yaml", "run", "--memory", "256MB", "--", "python3", "hello.py", cwd=workspace, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["in a container: True", "python (3, 11)"]
    assert "to stderr" in result.stderr.splitlines()  # the container's stderr stays stderr
    assert wait_until(lambda: not _managed(docker_env), timeout=90), "the attempt's container was left behind"


def test_docker_task_over_its_memory_limit_ends_as_oom(docker_cluster: IrisClient, docker_env: DockerEngine) -> None:
    code = "blob = bytearray(300 * 1024 * 1024)\nprint('allocated', flush=True)\nimport time; time.sleep(60)\n"
    job = docker_cluster.submit(
        name="oom", entrypoint=Entrypoint.from_command("python3", "-c", code), resources=ResourceSpec(cpu=0.5, memory="64MB")
    )
    status = job.wait(timeout=120, raise_on_failure=False)
    assert status.state is JobState.FAILED
    attempt = status.tasks[0].attempts[0]
    assert attempt.oom, attempt
    assert "out of memory" in status.tasks[0].error or "out of memory" in attempt.error


def test_docker_killed_task_leaves_no_container(docker_cluster: IrisClient, docker_env: DockerEngine) -> None:
    job = docker_cluster.submit(
        name="killed", entrypoint=Entrypoint.from_command("sh", "-c", "echo up; sleep 300"), resources=ResourceSpec(cpu=0.5, memory="64MB")
    )
    assert wait_until(lambda: [ln.data for ln in job.logs()] == ["up"], timeout=120)
    assert len(_managed(docker_env, job.job_id)) == 1
    job.kill()
    status = job.wait(timeout=120, raise_on_failure=False)
    assert status.state is JobState.KILLED
    assert wait_until(lambda: not _managed(docker_env, job.job_id), timeout=90), _managed(docker_env)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerServer]:
    server = ControllerServer(Controller(), FileBundleStore(f"file://{tmp_path / 'bundles'}"), port=0)
    server.start()
    yield server
    server.stop()


def _start_worker(controller: ControllerServer, work_dir: Path, image: str, env: dict[str, str]) -> subprocess.Popen:
    argv = [
        sys.executable, "-m", "iris.cluster.worker.main",
        "--controller", controller.address, "--worker-id", "dw1", "--work-dir", str(work_dir),
        "--runtime", "docker", "--task-image", image, "--cpu", "2", "--memory-bytes", str(4 << 30), "--wait-seconds", "0.5",
    ]  # fmt: skip
    log = open(work_dir.parent / "worker.log", "ab")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@pytest.mark.parametrize("ends_while_down", [False, True], ids=["still-running", "ended-while-down"])
def test_docker_worker_restarted_while_its_container_runs_adopts_it(
    controller: ControllerServer, docker_env: DockerEngine, docker_base_image: str, tmp_path: Path, ends_while_down: bool
) -> None:
    """The restarted worker watches a container that still runs, or reports one that ended
    while it was down with its exit status and whole log; either way it removes it after."""
    work_dir = tmp_path / "worker"
    env = {**os.environ, "DOCKER_HOST": docker_env.url}
    worker = _start_worker(controller, work_dir, docker_base_image, env)
    client = IrisClient.remote(controller.address)
    restarted = None
    try:
        cmd = ["sh", "-c", "echo started; while [ ! -e gate ]; do sleep 0.05; done; echo finished"]
        job = client.submit(name="adopted", entrypoint=Entrypoint.from_command(cmd), resources=ResourceSpec(cpu=0.5, memory="64MB"))
        assert wait_until(lambda: [ln.data for ln in job.logs()] == ["started"], timeout=120), (work_dir.parent / "worker.log").read_text()
        containers = _managed(docker_env, job.job_id)
        assert [c["State"] for c in containers] == ["running"]
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert _managed(docker_env, job.job_id)[0]["State"] == "running"  # outlives its worker
        with closing(docker_env.client()) as engine:  # the task's working directory, mounted from here
            workdir = engine.api.inspect_container(containers[0]["Id"])["Config"]["WorkingDir"]
        if ends_while_down:
            Path(workdir, "gate").touch()
            assert wait_until(lambda: _managed(docker_env, job.job_id)[0]["State"] == "exited", timeout=60)
        restarted = _start_worker(controller, work_dir, docker_base_image, env)
        Path(workdir, "gate").touch()
        status = job.wait(timeout=120)
        assert status.state is JobState.SUCCEEDED
        assert [(a.worker_id, a.state) for a in status.tasks[0].attempts] == [("dw1", TaskState.SUCCEEDED)]
        assert [ln.data for ln in job.logs()] == ["started", "finished"]
        assert wait_until(lambda: not _managed(docker_env, job.job_id), timeout=90)
    finally:
        client.close()
        for proc in (worker, restarted):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=90)


def test_docker_job_task_image_overrides_the_clusters_image(
    docker_cluster: IrisClient, docker_env: DockerEngine, docker_base_image: str
) -> None:
    alternative = "iris-test-alternative:1"
    with closing(docker_env.client()) as engine:
        engine.api.tag(docker_base_image, "iris-test-alternative", tag="1")
        try:
            job = docker_cluster.submit(
                name="own-image",
                entrypoint=Entrypoint.from_command("sh", "-c", "echo up; sleep 300"),
                resources=ResourceSpec(cpu=0.5, memory="64MB"),
                task_image=alternative,
            )
            assert wait_until(lambda: [ln.data for ln in job.logs()] == ["up"], timeout=120)
            (container,) = _managed(docker_env, job.job_id)
            assert engine.api.inspect_container(container["Id"])["Config"]["Image"] == alternative
            job.kill()
            job.wait(timeout=120, raise_on_failure=False)
            assert wait_until(lambda: not _managed(docker_env, job.job_id), timeout=90)
        finally:
            engine.api.remove_image(alternative)


def test_docker_callable_runs_in_its_environment_inside_a_container(docker_cluster: IrisClient) -> None:
    # the task environment (built from /usr/bin/python3, mounted read-only) runs the callable;
    # its result comes back through the attempt's directory (mounted read-write)
    job = docker_cluster.submit(
        name="callable",
        entrypoint=Entrypoint.from_callable(lambda: (os.path.exists("/.dockerenv"), os.getcwd())),
        resources=ResourceSpec(cpu=0.5, memory="256MB"),
    )
    status = job.wait(timeout=300, raise_on_failure=False)
    assert status.state is JobState.SUCCEEDED, (status, [ln.data for ln in job.logs()])
    in_container, cwd = job.result()
    assert in_container is True
    assert Path(cwd).exists()  # the working directory is this machine's path, mounted at the same place
