"""Facts about processes read from ``/proc`` (Linux): liveness, identity, process groups, memory.

A zombie (ended but not yet reaped) counts as gone everywhere here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_DEAD = ("Z", "X")


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onward), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _all() -> Iterator[tuple[int, list[str]]]:
    with os.scandir("/proc") as entries:
        pids = [e.name for e in entries if e.name.isdigit()]
    for name in pids:
        fields = _stat(name)
        if fields is not None:
            yield int(name), fields


def pid_start_time(pid: int) -> str | None:
    """The process's start time (to tell it from a later process reusing the pid); None if it
    is gone."""
    fields = _stat(pid)
    return None if fields is None or fields[0] in _DEAD else fields[19]


_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def boottime_ns() -> int:
    """Now on the clock a process's start time is counted on (``CLOCK_BOOTTIME``)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def child_start_time(pid: int, forked_after_ns: int, forked_before_ns: int) -> str | None:
    """The start time :func:`pid_start_time` gives for ``pid``, a child of this process forked
    between two :func:`boottime_ns` readings and not yet reaped (so its pid is still its own).

    The kernel counts a start time in clock ticks (``CLK_TCK``, 10 ms) of the boot-time clock at
    fork, so when both readings fall in one tick that tick is the answer, without reading
    ``/proc``: a read of ``/proc/<pid>/stat`` right after the fork waits until the child's
    ``exec`` is done (about a millisecond here). Otherwise it is read, a zombie's included."""
    tick = forked_after_ns // _TICK_NS
    if tick == forked_before_ns // _TICK_NS:
        return str(tick)
    fields = _stat(pid)
    return None if fields is None else fields[19]


def pid_alive(pid: int) -> bool:
    return pid_start_time(pid) is not None


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in the process group."""
    return [pid for pid, fields in _all() if int(fields[2]) == pgid and fields[0] not in _DEAD]


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def group_rss(pgids: set[int]) -> dict[int, int]:
    """Resident bytes per process group, for the given groups (one scan of /proc)."""
    totals = dict.fromkeys(pgids, 0)
    for _, fields in _all():
        pgid = int(fields[2])
        if pgid in totals:
            totals[pgid] += int(fields[21]) * _PAGE_SIZE
    return totals
