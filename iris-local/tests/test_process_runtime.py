"""ProcessRuntime specifics beyond the ContainerRuntime contract: files, adoption, memory watch."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.plugin.protocols import ContainerSpec, TaskStartError
from iris.testing import wait_until
from iris_local.cgroups import CgroupError, Cgroups
from iris_local.process_runtime import ProcessHandle, ProcessRuntime

TIMEOUT = 30.0


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ProcessHandle]]:
    """Handles to kill and remove after the test (their cgroups too)."""
    handles: list[ProcessHandle] = []
    yield handles
    for handle in handles:
        handle.kill(grace_seconds=0)
        handle.wait(timeout=10)
    for handle in handles:
        try:
            handle.remove()
        except (OSError, RuntimeError):
            pass


def _punches_holes(directory: Path) -> bool:
    """Whether this filesystem gives back a hole's blocks (what ProcessHandle's release relies on)."""
    from iris_local.process_runtime import release

    probe = directory / "hole-probe"
    probe.write_bytes(b"x" * (1 << 20))
    before = os.stat(probe).st_blocks
    release(probe, 0, 1 << 20)
    after = os.stat(probe).st_blocks
    probe.unlink()
    return after < before


def start(
    runtime: ProcessRuntime, started: list, tmp_path: Path, container_id: str, argv: list[str], **kw: object
) -> ProcessHandle:
    handle = runtime.start(
        ContainerSpec(container_id=container_id, argv=argv, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, **kw)
    )  # type: ignore[arg-type]
    started.append(handle)
    return handle


def test_process_runtime_keeps_meta_log_and_exit_code_files(tmp_path: Path, started: list) -> None:
    runtime = ProcessRuntime(tmp_path / "rt")
    handle = start(runtime, started, tmp_path, "c1", ["sh", "-c", "echo out; exit 4"], labels={"k": "v"})
    assert handle.wait(timeout=TIMEOUT).exit_code == 4
    directory = tmp_path / "rt" / "containers" / "c1"
    meta = json.loads((directory / "meta.json").read_text())
    assert (meta["container_id"], meta["labels"], meta["argv"]) == ("c1", {"k": "v"}, ["sh", "-c", "echo out; exit 4"])
    assert (directory / "exit_code").read_text().strip() == "4"
    assert (directory / "stdout").read_bytes() == b"out\n"
    assert handle.read_logs(0, 100) == (directory / "output.log").read_bytes() == b"o  out\n"


def test_process_runtime_keeps_each_stream_apart_and_an_adopting_runtime_resumes_its_records(
    tmp_path: Path, started: list
) -> None:
    runtime = ProcessRuntime(tmp_path / "rt")
    script = "echo out-1; echo err-1 >&2; read _ < fifo; echo out-2; printf err-2 >&2"
    os.mkfifo(tmp_path / "fifo")
    handle = start(runtime, started, tmp_path, "c1", ["sh", "-c", script])
    assert wait_until(lambda: handle.log_size() == len(b"o  out-1\ne  err-1\n"), timeout=TIMEOUT)
    assert sorted(handle.read_logs(0, 100).splitlines()) == [b"e  err-1", b"o  out-1"]
    adopted = ProcessRuntime(tmp_path / "rt").list_containers({})[0]  # as a restarted worker would
    with open(tmp_path / "fifo", "w") as fifo:
        fifo.write("go\n")
    assert adopted.wait(timeout=TIMEOUT).exit_code == 0
    records = adopted.read_logs(0, 1000).splitlines()
    assert len(records) == 4 and records[2:] == [b"o  out-2", b"e+ err-2"], records
    assert handle.read_logs(0, 1000) == adopted.read_logs(0, 1000)  # the first handle sees the same records


def test_process_runtime_start_reusing_an_id_replaces_the_old_files(tmp_path: Path, started: list) -> None:
    runtime = ProcessRuntime(tmp_path / "rt")
    first = start(runtime, started, tmp_path, "same", ["sh", "-c", "echo first"])
    first.wait(timeout=TIMEOUT)
    second = start(runtime, started, tmp_path, "same", ["sh", "-c", "echo second"])
    second.wait(timeout=TIMEOUT)
    assert second.read_logs(0, 100) == b"o  second\n"
    assert len(runtime.list_containers({})) == 1


def test_process_runtime_remove_running_container_raises(tmp_path: Path, started: list) -> None:
    runtime = ProcessRuntime(tmp_path / "rt")
    handle = start(runtime, started, tmp_path, "c1", ["sleep", "60"])
    with pytest.raises(RuntimeError, match="c1 is still running; kill it first"):
        handle.remove()
    assert (tmp_path / "rt" / "containers" / "c1").is_dir()


def test_process_runtime_container_killed_without_exit_file_reports_signal_code(tmp_path: Path, started: list) -> None:
    runtime = ProcessRuntime(tmp_path / "rt")
    handle = start(runtime, started, tmp_path, "c1", ["sleep", "60"])
    os.killpg(handle.pgid, signal.SIGKILL)
    status = handle.wait(timeout=TIMEOUT)
    assert (status.running, status.exit_code, status.oom) == (False, 137, False)


def test_process_runtime_corrupt_meta_is_skipped_when_listing(tmp_path: Path, started: list) -> None:
    runtime = ProcessRuntime(tmp_path / "rt")
    handle = start(runtime, started, tmp_path, "good", ["true"])
    handle.wait(timeout=TIMEOUT)
    broken = tmp_path / "rt" / "containers" / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    assert [h.container_id for h in runtime.list_containers({})] == ["good"]


def test_process_runtime_adopted_container_over_memory_limit_is_killed_as_oom(tmp_path: Path, started: list) -> None:
    code = (
        "import os, time\n"
        "while not os.path.exists('go'): time.sleep(0.01)\n"
        "blob = b'x' * (300 * 1024 * 1024)\n"
        "time.sleep(60)\n"
    )
    first = ProcessRuntime(tmp_path / "rt")
    original = start(first, started, tmp_path, "hog", [sys.executable, "-c", code], memory_bytes=100 * 1024 * 1024)
    first.close()  # the worker "restarts": the old memory monitor stops
    second = ProcessRuntime(tmp_path / "rt")
    try:
        (adopted,) = second.list_containers({})
        (tmp_path / "go").touch()
        assert wait_until(lambda: not original.status().running, TIMEOUT)  # the original handle reaps the process
        status = adopted.status()
        assert (status.running, status.oom) == (False, True)
    finally:
        second.close()


def test_process_runtime_adopted_container_ending_unreaped_is_seen_as_ended(tmp_path: Path, started: list) -> None:
    first = ProcessRuntime(tmp_path / "rt")
    original = start(first, started, tmp_path, "c1", ["sleep", "60"])
    (adopted,) = ProcessRuntime(tmp_path / "rt").list_containers({})
    os.killpg(original.pgid, signal.SIGKILL)  # it dies; nobody has reaped it yet
    assert wait_until(lambda: not adopted.status().running, 3.0)


# --- commands that cannot run: the task's fault, raised before any process exists ------------


@pytest.mark.parametrize(
    ("argv", "env", "message", "exit_code"),
    [
        (["no-such-command-for-iris"], {"PATH": "/usr/bin:/bin"}, "cannot run 'no-such-command-for-iris': not found in PATH=/usr/bin:/bin", 127),
        (["/nonexistent/tool", "-x"], {}, "cannot run '/nonexistent/tool': not found", 127),
        (["./data.txt"], {}, "data.txt is not an executable file", 126),
        (["/"], {}, "/ is not an executable file", 126),
        ([], {}, "cannot run an empty command", 127),
        (["sh", "-c", "echo a\0b"], {}, "contains a NUL byte", None),
        (["sh"], {"BAD=NAME": "x"}, "'BAD=NAME' is not a valid environment variable name", None),
    ],
)
def test_process_runtime_start_of_a_command_that_cannot_run_raises_task_start_error(
    tmp_path: Path, argv: list[str], env: dict[str, str], message: str, exit_code: int | None
) -> None:
    (tmp_path / "data.txt").write_text("not a program\n")
    runtime = ProcessRuntime(tmp_path / "rt")
    with pytest.raises(TaskStartError, match=re.escape(message)) as raised:
        runtime.start(ContainerSpec(container_id="c1", argv=argv, cwd=tmp_path, env=env))
    assert raised.value.exit_code == exit_code
    assert runtime.list_containers({}) == []


def test_process_runtime_finds_commands_relative_to_cwd_and_through_path(tmp_path: Path, started: list) -> None:
    script = tmp_path / "bin" / "hello"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho hello from $0\n")
    script.chmod(0o755)
    runtime = ProcessRuntime(tmp_path / "rt")
    by_path = runtime.start(ContainerSpec(container_id="c1", argv=["hello"], cwd=tmp_path, env={"PATH": "bin:/usr/bin:/bin"}))
    relative = runtime.start(ContainerSpec(container_id="c2", argv=["./bin/hello"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}))
    started.extend([by_path, relative])
    assert by_path.wait(timeout=TIMEOUT).exit_code == 0 and relative.wait(timeout=TIMEOUT).exit_code == 0
    assert by_path.read_logs(0, 100) == b"o  hello from bin/hello\n"
    assert relative.read_logs(0, 100) == b"o  hello from ./bin/hello\n"


def test_process_runtime_kill_right_after_start_reaches_the_task(tmp_path: Path, started: list) -> None:
    # start returns once the task runs, so an immediate group SIGTERM ends it, not the grace period
    runtime = ProcessRuntime(tmp_path / "rt")
    for i in range(10):
        handle = start(runtime, started, tmp_path, f"c{i}", ["sleep", "60"])
        handle.kill(grace_seconds=60)
        status = handle.wait(timeout=TIMEOUT)
        assert (status.running, status.exit_code) == (False, 143), (i, status)  # SIGTERM, recorded by the wrapper


def _kernel_cgroups() -> str | None:
    """The cgroup version whose memory limits this machine lets the runtime use, or None."""
    for mode in ("v2", "v1"):
        try:
            found = Cgroups.detect(mode)
        except CgroupError:
            continue
        if found is not None and found.memory:
            return mode
    return None


@pytest.mark.skipif(_kernel_cgroups() is None, reason="no cgroup with a memory controller this process may use")
def test_process_runtime_short_memory_spike_over_the_limit_ends_as_oom(tmp_path: Path, started: list) -> None:
    """A 50 MB allocation held for a few milliseconds under a 20 MB limit: far shorter than the
    sampling interval, so only the kernel's limit catches it."""
    code = "b = bytearray(50 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); del b\nprint('survived')"
    runtime = ProcessRuntime(tmp_path / "rt", cgroups=_kernel_cgroups())
    assert runtime.memory_enforcement == f"cgroup-{_kernel_cgroups()}"
    handle = start(runtime, started, tmp_path, "spike", [sys.executable, "-c", code], memory_bytes=20 * 1024 * 1024)
    status = handle.wait(timeout=TIMEOUT)
    assert (status.running, status.oom, status.exit_code) == (False, True, 137), (status, handle.read_logs(0, 4096))
    assert b"survived" not in handle.read_logs(0, 4096)
    cgroup = Path(json.loads((tmp_path / "rt" / "containers" / "spike" / "meta.json").read_text())["cgroup"])
    assert cgroup.is_dir()
    handle.remove()
    assert not cgroup.exists()  # removing the container removes its cgroup


