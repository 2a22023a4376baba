"""``iris job`` end to end: a real CLI process against a real controller with real task processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from iris.client import IrisClient, Job
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.testing import wait_until

IRIS = str(Path(sys.executable).parent / "iris")
SMALL = ResourceSpec(cpu=0.1, memory="64MB")
NOT_FOUND_ID = "no-such-job-here"


@pytest.fixture(scope="module")
def client():
    with IrisClient.local() as c:
        yield c


@pytest.fixture(autouse=True)
def kill_leftovers(client: IrisClient):
    """Each test starts from a quiet cluster and leaves nothing running behind it."""
    yield
    for status in client.list_jobs():
        if not status.state.is_terminal:
            Job(client, status.job_id).kill()


@pytest.fixture
def job_cli(iris, client: IrisClient, tmp_path: Path):
    """``job_cli(*args)`` runs ``iris job ARGS --controller-url <the test controller>``."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return iris("job", *args, "--controller-url", client.address, cwd=tmp_path, env=env, timeout=timeout)

    return run


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def submit(client: IrisClient, name: str, *argv: str, **kwargs: object) -> Job:
    kwargs.setdefault("resources", SMALL)
    return client.submit(Entrypoint.from_command(*argv), name=unique(name), **kwargs)


def pending_job(client: IrisClient, name: str) -> Job:
    """A job that waits: it needs the whole worker while a sleeper holds a little of it."""
    blocker = submit(client, f"{name}-blocker", "sleep", "300")
    assert wait_until(lambda: blocker.status().state is JobState.RUNNING, timeout=30)
    whole = client.list_workers()[0].capacity.cpu
    return submit(client, name, "true", resources=ResourceSpec(cpu=whole, memory="16MB"))


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def gate_code(gate: Path, timeout: float = 60) -> str:
    """Python lines that block until ``gate`` exists (exit 9 after ``timeout`` s, so nothing hangs)."""
    return (
        "import os, sys, time\n"
        f"deadline = time.time() + {timeout}\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    if time.time() > deadline: sys.exit(9)\n"
        "    time.sleep(0.01)\n"
    )


