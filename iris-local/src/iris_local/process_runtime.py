"""ContainerRuntime ``process``: each attempt is a process group on this machine.

Each container keeps its files under ``<root>/containers/<id>/``: ``meta.json`` (labels, pid),
``stdout`` and ``stderr`` (the task's two streams, written by the kernel: nothing runs beside
the task to copy them), ``output.log`` (their lines as records tagged with their stream, see
:mod:`iris.runtime.output_log`), ``exit_code`` (written by a tiny
``sh`` wrapper, so a restarted worker can learn the outcome of a process it did not start) and
``tmp/``, the task's ``TMPDIR`` unless its env sets one, so its temporary files go with it.
Once a container is removed and its cgroup is gone, its directory is emptied and kept for a later
start (:mod:`iris.runtime.spare_directories`): a new inode per file costs far more, on some
filesystems, than reusing an empty one.

``log_size`` and ``read_logs`` first move what the task wrote since the last call from the two
stream files into ``output.log``, a record per line (a line still being written waits for its
newline, or for the task's end). So lines keep their order within each stream; between the
streams they are ordered as they were read, at most one read apart (the worker asks every 20 ms
while a task runs). Any handle, in any process, can resume the move after a restart: it starts
from what the records already hold. Bytes moved are given back to the disk a megabyte at a time
(:func:`release`), so a chatty task's output is not kept twice. Why not a process beside each task copying two pipes (with
a timestamp per line): it would cost every start a process (the task's start is about a
millisecond), and a task would lose its output (or get SIGPIPE) when that process died; the
kernel writes the two files whatever happens to the worker.

A command that cannot be run (not found in the spec's ``PATH``, not executable, argv or env
that cannot be passed to a process) raises :class:`~iris.plugin.protocols.TaskStartError` from
``start``, before any process exists.

A kill signals the whole process group at once (the wrapper traps SIGTERM, so it lives on to
record the task's exit code) and then waits for the wrapper to end: no scan of ``/proc`` in the
common case, so hundreds of containers can be killed at once.

Each container gets its own cgroup where the machine allows (see :mod:`iris_local.cgroups`):
the wrapper joins it before the task runs, so processes that leave the task's process group
(``setsid``, a double fork) are still killed with it, and whatever a task leaves running when it
ends is killed when the container is removed. The kernel then enforces the memory limit (a
short spike over it ends the task as OOM). Without cgroups, memory is enforced by a monitor that
samples the resident memory of the process group every ``MEMORY_POLL_SECONDS`` and kills the
group (reported as OOM) when it exceeds the limit; ``memory_enforcement`` says which holds. CPU
is a scheduling quantity only: the process runtime does not throttle it.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from iris.plugin.protocols import ContainerSpec, ContainerStatus, TaskStartError
from iris.runtime.output_log import STDERR, STDOUT, OutputLog, records
from iris.runtime.spare_directories import SpareDirectories, empty_tree, open_empty
from iris.procfs import boottime_ns, child_start_time, group_alive, group_members, group_rss, pid_start_time
from iris_local.cgroups import Cgroup, Cgroups

__all__ = ["ProcessHandle", "ProcessRuntime", "group_alive", "group_members", "group_rss"]

logger = logging.getLogger(__name__)

# sh -c WRAPPER iris-task EXIT_FILE argv...: run argv, record its exit code.
# The TERM trap keeps the wrapper alive while the task handles SIGTERM in its grace period
# (a trap, unlike an ignored signal, is reset to the default in the exec'd task). The exit file
# is read only once the wrapper has ended, so writing it needs no rename (and no `mv` process).
WRAPPER = 'trap : TERM; f=$1; shift; "$@"; rc=$?; echo $rc > "$f"; exit $rc'
# The same, joining the cgroup named first before anything else runs.
CGROUP_WRAPPER = 'echo $$ > "$1" || exit 125; shift; ' + WRAPPER
MEMORY_POLL_SECONDS = 0.25
RELEASE_BYTES = 1 << 20  # moved bytes of a stream file given back to the disk at a time (see release)
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
MOVE_BYTES = 4 << 20  # of each stream per move into output.log (the worker sends 1 MiB per exchange)
KILL_POLL_SECONDS = 0.05
# Emptied container directories a runtime keeps for reuse (iris.runtime.spare_directories), the
# files in them kept while empty (a file with content is made again) and the directory kept, emptied.
SPARE_DIRECTORIES = 64
_REUSED_FILES = frozenset({STDOUT, STDERR, "exit_code", "meta.json", "output.log", "log.lock"})
_REUSED_DIRS = frozenset({"tmp"})
_spare_names = itertools.count()
TASK_START_TIMEOUT_SECONDS = 10.0
# Where /bin/sh looks for a command when the environment has no PATH.
SH_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# (program, PATH) -> where check_command found it (a PATH lookup is several stat calls)
_FOUND: dict[tuple[str, str], Path] = {}


def check_command(spec: ContainerSpec) -> None:
    """Raise TaskStartError if ``spec`` cannot be run as a process: an empty or unencodable argv
    or env, or a program that is not found (exit code 127, as a shell says) or not executable
    (126). The program is looked up as ``execvp`` would, in the spec's PATH, relative to its cwd."""
    argv = list(spec.argv)
    if not argv or not argv[0]:
        raise TaskStartError("cannot run an empty command", exit_code=127)
    for arg in argv:
        if "\0" in arg:
            raise TaskStartError(f"cannot run {argv[0]!r}: argument {arg!r} contains a NUL byte")
    for key, value in spec.env.items():
        if not key or "=" in key or "\0" in key:
            raise TaskStartError(f"cannot run {argv[0]!r}: {key!r} is not a valid environment variable name")
        if "\0" in value:
            raise TaskStartError(f"cannot run {argv[0]!r}: environment variable {key} contains a NUL byte")
    program = argv[0]
    cwd = Path(spec.cwd)
    if "/" in program:
        candidates = [cwd / program]
        where = ""
    else:
        search = spec.env.get("PATH", SH_DEFAULT_PATH)
        candidates = [cwd / d / program for d in search.split(os.pathsep)]
        where = f" in PATH={search}"
    # found in this PATH before (absolute entries only): one check instead of one per entry
    key = (program, search) if "/" not in program and all(os.path.isabs(d) for d in search.split(os.pathsep)) else None
    known = _FOUND.get(key) if key else None
    if known is not None and os.access(known, os.X_OK):
        return
    for candidate in candidates:  # execvp's order: the first executable file wins
        if os.access(candidate, os.X_OK) and candidate.is_file():
            if key:
                if len(_FOUND) > 1024:
                    _FOUND.clear()
                _FOUND[key] = candidate
            return
    present = [c for c in candidates if c.exists()]
    if present:
        raise TaskStartError(f"cannot run {program!r}: {present[0]} is not an executable file", exit_code=126)
    raise TaskStartError(f"cannot run {program!r}: not found{where}", exit_code=127)


