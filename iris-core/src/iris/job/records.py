"""Plain records that cross the wire: what a job asks for, what the controller shows, what a
worker reports and is told, what a client reads back.

They sit below the controller and the RPC layer so that :mod:`iris.rpc.convert`, the one place
that turns them into protobuf messages and back, depends on nothing above it. The controller's
modules re-export the records they own under their old names
(``iris.cluster.controller.state.JobSpec``, ``...snapshots.JobView``, ``...workers.ObservedAttempt``).
"""

from __future__ import annotations

import attrs

from iris.job.constraints import Constraint
from iris.job.types import Entrypoint, EnvironmentSpec, JobState, ResourceSpec, TaskState

# --- what a job asks for ------------------------------------------------------------------


@attrs.frozen
class JobSpec:
    """A validated job request."""

    name: str
    entrypoint: Entrypoint
    resources: ResourceSpec = attrs.field(factory=ResourceSpec)
    environment: EnvironmentSpec = attrs.field(factory=EnvironmentSpec)
    bundle_id: str = ""
    replicas: int = 1
    max_retries: int = 0
    timeout_seconds: float = 0.0
    constraints: tuple[Constraint, ...] = ()
    coschedule_by: str = ""  # attribute key: all tasks start together on workers sharing its value
    ports: tuple[str, ...] = ()
    max_task_failures: int = 0
    scheduling_timeout_seconds: float = 0.0
    max_preemptions: int = 0  # 0 = the default budget
    parent_job_id: str = ""
    user: str = ""
    task_image: str = ""  # the container image (runtimes that run images); "" = the worker's default


@attrs.frozen
class Endpoint:
    name: str
    address: str
    job_id: str
    task_index: int = 0
    metadata: dict[str, str] = attrs.field(factory=dict)


# --- what the controller shows (immutable views, taken under its lock) --------------------


@attrs.define
class LogLine:
    """One line of a job's log, as the controller stores it (the job is where it is kept)."""

    task_index: int
    attempt_id: int
    timestamp: float
    data: str
    stream: str = "stdout"  # stdout, stderr or env (see iris.runtime.output_log)


@attrs.frozen
class AttemptView:
    attempt_id: int
    worker_id: str
    state: TaskState
    exit_code: int | None
    error: str
    started_at: float
    finished_at: float
    oom: bool
    stop_requested: bool
    ports: dict[str, int]


@attrs.frozen
class TaskView:
    job_id: str
    index: int
    state: TaskState
    pending_reason: str
    exit_code: int | None
    error: str
    failures: int
    preemptions: int
    attempts: tuple[AttemptView, ...]

    @property
    def task_id(self) -> str:
        return f"{self.job_id}/{self.index}"


@attrs.frozen
class JobView:
    job_id: str
    spec: JobSpec
    submitted_at: float
    state: JobState
    started_at: float
    finished_at: float
    error: str
    exit_code: int  # what `iris run` exits with once the job is over (0 while it runs)
    tasks: tuple[TaskView, ...]
    children: tuple[str, ...]

    @property
    def is_gang(self) -> bool:
        return bool(self.spec.coschedule_by) and len(self.tasks) > 1


@attrs.frozen
class WorkerView:
    worker_id: str
    slice_id: str
    cpu: float
    memory_bytes: int
    attributes: dict[str, str]
    last_seen: float
    used_cpu: float
    used_memory: int
    lost: bool
    running_attempts: int


# --- what a worker reports and is told (the reconcile exchange) ----------------------------


@attrs.frozen
class WorkerIdentity:
    worker_id: str
    slice_id: str = ""
    cpu: float = 1.0
    memory_bytes: int = 0
    attributes: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ObservedAttempt:
    task_id: str
    attempt_id: int
    state: TaskState
    exit_code: int | None = None
    error: str = ""
    log_offset: int = 0
    log_data: bytes = b""
    log_complete: bool = False
    oom: bool = False
    ports: dict[str, int] = attrs.field(factory=dict)
    result: bytes = b""  # a callable's cloudpickled outcome, with its final state
    result_is_error: bool = False


@attrs.frozen
class TaskResult:
    """What a task's Python callable returned (``data`` cloudpickled), or raised
    (``is_error``: cloudpickled ``(exception, remote traceback)``), in its last attempt."""

    task_index: int
    attempt_id: int
    data: bytes
    is_error: bool = False


@attrs.frozen
class AttemptAck:
    task_id: str
    attempt_id: int
    log_offset: int
    done: bool


@attrs.frozen
class DesiredAttempt:
    task_id: str
    attempt_id: int
    job_id: str
    task_index: int
    spec: JobSpec | None  # set when the worker needs the full spec


DEFAULT_MAX_UNPACKED_BYTES = 1000 * 1000 * 1000
DEFAULT_MAX_BUNDLE_FILES = 100_000


@attrs.frozen
class BundleLimits:
    """How much a worker unpacks from one bundle (the cluster config's ``bundle.max_unpacked_size``
    and ``bundle.max_files``); the controller sends them with every attempt it starts."""

    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    max_files: int = DEFAULT_MAX_BUNDLE_FILES


@attrs.frozen
class ReconcileResult:
    version: int
    desired: list[DesiredAttempt]
    acks: list[AttemptAck]
    bundle_limits: BundleLimits = BundleLimits()


# --- what a client reads back ----------------------------------------------------------------


@attrs.frozen
class AttemptStatus:
    attempt_id: int
    worker_id: str
    state: TaskState
    exit_code: int
    error: str
    started_at: float
    finished_at: float
    oom: bool = False
    ports: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class TaskStatus:
    index: int
    state: TaskState
    pending_reason: str
    exit_code: int
    error: str
    attempts: tuple[AttemptStatus, ...]


@attrs.frozen
class JobStatus:
    job_id: str
    name: str
    state: JobState
    exit_code: int
    error: str
    submitted_at: float
    finished_at: float
    entrypoint: str
    tasks: tuple[TaskStatus, ...]
    parent_job_id: str = ""
    children: tuple[str, ...] = ()
    user: str = ""
    started_at: float = 0.0
    resources: ResourceSpec | None = None
    constraints: tuple[Constraint, ...] = ()
    coschedule_by: str = ""
    replicas: int = 0
    env_names: tuple[str, ...] = ()  # the job's environment variables, names only

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED


#: How readers print a line of the ``env`` stream (what the worker wrote about the task's
#: environment: uv's output while it builds, or which cached environment it uses).
ENVIRONMENT_LOG_PREFIX = "[iris env] "


@attrs.frozen
class JobLogLine:
    """A log line as a reader receives it: with the job it came from (``iris.client.LogLine``)."""

    job_id: str
    task_index: int
    attempt_id: int
    timestamp: float
    data: str
    #: ``stdout`` or ``stderr`` (what the task wrote there), or ``env``: written by the worker
    #: while preparing the task's environment.
    stream: str = "stdout"

    @property
    def is_environment(self) -> bool:
        """Written by the worker while preparing the task's environment, not by the task."""
        return self.stream == "env"

    @property
    def is_stderr(self) -> bool:
        return self.stream == "stderr"