def test_process_runtime_without_cgroups_samples_memory(tmp_path: Path) -> None:
    assert ProcessRuntime(tmp_path / "rt", cgroups="off").memory_enforcement == "sampled"


def test_process_runtime_unknown_cgroup_mode_names_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match=r"IRIS_CGROUPS: 'v3' is not one of auto, v1, v2, off"):
        ProcessRuntime(tmp_path / "rt", cgroups="v3")


def test_process_runtime_output_larger_than_one_move_comes_whole_and_in_order(tmp_path: Path, started: list) -> None:
    runtime = ProcessRuntime(tmp_path / "rt")
    code = "import sys\nw = sys.stdout.write\nfor i in range(1_000_000):\n    w(f'{i:09d}\\n')\nsys.stderr.write('done')\n"
    handle = start(runtime, started, tmp_path, "big", [sys.executable, "-c", code])
    assert handle.wait(timeout=TIMEOUT).exit_code == 0
    data = b""
    while True:  # as the worker reads: what is there, then again until nothing more comes
        size = handle.log_size()
        data += handle.read_logs(len(data), size - len(data))
        if handle.log_size() == len(data):
            break
    records = data.split(b"\n")[:-1]
    assert len(records) == 1_000_001
    assert [r for r in records if r.startswith(b"e")] == [b"e+ done"]
    # the moved bytes are on disk once: the stream file keeps its size, not its blocks (ext4, tmpfs...)
    stdout = os.stat(tmp_path / "rt" / "containers" / "big" / "stdout")
    assert stdout.st_size == 10_000_000
    if _punches_holes(tmp_path):
        assert stdout.st_blocks * 512 < 2 << 20, stdout
    # a restarted worker's handle counts what the records hold (over several pieces) and adds nothing
    (adopted,) = ProcessRuntime(tmp_path / "rt").list_containers({})
    assert adopted.log_size() == len(data) and adopted.read_logs(0, len(data) + 1) == data
    assert [r for r in records if r.startswith(b"o")] == [b"o  %09d" % i for i in range(1_000_000)]


