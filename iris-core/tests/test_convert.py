"""Every field of every message iris.rpc.convert handles is mapped, or allow-listed here with why.

Three kinds of check, each walking the messages' ``DESCRIPTOR.fields`` (nested messages too):

* both directions: a message with every field set survives ``to_proto(from_proto(message))``;
* record -> message: converting a fully populated record leaves no field of the message unset;
* message -> record: clearing any one field of a fully set message changes the record.

A new proto field that no conversion maps fails one of them. A message the service, client or
worker reads or builds inline (a request or response envelope) is listed in ``ENVELOPES``; a new
message must be added to one list or the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from iris.cluster.constraints import Constraint, Op
from iris.job.records import (
    AttemptAck,
    AttemptView,
    DesiredAttempt,
    JobSpec,
    JobView,
    LogLine,
    ObservedAttempt,
    ReconcileResult,
    TaskView,
    WorkerIdentity,
    WorkerView,
)
from iris.cluster.types import DeviceSpec, Entrypoint, EnvironmentSpec, JobState, ResourceSpec, TaskState
from iris.rpc import common_pb2, controller_pb2, convert, worker_pb2

# A worker's capacity and use are cpu and memory only: its devices are in its attributes.
_CPU_AND_MEMORY_ONLY = ("disk_bytes", "device_kind", "device_variant", "device_count")

# --- building and inspecting messages by their descriptors ---------------------------------


def _scalar(field: FieldDescriptor) -> Any:
    """A value of the field's type that is not its default."""
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-1"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f"{field.name}-bytes".encode()
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 2.5
    return 7


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def fill(message: Message) -> Message:
    """Set every field of ``message`` (and of its nested messages) to a non-default value."""
    for field in message.DESCRIPTOR.fields:
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            getattr(message, field.name)["key-1"] = _scalar(value_field)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            fill(getattr(message, field.name).add() if _is_repeated(field) else getattr(message, field.name))
        elif _is_repeated(field):
            getattr(message, field.name).append(_scalar(field))
        else:
            setattr(message, field.name, _scalar(field))
    return message


def filled(cls: type[Message], *, clear: tuple[str, ...] = ()) -> Message:
    message = fill(cls())
    for path in clear:
        parent, leaf = _parent(message, path)
        parent.ClearField(leaf)
    return message


def _parent(message: Message, path: str) -> tuple[Message, str]:
    """The message holding the field at ``path`` (``a.b.c``; a repeated message means its first)."""
    *names, leaf = path.split(".")
    for name in names:
        child = getattr(message, name)
        message = child[0] if _is_repeated(message.DESCRIPTOR.fields_by_name[name]) else child
    return message, leaf


def field_paths(descriptor: Descriptor, prefix: str = "") -> list[str]:
    """Every field path of a message type, nested messages included (maps are one field)."""
    paths = []
    for field in descriptor.fields:
        path = prefix + field.name
        paths.append(path)
        if field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
            paths.extend(field_paths(field.message_type, path + "."))
    return paths


