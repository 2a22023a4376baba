"""Tunnel ``direct``: the controller is reachable as it is; nothing to open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class DirectTunnel:
    def __init__(self, options: dict[str, Any] | None = None):
        self._options = options or {}

    @contextmanager
    def connect(self, address: str) -> Iterator[str]:
        yield address if "://" in address else f"http://{address}"
