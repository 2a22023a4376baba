from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_ASSIGNED: _ClassVar[TaskState]
    TASK_STATE_BUILDING: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_SUCCEEDED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_KILLED: _ClassVar[TaskState]
    TASK_STATE_WORKER_FAILED: _ClassVar[TaskState]
    TASK_STATE_PREEMPTED: _ClassVar[TaskState]
    TASK_STATE_UNSCHEDULABLE: _ClassVar[TaskState]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_KILLED: _ClassVar[JobState]
    JOB_STATE_WORKER_FAILED: _ClassVar[JobState]
    JOB_STATE_UNSCHEDULABLE: _ClassVar[JobState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_ASSIGNED: TaskState
TASK_STATE_BUILDING: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_SUCCEEDED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_KILLED: TaskState
TASK_STATE_WORKER_FAILED: TaskState
TASK_STATE_PREEMPTED: TaskState
TASK_STATE_UNSCHEDULABLE: TaskState
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_KILLED: JobState
JOB_STATE_WORKER_FAILED: JobState
JOB_STATE_UNSCHEDULABLE: JobState

class ResourceSpec(_message.Message):
    __slots__ = ("cpu", "memory_bytes", "disk_bytes", "device_kind", "device_variant", "device_count")
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_VARIANT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_COUNT_FIELD_NUMBER: _ClassVar[int]
    cpu: float
    memory_bytes: int
    disk_bytes: int
    device_kind: str
    device_variant: str
    device_count: int
    def __init__(self, cpu: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., device_kind: _Optional[str] = ..., device_variant: _Optional[str] = ..., device_count: _Optional[int] = ...) -> None: ...

class Entrypoint(_message.Message):
    __slots__ = ("argv", "callable")
    ARGV_FIELD_NUMBER: _ClassVar[int]
    CALLABLE_FIELD_NUMBER: _ClassVar[int]
    argv: _containers.RepeatedScalarFieldContainer[str]
    callable: bytes
    def __init__(self, argv: _Optional[_Iterable[str]] = ..., callable: _Optional[bytes] = ...) -> None: ...

class EnvironmentSpec(_message.Message):
    __slots__ = ("env", "extras", "pip_packages")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENV_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    PIP_PACKAGES_FIELD_NUMBER: _ClassVar[int]
    env: _containers.ScalarMap[str, str]
    extras: _containers.RepeatedScalarFieldContainer[str]
    pip_packages: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, env: _Optional[_Mapping[str, str]] = ..., extras: _Optional[_Iterable[str]] = ..., pip_packages: _Optional[_Iterable[str]] = ...) -> None: ...

class Constraint(_message.Message):
    __slots__ = ("key", "op", "values")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[Constraint.Op]
        EQ: _ClassVar[Constraint.Op]
        NE: _ClassVar[Constraint.Op]
        EXISTS: _ClassVar[Constraint.Op]
        NOT_EXISTS: _ClassVar[Constraint.Op]
        GT: _ClassVar[Constraint.Op]
        GE: _ClassVar[Constraint.Op]
        LT: _ClassVar[Constraint.Op]
        LE: _ClassVar[Constraint.Op]
        IN: _ClassVar[Constraint.Op]
    OP_UNSPECIFIED: Constraint.Op
    EQ: Constraint.Op
    NE: Constraint.Op
    EXISTS: Constraint.Op
    NOT_EXISTS: Constraint.Op
    GT: Constraint.Op
    GE: Constraint.Op
    LT: Constraint.Op
    LE: Constraint.Op
    IN: Constraint.Op
    KEY_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    op: Constraint.Op
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., op: _Optional[_Union[Constraint.Op, str]] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class Coscheduling(_message.Message):
    __slots__ = ("enabled", "group_by")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    group_by: str
    def __init__(self, enabled: _Optional[bool] = ..., group_by: _Optional[str] = ...) -> None: ...