def unset_fields(message: Message, allowed: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """Paths of fields left at their default (an empty list or map counts as unset)."""
    unset = []
    for field in message.DESCRIPTOR.fields:
        path = prefix + field.name
        if path in allowed:
            continue
        value = getattr(message, field.name)
        if _is_repeated(field):
            if not len(value):
                unset.append(path)
            elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
                unset.extend(unset_fields(value[0], allowed, path + "."))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if not message.HasField(field.name):
                unset.append(path)
            else:
                unset.extend(unset_fields(value, allowed, path + "."))
        elif value == field.default_value:
            unset.append(path)
    return unset


def unread_fields(from_proto: Callable[[Any], Any], message: Message, allowed: tuple[str, ...] = ()) -> list[str]:
    """Paths of fields whose clearing does not change what ``from_proto`` makes of ``message``."""
    whole = from_proto(message)
    unread = []
    for path in field_paths(message.DESCRIPTOR):
        if path in allowed:
            continue
        copy = type(message)()
        copy.CopyFrom(message)
        parent, leaf = _parent(copy, path)
        parent.ClearField(leaf)
        try:
            changed = from_proto(copy) != whole
        except Exception:  # refusing the message without the field is reading it
            changed = True
        if not changed:
            unread.append(path)
    return unread


def differing_fields(a: Message, b: Message) -> list[str]:
    return [f.name for f in a.DESCRIPTOR.fields if getattr(a, f.name) != getattr(b, f.name)]


# --- both directions -------------------------------------------------------------------------

ROUND_TRIPS = [
    (common_pb2.ResourceSpec, convert.resources_from_proto, convert.resources_to_proto, ()),
    (common_pb2.Entrypoint, convert.entrypoint_from_proto, convert.entrypoint_to_proto, ()),
    (common_pb2.EnvironmentSpec, convert.environment_from_proto, convert.environment_to_proto, ()),
    (common_pb2.Constraint, convert.constraint_from_proto, convert.constraint_to_proto, ()),
    (common_pb2.Coscheduling, convert.coscheduling_from_proto, convert.coscheduling_to_proto, ()),
    (controller_pb2.JobSpec, convert.job_spec_from_proto, convert.job_spec_to_proto, ()),
    (controller_pb2.Endpoint, convert.endpoint_from_proto, convert.endpoint_to_proto, ()),
    (
        controller_pb2.GetAutoscalerStatusResponse,
        convert.autoscaler_status_from_proto,
        convert.autoscaler_status_to_proto,
        (),
    ),
    (controller_pb2.ListVmsResponse, convert.vms_from_proto, convert.vms_to_proto, ()),
    (
        worker_pb2.WorkerIdentity,
        convert.worker_identity_from_proto,
        convert.worker_identity_to_proto,
        tuple(f"capacity.{name}" for name in _CPU_AND_MEMORY_ONLY),
    ),
    (worker_pb2.ObservedAttempt, convert.observed_attempt_from_proto, convert.observed_attempt_to_proto, ()),
    (controller_pb2.GetResultsResponse, convert.task_results_from_proto, convert.task_results_to_proto, ()),
    (worker_pb2.AttemptAck, convert.attempt_ack_from_proto, convert.attempt_ack_to_proto, ()),
]


@pytest.mark.parametrize(
    ("cls", "from_proto", "to_proto", "not_mapped"), ROUND_TRIPS, ids=[r[0].DESCRIPTOR.full_name for r in ROUND_TRIPS]
)
def test_convert_round_trip_of_a_fully_set_message_keeps_every_field(cls, from_proto, to_proto, not_mapped) -> None:
    message = filled(cls, clear=not_mapped)
    assert not unset_fields(message, not_mapped)
    again = to_proto(from_proto(message))
    assert again == message, f"{cls.DESCRIPTOR.full_name}: fields lost in a round trip: {differing_fields(message, again)}"


# --- record -> message -----------------------------------------------------------------------

SPEC = JobSpec(
    name="train",
    entrypoint=Entrypoint(argv=("python", "train.py"), callable_bytes=b"pickled"),
    resources=ResourceSpec(cpu=2, memory=3 << 30, disk=1 << 30, device=DeviceSpec("tpu", "v5litepod-16", 4)),
    environment=EnvironmentSpec(env={"A": "1"}, extras=["gpu"], pip_packages=["numpy>=2"]),
    bundle_id="b" * 64,
    replicas=4,
    max_retries=2,
    timeout_seconds=60.0,
    constraints=(Constraint("zone", Op.EQ, ("us-a",)),),
    coschedule_by="slice",
    ports=("http",),
    max_task_failures=1,
    scheduling_timeout_seconds=30.0,
    max_preemptions=5,
    parent_job_id="/alice/parent",
    user="alice",
    task_image="127.0.0.1:5000/train:3",
)
ATTEMPT = AttemptView(
    attempt_id=1, worker_id="w1", state=TaskState.FAILED, exit_code=3, error="exited with code 3", started_at=10.0,
    finished_at=11.0, oom=True, stop_requested=True, ports={"http": 8080},
)
TASK = TaskView(
    job_id="/alice/train", index=1, state=TaskState.FAILED, pending_reason="waiting for a worker", exit_code=3,
    error="exited with code 3", failures=1, preemptions=1, attempts=(ATTEMPT,),
)
JOB = JobView(
    job_id="/alice/train", spec=SPEC, submitted_at=9.0, state=JobState.FAILED, started_at=10.0, finished_at=11.0,
    error="task 1 failed", exit_code=3, tasks=(TASK,), children=("/alice/train/child",),
)
WORKER = WorkerView(
    worker_id="w1", slice_id="s1", cpu=4.0, memory_bytes=16 << 30, attributes={"zone": "us-a"}, last_seen=12.0,
    used_cpu=2.0, used_memory=3 << 30, lost=True, running_attempts=1,
)
DESIRED = DesiredAttempt(task_id="/alice/train/1", attempt_id=1, job_id="/alice/train", task_index=1, spec=SPEC)
ACK = AttemptAck(task_id="/alice/train/1", attempt_id=1, log_offset=100, done=True)
OBSERVED = ObservedAttempt(
    task_id="/alice/train/1", attempt_id=1, state=TaskState.RUNNING, exit_code=1, error="e", log_offset=5,
    log_data=b"line\n", log_complete=True, oom=True, ports={"http": 8080}, result=b"pickled", result_is_error=True,
)
IDENTITY = WorkerIdentity(worker_id="w1", slice_id="s1", cpu=4.0, memory_bytes=16 << 30, attributes={"zone": "us-a"})

TO_PROTO: list[tuple[str, Callable[[], Message], tuple[str, ...]]] = [
    ("JobView -> JobInfo", lambda: convert.job_view_to_proto(JOB), ()),
    ("TaskView -> TaskInfo", lambda: convert.task_view_to_proto(TASK), ()),
    ("AttemptView -> AttemptInfo", lambda: convert.attempt_view_to_proto(ATTEMPT), ()),
    (
        "WorkerView -> WorkerSummary",
        lambda: convert.worker_view_to_proto(WORKER),
        tuple(f"{side}.{name}" for side in ("capacity", "used") for name in _CPU_AND_MEMORY_ONLY),
    ),
    ("DesiredAttempt -> AttemptSpec", lambda: convert.attempt_spec_to_proto(DESIRED, "file:///bundles/b", token="task-token"), ()),
    (
        "ReconcileResult -> ReconcileResponse",
        lambda: convert.reconcile_result_to_proto(
            ReconcileResult(5, [DESIRED], [ACK]), lambda bundle_id: f"file:///{bundle_id}", lambda d: f"token of {d.task_id}"
        ),
        (),
    ),
    (
        "observed -> ReconcileRequest",
        lambda: convert.reconcile_request_to_proto(IDENTITY, [OBSERVED], 5, 2.0),
        tuple(f"worker.capacity.{name}" for name in _CPU_AND_MEMORY_ONLY),
    ),
    (
        "log lines -> GetLogsResponse",
        lambda: convert.logs_to_proto([("/alice/train", LogLine(1, 2, 3.0, "hello", "stderr"))], "cursor", True),
        (),
    ),
]


@pytest.mark.parametrize(("name", "convert_record", "not_mapped"), TO_PROTO, ids=[t[0] for t in TO_PROTO])
def test_convert_of_a_fully_populated_record_sets_every_field(name, convert_record, not_mapped) -> None:
    assert unset_fields(convert_record(), not_mapped) == [], f"{name}: fields no conversion sets"


# --- message -> record -----------------------------------------------------------------------

FROM_PROTO = [
    (controller_pb2.JobInfo, convert.job_status_from_proto),
    (controller_pb2.TaskInfo, convert.task_status_from_proto),
    (controller_pb2.AttemptInfo, convert.attempt_status_from_proto),
    (controller_pb2.LogLine, convert.log_line_from_proto),
]


@pytest.mark.parametrize(("cls", "from_proto"), FROM_PROTO, ids=[f[0].DESCRIPTOR.full_name for f in FROM_PROTO])
def test_convert_from_proto_reads_every_field(cls, from_proto) -> None:
    assert unread_fields(from_proto, filled(cls)) == [], f"{cls.DESCRIPTOR.full_name}: fields the client never reads"


# --- every message is converted here or built inline -----------------------------------------

# Request and response envelopes: the service reads and the clients build their few scalar
# fields inline, and their nested records go through the conversions checked above.
ENVELOPES = {
    "LaunchJobRequest", "LaunchJobResponse", "GetJobRequest", "WaitJobRequest", "ListJobsRequest", "ListJobsResponse",
    "KillJobRequest", "KillJobResponse", "HasBundleRequest", "HasBundleResponse", "UploadBundleRequest",
    "UploadBundleResponse", "GetLogsRequest", "ListWorkersRequest", "ListWorkersResponse", "RegisterEndpointRequest",
    "RegisterEndpointResponse", "LookupEndpointRequest", "LookupEndpointResponse", "GetAutoscalerStatusRequest",
    "CreateSliceRequest", "CreateSliceResponse", "TerminateSlicesRequest", "TerminateSlicesResponse",
    "GetResultsRequest", "WhoAmIRequest", "WhoAmIResponse", "CreateTokenRequest", "CreateTokenResponse",
    "ListVmsRequest", "GetVmLogsRequest", "GetVmLogsResponse",
}  # fmt: skip
# Converted as part of a message checked above.
NESTED = {"SliceStatus", "ScaleGroupStatus", "DesiredAttempt", "TaskResult", "VmStatus"}


def test_convert_every_message_is_checked_or_listed_as_an_envelope() -> None:
    checked = {cls.DESCRIPTOR.name for cls, *_ in ROUND_TRIPS} | {cls.DESCRIPTOR.name for cls, _ in FROM_PROTO}
    checked |= {"JobInfo", "TaskInfo", "AttemptInfo", "WorkerSummary", "AttemptSpec", "ReconcileResponse", "ReconcileRequest"}
    checked |= {"GetLogsResponse"}
    messages = {
        name for module in (common_pb2, controller_pb2, worker_pb2) for name in module.DESCRIPTOR.message_types_by_name
    }
    assert messages - checked - ENVELOPES - NESTED == set(), "a message with no conversion check: add one, or list it"
    assert (checked | ENVELOPES | NESTED) - messages == set(), "listed messages that no longer exist"


def test_convert_unread_fields_detects_a_field_no_conversion_reads() -> None:
    """The checker itself: a conversion that forgets a field is caught."""

    def forgetful(p: controller_pb2.AttemptInfo) -> tuple[int, str]:
        return p.attempt_id, p.worker_id

    assert "error" in unread_fields(forgetful, filled(controller_pb2.AttemptInfo))
    assert "oom" in unset_fields(controller_pb2.AttemptInfo(attempt_id=1))
