"""Task environments on the local provider: built with uv from the workspace's pyproject.toml
(extras, pip packages, lock), cached by what determines them, never Iris's own virtualenv.

Builds are real ``uv`` runs. The packages an extra brings are local path dependencies (so no
index is needed for them); cloudpickle comes from PyPI through uv's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, EnvironmentSpec, JobState, TaskState
from iris.cluster.worker.environment import MARKER, EnvironmentBuilder, find_uv
from iris.testing import wait_until

IRIS_CORE = Path(__file__).resolve().parents[1] / "iris-core"


def _package(root: Path, name: str, body: str = "") -> Path:
    """A local distribution ``name`` whose module says where it was imported from."""
    directory = root / name
    (directory / "src" / name).mkdir(parents=True)
    (directory / "src" / name / "__init__.py").write_text(f"WHO = {name!r}\n{body}")
    (directory / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "{name}"
            version = "0.1"
            requires-python = ">=3.11"

            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"
            """
        )
    )
    return directory


def _lock(workspace: Path) -> None:
    subprocess.run([find_uv(), "lock", "--quiet", "--python", sys.executable], cwd=workspace, check=True, timeout=300)


@pytest.fixture(scope="module")
def deps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Local packages extras bring: ``gpu_kernels`` (root extra ``gpu``) and ``cpu_kernels``
    (workspace member ``marin``'s extra ``cpu``), and ``pip_only`` (installed as a pip package)."""
    root = tmp_path_factory.mktemp("deps")
    for name in ("gpu_kernels", "cpu_kernels", "pip_only"):
        _package(root, name)
    return root


def _workspace(root: Path, deps: Path, *, iris: bool = False, lock: bool = True) -> Path:
    """A uv workspace like seed 003's: root project ``proj`` (extra ``gpu``) with member
    ``marin`` (extra ``cpu``), locked; with ``iris``, the root also depends on iris-core."""
    ws = root / "ws"
    (ws / "marin" / "src" / "marin").mkdir(parents=True)
    (ws / "marin" / "src" / "marin" / "__init__.py").write_text("NAME = 'marin from the bundle'\n")
    (ws / "marin" / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "marin"
            version = "0.1"
            requires-python = ">=3.11"

            [project.optional-dependencies]
            cpu = ["cpu_kernels"]

            [tool.uv.sources]
            cpu_kernels = {{ path = "{deps / 'cpu_kernels'}" }}

            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"
            """
        )
    )
    dependencies = ['"marin"'] + (['"iris-core"'] if iris else [])
    iris_source = f'iris-core = {{ path = "{IRIS_CORE}", editable = true }}\n' if iris else ""
    (ws / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "proj"
            version = "0.1"
            requires-python = ">=3.11"
            dependencies = [{", ".join(dependencies)}]

            [project.optional-dependencies]
            gpu = ["gpu_kernels"]

            [tool.uv.workspace]
            members = ["marin"]

            [tool.uv.sources]
            marin = {{ workspace = true }}
            gpu_kernels = {{ path = "{deps / 'gpu_kernels'}" }}
            """
        )
        + iris_source
    )
    if lock:
        _lock(ws)
    return ws


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IrisClient]:
    with IrisClient.local(workspace=tmp_path_factory.mktemp("unused")) as client:
        yield client


def _env_lines(job) -> list[str]:  # noqa: ANN001
    return [ln.data for ln in job.logs(environment=True) if ln.stream == "env"]


def _output(job) -> list[str]:  # noqa: ANN001
    return [ln.data for ln in job.logs()]


def _run(client: IrisClient, workspace: Path, code: str, **environment: object):  # noqa: ANN202
    remote = IrisClient.remote(client.address, workspace=workspace)
    job = remote.submit(Entrypoint.from_command("python", "-c", code), environment=EnvironmentSpec(**environment))
    status = job.wait(timeout=300, raise_on_failure=False)
    return job, status


