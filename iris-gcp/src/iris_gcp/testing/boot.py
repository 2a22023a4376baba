"""How the fake Google APIs bring the machines they create to life.

A fake TPU or Compute API that creates a node or an instance calls a :class:`Booter` once per
host: the booter gives the host an address of its own on this machine (``127.0.0.N``) and runs
what a real VM would run at boot (its ``startup-script`` metadata, reading the rest of its metadata
from a fake metadata server). Deleting or preempting the resource halts its hosts.

:class:`AddressOnlyBooter` boots nothing: it hands out addresses and records which hosts are up,
for tests of the API layer. Booters that really boot (containers from a test image, on their own
loopback address, running the real startup script) live beside it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs


@attrs.frozen
class HostSpec:
    """One machine to boot.

    :ivar host_id: unique among the booter's hosts (e.g. ``node-name/w-0``, an instance name).
    :ivar metadata: the machine's metadata attributes (``startup-script``, ``iris-*`` keys, and
        for TPU hosts ``agent-worker-number``), as the metadata server would serve them.
    :ivar labels: the resource's labels.
    """

    host_id: str
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    labels: Mapping[str, str] = attrs.field(factory=dict)


@runtime_checkable
class Booter(Protocol):
    def boot(self, host: HostSpec) -> str:
        """Start the host; return its IP address (a loopback address unique to it). Returns
        without waiting for the startup script to finish. Booting a running host_id again
        returns its address."""

    def halt(self, host_id: str) -> None:
        """Stop the host and everything it started (containers, processes). Idempotent."""

    def running(self, host_id: str) -> bool:
        """Whether the host is up (halted and never-booted hosts are not)."""

    def close(self) -> None:
        """Halt every host."""


class AddressOnlyBooter:
    """Hands out ``127.0.0.N`` addresses from ``first`` upwards and records running hosts; runs
    nothing. For testing the API layer without machines."""

    def __init__(self, first: int = 100, last: int = 250):
        self._lock = threading.Lock()
        self._free = [f"127.0.0.{n}" for n in range(first, last + 1)]
        self._hosts: dict[str, str] = {}
        self.booted: list[HostSpec] = []

    def boot(self, host: HostSpec) -> str:
        with self._lock:
            if host.host_id in self._hosts:
                return self._hosts[host.host_id]
            if not self._free:
                raise RuntimeError("AddressOnlyBooter: no loopback addresses left")
            address = self._free.pop(0)
            self._hosts[host.host_id] = address
            self.booted.append(host)
            return address

    def halt(self, host_id: str) -> None:
        with self._lock:
            address = self._hosts.pop(host_id, None)
            if address is not None:
                self._free.append(address)

    def running(self, host_id: str) -> bool:
        with self._lock:
            return host_id in self._hosts

    def close(self) -> None:
        with self._lock:
            self._free.extend(self._hosts.values())
            self._hosts.clear()
