"""The job vocabulary's constraints (moved to :mod:`iris.job.constraints`), importable here as users know it."""

from iris.job.constraints import (  # noqa: F401
    Constraint,
    ConstraintError,
    Op,
    WELL_KNOWN_KEYS,
    parse_constraint,
)