def _remove_orphan_spares(spare_root: Path) -> None:
    """Remove the spare directories of runtimes whose process has ended (named ``<pid>.<n>``)."""
    try:
        entries = list(os.scandir(spare_root))
    except OSError:
        return
    for entry in entries:
        try:
            pid = int(entry.name.split(".")[0])
            os.kill(pid, 0)
            continue  # its process still runs
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)


_punch_hole: Any = None


def release(path: Path, start: int, end: int) -> None:
    """Give the disk blocks of bytes ``start`` to ``end`` of ``path`` back to the filesystem,
    keeping the file's size and every other byte (``fallocate`` punching a hole, which ext4,
    xfs, btrfs and tmpfs do). Only bytes already moved into output.log are released, so the
    task's output is on disk once, not twice. Does nothing where the kernel or filesystem
    cannot; the bytes then stay until the container is removed."""
    global _punch_hole
    if _punch_hole is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
        if function is None:
            _punch_hole = False
            return
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        function.restype = ctypes.c_int
        _punch_hole = function
    if not _punch_hole or end <= start:
        return
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return
    try:
        _punch_hole(fd, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, start, end - start)  # an error: nothing given back
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _children(pid: int) -> list[int] | None:
    """The pids of ``pid``'s children; None if this kernel does not list them (or it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return None


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def _wait_for_task(popen: subprocess.Popen, argv: list[str], container_id: str) -> None:
    """Return once the task runs: the wrapper (started with ``argv``) has forked a child that
    exec'd something else (or the wrapper ended). By then the wrapper's TERM trap is set and the
    task's SIGTERM is its own, so a kill's group SIGTERM reaches the task and spares the wrapper.
    (A signal that arrives between fork and exec is caught by the forked shell and lost in the
    exec; a process in the middle of an exec shows an empty command line.)"""
    wrapper = b"".join(os.fsencode(arg) + b"\0" for arg in argv)
    deadline = time.monotonic() + TASK_START_TIMEOUT_SECONDS
    while popen.poll() is None:
        children = _children(popen.pid)
        if children is None:  # no children list on this kernel: any other member of its group
            children = [pid for pid in group_members(popen.pid) if pid != popen.pid]
        if any(_cmdline(pid) not in (None, b"", wrapper) for pid in children):
            return
        if time.monotonic() >= deadline:
            logger.warning("container %s: the task did not start within %gs", container_id, TASK_START_TIMEOUT_SECONDS)
            return
        time.sleep(0.0005)


class ProcessHandle:
    def __init__(
        self,
        directory: Path,
        meta: dict,
        popen: subprocess.Popen | None = None,
        wrapper_argv: list[str] | None = None,
        recycle: Callable[[Path], bool] | None = None,
    ):
        """``recycle(directory)``: offered the container's directory at removal once nothing of
        the container can run (its cgroup is gone); True if it took it."""
        self._dir = directory
        self._recycle = recycle
        # set by remove() once nothing of the container is left running (its cgroup is gone), so
        # no process of the task holds or writes files it was given (read by the worker)
        self.contained = False
        self._meta = meta
        self._popen = popen
        self._wrapper_argv = wrapper_argv  # set while the task may not have exec'd yet
        self._killed = False
        self._exit_fd: int | None = None
        self._oom = False  # this handle killed its container for exceeding memory
        self._log = OutputLog(directory / "output.log")
        self._log_lock = threading.Lock()
        self._captured: dict[str, int] | None = None  # bytes of each stream in output.log
        self._log_known = -1  # output.log's size when this handle last wrote or counted it
        self._log_seen: tuple[dict[str, int], bool] | None = None  # stream sizes at the last move
        self._released: dict[str, int] = {}  # bytes of each stream file this handle gave back
        cgroup = meta.get("cgroup")
        self._cgroup = Cgroup(cgroup, meta.get("cgroup_version", 1)) if cgroup else None

    @property
    def container_id(self) -> str:
        return self._meta["container_id"]

    @property
    def labels(self) -> Mapping[str, str]:
        return self._meta["labels"]

    @property
    def memory_bytes(self) -> int:
        return self._meta.get("memory_bytes", 0)

    @property
    def pgid(self) -> int:
        return self._meta["pid"]

    def _exit_file_code(self) -> int | None:
        try:
            return int((self._dir / "exit_code").read_text().strip())
        except (OSError, ValueError):
            return None

    def _alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return pid_start_time(self._meta["pid"]) == self._meta.get("start_time")

    def status(self) -> ContainerStatus:
        # a container this process started answers from memory; an adopted one from its files
        oom = self._oom if self._popen is not None else (self._dir / "oom").exists()
        if self._alive():
            return ContainerStatus(running=True, oom=oom)
        if not oom and self._cgroup is not None and self._cgroup.oom_kills():
            oom = self._oom = True  # the kernel killed a member for exceeding the limit
        if self._popen is not None:  # the wrapper exits with the task's code
            code = self._popen.returncode
            if code is not None and code < 0:
                code = 128 - code  # killed by a signal: report like a shell does
        else:
            code = self._exit_file_code()
        if oom:
            return ContainerStatus(
                running=False,
                exit_code=code if code is not None else 137,
                oom=True,
                error="out of memory: killed for exceeding its memory limit",
            )
        if code is None:
            return ContainerStatus(running=False, exit_code=-1, error="process ended without an exit status")
        return ContainerStatus(running=False, exit_code=code)

    def wait(self, timeout: float | None = None) -> ContainerStatus:
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            return self.status()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        return self.status()

    def _signal_group(self, sig: int) -> None:
        """``sig`` to the task's process group and, with a cgroup, to everything in it (what
        left the group too)."""
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            logger.warning("no permission to signal process group %d", self.pgid)
        if self._cgroup is not None:
            if sig == signal.SIGKILL:
                self._cgroup.kill_all()
            else:  # only those that left the group: one signal each (a second would interrupt a handler)
                self._cgroup.signal(sig, skip_group=self.pgid)

    def kill(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM every process of the container, give them ``grace_seconds`` to exit, then SIGKILL.

        The wrapper traps SIGTERM, so it outlives the task to record its exit code; the first kill
        of a container this runtime started waits until the task has exec'd (a SIGTERM between
        the wrapper's fork and the exec would be lost), which costs only a kill that comes within
        milliseconds of the start. Waiting costs no ``/proc`` scan
        while the wrapper runs or once the group is empty; only a group outliving its wrapper (the
        task's own children) is scanned, so zombies nobody reaps do not count as alive.
        """
        self._killed = True
        deadline = time.monotonic() + grace_seconds
        if self._popen is not None and self._wrapper_argv is not None:
            # a SIGTERM between the wrapper's fork and the task's exec would be lost: wait for the exec
            _wait_for_task(self._popen, self._wrapper_argv, self.container_id)
            self._wrapper_argv = None
        self._signal_group(signal.SIGTERM)
        while self._alive() and time.monotonic() < deadline:
            self.wait(min(KILL_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        while not self._group_gone() and time.monotonic() < deadline:
            time.sleep(KILL_POLL_SECONDS)
        self._signal_group(signal.SIGKILL)  # whatever ignored SIGTERM or outlived the grace
        self.wait(5.0)

    def _group_gone(self) -> bool:
        if self._cgroup is not None and self._cgroup.members():
            return False
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return not group_alive(self.pgid)

    def oom_kill(self) -> None:
        self._oom = True
        (self._dir / "oom").touch()
        self._signal_group(signal.SIGKILL)

    # --- logs ---------------------------------------------------------------------------

    def _sync_logs(self) -> None:
        """Move what the task wrote to its stream files since the last call into output.log."""
        ended = not self._alive()  # first: once it has ended, the sizes below hold all it wrote
        sizes = {stream: _size(self._dir / stream) for stream in (STDOUT, STDERR)}
        if (sizes, ended) == self._log_seen:
            return  # nothing new since the last move (the common case: two stat calls)
        if not any(sizes.values()):  # the task wrote nothing (yet): nothing to move, no lock to take
            self._log_seen = (sizes, ended)
            return
        with self._log_lock, open(self._dir / "log.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one mover at a time, across handles and processes
            if self._captured is None or self._log.size() != self._log_known:
                self._captured = self._log.captured()  # first call, or another handle moved some
            captured = self._captured
            out = []
            behind = False  # more than one move's worth was written: the next call moves more
            for stream in (STDOUT, STDERR):
                if sizes[stream] <= captured[stream]:
                    continue
                want = min(sizes[stream] - captured[stream], MOVE_BYTES)
                behind = behind or want < sizes[stream] - captured[stream]
                try:
                    with open(self._dir / stream, "rb") as f:
                        f.seek(captured[stream])
                        data = f.read(want)
                except OSError:
                    continue
                # a line still being written waits for its newline, or for the task's end
                chunk, used = records(stream, data, final=ended and len(data) == sizes[stream] - captured[stream])
                out.append(chunk)
                captured[stream] += used
            self._log.append(b"".join(out))
            self._log_known = self._log.size()
            for stream in (STDOUT, STDERR):  # what is in output.log now need not stay on disk twice
                if captured[stream] - self._released.get(stream, 0) >= RELEASE_BYTES:
                    release(self._dir / stream, self._released.get(stream, 0), captured[stream])
                    self._released[stream] = captured[stream]
            self._log_seen = None if behind else (sizes, ended)

    def log_size(self) -> int:
        self._sync_logs()
        return self._log.size()

    def read_logs(self, offset: int, max_bytes: int) -> bytes:
        self._sync_logs()
        return self._log.read(offset, max_bytes)

    def exit_fd(self) -> int | None:
        """A pidfd of the wrapper: readable once it ends (None where the kernel has none, or the
        process is already gone)."""
        if self._exit_fd is None and hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(self._meta["pid"])
            except OSError:
                return None
            if self._popen is None and pid_start_time(self._meta["pid"]) != self._meta.get("start_time"):
                os.close(fd)  # the pid was reused by another process
                return None
            self._exit_fd = fd
        return self._exit_fd

    def remove(self) -> None:
        if self._alive():
            raise RuntimeError(f"container {self.container_id} is still running; kill it first")
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        if self._cgroup is not None:  # and whatever the task left running
            self.contained = self._cgroup.destroy()
            # nothing of the task is left to hold or write its files: the directory may be reused
            if self.contained and self._recycle is not None and self._recycle(self._dir):
                return
        empty_tree(self._dir)


class ProcessRuntime:
    """Runs attempts as local process groups; see the module docstring."""

    def __init__(self, root_dir: Path, cgroups: str | None = None):
        """``cgroups``: ``auto``, ``v1``, ``v2`` or ``off`` (default: ``IRIS_CGROUPS``, else
        auto); a forced version this machine cannot give raises CgroupError naming why."""
        self._root = Path(root_dir) / "containers"
        self._root.mkdir(parents=True, exist_ok=True)
        self._cgroups = Cgroups.detect(cgroups)
        self._lock = threading.Lock()
        # this runtime's spare directories; those of runtimes whose process has ended are removed
        spare_root = Path(root_dir) / "spare"
        self._spares = SpareDirectories(
            spare_root / f"{os.getpid()}.{next(_spare_names)}", SPARE_DIRECTORIES, keep_files=_REUSED_FILES, keep_dirs=_REUSED_DIRS
        )
        _remove_orphan_spares(spare_root)
        self._limited: dict[str, ProcessHandle] = {}
        self._monitor: threading.Thread | None = None
        self._closed = threading.Event()

    def start(self, spec: ContainerSpec) -> ProcessHandle:
        check_command(spec)
        directory = self._root / spec.container_id
        if os.path.lexists(directory):  # left by an earlier attempt with this id
            shutil.rmtree(directory)
        reused = self._spares.take(directory)
        if not reused:
            directory.mkdir()
        cgroup = self._cgroups.create(spec.container_id, spec.memory_bytes) if self._cgroups is not None else None
        if cgroup is None:
            wrapper_argv = ["/bin/sh", "-c", WRAPPER, "iris-task", str(directory / "exit_code"), *spec.argv]
        else:
            procs = str(cgroup.path / "cgroup.procs")
            wrapper_argv = ["/bin/sh", "-c", CGROUP_WRAPPER, "iris-task", procs, str(directory / "exit_code"), *spec.argv]
        env = dict(spec.env)
        if "TMPDIR" not in env:  # the task's temporary files go when the container is removed
            (directory / "tmp").mkdir(exist_ok=reused)
            env["TMPDIR"] = str(directory / "tmp")
        try:
            # empty or new (see iris.runtime.spare_directories): opened without O_TRUNC
            with open(open_empty(directory / STDOUT), "wb") as out, open(open_empty(directory / STDERR), "wb") as err:
                forked_after = boottime_ns()
                popen = subprocess.Popen(
                    wrapper_argv,
                    cwd=spec.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
                forked_before = boottime_ns()
        except ValueError as exc:  # what check_command did not foresee about argv or env
            if cgroup is not None:
                cgroup.destroy()
            raise TaskStartError(f"cannot run {spec.argv[0]!r}: {exc}") from exc
        except BaseException:
            if cgroup is not None:
                cgroup.destroy()
            raise
        meta = {
            "container_id": spec.container_id,
            "labels": dict(spec.labels),
            "pid": popen.pid,
            "start_time": child_start_time(popen.pid, forked_after, forked_before),
            "argv": list(spec.argv),
            "memory_bytes": spec.memory_bytes,
        }
        if cgroup is not None:
            meta.update(cgroup=str(cgroup.path), cgroup_version=cgroup.version, kernel_memory=self._kernel_limits)
        # written in place: a torn file (a crash while writing) does not parse, and list_containers
        # skips it, as it would a missing one
        with open(open_empty(directory / "meta.json"), "w") as f:
            f.write(json.dumps(meta))
        handle = ProcessHandle(directory, meta, popen, wrapper_argv, recycle=self._spares.recycle)
        if spec.memory_bytes and not self._kernel_limits:
            self._watch(handle)
        return handle

    @property
    def _kernel_limits(self) -> bool:
        return self._cgroups is not None and self._cgroups.memory

    @property
    def memory_enforcement(self) -> str:
        """How a task's memory limit holds here: ``cgroup-v1`` or ``cgroup-v2`` (the kernel's
        limit), or ``sampled`` (every MEMORY_POLL_SECONDS; a shorter spike can slip through).
        Workers publish it as their ``memory-limits`` attribute."""
        return self._cgroups.memory_enforcement if self._cgroups is not None else "sampled"

    def list_containers(self, labels: Mapping[str, str]) -> list[ProcessHandle]:
        handles = []
        for meta_path in sorted(self._root.glob("*/meta.json")):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            if all(meta["labels"].get(k) == v for k, v in labels.items()):
                handle = ProcessHandle(meta_path.parent, meta, recycle=self._spares.recycle)
                if handle.memory_bytes and not meta.get("kernel_memory") and handle.status().running:
                    self._watch(handle)
                handles.append(handle)
        return handles

    def close(self) -> None:
        self._closed.set()
        self._spares.close()

    # --- memory enforcement -------------------------------------------------------------

    def _watch(self, handle: ProcessHandle) -> None:
        with self._lock:
            self._limited[handle.container_id] = handle
            if self._monitor is None or not self._monitor.is_alive():
                self._monitor = threading.Thread(target=self._monitor_loop, name="iris-memory-monitor", daemon=True)
                self._monitor.start()

    def _monitor_loop(self) -> None:
        while not self._closed.wait(MEMORY_POLL_SECONDS):
            with self._lock:
                handles = list(self._limited.values())
            running = [h for h in handles if h._alive()]
            with self._lock:
                for h in handles:
                    if h not in running:
                        self._limited.pop(h.container_id, None)
                if not self._limited:
                    self._monitor = None
                    return
            usage = group_rss({h.pgid for h in running})
            for h in running:
                if usage.get(h.pgid, 0) > h.memory_bytes:
                    logger.warning("container %s exceeded its memory limit; killing it", h.container_id)
                    h.oom_kill()
