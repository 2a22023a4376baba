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
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs


@attrs.frozen
class HostSpec:
    """One machine to boot.

    :ivar host_id: unique among the booter's hosts (e.g. ``node-name/w-0``, an instance name).
    :ivar metadata: the machine's metadata attributes (``startup-script``, ``iris-*`` keys, and
        for TPU hosts ``agent-worker-number``), as the metadata server would serve them.
    :ivar labels: the resource's labels.
    :ivar address: the address the host must have (an instance's requested ``networkIP``); ""
        lets the booter pick a free one.
    """

    host_id: str
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    labels: Mapping[str, str] = attrs.field(factory=dict)
    address: str = ""


class AddressInUse(RuntimeError):
    """The address a host asked for is held by another host (or reserved twice)."""

    def __init__(self, address: str, user: str):
        super().__init__(f"address {address} is in use by {user}")
        self.address = address
        self.user = user


class AddressUnavailable(RuntimeError):
    """The address asked for is not one the booter can give (outside its pool), or the pool is empty."""


class AddressPool:
    """The addresses a booter hands out: free, held by a host, reserved (static). Thread-safe.

    A reserved address is never picked for a host that did not ask for it; a host holding a
    reserved address gives it back to the reservation, not to the free list, when it halts."""

    def __init__(self, addresses: Sequence[str], owner: str = "booter"):
        self._owner = owner
        self._all = list(dict.fromkeys(addresses))
        self._free = list(self._all)
        self._held: dict[str, str] = {}  # address -> host id
        self._reserved: set[str] = set()
        self._lock = threading.Lock()

    def _check(self, address: str) -> None:
        if address not in self._all:
            shown = f"{self._all[0]} .. {self._all[-1]}" if self._all else "none"
            raise AddressUnavailable(f"{self._owner}: address {address} is not in its range ({shown})")

    def _claim(self, address: str, purpose: str) -> str:
        """Take ``address`` (checked by the caller) off the free list, or the first free one
        (under the lock)."""
        if address:
            if address in self._free:
                self._free.remove(address)
            return address
        if not self._free:
            raise AddressUnavailable(f"{self._owner}: no addresses left {purpose}")
        return self._free.pop(0)

    def take(self, host_id: str, address: str = "") -> str:
        """An address for ``host_id``: ``address`` if given (free or reserved, not held by
        another host), else the first free one. A host that holds one already keeps it."""
        with self._lock:
            for held, holder in self._held.items():
                if holder == host_id and (not address or held == address):
                    return held
            if address:
                self._check(address)
                holder = self._held.get(address)
                if holder is not None:
                    raise AddressInUse(address, f"host {holder}")
            address = self._claim(address, "for another host")
            self._held[address] = host_id
            return address

    def give_back(self, host_id: str) -> str | None:
        """Return what ``host_id`` held (to the free list unless it is reserved)."""
        with self._lock:
            for address, holder in list(self._held.items()):
                if holder == host_id:
                    del self._held[address]
                    if address not in self._reserved:
                        self._free.append(address)
                    return address
        return None

    def reserve(self, address: str = "") -> str:
        """Reserve ``address`` (a held one stays with its host, as GCE promotes an ephemeral
        address in use to a static one), else the first free address."""
        with self._lock:
            if address:
                self._check(address)
                if address in self._reserved:
                    raise AddressInUse(address, "another reservation")
            address = self._claim(address, "to reserve")
            self._reserved.add(address)
            return address

    def release(self, address: str) -> None:
        """End the reservation of ``address``; it is free again once no host holds it."""
        with self._lock:
            if address not in self._reserved:
                return
            self._reserved.discard(address)
            if address not in self._held:
                self._free.append(address)

    def holder(self, address: str) -> str | None:
        with self._lock:
            return self._held.get(address)

    def reserved(self) -> set[str]:
        with self._lock:
            return set(self._reserved)


@runtime_checkable
class Booter(Protocol):
    def boot(self, host: HostSpec) -> str:
        """Start the host; return its IP address (a loopback address unique to it, or
        ``host.address`` when given: :class:`AddressInUse` if another host holds it). Returns
        without waiting for the startup script to finish. Booting a running host_id again
        returns its address."""

    def halt(self, host_id: str) -> None:
        """Stop the host and everything it started (containers, processes). Idempotent."""

    def running(self, host_id: str) -> bool:
        """Whether the host is up (halted and never-booted hosts are not)."""

    def close(self) -> None:
        """Halt every host."""

    # Booters that can, also offer ``reserve(address="") -> str`` and ``release(address)``
    # (:class:`AddressPool`'s), which the fake Compute API's ``addresses`` resource uses, and
    # ``set_metadata(host_id, metadata)``: a running host's new metadata (``instances.setMetadata``),
    # served to it from then on.


class AddressOnlyBooter:
    """Hands out ``127.0.0.N`` addresses from ``first`` upwards and records running hosts; runs
    nothing. For testing the API layer without machines."""

    def __init__(self, first: int = 100, last: int = 250):
        self._lock = threading.Lock()
        self.pool = AddressPool([f"127.0.0.{n}" for n in range(first, last + 1)], owner="AddressOnlyBooter")
        self._hosts: dict[str, str] = {}
        self.booted: list[HostSpec] = []

    def boot(self, host: HostSpec) -> str:
        with self._lock:
            if host.host_id in self._hosts:
                return self._hosts[host.host_id]
            address = self.pool.take(host.host_id, host.address)
            self._hosts[host.host_id] = address
            self.booted.append(host)
            return address

    def halt(self, host_id: str) -> None:
        with self._lock:
            if self._hosts.pop(host_id, None) is not None:
                self.pool.give_back(host_id)

    def running(self, host_id: str) -> bool:
        with self._lock:
            return host_id in self._hosts

    def address(self, host_id: str) -> str:
        with self._lock:
            return self._hosts[host_id]

    def reserve(self, address: str = "") -> str:
        return self.pool.reserve(address)

    def release(self, address: str) -> None:
        self.pool.release(address)

    def close(self) -> None:
        with self._lock:
            for host_id in list(self._hosts):
                self.pool.give_back(host_id)
            self._hosts.clear()