def test_task_environment_with_extra_imports_the_package_only_that_extra_brings(cluster: IrisClient, tmp_path: Path, deps: Path) -> None:
    ws = _workspace(tmp_path, deps)
    probe = "import gpu_kernels, marin; print(gpu_kernels.WHO, marin.NAME)"
    job, status = _run(cluster, ws, probe, extras=["gpu"])
    assert status.state is JobState.SUCCEEDED, (status.error, _env_lines(job))
    assert _output(job) == ["gpu_kernels marin from the bundle"]
    without, status = _run(cluster, ws, probe)
    assert status.state is JobState.FAILED
    assert any("No module named 'gpu_kernels'" in line for line in _output(without))


def test_task_environment_package_extra_form_installs_a_workspace_members_extra(cluster: IrisClient, tmp_path: Path, deps: Path) -> None:
    ws = _workspace(tmp_path, deps)
    job, status = _run(cluster, ws, "import cpu_kernels; print(cpu_kernels.WHO)", extras=["marin:cpu"])
    assert status.state is JobState.SUCCEEDED, (status.error, _env_lines(job))
    assert _output(job) == ["cpu_kernels"]


def test_task_environment_second_job_with_the_same_lock_uses_the_cached_environment(cluster: IrisClient, tmp_path: Path, deps: Path) -> None:
    ws = _workspace(tmp_path, deps)
    # a pip package no other test asks for makes this environment's key new to the session
    first, status = _run(cluster, ws, "print('one')", pip_packages=[f"pip_only @ file://{deps / 'pip_only'}"])
    assert status.state is JobState.SUCCEEDED, (status.error, _env_lines(first))
    built = _env_lines(first)
    assert built[0].startswith("building the environment"), built
    assert any(line.startswith("$ uv sync") and "--locked" in line for line in built), built
    assert built[-1].startswith("built the environment")
    second, status = _run(cluster, ws, "import pip_only; print(pip_only.WHO)", pip_packages=[f"pip_only @ file://{deps / 'pip_only'}"])
    assert status.state is JobState.SUCCEEDED
    cached = _env_lines(second)
    assert len(cached) == 1 and cached[0].startswith("using the cached environment"), cached
    assert cached[0].split()[4] == built[0].split()[3]  # the same environment key
    assert _output(second) == ["pip_only"]


def test_task_without_pyproject_runs_a_plain_python_without_iris(cluster: IrisClient, tmp_path: Path) -> None:
    probe = "import sys, cloudpickle; print(sys.prefix != sys.base_prefix); import iris"
    job, status = _run(cluster, tmp_path, probe)
    assert status.state is JobState.FAILED
    output = _output(job)
    assert output[0] == "True"  # a virtualenv of the task python
    assert output[-1] == "ModuleNotFoundError: No module named 'iris'"


def _where() -> dict:
    import sys

    try:
        import iris  # noqa: F401

        has_iris = True
    except ImportError:
        has_iris = False
    return {"prefix": sys.prefix, "executable": sys.executable, "iris": has_iris}


def _fail() -> None:
    raise KeyError("raised in the task's environment")


def test_callable_runs_in_the_task_environment_not_irises(cluster: IrisClient, tmp_path: Path) -> None:
    remote = IrisClient.remote(cluster.address, workspace=tmp_path)
    # functions of this module are pickled by value: the bundle (tmp_path) cannot import it
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        where = remote.submit(Entrypoint.from_callable(_where)).result(timeout=300)
        failing = remote.submit(Entrypoint.from_callable(_fail))
        with pytest.raises(KeyError, match="raised in the task's environment"):
            failing.result(timeout=300)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert where["iris"] is False
    assert Path(where["prefix"]) != Path(sys.prefix)
    assert os.environ["IRIS_ENV_DIR"] in where["prefix"]


def _answer() -> str:
    import cloudpickle
    import marin

    return f"{marin.NAME} with cloudpickle {cloudpickle.__version__}"


