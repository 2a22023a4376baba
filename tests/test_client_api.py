"""The seed Python API on the local provider: IrisClient.local/remote, submit, wait, logs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, EnvironmentSpec, JobState, ResourceSpec
from iris.errors import IrisError, JobNotFound


def hello() -> None:
    print("Hello from Iris!")


def explode() -> None:
    raise ValueError("boom from the task")


@pytest.fixture(scope="module")
def client():
    # The workspace is the directory this module is importable from (pytest may name it
    # tests.test_client_api), so the task can import it to unpickle the functions defined here.
    root = Path(__file__).parents[__name__.count(".")]
    with IrisClient.local(workspace=root) as c:
        yield c


def test_callable_output_reaches_the_callers_log_stream(client: IrisClient) -> None:
    job = client.submit(name="seed-hello", entrypoint=Entrypoint.from_callable(hello), resources=ResourceSpec(cpu=1, memory="2GB"))
    lines = []
    status = job.wait(stream_logs=True, log_sink=lambda ln: lines.append(ln.data), timeout=60)
    assert status.state is JobState.SUCCEEDED
    assert lines == ["Hello from Iris!"]
    from iris.client.client import current_user

    assert job.job_id == f"/{current_user()}/seed-hello"


def test_callable_exception_fails_job_with_traceback_in_logs(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_callable(explode))
    status = job.wait(timeout=60, raise_on_failure=False)
    assert status.state is JobState.FAILED
    assert status.exit_code == 1
    text = "\n".join(line.data for line in job.logs())
    assert "Traceback (most recent call last)" in text
    assert "ValueError: boom from the task" in text
    assert {line.stream for line in job.logs() if "boom from the task" in line.data} == {"stderr"}


def test_log_lines_say_their_stream_and_wait_prints_each_where_the_task_wrote_it(client: IrisClient, capsys) -> None:
    code = "import sys\nfor i in range(3):\n    print(f'out-{i}', flush=True)\n    print(f'err-{i}', file=sys.stderr, flush=True)\n"
    job = client.submit(Entrypoint.from_command(sys.executable, "-c", code), name="streams", resources=ResourceSpec(cpu=0.1))
    capsys.readouterr()
    assert job.wait(timeout=60, stream_logs=True).state is JobState.SUCCEEDED
    printed = capsys.readouterr()
    assert printed.out == "out-0\nout-1\nout-2\n"
    assert [ln for ln in printed.err.splitlines() if not ln.startswith("[iris env] ")] == ["err-0", "err-1", "err-2"]
    lines = list(job.logs())  # without the environment's lines: only the task's, each with its stream
    assert [(ln.stream, ln.data) for ln in lines if ln.stream == "stdout"] == [("stdout", f"out-{i}") for i in range(3)]
    assert [(ln.stream, ln.data) for ln in lines if ln.stream == "stderr"] == [("stderr", f"err-{i}") for i in range(3)]
    assert len(lines) == 6
    env = [ln for ln in job.logs(environment=True) if ln.is_environment]
    assert env and all(ln.stream == "env" and not ln.data.startswith("[iris env]") for ln in env)


def test_callable_from_module_missing_in_task_explains_workspace(client: IrisClient, tmp_path: Path) -> None:
    import importlib.util

    (tmp_path / "elsewhere_mod.py").write_text("def f():\n    print('unreachable')\n")
    spec = importlib.util.spec_from_file_location("elsewhere_mod", tmp_path / "elsewhere_mod.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["elsewhere_mod"] = module
    try:
        spec.loader.exec_module(module)
        job = client.submit(entrypoint=Entrypoint.from_callable(module.f))
        assert job.wait(timeout=60, raise_on_failure=False).state is JobState.FAILED
        text = "\n".join(line.data for line in job.logs())
        assert "module 'elsewhere_mod' is not importable in the task" in text
    finally:
        del sys.modules["elsewhere_mod"]


def test_callable_arguments_and_environment_are_passed(client: IrisClient) -> None:
    def show(prefix: str, *, suffix: str) -> None:
        import os

        print(prefix, os.environ["GREETING"], suffix)

    job = client.submit(
        entrypoint=Entrypoint.from_callable(show, "<", suffix=">"),
        environment=EnvironmentSpec(env={"GREETING": "hi"}),
    )
    assert job.wait(timeout=60).succeeded
    assert [ln.data for ln in job.logs()] == ["< hi >"]


def test_job_status_records_attempt_and_exit_code(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", "raise SystemExit(5)"))
    status = job.wait(timeout=60, raise_on_failure=False)
    assert status.state is JobState.FAILED
    assert status.exit_code == 5
    (task,) = status.tasks
    assert [a.exit_code for a in task.attempts] == [5]
    assert "exited with code 5" in status.error


def test_duplicate_job_name_is_rejected_with_clear_error(client: IrisClient) -> None:
    client.submit(name="twice", entrypoint=Entrypoint.from_command("true")).wait(timeout=60)
    with pytest.raises(IrisError, match=r"job /\S+/twice already exists"):
        client.submit(name="twice", entrypoint=Entrypoint.from_command("true"))


def test_unknown_job_id_raises_job_not_found(client: IrisClient) -> None:
    with pytest.raises(JobNotFound, match="no-such-job"):
        client.job("/no-such-job")


def test_memory_request_larger_than_any_worker_and_group_ends_unschedulable_with_reason(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_command("true"), resources=ResourceSpec(memory="100TB"))
    status = job.wait(timeout=10, raise_on_failure=False)
    assert status.state is JobState.UNSCHEDULABLE
    assert "no worker has enough memory" in status.error


def test_remote_client_uploads_workspace_once_and_task_imports_from_it(client: IrisClient, tmp_path: Path) -> None:
    (tmp_path / "helper_mod.py").write_text("def answer():\n    return 41 + 1\n")
    remote = IrisClient.remote(client.address, workspace=tmp_path)
    try:
        job = remote.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", "import helper_mod; print(helper_mod.answer())"))
        assert job.wait(timeout=60).succeeded
        assert [ln.data for ln in job.logs()] == ["42"]
        again = IrisClient.remote(client.address, workspace=tmp_path)
        try:
            from iris.bundle import create_bundle
            from iris.rpc import controller_pb2

            bundle_id = create_bundle(tmp_path).bundle_id
            assert again._stub.HasBundle(controller_pb2.HasBundleRequest(bundle_id=bundle_id)).exists
        finally:
            again.close()
    finally:
        remote.close()


def test_kill_running_job_marks_it_killed(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_command("sleep", "60"))
    from iris.testing import wait_until

    assert wait_until(lambda: job.status().state is JobState.RUNNING, timeout=20)
    assert job.kill().state is JobState.KILLED
    assert job.wait(timeout=30, raise_on_failure=False).state is JobState.KILLED


def test_seed_bundle_creator_blob_is_used_by_remote_client(client: IrisClient, tmp_path: Path) -> None:
    from iris.cluster.client import BundleCreator

    (tmp_path / "note.txt").write_text("bundled by BundleCreator\n")
    bundle = BundleCreator(tmp_path).create_bundle()
    remote = IrisClient.remote(client.address, bundle_blob=bundle)
    try:
        job = remote.submit(entrypoint=Entrypoint.from_command("cat", "note.txt"))
        assert job.wait(timeout=60).succeeded
        assert [ln.data for ln in job.logs()] == ["bundled by BundleCreator"]
    finally:
        remote.close()


def test_wait_raises_job_failed_with_status_and_last_lines_of_output(client: IrisClient) -> None:
    from iris.client import JobFailed

    code = "import sys\nfor i in range(30): print(f'line {i}')\nsys.exit(3)"
    job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", code), resources=ResourceSpec(cpu=0.1, memory="64MB"))
    with pytest.raises(JobFailed) as raised:
        job.wait(timeout=60)
    failed = raised.value
    assert failed.status.state is JobState.FAILED and failed.status.tasks[0].exit_code == 3
    assert failed.output == [f"line {i}" for i in range(10, 30)]  # the last 20
    assert "exited with code 3" in str(failed) and "line 29" in str(failed)


def test_wait_with_timeout_raises_timeout_error_while_the_job_runs(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_command("sleep", "30"), resources=ResourceSpec(cpu=0.1, memory="64MB"))
    try:
        with pytest.raises(TimeoutError, match=r"is still (PENDING|RUNNING) after 0.5s"):
            job.wait(timeout=0.5)
    finally:
        job.kill()


def test_parent_whose_child_fails_fails_too(client: IrisClient) -> None:
    parent_code = (
        "import sys\n"
        "from iris.client import IrisClient\n"
        "from iris.cluster.types import Entrypoint, ResourceSpec\n"
        "child = IrisClient.from_env().submit(Entrypoint.from_command(sys.executable, '-c', 'import sys; sys.exit(4)'),\n"
        "    name='kid', resources=ResourceSpec(cpu=0.1, memory='64MB'))\n"
        "child.wait()\n"
        "print('parent done')\n"
    )
    job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", parent_code), resources=ResourceSpec(cpu=0.1, memory="64MB"))
    status = job.wait(timeout=60, raise_on_failure=False)
    assert status.state is JobState.FAILED, status
    text = "\n".join(line.data for line in job.logs())
    assert "JobFailed" in text and "/kid FAILED" in text and "parent done" not in text


def test_following_a_killed_job_delivers_what_it_printed_while_stopping(client: IrisClient, tmp_path: Path) -> None:
    import threading

    from iris.testing import wait_until

    marker = tmp_path / "ticking"
    code = (
        "import pathlib, signal, sys, time\n"
        "def stop(*_):\n"
        "    print('got TERM, saving', flush=True); time.sleep(0.3); print('saved', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "for i in range(600):\n"
        "    print(f'tick {i}', flush=True); time.sleep(0.05)\n"
    )
    job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", code), resources=ResourceSpec(cpu=0.1, memory="64MB"))
    seen: list[str] = []
    follower = threading.Thread(target=lambda: seen.extend(ln.data for ln in job.logs(follow=True)), daemon=True)
    follower.start()
    assert wait_until(marker.exists, timeout=30) and wait_until(lambda: len(seen) >= 3, timeout=30)
    job.kill()
    follower.join(timeout=30)
    assert not follower.is_alive()
    assert seen[-2:] == ["got TERM, saving", "saved"], seen[-5:]


def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


def own_index() -> int:
    import os

    return int(os.environ["IRIS_TASK_INDEX"]) * 10


class Refusal(Exception):
    pass


def refuse(why: str) -> None:
    raise Refusal(why)


def test_callable_result_comes_back_one_task_and_per_task(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_callable(add, 2, b=3), resources=ResourceSpec(cpu=0.1, memory="64MB"))
    assert job.result(timeout=60) == {"sum": 5}
    replicas = client.submit(entrypoint=Entrypoint.from_callable(own_index), replicas=3, resources=ResourceSpec(cpu=0.1, memory="64MB"))
    assert replicas.results(timeout=60) == [0, 10, 20]


def test_callable_exception_reraises_its_own_type_with_the_remote_traceback(client: IrisClient) -> None:
    from iris.client import RemoteTraceback

    job = client.submit(entrypoint=Entrypoint.from_callable(refuse, "not today"), resources=ResourceSpec(cpu=0.1, memory="64MB"))
    with pytest.raises(Refusal, match="not today") as raised:
        job.result(timeout=60)
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "in refuse" in str(cause) and "Refusal: not today" in str(cause)


def test_command_job_has_no_result_and_says_so(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_command("true"), resources=ResourceSpec(cpu=0.1, memory="64MB"))
    with pytest.raises(IrisError, match="sent no result"):
        job.result(timeout=60)


def test_callable_returning_none_succeeds_with_result_none(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_callable(hello), resources=ResourceSpec(cpu=0.1, memory="64MB"))
    assert job.result(timeout=60) is None


def test_environment_spec_takes_env_as_seed_000_writes_it_or_env_vars_as_the_original(client: IrisClient) -> None:
    for environment in (EnvironmentSpec(env={"GREETING": "seed"}), EnvironmentSpec(env_vars={"GREETING": "seed"})):
        job = client.submit(entrypoint=Entrypoint.from_command("sh", "-c", "echo $GREETING"), environment=environment,
                            resources=ResourceSpec(cpu=0.1, memory="64MB"))
        assert job.wait(timeout=60).succeeded
        assert [line.data for line in job.logs()] == ["seed"]
    with pytest.raises(TypeError, match="not both"):
        EnvironmentSpec(env={"A": "1"}, env_vars={"A": "2"})


def test_submit_with_an_invalid_task_image_is_refused_naming_the_field(client: IrisClient) -> None:
    with pytest.raises(IrisError, match=r"task_image: 'Not An Image' is not a valid image reference; expected \[REGISTRY"):
        client.submit(name="bad-image", entrypoint=Entrypoint.from_command("true"), task_image="Not An Image")