def child_submitting_code(child_name: str, child_code: str) -> str:
    """A parent task that submits ``child_code`` as child job ``child_name``, waits for it, says so."""
    return (
        "import sys\n"
        "from iris.client import IrisClient\n"
        "from iris.cluster.types import Entrypoint, ResourceSpec\n"
        f"child = IrisClient.from_env().submit(Entrypoint.from_command(sys.executable, '-c', {child_code!r}),\n"
        f"    name={child_name!r}, resources=ResourceSpec(cpu=0.1, memory='64MB'))\n"
        "child.wait()\n"
        "print('parent done')\n"
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, expected: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def local_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- list -------------------------------------------------------------------------------


def test_job_list_table_has_id_state_tasks_submitted_and_entrypoint(client: IrisClient, job_cli) -> None:
    done = submit(client, "listed", "echo", "hello")
    done.wait(timeout=60)
    pending = pending_job(client, "listed-pending")
    long_arg = "x" * 100

    wide = submit(client, "listed-wide", "echo", long_arg)
    wide.wait(timeout=60)
    result = job_cli("list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["JOB ID", "STATE", "TASKS", "SUBMITTED", "ENTRYPOINT"]
    rows = {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}
    submitted = local_time(done.status().submitted_at)
    assert rows[done.job_id] == [done.job_id, "SUCCEEDED", "1/1 done", submitted, "echo hello"]
    assert rows[pending.job_id][1:3] == ["PENDING", "0/1 done, 1 pending"]
    entrypoint = rows[wide.job_id][4]
    assert len(entrypoint) == 60 and entrypoint == f"echo {long_arg}"[:57] + "..."


def test_job_list_state_filter_is_case_insensitive_and_repeatable(client: IrisClient, job_cli) -> None:
    done = submit(client, "filtered-done", "true")
    done.wait(timeout=60)
    pending = pending_job(client, "filtered-pending")

    result = job_cli("list", "--state", "pending")
    assert result.returncode == 0, result.stderr
    assert pending.job_id in result.stdout and done.job_id not in result.stdout

    result = job_cli("list", "--state", "Succeeded", "--state", "PENDING")
    assert result.returncode == 0, result.stderr
    assert pending.job_id in result.stdout and done.job_id in result.stdout


def test_job_list_prefix_selects_jobs_and_empty_result_says_so(client: IrisClient, job_cli) -> None:
    job = submit(client, "prefixed", "true")
    job.wait(timeout=60)
    result = job_cli("list", "--prefix", job.job_id)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == [job.job_id]

    result = job_cli("list", "--prefix", "/nobody-has-this-prefix/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "no jobs\n"


def test_job_list_json_has_states_tasks_and_attempts(client: IrisClient, job_cli) -> None:
    job = submit(client, "listed-json", "sh", "-c", "exit 4")
    job.wait(timeout=60, raise_on_failure=False)
    result = job_cli("list", "--json", "--prefix", job.job_id)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["job_id"] == job.job_id
    assert row["name"] == job.job_id.rsplit("/", 1)[1]
    assert (row["state"], row["exit_code"]) == ("FAILED", 4)
    assert "exited with code 4" in row["error"]
    assert row["submitted_at"] <= row["finished_at"]
    (task,) = row["tasks"]
    assert (task["index"], task["state"], task["pending_reason"]) == (0, "FAILED", "")
    (attempt,) = task["attempts"]
    assert (attempt["attempt_id"], attempt["state"], attempt["exit_code"], attempt["oom"]) == (0, "FAILED", 4, False)
    assert attempt["worker_id"]


def test_job_list_bad_state_names_accepted_values(job_cli) -> None:
    result = job_cli("list", "--state", "runing")
    assert_one_line_error(result, 2, "'runing' is not a job state; choose from PENDING, RUNNING, SUCCEEDED, FAILED, KILLED")


# --- status -----------------------------------------------------------------------------


def test_job_status_shows_tasks_and_every_attempt_by_short_or_full_id(client: IrisClient, job_cli) -> None:
    job = submit(client, "retried", "sh", "-c", "echo try $IRIS_ATTEMPT_ID; exit 3", max_retries=1, ports=["http"], constraints=["zone=local"])
    job.wait(timeout=60, raise_on_failure=False)
    full = job_cli("status", job.job_id)
    short = job_cli("status", job.job_id.rsplit("/", 1)[1])
    assert full.returncode == 0, full.stderr
    assert short.stdout == full.stdout
    lines = full.stdout.splitlines()
    fields = dict(re.match(r"^(\w[\w ]*):\s+(.*)$", line).groups() for line in lines[: lines.index("tasks:")])
    status = job.status()
    assert fields["job"] == job.job_id
    assert fields["state"] == "FAILED"
    assert fields["exit code"] == "3"
    assert "exited with code 3" in fields["error"]
    assert fields["user"] == status.user
    assert (fields["parent"], fields["children"]) == ("-", "-")
    assert fields["submitted"] == local_time(status.submitted_at)
    assert fields["resources"] == "cpu 0.1, memory 64.0MB"
    assert fields["constraints"] == "zone=local"
    tasks = lines[lines.index("tasks:") + 1 :]
    assert tasks[0] == "  0  FAILED"
    worker = status.tasks[0].attempts[0].worker_id
    # how the worker holds tasks to their memory limit: the kernel's cgroup where it can
    (summary,) = [w for w in client.list_workers() if w.worker_id == worker]
    limits = {"cgroup-v1": "held by the kernel (cgroup v1)", "cgroup-v2": "held by the kernel (cgroup v2)", "sampled": "sampled (a short spike can pass)"}
    memory = limits[summary.attributes["memory-limits"]]
    for attempt_id, line in enumerate(tasks[1:]):
        port = status.tasks[0].attempts[attempt_id].ports["http"]
        assert line == f"     attempt {attempt_id}, worker {worker}, FAILED, exit 3, memory limit {memory}, ports http={port}, error: exited with code 3"
    assert len(tasks) == 3


def test_job_status_of_pending_job_gives_the_reason(client: IrisClient, job_cli) -> None:
    job = pending_job(client, "waiting")
    assert wait_until(lambda: job.status().tasks[0].pending_reason.startswith("waiting for"), timeout=10)
    result = job_cli("status", job.job_id)
    assert result.returncode == 0, result.stderr
    assert "exit code:   -" in result.stdout
    assert "  0  PENDING  pending: waiting for" in result.stdout


def test_job_status_json_lists_children_resources_and_attempts(client: IrisClient, job_cli) -> None:
    job = submit(client, "parent-json", *python(child_submitting_code("kid", "print('hi')")))
    assert job.wait(timeout=60).succeeded
    result = job_cli("status", "--json", job.job_id)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["state"] == "SUCCEEDED" and data["exit_code"] == 0
    assert data["children"] == [f"{job.job_id}/kid"]
    assert data["resources"]["cpu"] == 0.1 and data["resources"]["memory_bytes"] == 64_000_000
    assert [a["state"] for a in data["tasks"][0]["attempts"]] == ["SUCCEEDED"]
    child = json.loads(job_cli("status", "--json", f"{job.job_id}/kid").stdout)
    assert child["parent_job_id"] == job.job_id


# --- logs -------------------------------------------------------------------------------


def test_job_logs_prints_lines_and_prefixes_task_index_for_several_tasks(client: IrisClient, job_cli) -> None:
    one = submit(client, "one-task", "sh", "-c", "echo a; echo b")
    two = submit(client, "two-tasks", "sh", "-c", "echo hi from $IRIS_TASK_INDEX", replicas=2)
    one.wait(timeout=60)
    two.wait(timeout=60)
    assert job_cli("logs", one.job_id).stdout == "a\nb\n"
    assert sorted(job_cli("logs", two.job_id).stdout.splitlines()) == ["[0] hi from 0", "[1] hi from 1"]


def test_job_logs_prints_the_task_environment_lines_on_stderr(client: IrisClient, job_cli) -> None:
    job = submit(client, "env-lines", "sh", "-c", "echo out")
    job.wait(timeout=120)
    result = job_cli("logs", job.job_id)
    assert result.stdout == "out\n"
    # building it, or the cached one it used: said by the worker, shown as status
    env_lines = [ln for ln in result.stderr.splitlines() if ln.startswith("[iris env] ")]
    assert env_lines and ("using the cached environment" in env_lines[0] or "building the environment" in env_lines[0]), result.stderr


def test_job_logs_prints_the_tasks_stderr_on_stderr_and_its_stdout_on_stdout(client: IrisClient, job_cli) -> None:
    code = "import sys\nfor i in range(3):\n    print(f'out-{i}', flush=True)\n    print(f'err-{i}', file=sys.stderr, flush=True)\n"
    job = submit(client, "streams", *python(code), replicas=2)
    job.wait(timeout=120)
    for follow in ((), ("--follow",)):
        result = job_cli("logs", *follow, job.job_id)
        assert result.returncode == 0, result.stderr
        for task in (0, 1):  # each stream in its order, on its own file
            assert [ln for ln in result.stdout.splitlines() if ln.startswith(f"[{task}]")] == [f"[{task}] out-{i}" for i in range(3)]
            task_err = [ln for ln in result.stderr.splitlines() if ln.startswith(f"[{task}] err")]
            assert task_err == [f"[{task}] err-{i}" for i in range(3)], result.stderr
        assert "err-" not in result.stdout and "out-" not in result.stderr


def test_job_logs_follow_streams_every_line_once_in_order(client: IrisClient, job_cli, tmp_path: Path) -> None:
    half_way = tmp_path / "half-way"
    code = (
        "import sys\n"
        "def emit(lines):\n"
        "    for i in lines:\n"
        "        print(i)\n"
        "        if i % 500 == 499: sys.stdout.flush()\n"
        "emit(range(10000))\n"
        "sys.stdout.flush()\n"
        + gate_code(half_way)
        + "emit(range(10000, 20000))\n"
    )
    job = submit(client, "numbers", *python(code))
    proc = subprocess.Popen(
        [IRIS, "job", "logs", "-f", job.job_id, "--controller-url", client.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        received = []
        for line in proc.stdout:
            received.append(line.rstrip("\n"))
            if len(received) == 10000:  # the task is still running, blocked on the gate
                assert job.status().state is JobState.RUNNING
                half_way.touch()
        proc.wait(timeout=60)
        assert proc.returncode == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert received == [str(i) for i in range(20000)]
    assert job.status().state is JobState.SUCCEEDED


def test_job_logs_tail_prints_the_last_lines(client: IrisClient, job_cli) -> None:
    job = submit(client, "ten-lines", "seq", "1", "10")
    job.wait(timeout=60)
    result = job_cli("logs", "--tail", "3", job.job_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "8\n9\n10\n"


def test_job_logs_since_duration_or_iso_time_skips_older_lines(client: IrisClient, job_cli, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    # more old lines than the controller returns in one read, so the filter has to page past them
    code = "for i in range(12000): print('old', i)\n" + "sys.stdout.flush()\n" + gate_code(gate) + "print('new')\n"
    code = "import sys\n" + code
    job = submit(client, "since", *python(code))
    assert wait_until(lambda: len(list(job.logs())) == 12000, timeout=60)
    cut = time.time()
    gate.touch()
    assert job.wait(timeout=60).succeeded

    local_iso = datetime.fromtimestamp(cut).isoformat()
    utc_iso = datetime.fromtimestamp(cut, timezone.utc).isoformat()
    for args in (["--since", local_iso], ["--since", utc_iso], ["-f", "--since", local_iso]):
        result = job_cli("logs", *args, job.job_id)
        assert (result.returncode, result.stdout) == (0, "new\n"), (args, result.stderr)
    result = job_cli("logs", "--since", "1h", job.job_id)
    assert result.stdout.splitlines() == [f"old {i}" for i in range(12000)] + ["new"]


@pytest.mark.parametrize("since", ["yesterday", "5", "5 minutes", "2024-13-45"])
def test_job_logs_bad_since_names_accepted_formats(client: IrisClient, job_cli, since: str) -> None:
    result = job_cli("logs", "--since", since, "any-job")
    assert_one_line_error(result, 2, f"Invalid value for '--since': {since!r} is neither a duration nor a time; use e.g. 30s, 5m, 2h, 1d")


def test_job_logs_include_children_prefixes_child_lines(client: IrisClient, job_cli) -> None:
    job = submit(client, "parent-logs", *python(child_submitting_code("kid", "print('from kid')")))
    assert job.wait(timeout=60).succeeded
    assert job_cli("logs", job.job_id).stdout == "parent done\n"
    for args in (["--include-children"], ["-f", "--include-children"]):
        result = job_cli("logs", *args, job.job_id)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["[kid/0] from kid", "parent done"]


# --- kill -------------------------------------------------------------------------------


def kid_sleeper(pid_file: Path) -> str:
    return f"import os, pathlib, time\npathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\ntime.sleep(600)\n"


def start_parent_with_running_child(client: IrisClient, pid_file: Path) -> tuple[Job, Job]:
    parent = submit(client, "parent-kill", *python(child_submitting_code("kid", kid_sleeper(pid_file))))
    child = Job(client, f"{parent.job_id}/kid")
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=60)
    assert child.status().state is JobState.RUNNING
    return parent, child


def test_job_kill_kills_the_running_child_too(client: IrisClient, job_cli, tmp_path: Path) -> None:
    pid_file = tmp_path / "kid.pid"
    parent, child = start_parent_with_running_child(client, pid_file)
    result = job_cli("kill", parent.job_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{parent.job_id}  KILLED\n"
    assert child.status().state is JobState.KILLED
    assert wait_until(lambda: process_gone(int(pid_file.read_text())), timeout=20)


def test_job_kill_keep_children_leaves_the_child_running(client: IrisClient, job_cli, tmp_path: Path) -> None:
    parent, child = start_parent_with_running_child(client, tmp_path / "kid.pid")
    result = job_cli("kill", "--keep-children", parent.job_id)
    assert result.stdout == f"{parent.job_id}  KILLED\n"
    assert child.status().state is JobState.RUNNING


def test_job_kill_reports_unknown_ids_and_still_kills_the_others(client: IrisClient, job_cli) -> None:
    first = submit(client, "sleeper", "sleep", "600")
    second = submit(client, "sleeper", "sleep", "600")
    done = submit(client, "finished", "true")
    done.wait(timeout=60)
    short_second = second.job_id.rsplit("/", 1)[1]
    result = job_cli("kill", first.job_id, NOT_FOUND_ID, short_second, done.job_id)
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        f"{first.job_id}  KILLED",
        f"{second.job_id}  KILLED",
        f"{done.job_id}  SUCCEEDED  (had already ended)",
    ]
    assert result.stderr == f"iris: error: job {NOT_FOUND_ID!r} not found\n"
    assert first.status().state is JobState.KILLED and second.status().state is JobState.KILLED


def test_job_kill_needs_a_job_id(job_cli) -> None:
    result = job_cli("kill")
    assert_one_line_error(result, 2, "Missing argument 'JOB...'")


# --- errors and finding the controller ---------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["logs"], ["logs", "-f"]])
def test_job_unknown_id_is_one_line_error(job_cli, command: list[str]) -> None:
    result = job_cli(*command, NOT_FOUND_ID)
    assert_one_line_error(result, 2, f"iris: error: job {NOT_FOUND_ID!r} not found")
    assert result.stdout == ""


def test_job_ambiguous_short_id_asks_for_the_full_id(client: IrisClient, job_cli) -> None:
    name = unique("shared")
    for user in ("alice", "bob"):
        client.submit(Entrypoint.from_command("true"), name=name, resources=SMALL, user=user).wait(timeout=60)
    result = job_cli("status", name)
    assert_one_line_error(result, 2, f"iris: error: job {name!r} is ambiguous: /alice/{name}, /bob/{name}; give the full id")
    assert job_cli("status", f"/bob/{name}").returncode == 0


@pytest.mark.parametrize("command", [["list"], ["status", "x"], ["logs", "x"], ["kill", "x"]])
def test_job_without_controller_says_to_pass_controller_url(iris, tmp_path: Path, monkeypatch, command: list[str]) -> None:
    monkeypatch.delenv("IRIS_CONTROLLER_ADDRESS", raising=False)
    result = iris("job", *command, cwd=tmp_path)
    assert_one_line_error(result, 2, "no controller given; pass --controller-url URL")
    assert "iris run --provider local` lives only as long as that command" in result.stderr


def test_job_unreachable_controller_is_one_line_exit_1(iris, tmp_path: Path) -> None:
    result = iris("job", "list", "--controller-url", "http://127.0.0.1:1", cwd=tmp_path)
    assert_one_line_error(result, 1, "iris: error: cannot reach the controller at http://127.0.0.1:1")


def test_job_controller_url_may_come_before_the_subcommand(client: IrisClient, iris, tmp_path: Path) -> None:
    job = submit(client, "ordering", "true")
    job.wait(timeout=60)
    for args in (["--controller-url", client.address, "job", "list"], ["job", "--controller-url", client.address, "list"]):
        result = iris(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert job.job_id in result.stdout


def test_job_controller_from_task_environment(client: IrisClient, iris, tmp_path: Path) -> None:
    job = submit(client, "from-env", "true")
    job.wait(timeout=60)
    result = iris("job", "status", job.job_id, cwd=tmp_path, env={"IRIS_CONTROLLER_ADDRESS": client.address})
    assert result.returncode == 0, result.stderr
    assert f"job:         {job.job_id}" in result.stdout


def test_job_controller_from_config_host_and_port(client: IrisClient, iris, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("IRIS_CONTROLLER_ADDRESS", raising=False)
    host, port = client.address.removeprefix("http://").rsplit(":", 1)
    (tmp_path / "cluster.yaml").write_text(f"controller:\n  host: {host}\n  port: {port}\n")
    (tmp_path / "anyport.yaml").write_text("controller:\n  port: 0\n")
    job = submit(client, "from-config", "true")
    job.wait(timeout=60)
    for args in (["job", "list", "--config", "cluster.yaml"], ["--config", "cluster.yaml", "job", "list"]):
        result = iris(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert job.job_id in result.stdout
    home = tmp_path / "home"  # no cluster of this config runs under this home
    home.mkdir()
    result = iris("job", "list", "--config", "anyport.yaml", cwd=tmp_path, env={"HOME": str(home)})
    assert_one_line_error(result, 2, "anyport.yaml: no controller of this cluster is running")
    result = iris("job", "list", "--config", "missing.yaml", cwd=tmp_path)
    assert_one_line_error(result, 2, "missing.yaml: config file not found")
