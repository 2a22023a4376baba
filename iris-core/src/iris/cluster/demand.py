"""The demand contract: what the scheduler could not place, as the autoscaler reads it.

The controller builds one :class:`Demand` per job with unplaced tasks and hands the list to
``Autoscaler.run_once``; ``Autoscaler.feasibility`` says whether any scale group could ever serve
one. Every field is typed data taken from the job's spec: nothing here is parsed from a pending
reason. This module imports nothing of the controller or the autoscaler, so both can import it.
"""

from __future__ import annotations

import attrs

from iris.job.constraints import Constraint


@attrs.frozen
class Demand:
    """One job's tasks that wait for capacity.

    ``constraints`` are all of the job's placement constraints; the autoscaler matches each
    against the worker attributes a scale group's slices carry (``zone``, ``region``,
    ``preemptible``, ``device``, custom ones), exactly as the scheduler matches them against a
    registered worker's.
    """

    key: str  # job id
    tasks: int  # unplaced tasks
    cpu: float  # per task
    memory_bytes: int  # per task
    device: str = "cpu"  # "cpu" or the accelerator kind ("tpu", ...)
    variant: str = ""  # e.g. "v5litepod-16"; "" = any
    gang: bool = False  # all `tasks` on ONE slice, one task per VM (VMs per slice must equal tasks)
    constraints: tuple[Constraint, ...] = attrs.field(default=(), converter=tuple)
