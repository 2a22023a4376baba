"""Named ports for tasks: picked from a range, checked free by binding, shared per process.

Workers in one process (the local provider) share one allocator, so two tasks never get the
same port at once.
"""

from __future__ import annotations

import socket
import threading

from iris.errors import IrisError

DEFAULT_RANGE = (30000, 40000)


class PortAllocator:
    def __init__(self, port_range: tuple[int, int] = DEFAULT_RANGE):
        self._low, self._high = port_range
        self._next = self._low
        self._held: set[int] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                return False
        return True

    def allocate(self, names: list[str]) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            span = self._high - self._low
            tried = 0
            while len(out) < len(names):
                if tried >= span:
                    self._held.difference_update(out.values())
                    raise IrisError(f"no free port left in {self._low}-{self._high}")
                port = self._next
                self._next = self._low + (self._next + 1 - self._low) % span
                tried += 1
                if port not in self._held and self._free(port):
                    self._held.add(port)
                    out[names[len(out)]] = port
            return out

    def release(self, ports: dict[str, int]) -> None:
        with self._lock:
            self._held.difference_update(ports.values())


_shared = PortAllocator()


def shared_allocator() -> PortAllocator:
    return _shared
