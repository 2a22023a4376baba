"""The job vocabulary's types (moved to :mod:`iris.job.types`), importable here as users know it."""

from iris.job.types import (  # noqa: F401
    DeviceSpec,
    Entrypoint,
    EnvironmentSpec,
    JobState,
    ResourceSpec,
    TaskState,
    format_memory,
    parse_memory,
    gpu_device,
    tpu_device,
)
