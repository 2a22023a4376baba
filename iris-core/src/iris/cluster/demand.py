"""The scheduler -> autoscaler contract: what the scheduler could not place, as typed data.

The controller emits one :class:`Demand` per job with tasks it could not place; the autoscaler
matches it against what each scale group's workers offer (device, resources, gang size, and
every constraint against the group's worker attributes). Nothing here is parsed from text.
"""

from __future__ import annotations

import attrs

from iris.cluster.constraints import Constraint


@attrs.frozen
class Demand:
    """Work the scheduler could not place, one entry per job."""

    key: str  # job id
    tasks: int  # unplaced tasks
    cpu: float  # per task
    memory_bytes: int  # per task
    device: str = "cpu"  # "cpu" or an accelerator kind ("tpu", "gpu")
    variant: str = ""  # e.g. "v5litepod-16"; "" = any
    gang: bool = False  # all `tasks` on ONE slice, one task per VM
    constraints: tuple[Constraint, ...] = ()  # every constraint of the job, matched against worker attributes