def test_callable_in_a_project_environment_gets_cloudpickle_without_declaring_it(cluster: IrisClient, tmp_path: Path, deps: Path) -> None:
    ws = _workspace(tmp_path, deps)  # declares no cloudpickle
    remote = IrisClient.remote(cluster.address, workspace=ws)
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        answer = remote.submit(Entrypoint.from_callable(_answer)).result(timeout=300)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert answer.startswith("marin from the bundle with cloudpickle ")


SLOW_BACKEND = """
import os, time
from hatchling.build import *  # noqa: F403
from hatchling.build import build_wheel as _build_wheel


def build_wheel(*args, **kwargs):
    while not os.path.exists({release!r}):  # held until the test has seen the task BUILDING
        time.sleep(0.05)
    return _build_wheel(*args, **kwargs)
"""


def test_task_is_building_while_its_environment_builds_and_its_log_shows_the_progress(cluster: IrisClient, tmp_path: Path) -> None:
    # a dependency whose build waits for a file: the environment's build lasts until the test says
    slow = _package(tmp_path, "slow_pkg")
    release = tmp_path / "release"
    (slow / "slow_backend.py").write_text(SLOW_BACKEND.format(release=str(release)))
    pyproject = (slow / "pyproject.toml").read_text().replace(
        'build-backend = "hatchling.build"', 'build-backend = "slow_backend"\nbackend-path = ["."]'
    )
    (slow / "pyproject.toml").write_text(pyproject)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pyproject.toml").write_text(
        '[project]\nname = "waits"\nversion = "0"\nrequires-python = ">=3.11"\ndependencies = ["slow_pkg"]\n\n'
        f'[tool.uv.sources]\nslow_pkg = {{ path = "{slow}" }}\n'
    )
    remote = IrisClient.remote(cluster.address, workspace=ws)
    job = remote.submit(Entrypoint.from_command("python", "-c", "import slow_pkg; print(slow_pkg.WHO)"))
    try:
        assert wait_until(
            lambda: job.status().tasks[0].state is TaskState.BUILDING and any("slow_pkg" in ln for ln in _env_lines(job)), timeout=120
        ), (job.status(), _env_lines(job))
        assert not any(ln.startswith("built the environment") for ln in _env_lines(job))
    finally:
        release.touch()
    status = job.wait(timeout=300, raise_on_failure=False)
    assert status.state is JobState.SUCCEEDED, (status.error, _env_lines(job))
    assert _output(job) == ["slow_pkg"]


def test_task_killed_while_its_environment_builds_stops_the_build(cluster: IrisClient, tmp_path: Path) -> None:
    slow = _package(tmp_path, "slow_pkg")
    release = tmp_path / "release"
    (slow / "slow_backend.py").write_text(SLOW_BACKEND.format(release=str(release)))
    (slow / "pyproject.toml").write_text(
        (slow / "pyproject.toml").read_text().replace('build-backend = "hatchling.build"', 'build-backend = "slow_backend"\nbackend-path = ["."]')
    )
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pyproject.toml").write_text(
        '[project]\nname = "killed"\nversion = "0"\nrequires-python = ">=3.11"\ndependencies = ["slow_pkg"]\n\n'
        f'[tool.uv.sources]\nslow_pkg = {{ path = "{slow}" }}\n'
    )
    job = IrisClient.remote(cluster.address, workspace=ws).submit(Entrypoint.from_command("python", "-c", "print('never')"))
    try:
        assert wait_until(lambda: any("slow_pkg" in ln for ln in _env_lines(job)), timeout=120), _env_lines(job)
        assert wait_until(lambda: _processes_mentioning(str(slow)), timeout=60)  # the backend waits for the file
        job.kill()
        status = job.wait(timeout=60, raise_on_failure=False)
        assert status.state is JobState.KILLED
        # the worker stops the build and reports how the attempt ended
        assert wait_until(lambda: job.status().tasks[0].attempts[0].state is TaskState.KILLED, timeout=30), job.status()
        assert job.status().tasks[0].attempts[0].error == "killed while its environment was building"
        # the build (uv and the backend it ran) is gone, not left waiting for the file
        assert wait_until(lambda: not _processes_mentioning(str(slow)), timeout=30), _processes_mentioning(str(slow))
    finally:
        release.touch()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if text in cmdline or cwd.startswith(text):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_task_environment_build_failure_fails_the_task_with_uvs_error(cluster: IrisClient, tmp_path: Path, deps: Path) -> None:
    ws = _workspace(tmp_path, deps)
    job, status = _run(cluster, ws, "print('never')", extras=["nosuch"])
    assert status.state is JobState.FAILED
    assert "could not be built" in status.error and "nosuch" in status.error, status.error
    assert any("nosuch" in line for line in _env_lines(job))
    again, status = _run(cluster, ws, "print('the worker is fine')")
    assert status.state is JobState.SUCCEEDED
    assert _output(again) == ["the worker is fine"]


