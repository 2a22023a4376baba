from iris.rpc import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerIdentity(_message.Message):
    __slots__ = ("worker_id", "slice_id", "capacity", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    slice_id: str
    capacity: _common_pb2.ResourceSpec
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, worker_id: _Optional[str] = ..., slice_id: _Optional[str] = ..., capacity: _Optional[_Union[_common_pb2.ResourceSpec, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ObservedAttempt(_message.Message):
    __slots__ = ("task_id", "attempt_id", "state", "exit_code", "error", "log_offset", "log_data", "log_complete", "oom", "ports", "result", "result_is_error")
    class PortsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LOG_DATA_FIELD_NUMBER: _ClassVar[int]
    LOG_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    OOM_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt_id: int
    state: _common_pb2.TaskState
    exit_code: int
    error: str
    log_offset: int
    log_data: bytes
    log_complete: bool
    oom: bool
    ports: _containers.ScalarMap[str, int]
    result: bytes
    result_is_error: bool
    def __init__(self, task_id: _Optional[str] = ..., attempt_id: _Optional[int] = ..., state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ..., log_offset: _Optional[int] = ..., log_data: _Optional[bytes] = ..., log_complete: _Optional[bool] = ..., oom: _Optional[bool] = ..., ports: _Optional[_Mapping[str, int]] = ..., result: _Optional[bytes] = ..., result_is_error: _Optional[bool] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("worker", "attempts", "known_version", "wait_seconds")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerIdentity
    attempts: _containers.RepeatedCompositeFieldContainer[ObservedAttempt]
    known_version: int
    wait_seconds: float
    def __init__(self, worker: _Optional[_Union[WorkerIdentity, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[ObservedAttempt, _Mapping]]] = ..., known_version: _Optional[int] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class AttemptSpec(_message.Message):
    __slots__ = ("job_id", "task_index", "num_tasks", "entrypoint", "resources", "env", "bundle_url", "timeout_seconds", "ports", "extras", "pip_packages", "bundle_max_unpacked_bytes", "bundle_max_files", "token", "task_image")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_INDEX_FIELD_NUMBER: _ClassVar[int]
    NUM_TASKS_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_URL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    PIP_PACKAGES_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_MAX_UNPACKED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_MAX_FILES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TASK_IMAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_index: int
    num_tasks: int
    entrypoint: _common_pb2.Entrypoint
    resources: _common_pb2.ResourceSpec
    env: _containers.ScalarMap[str, str]
    bundle_url: str
    timeout_seconds: float
    ports: _containers.RepeatedScalarFieldContainer[str]
    extras: _containers.RepeatedScalarFieldContainer[str]
    pip_packages: _containers.RepeatedScalarFieldContainer[str]
    bundle_max_unpacked_bytes: int
    bundle_max_files: int
    token: str
    task_image: str
    def __init__(self, job_id: _Optional[str] = ..., task_index: _Optional[int] = ..., num_tasks: _Optional[int] = ..., entrypoint: _Optional[_Union[_common_pb2.Entrypoint, _Mapping]] = ..., resources: _Optional[_Union[_common_pb2.ResourceSpec, _Mapping]] = ..., env: _Optional[_Mapping[str, str]] = ..., bundle_url: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., ports: _Optional[_Iterable[str]] = ..., extras: _Optional[_Iterable[str]] = ..., pip_packages: _Optional[_Iterable[str]] = ..., bundle_max_unpacked_bytes: _Optional[int] = ..., bundle_max_files: _Optional[int] = ..., token: _Optional[str] = ..., task_image: _Optional[str] = ...) -> None: ...

class DesiredAttempt(_message.Message):
    __slots__ = ("task_id", "attempt_id", "spec")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt_id: int
    spec: AttemptSpec
    def __init__(self, task_id: _Optional[str] = ..., attempt_id: _Optional[int] = ..., spec: _Optional[_Union[AttemptSpec, _Mapping]] = ...) -> None: ...

class AttemptAck(_message.Message):
    __slots__ = ("task_id", "attempt_id", "log_offset", "done")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    LOG_OFFSET_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt_id: int
    log_offset: int
    done: bool
    def __init__(self, task_id: _Optional[str] = ..., attempt_id: _Optional[int] = ..., log_offset: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class ReconcileResponse(_message.Message):
    __slots__ = ("version", "attempts", "acks")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    version: int
    attempts: _containers.RepeatedCompositeFieldContainer[DesiredAttempt]
    acks: _containers.RepeatedCompositeFieldContainer[AttemptAck]
    def __init__(self, version: _Optional[int] = ..., attempts: _Optional[_Iterable[_Union[DesiredAttempt, _Mapping]]] = ..., acks: _Optional[_Iterable[_Union[AttemptAck, _Mapping]]] = ...) -> None: ...
