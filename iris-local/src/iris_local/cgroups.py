"""One Linux cgroup per container of the process runtime: every process a task starts, even one
that calls ``setsid`` or double-forks out of the task's process group, stays in it, so a kill
reaches all of them; and the kernel enforces the task's memory limit at once, so a short spike
over the limit ends the task as out of memory instead of slipping between two samples.

Which cgroups are used is decided once per runtime (``IRIS_CGROUPS`` = ``auto`` (default),
``v1``, ``v2`` or ``off``):

- cgroup v1 with a writable ``memory`` hierarchy: a child of this process's memory cgroup per
  container, with ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where swap
  accounting exists); the kernel's OOM kills are counted in ``memory.oom_control``.
- cgroup v2: a child of this process's cgroup per container, with ``memory.max`` when the memory
  controller is delegated to it (``cgroup.subtree_control``), else membership only (kills still
  reach everything); the kernel's OOM kills are counted in ``memory.events``. ``cgroup.kill``
  ends every member at once.
- neither (not root, no cgroupfs, ``off``): no cgroup; the runtime falls back to its process
  group and to sampling memory (see ``process_runtime``).

A task joins its cgroup before it runs: the runtime's ``sh`` wrapper writes its own pid into
``cgroup.procs`` first, so nothing the task starts can escape it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_FS = Path("/sys/fs/cgroup")
MODES = ("auto", "v1", "v2", "off")
KILL_ROUNDS = 50  # SIGKILL rounds while members remain (a member may fork between a read and a kill)


class CgroupError(Exception):
    """The cgroups asked for (``IRIS_CGROUPS``) cannot be used here."""


def _own_paths(proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's cgroup per hierarchy: ``{"memory": "/a/b", "": "/"}`` ("" is v2)."""
    paths: dict[str, str] = {}
    with open(proc_cgroup) as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _v2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup itself, or a hybrid system's
    /sys/fs/cgroup/unified."""
    for candidate in (CGROUP_FS, CGROUP_FS / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


class Cgroups:
    """Makes and finds the per-container cgroups of one runtime (see the module docstring)."""

    def __init__(self, version: int, parent: Path, memory: bool):
        self.version = version
        self.parent = parent  # per-container cgroups are made here
        self.memory = memory  # the kernel can limit memory here

    @property
    def memory_enforcement(self) -> str:
        """How memory limits hold: ``cgroup-v1`` or ``cgroup-v2`` (by the kernel), or ``sampled``."""
        return f"cgroup-v{self.version}" if self.memory else "sampled"

    @classmethod
    def detect(cls, mode: str | None = None) -> Cgroups | None:
        """The cgroups this machine lets this process use, or None. ``mode`` (default: the
        ``IRIS_CGROUPS`` environment variable, else ``auto``) forces a version or turns them off;
        a forced version that cannot be used raises :class:`CgroupError` naming why."""
        mode = (mode or os.environ.get("IRIS_CGROUPS") or "auto").strip().lower()
        if mode not in MODES:
            raise CgroupError(f"IRIS_CGROUPS: {mode!r} is not one of {', '.join(MODES)}")
        if mode == "off":
            return None
        try:
            own = _own_paths()
        except OSError as exc:
            if mode != "auto":
                raise CgroupError(f"IRIS_CGROUPS={mode}: cannot read /proc/self/cgroup: {exc}") from None
            return None
        problems = []
        if mode in ("auto", "v1"):
            found = cls._v1(own, problems)
            if found is not None or mode == "v1":
                if found is None:
                    raise CgroupError(f"IRIS_CGROUPS=v1: {'; '.join(problems)}")
                return found
        found = cls._v2(own, problems)
        if found is None and mode == "v2":
            raise CgroupError(f"IRIS_CGROUPS=v2: {'; '.join(problems)}")
        if found is not None and not found.memory and mode == "auto":
            logger.info("cgroup v2 without a delegated memory controller: memory limits are sampled")
        return found

    @classmethod
    def _v1(cls, own: dict[str, str], problems: list[str]) -> Cgroups | None:
        if "memory" not in own or not (CGROUP_FS / "memory").is_dir():
            problems.append("no cgroup v1 memory hierarchy")
            return None
        parent = CGROUP_FS / "memory" / own["memory"].lstrip("/")
        if not _writable_dir(parent):
            problems.append(f"{parent} is not writable")
            return None
        return cls._probe(cls(1, parent, memory=True), problems)

    @classmethod
    def _v2(cls, own: dict[str, str], problems: list[str]) -> Cgroups | None:
        mount = _v2_mount()
        if mount is None or "" not in own:
            problems.append("no cgroup v2 hierarchy")
            return None
        parent = mount / own[""].lstrip("/")
        if not _writable_dir(parent):
            problems.append(f"{parent} is not writable")
            return None
        try:
            delegated = "memory" in (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            delegated = False
        return cls._probe(cls(2, parent, memory=delegated), problems)

    @staticmethod
    def _probe(found: Cgroups, problems: list[str]) -> Cgroups | None:
        probe = found.parent / f"iris-probe-{os.getpid()}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError as exc:
            problems.append(f"cannot make a cgroup under {found.parent}: {exc.strerror}")
            return None
        return found

    def create(self, name: str, memory_bytes: int) -> Cgroup:
        """A new, empty cgroup for container ``name`` with its memory limit set (0 = none)."""
        path = self.parent / f"iris-{name}"
        try:
            path.mkdir()
        except FileExistsError:  # left by an earlier process with this container id
            Cgroup(path, self.version).destroy()
            path.mkdir()
        group = Cgroup(path, self.version)
        if memory_bytes and self.memory:
            group.limit_memory(memory_bytes)
        return group


class Cgroup:
    """One container's cgroup."""

    def __init__(self, path: Path | str, version: int):
        self.path = Path(path)
        self.version = version

    def limit_memory(self, memory_bytes: int) -> None:
        if self.version == 1:
            (self.path / "memory.limit_in_bytes").write_text(str(memory_bytes))
            memsw = self.path / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # without it, a task could swap instead of ending as OOM
                memsw.write_text(str(memory_bytes))
        else:
            (self.path / "memory.max").write_text(str(memory_bytes))
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")

    def members(self) -> list[int]:
        try:
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def oom_kills(self) -> int:
        """How many processes of this cgroup the kernel killed for exceeding its memory limit."""
        name, key = ("memory.oom_control", "oom_kill") if self.version == 1 else ("memory.events", "oom_kill")
        try:
            for line in (self.path / name).read_text().splitlines():
                field, _, value = line.partition(" ")
                if field == key:
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def signal(self, sig: int, skip_group: int | None = None) -> None:
        """Send ``sig`` to every member now, except members of process group ``skip_group`` (the
        caller signalled that group itself)."""
        if sig == signal.SIGKILL and skip_group is None and self.version == 2 and (self.path / "cgroup.kill").exists():
            try:
                (self.path / "cgroup.kill").write_text("1")
                return
            except OSError:
                pass
        for pid in self.members():
            try:
                if skip_group is not None and os.getpgid(pid) == skip_group:
                    continue
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill_all(self) -> bool:
        """SIGKILL every member until none is left (one may fork between a read and a kill);
        True once the cgroup is empty."""
        for _ in range(KILL_ROUNDS):
            if not self.members():
                return True
            self.signal(signal.SIGKILL)
            time.sleep(0.002)
        return not self.members()

    def destroy(self) -> bool:
        """Kill what is left in the cgroup and remove it; a missing cgroup is not an error. True
        once it is gone (so nothing of the container runs any more).

        An empty cgroup (the common case: the task and the wrapper have ended) is removed at
        once; only a busy one is read and killed."""
        try:
            self.path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            pass  # members left (EBUSY): kill them and retry below
        self.kill_all()
        for delay in (0.0, 0.01, 0.05, 0.2):  # a killed member leaves the cgroup a moment later
            time.sleep(delay)
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    break
        logger.warning("could not remove cgroup %s", self.path)
        return False
