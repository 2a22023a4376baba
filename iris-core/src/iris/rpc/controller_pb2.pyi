from iris.rpc import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_STREAM_STDOUT: _ClassVar[LogStream]
    LOG_STREAM_STDERR: _ClassVar[LogStream]
    LOG_STREAM_ENV: _ClassVar[LogStream]
LOG_STREAM_STDOUT: LogStream
LOG_STREAM_STDERR: LogStream
LOG_STREAM_ENV: LogStream

class JobSpec(_message.Message):
    __slots__ = ("name", "entrypoint", "resources", "environment", "bundle_id", "replicas", "max_retries", "timeout_seconds", "constraints", "coscheduling", "ports", "max_task_failures", "scheduling_timeout_seconds", "max_preemptions", "parent_job_id", "user", "task_image")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    COSCHEDULING_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_FAILURES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULING_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    PARENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TASK_IMAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    entrypoint: _common_pb2.Entrypoint
    resources: _common_pb2.ResourceSpec
    environment: _common_pb2.EnvironmentSpec
    bundle_id: str
    replicas: int
    max_retries: int
    timeout_seconds: float
    constraints: _containers.RepeatedCompositeFieldContainer[_common_pb2.Constraint]
    coscheduling: _common_pb2.Coscheduling
    ports: _containers.RepeatedScalarFieldContainer[str]
    max_task_failures: int
    scheduling_timeout_seconds: float
    max_preemptions: int
    parent_job_id: str
    user: str
    task_image: str
    def __init__(self, name: _Optional[str] = ..., entrypoint: _Optional[_Union[_common_pb2.Entrypoint, _Mapping]] = ..., resources: _Optional[_Union[_common_pb2.ResourceSpec, _Mapping]] = ..., environment: _Optional[_Union[_common_pb2.EnvironmentSpec, _Mapping]] = ..., bundle_id: _Optional[str] = ..., replicas: _Optional[int] = ..., max_retries: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., constraints: _Optional[_Iterable[_Union[_common_pb2.Constraint, _Mapping]]] = ..., coscheduling: _Optional[_Union[_common_pb2.Coscheduling, _Mapping]] = ..., ports: _Optional[_Iterable[str]] = ..., max_task_failures: _Optional[int] = ..., scheduling_timeout_seconds: _Optional[float] = ..., max_preemptions: _Optional[int] = ..., parent_job_id: _Optional[str] = ..., user: _Optional[str] = ..., task_image: _Optional[str] = ...) -> None: ...

class LaunchJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class LaunchJobResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WaitJobRequest(_message.Message):
    __slots__ = ("job_id", "timeout_seconds")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    timeout_seconds: float
    def __init__(self, job_id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class AttemptInfo(_message.Message):
    __slots__ = ("attempt_id", "worker_id", "state", "exit_code", "error", "started_at", "finished_at", "oom", "ports")
    class PortsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    OOM_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    worker_id: str
    state: _common_pb2.TaskState
    exit_code: int
    error: str
    started_at: float
    finished_at: float
    oom: bool
    ports: _containers.ScalarMap[str, int]
    def __init__(self, attempt_id: _Optional[int] = ..., worker_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., oom: _Optional[bool] = ..., ports: _Optional[_Mapping[str, int]] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("index", "state", "pending_reason", "attempts", "exit_code", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    state: _common_pb2.TaskState
    pending_reason: str
    attempts: _containers.RepeatedCompositeFieldContainer[AttemptInfo]
    exit_code: int
    error: str
    def __init__(self, index: _Optional[int] = ..., state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., pending_reason: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[AttemptInfo, _Mapping]]] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "name", "state", "tasks", "submitted_at", "finished_at", "error", "exit_code", "entrypoint", "parent_job_id", "children", "replicas", "resources", "user", "started_at", "constraints", "coscheduling", "env_names")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    PARENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    COSCHEDULING_FIELD_NUMBER: _ClassVar[int]
    ENV_NAMES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    state: _common_pb2.JobState
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    submitted_at: float
    finished_at: float
    error: str
    exit_code: int
    entrypoint: str
    parent_job_id: str
    children: _containers.RepeatedScalarFieldContainer[str]
    replicas: int
    resources: _common_pb2.ResourceSpec
    user: str
    started_at: float
    constraints: _containers.RepeatedCompositeFieldContainer[_common_pb2.Constraint]
    coscheduling: _common_pb2.Coscheduling
    env_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ..., submitted_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., error: _Optional[str] = ..., exit_code: _Optional[int] = ..., entrypoint: _Optional[str] = ..., parent_job_id: _Optional[str] = ..., children: _Optional[_Iterable[str]] = ..., replicas: _Optional[int] = ..., resources: _Optional[_Union[_common_pb2.ResourceSpec, _Mapping]] = ..., user: _Optional[str] = ..., started_at: _Optional[float] = ..., constraints: _Optional[_Iterable[_Union[_common_pb2.Constraint, _Mapping]]] = ..., coscheduling: _Optional[_Union[_common_pb2.Coscheduling, _Mapping]] = ..., env_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "prefix")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_common_pb2.JobState]
    prefix: str
    def __init__(self, states: _Optional[_Iterable[_Union[_common_pb2.JobState, str]]] = ..., prefix: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class KillJobRequest(_message.Message):
    __slots__ = ("job_id", "keep_children", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_CHILDREN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    keep_children: bool
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., keep_children: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class KillJobResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.JobState
    def __init__(self, state: _Optional[_Union[_common_pb2.JobState, str]] = ...) -> None: ...

class HasBundleRequest(_message.Message):
    __slots__ = ("bundle_id",)
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    def __init__(self, bundle_id: _Optional[str] = ...) -> None: ...

class HasBundleResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    def __init__(self, exists: _Optional[bool] = ...) -> None: ...

class UploadBundleRequest(_message.Message):
    __slots__ = ("bundle_id", "data")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    data: bytes
    def __init__(self, bundle_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadBundleResponse(_message.Message):
    __slots__ = ("bundle_url",)
    BUNDLE_URL_FIELD_NUMBER: _ClassVar[int]
    bundle_url: str
    def __init__(self, bundle_url: _Optional[str] = ...) -> None: ...

class GetResultsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_index", "attempt_id", "data", "is_error")
    TASK_INDEX_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    task_index: int
    attempt_id: int
    data: bytes
    is_error: bool
    def __init__(self, task_index: _Optional[int] = ..., attempt_id: _Optional[int] = ..., data: _Optional[bytes] = ..., is_error: _Optional[bool] = ...) -> None: ...

class GetResultsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ...) -> None: ...

class GetLogsRequest(_message.Message):
    __slots__ = ("job_id", "cursor", "max_lines", "wait_seconds", "include_children", "since", "tail")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MAX_LINES_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CHILDREN_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    cursor: str
    max_lines: int
    wait_seconds: float
    include_children: bool
    since: float
    tail: int
    def __init__(self, job_id: _Optional[str] = ..., cursor: _Optional[str] = ..., max_lines: _Optional[int] = ..., wait_seconds: _Optional[float] = ..., include_children: _Optional[bool] = ..., since: _Optional[float] = ..., tail: _Optional[int] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("job_id", "task_index", "attempt_id", "timestamp", "data", "stream")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_INDEX_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_index: int
    attempt_id: int
    timestamp: float
    data: str
    stream: LogStream
    def __init__(self, job_id: _Optional[str] = ..., task_index: _Optional[int] = ..., attempt_id: _Optional[int] = ..., timestamp: _Optional[float] = ..., data: _Optional[str] = ..., stream: _Optional[_Union[LogStream, str]] = ...) -> None: ...

class GetLogsResponse(_message.Message):
    __slots__ = ("lines", "cursor", "finished")
    LINES_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    cursor: str
    finished: bool
    def __init__(self, lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ..., cursor: _Optional[str] = ..., finished: _Optional[bool] = ...) -> None: ...

class WorkerSummary(_message.Message):
    __slots__ = ("worker_id", "capacity", "used", "attributes", "last_seen", "running_attempts", "slice_id", "lost")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SLICE_ID_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    capacity: _common_pb2.ResourceSpec
    used: _common_pb2.ResourceSpec
    attributes: _containers.ScalarMap[str, str]
    last_seen: float
    running_attempts: int
    slice_id: str
    lost: bool
    def __init__(self, worker_id: _Optional[str] = ..., capacity: _Optional[_Union[_common_pb2.ResourceSpec, _Mapping]] = ..., used: _Optional[_Union[_common_pb2.ResourceSpec, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., last_seen: _Optional[float] = ..., running_attempts: _Optional[int] = ..., slice_id: _Optional[str] = ..., lost: _Optional[bool] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerSummary]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerSummary, _Mapping]]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "address", "job_id", "task_index", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_INDEX_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    job_id: str
    task_index: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., job_id: _Optional[str] = ..., task_index: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RegisterEndpointRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: Endpoint
    def __init__(self, endpoint: _Optional[_Union[Endpoint, _Mapping]] = ...) -> None: ...

class RegisterEndpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LookupEndpointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LookupEndpointResponse(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class SliceStatus(_message.Message):
    __slots__ = ("slice_id", "state", "created_at", "idle_since", "error", "vms")
    SLICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    IDLE_SINCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    slice_id: str
    state: str
    created_at: float
    idle_since: float
    error: str
    vms: int
    def __init__(self, slice_id: _Optional[str] = ..., state: _Optional[str] = ..., created_at: _Optional[float] = ..., idle_since: _Optional[float] = ..., error: _Optional[str] = ..., vms: _Optional[int] = ...) -> None: ...

class ScaleGroupStatus(_message.Message):
    __slots__ = ("name", "state", "detail", "slices", "min_slices", "max_slices")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    MIN_SLICES_FIELD_NUMBER: _ClassVar[int]
    MAX_SLICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    detail: str
    slices: _containers.RepeatedCompositeFieldContainer[SliceStatus]
    min_slices: int
    max_slices: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., detail: _Optional[str] = ..., slices: _Optional[_Iterable[_Union[SliceStatus, _Mapping]]] = ..., min_slices: _Optional[int] = ..., max_slices: _Optional[int] = ...) -> None: ...

class GetAutoscalerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAutoscalerStatusResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[ScaleGroupStatus]
    def __init__(self, groups: _Optional[_Iterable[_Union[ScaleGroupStatus, _Mapping]]] = ...) -> None: ...

class CreateSliceRequest(_message.Message):
    __slots__ = ("scale_group",)
    SCALE_GROUP_FIELD_NUMBER: _ClassVar[int]
    scale_group: str
    def __init__(self, scale_group: _Optional[str] = ...) -> None: ...

class CreateSliceResponse(_message.Message):
    __slots__ = ("slice_id",)
    SLICE_ID_FIELD_NUMBER: _ClassVar[int]
    slice_id: str
    def __init__(self, slice_id: _Optional[str] = ...) -> None: ...

class TerminateSlicesRequest(_message.Message):
    __slots__ = ("slice_ids", "all")
    SLICE_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    slice_ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, slice_ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class TerminateSlicesResponse(_message.Message):
    __slots__ = ("slice_ids",)
    SLICE_IDS_FIELD_NUMBER: _ClassVar[int]
    slice_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, slice_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class VmStatus(_message.Message):
    __slots__ = ("vm_id", "slice_id", "scale_group", "address", "state", "attributes", "slice_error")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_ID_FIELD_NUMBER: _ClassVar[int]
    SCALE_GROUP_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SLICE_ERROR_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    slice_id: str
    scale_group: str
    address: str
    state: str
    attributes: _containers.ScalarMap[str, str]
    slice_error: str
    def __init__(self, vm_id: _Optional[str] = ..., slice_id: _Optional[str] = ..., scale_group: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., slice_error: _Optional[str] = ...) -> None: ...

class ListVmsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVmsResponse(_message.Message):
    __slots__ = ("vms",)
    VMS_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[VmStatus]
    def __init__(self, vms: _Optional[_Iterable[_Union[VmStatus, _Mapping]]] = ...) -> None: ...

class GetVmLogsRequest(_message.Message):
    __slots__ = ("vm_id", "tail")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    tail: int
    def __init__(self, vm_id: _Optional[str] = ..., tail: _Optional[int] = ...) -> None: ...

class GetVmLogsResponse(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("role", "name", "job_id", "auth_enabled")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_ENABLED_FIELD_NUMBER: _ClassVar[int]
    role: str
    name: str
    job_id: str
    auth_enabled: bool
    def __init__(self, role: _Optional[str] = ..., name: _Optional[str] = ..., job_id: _Optional[str] = ..., auth_enabled: _Optional[bool] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("role", "name", "ttl_seconds")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    role: str
    name: str
    ttl_seconds: float
    def __init__(self, role: _Optional[str] = ..., name: _Optional[str] = ..., ttl_seconds: _Optional[float] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...
