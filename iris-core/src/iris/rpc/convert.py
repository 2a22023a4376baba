"""Conversions between the public attrs types and their protobuf messages."""

from __future__ import annotations

from iris.cluster.constraints import Constraint, ConstraintError, Op
from iris.cluster.types import DeviceSpec, Entrypoint, EnvironmentSpec, JobState, ResourceSpec, TaskState
from iris.rpc import common_pb2


def resources_to_proto(r: ResourceSpec) -> common_pb2.ResourceSpec:
    return common_pb2.ResourceSpec(
        cpu=r.cpu,
        memory_bytes=r.memory,
        disk_bytes=r.disk,
        device_kind=r.device.kind,
        device_variant=r.device.variant,
        device_count=r.device.count,
    )


def resources_from_proto(p: common_pb2.ResourceSpec) -> ResourceSpec:
    return ResourceSpec(
        cpu=p.cpu,
        memory=p.memory_bytes,
        disk=p.disk_bytes,
        device=DeviceSpec(kind=p.device_kind or "cpu", variant=p.device_variant, count=p.device_count),
    )


def entrypoint_to_proto(e: Entrypoint) -> common_pb2.Entrypoint:
    return common_pb2.Entrypoint(argv=list(e.argv), callable=e.callable_bytes)


def entrypoint_from_proto(p: common_pb2.Entrypoint) -> Entrypoint:
    return Entrypoint(argv=tuple(p.argv), callable_bytes=p.callable)


def environment_to_proto(e: EnvironmentSpec) -> common_pb2.EnvironmentSpec:
    return common_pb2.EnvironmentSpec(env=dict(e.env), extras=list(e.extras))


def environment_from_proto(p: common_pb2.EnvironmentSpec) -> EnvironmentSpec:
    return EnvironmentSpec(env=dict(p.env), extras=list(p.extras))


def task_state_to_proto(s: TaskState) -> int:
    return common_pb2.TaskState.Value(f"TASK_STATE_{s.value}")


def task_state_from_proto(v: int) -> TaskState:
    name = common_pb2.TaskState.Name(v).removeprefix("TASK_STATE_")
    return TaskState.PENDING if name == "UNSPECIFIED" else TaskState(name)


def job_state_to_proto(s: JobState) -> int:
    return common_pb2.JobState.Value(f"JOB_STATE_{s.value}")


def job_state_from_proto(v: int) -> JobState:
    name = common_pb2.JobState.Name(v).removeprefix("JOB_STATE_")
    return JobState.PENDING if name == "UNSPECIFIED" else JobState(name)


def constraint_to_proto(c: Constraint) -> common_pb2.Constraint:
    return common_pb2.Constraint(key=c.key, op=common_pb2.Constraint.Op.Value(c.op.value), values=list(c.values))


def constraint_from_proto(p: common_pb2.Constraint) -> Constraint:
    name = common_pb2.Constraint.Op.Name(p.op)
    if name == "OP_UNSPECIFIED":
        raise ConstraintError(f"constraint on {p.key!r}: the operator is missing")
    return Constraint(p.key, Op(name), tuple(p.values))
