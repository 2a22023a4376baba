"""``iris build`` against a real engine and a registry on 127.0.0.1: the worker image is built
from this workspace's wheels on a base made here, pushed, pulled back, and a worker started from
it (the engine's socket mounted, host networking, as on a VM) runs a job; the controller image
runs its controller, named for Artifact Registry by ``--region`` (built, never pushed: nothing
goes to a real ``*.pkg.dev`` host). Nothing is pulled from the internet."""

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
from iris.errors import IrisError
from iris.plugin.worker_host import WorkerLaunch
from iris.runtime.artifact_registry import artifact_registry_image, push_denied_hint, resolve_project
from iris.testing import wait_until
from iris.testing.docker_engine import DockerEngine, LocalRegistry
from iris_local.bundle_store import FileBundleStore

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


@pytest.mark.docker
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


@pytest.mark.docker
def test_build_controller_image_with_region_on_a_named_base_is_named_for_artifact_registry_and_runs_the_controller(
    iris, docker_engine: DockerEngine, docker_base_image: str, engine_api, tmp_path: Path
) -> None:
    # seed 001: `iris build controller-image -t iris-controller:v1 --push --region us-central1`,
    # here without --push (nothing may go to a real *.pkg.dev host); the project from the env
    name = "us-central1-docker.pkg.dev/iris-test-project/marin/iris-controller:test"
    env = {"DOCKER_HOST": docker_engine.url, "CLOUDSDK_CORE_PROJECT": "iris-test-project", "PATH": str(_bin(tmp_path))}
    args = ("build", "controller-image", "-t", "iris-controller:test", "--region", "us-central1", "--repository", "marin")
    result = iris(*args, "--base", docker_base_image, cwd=ROOT, env=env, timeout=600)
    try:
        assert result.returncode == 0, result.stderr
        assert f"base image: {docker_base_image}" in result.stderr
        assert f"image name: {name} (Artifact Registry, from -t iris-controller:test and --region us-central1)" in result.stderr
        assert f"built {name}: put it in controller.vm.image of the cluster config" in result.stderr
        assert result.stdout.strip().splitlines()[-1].startswith(f"{name} sha256:"), result.stdout
        assert engine_api.inspect_image(name)["RepoTags"] == [name]  # the one name it has
        container = engine_api.create_container(name, command=["--help"], host_config=engine_api.create_host_config(network_mode="none"))
        engine_api.start(container)
        assert engine_api.wait(container, timeout=60)["StatusCode"] == 0
        assert "run the controller until SIGTERM" in engine_api.logs(container).decode()
        engine_api.remove_container(container, force=True)
    finally:
        _remove_image(engine_api, name)