@pytest.mark.skipif(_kernel_cgroups() is None, reason="no cgroup with a memory controller this process may use")
def test_process_runtime_reused_directory_starts_a_container_with_nothing_of_the_last_one(
    tmp_path: Path, started: list
) -> None:
    """A removed container's directory is kept (emptied) and reused by the next start: the new
    container has none of the old one's output, exit code, OOM mark, temporary files or extra
    files, and a file linked elsewhere is let go, not emptied."""
    runtime = ProcessRuntime(tmp_path / "rt", cgroups=_kernel_cgroups())
    keep = tmp_path / "keep"
    keep.write_text("precious")
    script = 'echo out; echo err >&2; echo t > "$TMPDIR/t"; mkdir "$TMPDIR/d"; touch "$TMPDIR/../extra"; exit 3'
    first = start(runtime, started, tmp_path, "c1", ["sh", "-c", script])
    assert first.wait(timeout=TIMEOUT).exit_code == 3
    assert first.read_logs(0, 100) != b""
    old = tmp_path / "rt" / "containers" / "c1"
    (old / "oom").touch()
    os.unlink(old / "stderr")
    os.link(keep, old / "stderr")  # a task could link a file of the worker's in
    first.remove()
    assert not old.exists() and keep.read_text() == "precious"
    spares = list((tmp_path / "rt" / "spare").glob("*/*"))
    assert [p.name for p in spares] == ["c1"]

    second = start(runtime, started, tmp_path, "c2", ["sh", "-c", "ls -A \"$TMPDIR\"; ls -A \"$TMPDIR/..\" >&2"])
    directory = tmp_path / "rt" / "containers" / "c2"
    assert not spares[0].exists()  # the spare became c2
    assert second.wait(timeout=TIMEOUT).exit_code == 0
    assert (directory / "exit_code").read_text().strip() == "0"
    assert second.status().oom is False
    assert json.loads((directory / "meta.json").read_text())["container_id"] == "c2"
    files = {line.decode()[3:] for line in second.read_logs(0, 4096).splitlines()}
    # its own files only: those the last container wrote to were made anew (exit_code and
    # output.log exist only once written), the empty ones kept
    assert {"meta.json", "stderr", "stdout", "tmp"} <= files <= {"exit_code", "log.lock", "meta.json", "output.log", "stderr", "stdout", "tmp"}, files
    assert keep.read_text() == "precious"
    second.remove()
    runtime.close()
    assert not (tmp_path / "rt" / "spare").exists() or not any((tmp_path / "rt" / "spare").iterdir())


def test_process_runtime_without_cgroups_removes_directories_instead_of_reusing_them(tmp_path: Path, started: list) -> None:
    """Without a cgroup nothing proves the task's processes are gone (one could still write to
    its stream files), so its directory is not reused."""
    runtime = ProcessRuntime(tmp_path / "rt", cgroups="off")
    handle = start(runtime, started, tmp_path, "c1", ["true"])
    assert handle.wait(timeout=TIMEOUT).exit_code == 0
    handle.remove()
    assert not (tmp_path / "rt" / "containers" / "c1").exists()
    assert not list((tmp_path / "rt" / "spare").glob("*/*"))


def test_process_runtime_removes_the_spare_directories_of_ended_processes(tmp_path: Path) -> None:
    orphan = tmp_path / "rt" / "spare" / f"{_ended_pid()}.0" / "c1"
    orphan.mkdir(parents=True)
    mine = tmp_path / "rt" / "spare" / f"{os.getpid()}.99"
    mine.mkdir()
    ProcessRuntime(tmp_path / "rt", cgroups="off")
    assert not orphan.parent.exists() and mine.exists()


def _ended_pid() -> int:
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
