"""Every RPC's request checked before a handler sees it.

One check per method (:data:`CHECKS`, keyed by the gRPC method path): a bad field is refused as
INVALID_ARGUMENT with one line naming the field, the value (shortened, so the error stays small
whatever was sent) and what is accepted; a refused request changes nothing, since no handler ran.
:func:`check_request` applies them; the controller's one server interceptor (``_Door`` in
``iris.cluster.controller.service``) calls it after deciding who may call (a caller who may not
gets no hint about the fields).

The job spec goes through the same :func:`~iris.job.validation.check_job_spec` that the
controller and the client apply; the checks here add what only the wire can carry (enum values
no version defines, numbers a record would refuse to hold) and the fields of the other RPCs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from iris.errors import InvalidRequest, IrisError
from iris.job.validation import (
    BUNDLE_ID_RE,
    JOB_NAME_RE,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    check_count,
    check_items,
    check_job_spec,
    check_number,
    check_text,
)
from iris.rpc import common_pb2, controller_pb2, convert, worker_pb2

WORKER_ID_RE = re.compile(r"^(?!\.\.?$)[^/\x00-\x1f\x7f]{1,256}$")  # as `iris.cluster.worker.main` takes it
PORT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_CURSOR_CHARS = 1 << 20  # a log cursor holds a position per job read (children included)
MAX_REASON_CHARS = 64 * 1024
MAX_ATTEMPTS_PER_EXCHANGE = 100_000
MAX_VM_LOG_LINES = 1_000_000  # GetVmLogs.tail

Check = Callable[[Any], None]


def _job_id(field: str, value: str) -> None:
    check_text(field, value, required=True, max_chars=MAX_ID_CHARS, accepted="give a job id, e.g. /alice/train")


def _bundle_id(value: str) -> None:
    check_text(
        "bundle_id", value, required=True, max_chars=64, pattern=BUNDLE_ID_RE, accepted="a bundle id is a sha256 hex digest (64 characters 0-9a-f)"
    )


def _string_map(field: str, values: Mapping[str, str], *, key_pattern: re.Pattern[str] | None = None, accepted: str = "") -> None:
    check_items(field, len(values))
    for key, value in values.items():
        check_text(f"{field} key", key, required=True, max_chars=MAX_NAME_CHARS, pattern=key_pattern, accepted=accepted)
        check_text(f"{field}[{key}]", value, max_chars=MAX_TEXT_CHARS)


def _ports(field: str, ports: Mapping[str, int]) -> None:
    check_items(field, len(ports), 64)
    for name, port in ports.items():
        check_text(f"{field} name", name, required=True, pattern=PORT_NAME_RE, accepted="use letters, digits, '_', '.' or '-'")
        check_count(f"{field}[{name}]", port, maximum=65535)


def _resources(p: common_pb2.ResourceSpec, prefix: str = "") -> None:
    check_number(f"{prefix}cpu", p.cpu)
    check_count(f"{prefix}memory", p.memory_bytes, maximum=(1 << 63) - 1)
    check_count(f"{prefix}disk", p.disk_bytes, maximum=(1 << 63) - 1)
    check_count(f"{prefix}device count", p.device_count)


# --- ControllerService -------------------------------------------------------------------------


def check_launch_job(request: controller_pb2.LaunchJobRequest) -> None:
    p = request.spec
    _resources(p.resources)
    for field, value in (("timeout", p.timeout_seconds), ("scheduling_timeout", p.scheduling_timeout_seconds)):
        check_number(field, value)
    for field, count in (
        ("replicas", p.replicas),
        ("max_retries", p.max_retries),
        ("max_task_failures", p.max_task_failures),
        ("max_preemptions", p.max_preemptions),
    ):
        check_count(field, count)
    try:
        spec = convert.job_spec_from_proto(p)
    except IrisError as exc:  # a constraint or resource the records refuse
        raise InvalidRequest(str(exc)) from None
    check_job_spec(spec)  # an empty user is the handler's to judge: with auth on, the token names it


def check_job_id_request(request: Any) -> None:
    _job_id("job_id", request.job_id)


def check_wait_job(request: controller_pb2.WaitJobRequest) -> None:
    _job_id("job_id", request.job_id)
    check_number("timeout_seconds", request.timeout_seconds)


def check_list_jobs(request: controller_pb2.ListJobsRequest) -> None:
    check_items("states", len(request.states), 64)
    for state in request.states:
        convert.job_state_from_proto(state, "states")
    check_text("prefix", request.prefix, max_chars=MAX_ID_CHARS)


def check_kill_job(request: controller_pb2.KillJobRequest) -> None:
    _job_id("job_id", request.job_id)
    if len(request.reason) > MAX_REASON_CHARS:
        raise InvalidRequest(f"reason: {len(request.reason)} characters; at most {MAX_REASON_CHARS}")


def check_has_bundle(request: controller_pb2.HasBundleRequest) -> None:
    _bundle_id(request.bundle_id)


def check_upload_bundle(request: controller_pb2.UploadBundleRequest) -> None:
    _bundle_id(request.bundle_id)
    if not request.data:
        raise InvalidRequest("data is empty; upload the bundle's bytes (a zip)")


def check_get_logs(request: controller_pb2.GetLogsRequest) -> None:
    _job_id("job_id", request.job_id)
    if len(request.cursor) > MAX_CURSOR_CHARS:
        raise InvalidRequest(f"cursor: {len(request.cursor)} characters; at most {MAX_CURSOR_CHARS} (send back the cursor a read returned)")
    check_count("max_lines", request.max_lines)
    check_count("tail", request.tail)
    check_number("wait_seconds", request.wait_seconds)
    check_number("since", request.since)


def check_register_endpoint(request: controller_pb2.RegisterEndpointRequest) -> None:
    e = request.endpoint
    check_text("endpoint.name", e.name, required=True, max_chars=MAX_NAME_CHARS, accepted="name the endpoint, e.g. my-actor")
    check_text("endpoint.address", e.address, required=True, max_chars=MAX_TEXT_CHARS, accepted="give HOST:PORT or a URL")
    _job_id("endpoint.job_id", e.job_id)
    check_count("endpoint.task_index", e.task_index)
    _string_map("endpoint.metadata", e.metadata)


def check_lookup_endpoint(request: controller_pb2.LookupEndpointRequest) -> None:
    check_text("name", request.name, required=True, max_chars=MAX_NAME_CHARS, accepted="name the endpoint to look up")


def check_create_slice(request: controller_pb2.CreateSliceRequest) -> None:
    check_text("scale_group", request.scale_group, required=True, max_chars=MAX_NAME_CHARS, accepted="name a scale group of the cluster config")


def check_terminate_slices(request: controller_pb2.TerminateSlicesRequest) -> None:
    check_items("slice_ids", len(request.slice_ids))
    for slice_id in request.slice_ids:
        check_text("slice_ids entry", slice_id, required=True, max_chars=MAX_NAME_CHARS, accepted="name a slice")


def check_get_vm_logs(request: controller_pb2.GetVmLogsRequest) -> None:
    check_text("vm_id", request.vm_id, required=True, max_chars=MAX_NAME_CHARS, accepted="name a VM (iris cluster vm status lists them)")
    check_count("tail", request.tail, maximum=MAX_VM_LOG_LINES)


def check_create_token(request: controller_pb2.CreateTokenRequest) -> None:
    check_text("role", request.role, max_chars=16, accepted="admin or user")
    check_text("name", request.name, required=True, max_chars=128, pattern=JOB_NAME_RE, accepted="use letters, digits, '.', '_' or '-'")
    check_number("ttl_seconds", request.ttl_seconds)


def check_nothing(request: Any) -> None:
    """A request without fields."""


# --- WorkerService -----------------------------------------------------------------------------


def check_reconcile(request: worker_pb2.ReconcileRequest) -> None:
    """The worker's identity and every attempt it reports, on the hot path: field checks only,
    no conversion."""
    w = request.worker
    check_text(
        "worker.worker_id",
        w.worker_id,
        required=True,
        max_chars=256,
        pattern=WORKER_ID_RE,
        accepted="a worker needs an id of 1-256 characters without '/' or control characters",
    )
    check_text("worker.slice_id", w.slice_id, max_chars=MAX_NAME_CHARS)
    _resources(w.capacity, "worker.capacity.")
    _string_map("worker.attributes", w.attributes)
    check_number("wait_seconds", request.wait_seconds)
    check_items("attempts", len(request.attempts), MAX_ATTEMPTS_PER_EXCHANGE)
    for i, o in enumerate(request.attempts):
        # a busy worker reports every attempt on every exchange: a quick test first, the
        # field-by-field checks (which build the messages) only when it fails
        task_id = o.task_id
        if 0 < len(task_id) <= MAX_ID_CHARS and task_id.isprintable() and o.attempt_id >= 0 and o.log_offset >= 0:
            if o.state in _TASK_STATES and not o.ports:
                continue
        _check_attempt(f"attempts[{i}]", o)


_TASK_STATES = frozenset(common_pb2.TaskState.values())


def _check_attempt(field: str, o: worker_pb2.ObservedAttempt) -> None:
    check_text(f"{field}.task_id", o.task_id, required=True, max_chars=MAX_ID_CHARS, accepted="the attempt's task id")
    check_count(f"{field}.attempt_id", o.attempt_id)
    if o.state not in _TASK_STATES:
        convert.task_state_from_proto(o.state, f"{field}.state")
    check_count(f"{field}.log_offset", o.log_offset, maximum=(1 << 63) - 1)
    if o.ports:
        _ports(f"{field}.ports", o.ports)


CHECKS: dict[str, Check] = {
    "/iris.v1.ControllerService/LaunchJob": check_launch_job,
    "/iris.v1.ControllerService/GetJob": check_job_id_request,
    "/iris.v1.ControllerService/WaitJob": check_wait_job,
    "/iris.v1.ControllerService/ListJobs": check_list_jobs,
    "/iris.v1.ControllerService/KillJob": check_kill_job,
    "/iris.v1.ControllerService/HasBundle": check_has_bundle,
    "/iris.v1.ControllerService/UploadBundle": check_upload_bundle,
    "/iris.v1.ControllerService/GetLogs": check_get_logs,
    "/iris.v1.ControllerService/GetResults": check_job_id_request,
    "/iris.v1.ControllerService/ListWorkers": check_nothing,
    "/iris.v1.ControllerService/RegisterEndpoint": check_register_endpoint,
    "/iris.v1.ControllerService/LookupEndpoint": check_lookup_endpoint,
    "/iris.v1.ControllerService/GetAutoscalerStatus": check_nothing,
    "/iris.v1.ControllerService/CreateSlice": check_create_slice,
    "/iris.v1.ControllerService/TerminateSlices": check_terminate_slices,
    "/iris.v1.ControllerService/ListVms": check_nothing,
    "/iris.v1.ControllerService/GetVmLogs": check_get_vm_logs,
    "/iris.v1.ControllerService/WhoAmI": check_nothing,
    "/iris.v1.ControllerService/CreateToken": check_create_token,
    "/iris.v1.WorkerService/Reconcile": check_reconcile,
}


def check_request(method: str, request: Any) -> None:
    """Raise InvalidRequest if ``request`` (for the gRPC method path ``method``) has a bad field."""
    check = CHECKS.get(method)
    if check is None:
        raise InvalidRequest(f"{method}: this controller has no request check for it; refusing it")
    try:
        check(request)
    except InvalidRequest:
        raise
    except IrisError as exc:
        raise InvalidRequest(str(exc)) from None
