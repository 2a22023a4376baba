"""Named fault points that tests switch on to make Iris fail on purpose.

    from iris import faults
    faults.enable("worker.bundle_download", rate=0.2)              # 20% of downloads fail
    faults.enable("controller.dispatch", rate=0.1, delay=0.05)     # and some answers are slow
    faults.reset()

Points: ``controller.dispatch`` (a reconcile answer is lost after the controller recorded the
exchange), ``worker.reconcile_send`` (a request never leaves), ``worker.reconcile_receive`` (an
answer is lost on arrival), ``worker.bundle_download``, ``worker.container_start``,
``worker.task_monitor`` (watching a running task errs).

Processes started by tests read ``IRIS_FAULTS="point=rate[:delay],..."`` at import. With no
fault enabled, ``inject`` is one dictionary truth test.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

import attrs

POINTS = (
    "controller.dispatch",
    "worker.reconcile_send",
    "worker.reconcile_receive",
    "worker.bundle_download",
    "worker.container_start",
    "worker.task_monitor",
)


class FaultInjected(RuntimeError):
    """Raised at a fault point that fired."""


@attrs.frozen
class Fault:
    rate: float = 1.0
    delay: float = 0.0


_active: dict[str, Fault] = {}
_fired: dict[str, int] = {}
_lock = threading.Lock()
_random = random.Random()


def enable(point: str, rate: float = 1.0, delay: float = 0.0) -> None:
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; choose one of: {', '.join(POINTS)}")
    if not 0.0 <= rate <= 1.0 or delay < 0:
        raise ValueError(f"fault {point}: rate must be within 0..1 and delay >= 0 (got rate={rate}, delay={delay})")
    with _lock:
        _active[point] = Fault(rate, delay)


def reset() -> None:
    with _lock:
        _active.clear()
        _fired.clear()


def fired(point: str) -> int:
    """How many times a point has fired since the last reset."""
    return _fired.get(point, 0)


def inject(point: str) -> None:
    """At a fault point: sleep for the configured delay, then raise with the configured rate."""
    if not _active:
        return
    fault = _active.get(point)
    if fault is None:
        return
    if fault.delay:
        time.sleep(fault.delay)
    _maybe_fire(point, fault)


async def inject_async(point: str) -> None:
    """:func:`inject` for code on an asyncio loop: the delay is awaited, so it holds up only
    this call, not every call the loop serves."""
    if not _active:
        return
    fault = _active.get(point)
    if fault is None:
        return
    if fault.delay:
        import asyncio

        await asyncio.sleep(fault.delay)
    _maybe_fire(point, fault)


def _maybe_fire(point: str, fault: Fault) -> None:
    if fault.rate and _random.random() < fault.rate:
        with _lock:
            _fired[point] = _fired.get(point, 0) + 1
        raise FaultInjected(f"fault injected at {point}")


def _from_env() -> None:
    """Enable what ``IRIS_FAULTS`` names; a bad item is reported on stderr in one line and
    ignored (a test setting, never a reason for a traceback at import)."""
    spec = os.environ.get("IRIS_FAULTS", "")
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, setting = item.partition("=")
        rate, _, delay = setting.partition(":")
        try:
            enable(point, float(rate or 1.0), float(delay or 0.0))
        except ValueError as exc:
            print(f"iris: IRIS_FAULTS: {item!r} ignored: {exc} (expected point=rate[:delay])", file=sys.stderr)


_from_env()