def test_task_environment_unknown_member_extra_names_the_projects(cluster: IrisClient, tmp_path: Path, deps: Path) -> None:
    ws = _workspace(tmp_path, deps, lock=False)
    job, status = _run(cluster, ws, "print('never')", extras=["marin:gpu"])
    assert status.state is JobState.FAILED
    assert status.error == "task 0: extra 'marin:gpu': project 'marin' defines no extra 'gpu' (its extras: cpu)"
    job, status = _run(cluster, ws, "print('never')", extras=["levanter:cpu"])
    assert status.error == "task 0: extra 'levanter:cpu': the bundle has no project named 'levanter' (its projects: marin, proj)"


CHILD = """
from iris.client import IrisClient
from iris.cluster.types import Entrypoint, EnvironmentSpec
client = IrisClient.from_env()
probe = "import gpu_kernels; print('child has', gpu_kernels.WHO)"
inherited = client.submit(Entrypoint.from_command("python", "-c", probe), name="inherits")
print(inherited.wait(timeout=300, raise_on_failure=False).state.value)
own = client.submit(Entrypoint.from_command("python", "-c", probe), name="own", environment=EnvironmentSpec(extras=["marin:cpu"]))
print(own.wait(timeout=300, raise_on_failure=False).state.value)
"""


def test_child_job_inherits_the_parents_extras_unless_it_sets_its_own(cluster: IrisClient, tmp_path: Path, deps: Path) -> None:
    ws = _workspace(tmp_path, deps, iris=True)
    job, status = _run(cluster, ws, CHILD, extras=["gpu"])
    assert status.state is JobState.SUCCEEDED, (status.error, _output(job))
    assert _output(job) == ["SUCCEEDED", "FAILED"]
    client = IrisClient.remote(cluster.address)
    assert [ln.data for ln in client.job(job.job_id + "/inherits").logs()] == ["child has gpu_kernels"]
    assert client.job(job.job_id + "/own").status().state is JobState.FAILED


