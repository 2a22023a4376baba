"""TPU topologies: how many hosts (VMs) and chips a TPU type has.

A multi-host TPU type runs one task per host, scheduled together on one slice.
"""

from __future__ import annotations

import re

import attrs

from iris.errors import ResourceError


@attrs.frozen
class TpuTopology:
    variant: str
    chips: int
    hosts: int
    topology: str

    @property
    def chips_per_host(self) -> int:
        return self.chips // self.hosts


def _table() -> dict[str, TpuTopology]:
    rows: list[tuple[str, int, int, str]] = [
        # v4: the suffix counts TensorCores (2 per chip), 4 chips per host
        ("v4-8", 4, 1, "2x2x1"),
        ("v4-16", 8, 2, "2x2x2"),
        ("v4-32", 16, 4, "2x2x4"),
        ("v4-64", 32, 8, "2x4x4"),
        ("v4-128", 64, 16, "4x4x4"),
        # v5e: the suffix counts chips; single host up to 8 chips, 4 chips per host beyond
        ("v5litepod-1", 1, 1, "1x1"),
        ("v5litepod-4", 4, 1, "2x2"),
        ("v5litepod-8", 8, 1, "2x4"),
        ("v5litepod-16", 16, 4, "4x4"),
        ("v5litepod-32", 32, 8, "4x8"),
        ("v5litepod-64", 64, 16, "8x8"),
        ("v5litepod-128", 128, 32, "8x16"),
        ("v5litepod-256", 256, 64, "16x16"),
        # v5p: the suffix counts TensorCores, 4 chips per host
        ("v5p-8", 4, 1, "2x2x1"),
        ("v5p-16", 8, 2, "2x2x2"),
        ("v5p-32", 16, 4, "2x2x4"),
        ("v5p-64", 32, 8, "2x4x4"),
        ("v5p-128", 64, 16, "4x4x4"),
        # v6e: like v5e
        ("v6e-1", 1, 1, "1x1"),
        ("v6e-4", 4, 1, "2x2"),
        ("v6e-8", 8, 1, "2x4"),
        ("v6e-16", 16, 4, "4x4"),
        ("v6e-32", 32, 8, "4x8"),
        ("v6e-64", 64, 16, "8x8"),
        ("v6e-128", 128, 32, "8x16"),
        ("v6e-256", 256, 64, "16x16"),
    ]
    return {v: TpuTopology(v, c, h, t) for v, c, h, t in rows}


TPU_TOPOLOGIES = _table()
_VARIANT = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def tpu_topology(variant: str) -> TpuTopology:
    """The topology of a TPU type, or a ResourceError listing the known ones."""
    found = TPU_TOPOLOGIES.get(variant)
    if found is None:
        known = ", ".join(TPU_TOPOLOGIES)
        raise ResourceError(f"--tpu: {variant!r} is not a known TPU type; known types: {known}")
    return found
