"""``iris run`` end to end: a real CLI process, an in-process local cluster, real task processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

IRIS = str(Path(sys.executable).parent / "iris")

from iris.procfs import pid_start_time
from iris.testing import wait_until
from iris.testing.processes import cli_import_probe, kill_strays


def test_run_local_exit_code_and_output_reach_caller(iris, workspace: Path) -> None:
    result = iris("run", "--provider", "local", "--", sys.executable, "-c", "import sys; print('hi'); sys.exit(3)", cwd=workspace)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "hi\n"
    assert "FAILED" in result.stderr


def test_run_local_success_exits_zero(iris, workspace: Path) -> None:
    result = iris("run", "--provider", "local", "--", "echo", "hello", "world", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello world\n"


def test_run_workspace_files_are_shipped_to_the_task(iris, workspace: Path) -> None:
    (workspace / "data.txt").write_text("from the workspace\n")
    (workspace / "pkg").mkdir()
    (workspace / "pkg" / "mod.py").write_text("VALUE = 42\n")
    result = iris(
        "run", "--provider", "local", "--", sys.executable, "-c",
        "import pkg.mod, pathlib; print(pathlib.Path('data.txt').read_text().strip(), pkg.mod.VALUE)",
        cwd=workspace,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from the workspace 42\n"


def test_run_env_vars_merge_project_file_shell_tokens_then_flags(iris, workspace: Path) -> None:
    (workspace / ".iris.yaml").write_text("env:\n  FROM_FILE: file\n  OVERRIDE: file\n  HF_TOKEN: from-file\n")
    script = "import os; print(*(f'{k}={os.environ.get(k)}' for k in ['FROM_FILE','OVERRIDE','HF_TOKEN','WANDB_API_KEY','EMPTY','IRIS_TASK_INDEX','IRIS_NUM_TASKS']))"
    result = iris(
        "run", "--provider", "local", "-e", "OVERRIDE", "flag", "-e", "EMPTY", "--", sys.executable, "-c", script,
        cwd=workspace,
        env={"HF_TOKEN": "from-shell", "WANDB_API_KEY": "wandb-shell"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "FROM_FILE=file", "OVERRIDE=flag", "HF_TOKEN=from-file", "WANDB_API_KEY=wandb-shell", "EMPTY=",
        "IRIS_TASK_INDEX=0", "IRIS_NUM_TASKS=1",
    ]


def test_run_config_before_subcommand_is_honoured(iris, workspace: Path) -> None:
    (workspace / "local.yaml").write_text("provider:\n  type: local\nscale_groups:\n  cpu:\n    min_slices: 1\n    cpu: 3\n")
    result = iris("--config", "local.yaml", "run", "--cpu", "3", "--", "echo", "ok", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_run_prints_the_tasks_stderr_on_stderr_and_its_stdout_on_stdout(iris, workspace: Path) -> None:
    code = "import sys\nfor i in range(3):\n    print(f'out-{i}', flush=True)\n    print(f'err-{i}', file=sys.stderr, flush=True)\n"
    result = iris("run", "--provider", "local", "--", sys.executable, "-c", code, cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "out-0\nout-1\nout-2\n"  # what `iris run ... 2>/dev/null` shows
    assert [ln for ln in result.stderr.splitlines() if ln.startswith("err-")] == ["err-0", "err-1", "err-2"], result.stderr


def test_run_replicas_prefix_each_line_with_task_index(iris, workspace: Path) -> None:
    result = iris(
        "run", "--provider", "local", "--replicas", "2", "--cpu", "0.5", "--", "sh", "-c", "echo task $IRIS_TASK_INDEX of $IRIS_NUM_TASKS",
        cwd=workspace,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["[0] task 0 of 2", "[1] task 1 of 2"]


def test_run_max_retries_reruns_a_failing_task(iris, workspace: Path) -> None:
    # fails on the first attempt, succeeds on the second
    result = iris(
        "run", "--provider", "local", "--max-retries", "1", "--", "sh", "-c",
        'if [ "$IRIS_ATTEMPT_ID" = 0 ]; then echo first; exit 7; fi; echo second',
        cwd=workspace,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["first", "second"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--provider", "nope", "--", "true"], "unknown provider 'nope'; choose one of:"),
        (["run", "--provider", "local", "--memory", "2XB", "--", "true"], "'2XB' is not a size"),
        (["run", "--config", "missing.yaml", "--", "true"], "missing.yaml: config file not found"),
        (["run", "--config", "bad.yaml", "--", "true"], "bad.yaml: scale_groups.tpu.min_slices: expected int, got 'two'"),
        (["run", "--config", "broken.yaml", "--", "true"], "broken.yaml: not valid YAML at line"),
        (["run", "--provider", "local", "-e", "A", "B", "C", "--", "true"], "-e takes KEY [VALUE], got 3 values: A B C"),
        (["run", "--provider", "local", "--"], "no command given"),
        (["run", "--provider", "local"], "no command given"),
        (["run", "--provider", "local", "-e", "A=B", "--", "true"], "environment variable name 'A=B' is invalid; use a letter or '_'"),
        (["run", "--provider", "local", "-e", "1BAD", "x", "--", "true"], "environment variable name '1BAD' is invalid"),
        (["run", "--controller-url", "https://127.0.0.1:1", "--", "true"], "scheme 'https' is not supported; use http://HOST:PORT"),
        (["run", "--provider", "local", "--task-image", "Bad Image", "--", "true"], "Invalid value for '--task-image': 'Bad Image' is not a valid image reference"),
        (["run", "--provider", "local", "--gpu", "H100x0", "--", "true"], "Invalid value for '--gpu': count 0 is invalid"),
        (["run", "--provider", "local", "--gpu", "2", "--tpu", "v5litepod-8", "--", "true"], "--tpu and --gpu: give one accelerator kind per job"),
        (["run", "--provider", "local", "python", "-c", "print(1)"], "No such option '-c'. If it belongs to the command, put the command after --: iris run [OPTIONS] -- COMMAND"),
    ],
)
def test_run_bad_input_gets_one_line_and_nonzero_exit(iris, workspace: Path, args: list[str], expected: str) -> None:
    (workspace / "bad.yaml").write_text("scale_groups:\n  tpu:\n    min_slices: two\n")
    (workspace / "broken.yaml").write_text("provider: [\n")
    result = iris(*args, cwd=workspace)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_run_ctrl_c_or_sigterm_kills_the_job_cleans_up_and_exits_128_plus_signal(
    iris, workspace: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    pid_file = workspace / "task.pid"
    temp = tmp_path / "tmp"  # the local cluster's temporary state goes here: it must be gone after
    temp.mkdir()
    proc = subprocess.Popen(
        [IRIS, "run", "--provider", "local", "--", "sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"],
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=20)
        task_pid = int(pid_file.read_text())
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == code, stderr
        assert f"{sig.name}: killing job" in stderr and "Traceback" not in stderr

        def gone() -> bool:
            try:
                os.kill(task_pid, 0)
            except ProcessLookupError:
                return True
            return False

        assert wait_until(gone, timeout=10)
        assert [p.name for p in temp.iterdir() if p.name.startswith("iris-local-")] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_help_lists_run_and_plugins(iris, workspace: Path) -> None:
    result = iris("--help", cwd=workspace)
    assert result.returncode == 0
    assert "run" in result.stdout and "plugins" in result.stdout


def test_plugins_lists_first_party_distributions_with_versions(iris, workspace: Path) -> None:
    result = iris("plugins", "--check", cwd=workspace)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, dist in (("local", "iris-local"), ("gcp", "iris-gcp"), ("manual", "iris-manual")):
        assert any(line.split()[:3] == [name, dist, "0.1.0"] for line in lines), result.stdout


def test_help_does_not_import_grpc_or_google(iris, workspace: Path) -> None:
    code = "import sys; from iris_cli.main import cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc','google','iris','cloudpickle')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_run_provider_local_imports_no_google_cloud_docker_or_ssh_library(workspace: Path) -> None:
    """The local path runs a job without importing what the cloud providers need (``google.protobuf``
    is Iris's own wire format, so it is not counted)."""
    code = cli_import_probe(["run", "--provider", "local", "--", "true"])
    result = subprocess.run([sys.executable, "-c", code], cwd=workspace, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "EXIT 0" in result.stdout and "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_run_streams_child_job_output_into_the_parent_stream(iris, iris_workspace: Path) -> None:
    workspace = iris_workspace
    (workspace / "parent.py").write_text(
        "from iris.client import IrisClient\n"
        "from iris.cluster.types import Entrypoint\n"
        "print('parent up', flush=True)\n"
        "job = IrisClient.from_env().submit(name='kid', entrypoint=Entrypoint.from_command('echo', 'hello from the child'))\n"
        "print('child', job.wait(timeout=60).state.value, flush=True)\n"
    )
    result = iris("run", "--provider", "local", "--", "python", "parent.py", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["parent up", "[kid/0] hello from the child", "child SUCCEEDED"]
    quiet = iris("run", "--provider", "local", "--no-include-children-logs", "--", "python", "parent.py", cwd=workspace)
    assert quiet.stdout.splitlines() == ["parent up", "child SUCCEEDED"]


def test_run_marks_where_a_retried_attempt_starts_on_stderr(iris, workspace: Path) -> None:
    script = 'echo "attempt $IRIS_ATTEMPT_ID line 1"; echo "attempt $IRIS_ATTEMPT_ID line 2"; [ "$IRIS_ATTEMPT_ID" = 1 ]'
    result = iris("run", "--provider", "local", "--max-retries", "1", "--", "sh", "-c", script, cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["attempt 0 line 1", "attempt 0 line 2", "attempt 1 line 1", "attempt 1 line 2"]
    assert "iris: attempt 1 (after attempt 0)" in result.stderr.splitlines()


def test_run_after_a_sigkilled_run_stops_what_it_left_and_removes_its_directory(iris, workspace: Path, tmp_path: Path) -> None:
    pid_file = workspace / "task.pid"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.Popen(
        [IRIS, "run", "--provider", "local", "--", "sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"],
        cwd=workspace, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    task_pid, task_start = None, None
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=20)
        task_pid = int(pid_file.read_text())
        task_start = pid_start_time(task_pid)
        proc.kill()  # SIGKILL: nothing of iris gets to clean up
        proc.wait(timeout=10)
        assert pid_start_time(task_pid) == task_start  # the task lives on, orphaned
        assert [p.name for p in temp.iterdir() if p.name.startswith("iris-local-")]

        result = iris("run", "--provider", "local", "--", "true", cwd=workspace, env={"TMPDIR": str(temp)})
        assert result.returncode == 0, result.stderr
        assert wait_until(lambda: pid_start_time(task_pid) != task_start, timeout=10)  # reaped
        assert [p.name for p in temp.iterdir() if p.name.startswith("iris-local-")] == []
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_strays(str(workspace))  # the task's wrapper, if the test failed before the reaping
        if task_pid is not None and task_start is not None and pid_start_time(task_pid) == task_start:
            os.kill(task_pid, signal.SIGKILL)  # the task itself (its command line no longer names the workspace)


def test_run_unreachable_controller_is_one_line_exit_1_as_for_job_commands(iris, workspace: Path) -> None:
    result = iris("run", "--controller-url", "http://127.0.0.1:1", "--", "true", cwd=workspace)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().startswith("iris: error: cannot reach the controller at http://127.0.0.1:1")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_run_bundle_limit_comes_from_the_flag_or_the_config(iris, workspace: Path) -> None:
    (workspace / "data.bin").write_bytes(os.urandom(300_000))  # incompressible: the bundle stays large
    (workspace / "small.yaml").write_text("bundle: {max_size: 100KB}\n")
    (workspace / "roomy.yaml").write_text("bundle: {max_size: 10MB}\n")
    flag = iris("run", "--provider", "local", "--max-bundle-size", "100KB", "--", "true", cwd=workspace)
    assert flag.returncode == 2 and "over the bundle limit of 100.0KB; largest: data.bin" in flag.stderr, flag.stderr
    config = iris("run", "--config", "small.yaml", "--", "true", cwd=workspace)
    assert config.returncode == 2 and "over the bundle limit of 100.0KB" in config.stderr, config.stderr
    roomy = iris("run", "--config", "roomy.yaml", "--", "true", cwd=workspace)
    assert roomy.returncode == 0, roomy.stderr
    assert iris("run", "--provider", "local", "--max-bundle-size", "lots", "--", "true", cwd=workspace).returncode == 2


def test_bundle_progress_is_reported_while_a_slow_bundle_is_made(tmp_path: Path) -> None:
    from iris.bundle import create_bundle

    for i in range(50):
        (tmp_path / f"f{i}.txt").write_text("x" * 1000)
    heard: list[tuple[int, int, int]] = []
    bundle = create_bundle(tmp_path, progress=lambda *report: heard.append(report), progress_after=0.0, progress_every=0.0)
    assert bundle.file_count == 50
    assert heard[0][1] == 50 and heard[-1] == (50, 50, 50_000)
    assert [done for done, _, _ in heard[:-1]] == sorted(done for done, _, _ in heard[:-1])
    quiet: list[tuple[int, int, int]] = []
    create_bundle(tmp_path, progress=lambda *report: quiet.append(report))  # fast: under a second, says nothing
    assert quiet == []


def _kernel_memory_limits() -> bool:
    from iris_local.cgroups import CgroupError, Cgroups

    try:
        found = Cgroups.detect()
    except CgroupError:
        return False
    return found is not None and found.memory


@pytest.mark.skipif(not _kernel_memory_limits(), reason="no cgroup with a memory controller this process may use")
def test_run_short_memory_spike_over_the_limit_fails_as_oom(iris, workspace: Path) -> None:
    """50 MB for a few milliseconds under --memory 20MB: gone long before a sample, but the
    kernel's limit ends it, and the job fails as out of memory."""
    code = "b = bytearray(50 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); del b; print('survived')"
    result = iris("run", "--provider", "local", "--memory", "20MB", "--", sys.executable, "-c", code, cwd=workspace)
    assert result.returncode == 137, (result.stdout, result.stderr)
    assert "survived" not in result.stdout
    assert "out of memory" in result.stderr, result.stderr


@pytest.mark.parametrize("setting", ["bogus", "v3"])
def test_run_with_an_iris_cgroups_setting_this_machine_cannot_give_fails_at_once(iris, workspace: Path, setting: str) -> None:
    # before: every worker start failed and the job waited PENDING behind the autoscaler's backoff
    result = iris("run", "--provider", "local", "--", "true", cwd=workspace, env={"IRIS_CGROUPS": setting}, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"iris: error: IRIS_CGROUPS: {setting!r} is not one of auto, v1, v2, off; leave IRIS_CGROUPS unset (auto) or set it to off"
    ]