def _bin(tmp_path: Path, gcloud: str | None = None) -> Path:
    """A PATH directory of the test's own: empty, or with a fake ``gcloud`` script running ``gcloud``."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    if gcloud is not None:
        (directory / "gcloud").write_text(f"#!/bin/sh\n{gcloud}\n")
        (directory / "gcloud").chmod(0o755)
    return directory


# what a fake gcloud answers to `gcloud config get-value project`, as the real one does
GCLOUD_WITH_PROJECT = '[ "$*" = "config get-value project" ] && echo from-gcloud-project && exit 0; exit 9'
GCLOUD_UNSET = "echo '(unset)' >&2; exit 0"


def test_artifact_registry_image_project_from_the_flag_wins(tmp_path: Path) -> None:
    environ = {"CLOUDSDK_CORE_PROJECT": "env-project", "PATH": str(_bin(tmp_path, GCLOUD_WITH_PROJECT))}
    assert artifact_registry_image("iris-worker:v1", "us-central1", "flag-project", environ=environ) == (
        "us-central1-docker.pkg.dev/flag-project/iris/iris-worker:v1"
    )
    assert resolve_project("flag-project", environ) == ("flag-project", "--project")


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"CLOUDSDK_CORE_PROJECT": "cloudsdk-project"}, ("cloudsdk-project", "$CLOUDSDK_CORE_PROJECT")),
        ({"GOOGLE_CLOUD_PROJECT": "google-project"}, ("google-project", "$GOOGLE_CLOUD_PROJECT")),
        ({"CLOUDSDK_CORE_PROJECT": "cloudsdk-project", "GOOGLE_CLOUD_PROJECT": "google-project"}, ("cloudsdk-project", "$CLOUDSDK_CORE_PROJECT")),
        ({"CLOUDSDK_CORE_PROJECT": " ", "GOOGLE_CLOUD_PROJECT": "google-project"}, ("google-project", "$GOOGLE_CLOUD_PROJECT")),
    ],
)
def test_artifact_registry_image_project_from_the_environment_before_gcloud(tmp_path: Path, variables, expected) -> None:
    environ = {**variables, "PATH": str(_bin(tmp_path, GCLOUD_WITH_PROJECT))}
    assert resolve_project(None, environ) == expected
    assert artifact_registry_image("iris-controller:v1", "europe-west4", repository="marin", environ=environ) == (
        f"europe-west4-docker.pkg.dev/{expected[0]}/marin/iris-controller:v1"
    )


def test_artifact_registry_image_project_from_a_gcloud_on_path(tmp_path: Path) -> None:
    environ = {"PATH": f"{_bin(tmp_path, GCLOUD_WITH_PROJECT)}:/usr/bin:/bin"}  # ours first, before any real one
    assert resolve_project(None, environ) == ("from-gcloud-project", "gcloud config get-value project")
    assert artifact_registry_image("team/iris-worker", "us", environ=environ) == "us-docker.pkg.dev/from-gcloud-project/iris/team/iris-worker"


@pytest.mark.parametrize("gcloud", [None, GCLOUD_UNSET, "exit 1"], ids=["no-gcloud", "gcloud-unset", "gcloud-fails"])
def test_artifact_registry_image_without_a_project_says_to_pass_project(tmp_path: Path, gcloud: str | None) -> None:
    environ = {"GOOGLE_CLOUD_PROJECT": "", "PATH": str(_bin(tmp_path, gcloud))}
    with pytest.raises(IrisError) as caught:
        artifact_registry_image("iris-worker:v1", "us-central1", environ=environ)
    assert str(caught.value) == (
        "--region needs a Google Cloud project: pass --project P "
        "(or set $CLOUDSDK_CORE_PROJECT or $GOOGLE_CLOUD_PROJECT, or `gcloud config set project P`)"
    )


@pytest.mark.parametrize(
    ("tag", "region", "project", "repository", "expected"),
    [
        ("iris-worker:v1", "US-Central1", "my-project", "iris", "'US-Central1' is not a Google Cloud region; expected one like us-central1"),
        ("iris-worker:v1", "us-central", "my-project", "iris", "'us-central' is not a Google Cloud region"),
        ("iris-worker:v1", "us-central1", "my-project", "Marin", "'Marin' is not an Artifact Registry repository name"),
        ("iris-worker:v1", "us-central1", "My_Project", "iris", "project from --project: 'My_Project' is not a Google Cloud project id"),
        (
            "127.0.0.1:5000/iris-worker:v1", "us-central1", "my-project", "iris",
            "-t 127.0.0.1:5000/iris-worker:v1 names the registry 127.0.0.1:5000, and --region us-central1 names another (us-central1-docker.pkg.dev)",
        ),
        (
            "europe-west4-docker.pkg.dev/my-project/iris/iris-worker:v1", "us-central1", "my-project", "iris",
            "-t europe-west4-docker.pkg.dev/my-project/iris/iris-worker:v1 names the registry europe-west4-docker.pkg.dev",
        ),
        ("localhost/iris-worker", "us-central1", "my-project", "iris", "names the registry localhost"),
    ],
)  # fmt: skip
def test_artifact_registry_image_bad_input_is_one_line_naming_the_value(tag, region, project, repository, expected) -> None:
    with pytest.raises(IrisError) as caught:
        artifact_registry_image(tag, region, project, repository, environ={"PATH": ""})
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        # Artifact Registry's denials as the engine reports them, and the SDK's failed credential helper
        'denied: Unauthenticated request. Unauthenticated requests do not have permission "artifactregistry.repositories.uploadArtifacts" '
        'on resource "projects/my-project/locations/us-central1/repositories/iris" (or it may not exist)',
        'denied: Permission "artifactregistry.repositories.uploadArtifacts" denied on resource "projects/my-project/locations/us-central1/repositories/iris" (or it may not exist)',
        "unauthorized: authentication failed",
        "no basic auth credentials",
        "Credentials store error: StoreError('docker-credential-gcloud not installed or not available in PATH')",
    ],
)
def test_push_denied_by_artifact_registry_says_to_configure_docker(error: str) -> None:
    hint = push_denied_hint("us-central1-docker.pkg.dev", error)
    assert hint is not None and "run `gcloud auth configure-docker us-central1-docker.pkg.dev`" in hint


def test_push_failures_that_are_not_artifact_registry_credentials_get_no_hint() -> None:
    assert push_denied_hint("127.0.0.1:5000", "denied: requested access to the resource is denied") is None
    assert push_denied_hint(None, "denied: requested access to the resource is denied") is None
    assert push_denied_hint("us-central1-docker.pkg.dev", "blob upload unknown") is None


def test_build_cli_takes_the_project_from_gcloud_and_names_the_image_before_building(iris, tmp_path: Path) -> None:
    # a directory that is not the workspace: the command stops after naming the image, before Docker
    env = {"PATH": str(_bin(tmp_path, GCLOUD_WITH_PROJECT)), "CLOUDSDK_CORE_PROJECT": "", "GOOGLE_CLOUD_PROJECT": ""}
    result = iris("build", "worker-image", "-t", "iris-worker:v1", "--region", "europe-west4", "--workspace", str(tmp_path), cwd=tmp_path, env=env)
    assert "iris build: image name: europe-west4-docker.pkg.dev/from-gcloud-project/iris/iris-worker:v1" in result.stderr, result.stderr
    assert "iris build needs the Iris source workspace" in result.stderr and result.returncode == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["build", "worker-image", "-t", "Not Valid"], "Invalid value for '-t' / '--tag': 'Not Valid' is not a valid image reference"),
        (["build", "worker-image"], "Missing option '-t' / '--tag'"),
        (["build", "controller-image", "-t", "x:1", "--base", "UPPER"], "Invalid value for '--base': 'UPPER' is not a valid image reference"),
        (["build", "worker-image", "-t", "x:1", "--region", "us_central1"], "Invalid value for '--region': 'us_central1' is not a Google Cloud region"),
        (["build", "worker-image", "-t", "x:1", "--region", "us-central1", "--project", "P"], "Invalid value for '--project': 'P' is not a Google Cloud project id"),
        (["build", "worker-image", "-t", "x:1", "--region", "us-central1", "--repository", "-x"], "Invalid value for '--repository': '-x' is not an Artifact Registry repository name"),
        (["build", "worker-image", "-t", "x:1", "--project", "my-project"], "--project names an Artifact Registry repository and needs --region"),
        (["build", "worker-image", "-t", "x:1", "--repository", "marin"], "--repository names an Artifact Registry repository and needs --region"),
        (["build", "worker-image", "-t", "127.0.0.1:5000/x:1", "--region", "us-central1", "--project", "my-project"], "iris: error: -t 127.0.0.1:5000/x:1 names the registry 127.0.0.1:5000"),
        (["build", "worker-image", "-t", "x:1", "--region", "us-central1"], "iris: error: --region needs a Google Cloud project: pass --project P"),
    ],
)
def test_build_bad_input_gets_one_line_and_exit_2(iris, args: list[str], expected: str, tmp_path: Path) -> None:
    # no project in the environment and no gcloud on PATH: the last case has none to find
    result = iris(*args, cwd=ROOT, env={"CLOUDSDK_CORE_PROJECT": "", "GOOGLE_CLOUD_PROJECT": "", "PATH": str(_bin(tmp_path))})
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.docker
def test_build_with_an_unknown_base_image_says_so(iris, docker_engine: DockerEngine, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": docker_engine.url}
    result = iris("build", "worker-image", "-t", "iris-worker:never", "--base", "no-such-base:1", cwd=ROOT, env=env, timeout=120)
    assert result.returncode != 0
    assert "base image 'no-such-base:1' is not on this Docker engine" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.docker
def test_build_outside_a_workspace_says_what_it_needs(iris, docker_engine: DockerEngine, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": docker_engine.url}
    result = iris("build", "worker-image", "-t", "iris-worker:never", "--workspace", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "iris build needs the Iris source workspace" in result.stderr, result.stderr