def test_cli_extra_and_pip_package_flags_reach_the_task(iris, tmp_path: Path, deps: Path) -> None:  # noqa: ANN001
    ws = _workspace(tmp_path, deps)
    result = iris(
        "run", "--provider", "local", "--extra", "marin:cpu", "--pip-package", f"pip_only @ file://{deps / 'pip_only'}",
        "--", "python", "-c", "import cpu_kernels, pip_only; print(cpu_kernels.WHO, pip_only.WHO)",
        cwd=ws, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cpu_kernels pip_only\n"
    assert "[iris env] " in result.stderr  # the build's progress, on stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--extra", "cpu gpu", "Invalid value for --extra: extra 'cpu gpu' is invalid; use an extra name (e.g. cpu) or PACKAGE:EXTRA"),
        ("--pip-package", "--index-url=http://x", "Invalid value for --pip-package: pip package '--index-url=http://x' is invalid"),
    ],
)
def test_cli_bad_environment_flag_is_one_line_naming_the_flag(iris, tmp_path: Path, flag: str, value: str, message: str) -> None:  # noqa: ANN001
    result = iris("run", "--provider", "local", flag, value, "--", "true", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_environment_spec_takes_the_original_keywords() -> None:
    spec = EnvironmentSpec(env_vars={"A": "1"}, extras=["cpu"], pip_packages=["numpy>=2"])
    assert (spec.env, spec.extras, spec.pip_packages) == ({"A": "1"}, ["cpu"], ["numpy>=2"])
    assert EnvironmentSpec(env={"B": "2"}).env == {"B": "2"}
    with pytest.raises(TypeError, match="extras is a list of strings"):
        EnvironmentSpec(extras="cpu")


def test_submit_with_a_bad_pip_package_is_refused_naming_it(cluster: IrisClient) -> None:
    from iris.errors import IrisError

    with pytest.raises(IrisError, match="pip package '-r requirements.txt' is invalid"):
        cluster.submit(Entrypoint.from_command("true"), environment=EnvironmentSpec(pip_packages=["-r requirements.txt"]))


# --- the builder itself ----------------------------------------------------------------------


def test_environment_builder_concurrent_attempts_build_once(tmp_path: Path, deps: Path) -> None:
    ws = _workspace(tmp_path, deps)
    builder = EnvironmentBuilder(tmp_path / "envs")
    results, logs = [], []

    def prepare() -> None:
        log = (tmp_path / f"log{threading.get_ident()}").open("w+b")
        logs.append(log)
        results.append(builder.prepare(ws, ["gpu"], [], log))

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 3 and len({r.path for r in results}) == 1
    assert sorted(r.cached for r in results) == [False, True, True]
    assert json.loads((results[0].path / MARKER).read_text())["extras"] == ["gpu"]
    for log in logs:
        log.close()


def test_environment_builder_rebuilds_a_half_built_environment(tmp_path: Path) -> None:
    builder = EnvironmentBuilder(tmp_path / "envs")
    with (tmp_path / "log").open("wb") as log:
        first = builder.prepare(None, [], [], log)
        (first.path / MARKER).unlink()  # as if the builder died before the end
        (first.path / "junk").write_text("left by a dead build")
        second = builder.prepare(None, [], [], log)
    assert second.path == first.path and not second.cached
    assert not (second.path / "junk").exists() and (second.path / MARKER).exists()


def test_environment_key_follows_lock_extras_and_packages(tmp_path: Path, deps: Path) -> None:
    ws = _workspace(tmp_path, deps)
    builder = EnvironmentBuilder(tmp_path / "envs")
    from iris.cluster.worker.environment import _read_project

    project = _read_project(ws)
    base = builder.key(project, ["gpu"], [])
    assert builder.key(project, ["gpu"], []) == base
    assert builder.key(project, ["gpu", "gpu"], []) == base  # the same extras, however listed
    assert builder.key(project, [], []) != base
    assert builder.key(project, ["gpu"], ["numpy"]) != base
    (ws / "uv.lock").write_text((ws / "uv.lock").read_text() + "\n# changed\n")
    assert builder.key(_read_project(ws), ["gpu"], []) != base


@pytest.mark.parametrize("worker_mode", ["thread", "process"])
def test_config_worker_task_python_and_env_dir_reach_the_workers(iris, tmp_path: Path, worker_mode: str) -> None:  # noqa: ANN001
    task_python = Path(sys.base_prefix) / "bin" / "python3"  # the interpreter Iris's own venv came from
    env_dir = tmp_path / "configured-envs"
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "c.yaml").write_text(
        f"provider: {{type: local, options: {{worker_mode: {worker_mode}}}}}\n"
        f"worker: {{task_python: {task_python}, env_dir: {env_dir}}}\n"
    )
    probe = "import os, sys; print(os.path.realpath(sys.executable)); print(sys.prefix)"
    result = iris("run", "--config", "c.yaml", "--", "python", "-c", probe, cwd=ws, timeout=300)
    assert result.returncode == 0, result.stderr
    executable, prefix = result.stdout.splitlines()
    assert executable == os.path.realpath(task_python)
    assert Path(prefix).parent == env_dir
