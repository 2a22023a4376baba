"""Endpoint discovery for actors: a resolver maps an actor name to the addresses serving it.

``FixedResolver({"counter": "127.0.0.1:5000"})`` is a fixed map (tests, or servers you started
yourself); ``iris.client.ClusterResolver`` asks the controller's endpoint registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["FixedResolver", "ResolvedEndpoint", "Resolver"]


@attrs.frozen
class ResolvedEndpoint:
    """One address serving an actor; ``task_index`` says which replica (0 for a fixed address)."""

    address: str
    task_index: int = 0
    job_id: str = ""
    metadata: Mapping[str, str] = attrs.field(factory=dict)


@runtime_checkable
class Resolver(Protocol):
    def resolve(self, name: str) -> list[ResolvedEndpoint]:
        """The endpoints serving ``name`` now, ordered by task index; empty if none."""
        ...


class FixedResolver:
    """A fixed map of actor name to one address or a list of addresses."""

    def __init__(self, endpoints: Mapping[str, str | Sequence[str]]):
        self._endpoints = {
            name: [address] if isinstance(address, str) else list(address) for name, address in endpoints.items()
        }

    def __repr__(self) -> str:
        return f"FixedResolver({self._endpoints!r})"

    def resolve(self, name: str) -> list[ResolvedEndpoint]:
        """The addresses given for ``name``; a name it was not given raises ActorNotFound at once."""
        if name not in self._endpoints:
            from iris.actor.protocol import ActorNotFound

            known = ", ".join(sorted(self._endpoints)) or "none"
            raise ActorNotFound(f"FixedResolver has no actor named {name!r}; it knows: {known}")
        return [ResolvedEndpoint(address, index) for index, address in enumerate(self._endpoints[name])]

    def names(self) -> list[str]:
        return sorted(self._endpoints)
