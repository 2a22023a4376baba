"""Polling with a deadline: how tests wait for state instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    """Call ``predicate`` until it returns something truthy or ``timeout`` seconds pass.

    Returns True as soon as the predicate holds, False if the deadline passed first. The
    predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
