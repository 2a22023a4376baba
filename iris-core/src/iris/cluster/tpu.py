"""The job vocabulary's tpu (moved to :mod:`iris.job.tpu`), importable here as users know it."""

from iris.job.tpu import (  # noqa: F401
    TPU_TOPOLOGIES,
    TpuTopology,
    tpu_topology,
)
