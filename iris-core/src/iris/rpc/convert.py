"""The one place protobuf messages and Iris records turn into each other.

Every direction is one function, ``<record>_to_proto`` or ``<record>_from_proto``; the service,
the client and the worker call these and build no message by hand. The records come from
:mod:`iris.cluster.types` and :mod:`iris.job.records` (below the controller: this module
imports nothing from ``iris.cluster.controller``). ``iris-core/tests/test_convert.py`` fails when a
message has a field that no function here maps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from iris.errors import InvalidRequest
from iris.job.constraints import Constraint, ConstraintError, Op
from iris.job.records import (
    AttemptAck,
    BundleLimits,
    AttemptStatus,
    AttemptView,
    DesiredAttempt,
    Endpoint,
    JobLogLine,
    JobSpec,
    JobStatus,
    JobView,
    LogLine,
    ObservedAttempt,
    ReconcileResult,
    TaskResult,
    TaskStatus,
    TaskView,
    WorkerIdentity,
    WorkerView,
)
from iris.job.types import DeviceSpec, Entrypoint, EnvironmentSpec, JobState, ResourceSpec, TaskState
from iris.job.validation import show
from iris.rpc import common_pb2, controller_pb2, worker_pb2

# --- values (common.proto) -------------------------------------------------------------------


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
    return common_pb2.EnvironmentSpec(env=dict(e.env), extras=list(e.extras), pip_packages=list(e.pip_packages))


def environment_from_proto(p: common_pb2.EnvironmentSpec) -> EnvironmentSpec:
    return EnvironmentSpec(env=dict(p.env), extras=list(p.extras), pip_packages=list(p.pip_packages))


def task_state_to_proto(s: TaskState) -> int:
    return common_pb2.TaskState.Value(f"TASK_STATE_{s.value}")


def _enum_name(enum_type: Any, value: int, field: str, prefix: str = "") -> str:
    """The name of ``value`` in a protobuf enum, or InvalidRequest naming the field and the
    accepted names (a newer peer may send a value this one does not know)."""
    try:
        return enum_type.Name(value).removeprefix(prefix)
    except ValueError:
        accepted = ", ".join(n.removeprefix(prefix) for n in enum_type.keys() if not n.endswith("UNSPECIFIED"))
        raise InvalidRequest(f"{field}: {value} is not a known value; use one of {accepted}") from None


def task_state_from_proto(v: int, field: str = "task state") -> TaskState:
    name = _enum_name(common_pb2.TaskState, v, field, "TASK_STATE_")
    return TaskState.PENDING if name == "UNSPECIFIED" else TaskState(name)


def job_state_to_proto(s: JobState) -> int:
    return common_pb2.JobState.Value(f"JOB_STATE_{s.value}")


def job_state_from_proto(v: int, field: str = "job state") -> JobState:
    name = _enum_name(common_pb2.JobState, v, field, "JOB_STATE_")
    return JobState.PENDING if name == "UNSPECIFIED" else JobState(name)


def constraint_to_proto(c: Constraint) -> common_pb2.Constraint:
    return common_pb2.Constraint(key=c.key, op=common_pb2.Constraint.Op.Value(c.op.value), values=list(c.values))


def constraint_from_proto(p: common_pb2.Constraint) -> Constraint:
    key = show(p.key)
    name = _enum_name(common_pb2.Constraint.Op, p.op, f"constraint on {key}: op")
    if name == "OP_UNSPECIFIED":
        raise ConstraintError(f"constraint on {key}: the operator is missing")
    return Constraint(p.key, Op(name), tuple(p.values))


def coscheduling_to_proto(coschedule_by: str) -> common_pb2.Coscheduling:
    """A job's ``coschedule_by`` attribute key ("" = tasks start independently)."""
    return common_pb2.Coscheduling(enabled=bool(coschedule_by), group_by=coschedule_by)


def coscheduling_from_proto(p: common_pb2.Coscheduling) -> str:
    return (p.group_by or "slice") if p.enabled else ""


# --- jobs (controller.proto) -------------------------------------------------------------------


def job_spec_to_proto(s: JobSpec) -> controller_pb2.JobSpec:
    return controller_pb2.JobSpec(
        name=s.name,
        entrypoint=entrypoint_to_proto(s.entrypoint),
        resources=resources_to_proto(s.resources),
        environment=environment_to_proto(s.environment),
        bundle_id=s.bundle_id,
        replicas=s.replicas,
        max_retries=s.max_retries,
        timeout_seconds=s.timeout_seconds,
        constraints=[constraint_to_proto(c) for c in s.constraints],
        coscheduling=coscheduling_to_proto(s.coschedule_by),
        ports=list(s.ports),
        max_task_failures=s.max_task_failures,
        scheduling_timeout_seconds=s.scheduling_timeout_seconds,
        max_preemptions=s.max_preemptions,
        parent_job_id=s.parent_job_id,
        user=s.user,
        task_image=s.task_image,
    )


def job_spec_from_proto(p: controller_pb2.JobSpec) -> JobSpec:
    return JobSpec(
        name=p.name,
        entrypoint=entrypoint_from_proto(p.entrypoint),
        resources=resources_from_proto(p.resources),
        environment=environment_from_proto(p.environment),
        bundle_id=p.bundle_id,
        replicas=p.replicas or 1,
        max_retries=p.max_retries,
        timeout_seconds=p.timeout_seconds,
        constraints=tuple(constraint_from_proto(c) for c in p.constraints),
        coschedule_by=coscheduling_from_proto(p.coscheduling),
        ports=tuple(p.ports),
        max_task_failures=p.max_task_failures,
        scheduling_timeout_seconds=p.scheduling_timeout_seconds,
        max_preemptions=p.max_preemptions,
        parent_job_id=p.parent_job_id,
        user=p.user,
        task_image=p.task_image,
    )


def _attempt_fields(a: AttemptView) -> dict[str, Any]:
    return {
        "attempt_id": a.attempt_id,
        "worker_id": a.worker_id,
        "state": task_state_to_proto(a.state),
        "exit_code": a.exit_code or 0,
        "error": a.error,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
        "oom": a.oom,
        "ports": a.ports,
    }


def _task_fields(t: TaskView) -> dict[str, Any]:
    return {
        "index": t.index,
        "state": task_state_to_proto(t.state),
        "pending_reason": t.pending_reason,
        "exit_code": t.exit_code or 0,
        "error": t.error,
    }


def attempt_view_to_proto(a: AttemptView) -> controller_pb2.AttemptInfo:
    return controller_pb2.AttemptInfo(**_attempt_fields(a))


def task_view_to_proto(t: TaskView) -> controller_pb2.TaskInfo:
    info = controller_pb2.TaskInfo(**_task_fields(t))
    for a in t.attempts:
        info.attempts.add(**_attempt_fields(a))
    return info


def job_view_to_proto(job: JobView) -> controller_pb2.JobInfo:
    spec = job.spec
    info = controller_pb2.JobInfo(
        job_id=job.job_id,
        name=spec.name,
        state=job_state_to_proto(job.state),
        submitted_at=job.submitted_at,
        finished_at=job.finished_at,
        error=job.error,
        exit_code=job.exit_code,
        entrypoint=spec.entrypoint.describe(),
        parent_job_id=spec.parent_job_id,
        children=job.children,
        replicas=spec.replicas,
        resources=resources_to_proto(spec.resources),
        user=spec.user,
        started_at=job.started_at,
        constraints=[constraint_to_proto(c) for c in spec.constraints],
        coscheduling=coscheduling_to_proto(spec.coschedule_by),
        env_names=sorted(spec.environment.env),
    )
    for t in job.tasks:  # filled in place: no copy of each task's message
        task = info.tasks.add(**_task_fields(t))
        for a in t.attempts:
            task.attempts.add(**_attempt_fields(a))
    return info


def attempt_status_from_proto(p: controller_pb2.AttemptInfo) -> AttemptStatus:
    return AttemptStatus(
        attempt_id=p.attempt_id,
        worker_id=p.worker_id,
        state=task_state_from_proto(p.state),
        exit_code=p.exit_code,
        error=p.error,
        started_at=p.started_at,
        finished_at=p.finished_at,
        oom=p.oom,
        ports=dict(p.ports),
    )


def task_status_from_proto(p: controller_pb2.TaskInfo) -> TaskStatus:
    return TaskStatus(
        index=p.index,
        state=task_state_from_proto(p.state),
        pending_reason=p.pending_reason,
        exit_code=p.exit_code,
        error=p.error,
        attempts=tuple(attempt_status_from_proto(a) for a in p.attempts),
    )


def job_status_from_proto(p: controller_pb2.JobInfo) -> JobStatus:
    return JobStatus(
        job_id=p.job_id,
        name=p.name,
        state=job_state_from_proto(p.state),
        exit_code=p.exit_code,
        error=p.error,
        submitted_at=p.submitted_at,
        finished_at=p.finished_at,
        entrypoint=p.entrypoint,
        tasks=tuple(task_status_from_proto(t) for t in p.tasks),
        parent_job_id=p.parent_job_id,
        children=tuple(p.children),
        user=p.user,
        started_at=p.started_at,
        resources=resources_from_proto(p.resources) if p.HasField("resources") else None,
        constraints=tuple(constraint_from_proto(c) for c in p.constraints),
        coschedule_by=coscheduling_from_proto(p.coscheduling),
        replicas=p.replicas,
        env_names=tuple(p.env_names),
    )


# --- logs ---------------------------------------------------------------------------------------


#: A log line's stream as the wire has it (LogStream) and as Python does (a name).
_STREAM_TO_PROTO = {"stdout": controller_pb2.LOG_STREAM_STDOUT, "stderr": controller_pb2.LOG_STREAM_STDERR,
                    "env": controller_pb2.LOG_STREAM_ENV}  # fmt: skip
_STREAM_FROM_PROTO = {v: k for k, v in _STREAM_TO_PROTO.items()}


def logs_to_proto(lines: Iterable[tuple[str, LogLine]], cursor: str, finished: bool) -> controller_pb2.GetLogsResponse:
    """A page of ``(job_id, line)`` pairs as ``Controller.read_logs`` returns them."""
    response = controller_pb2.GetLogsResponse(cursor=cursor, finished=finished)
    add = response.lines.add
    stdout = controller_pb2.LOG_STREAM_STDOUT
    for job_id, ln in lines:
        add(job_id=job_id, task_index=ln.task_index, attempt_id=ln.attempt_id, timestamp=ln.timestamp, data=ln.data,
            stream=_STREAM_TO_PROTO.get(ln.stream, stdout))  # fmt: skip
    return response


def log_line_from_proto(p: controller_pb2.LogLine) -> JobLogLine:
    # a stream value this client does not know (a newer controller's) reads as stdout
    return JobLogLine(p.job_id, p.task_index, p.attempt_id, p.timestamp, p.data, _STREAM_FROM_PROTO.get(p.stream, "stdout"))


# --- endpoints and workers (controller.proto) ------------------------------------------------


def endpoint_to_proto(e: Endpoint) -> controller_pb2.Endpoint:
    return controller_pb2.Endpoint(name=e.name, address=e.address, job_id=e.job_id, task_index=e.task_index, metadata=e.metadata)


def endpoint_from_proto(p: controller_pb2.Endpoint) -> Endpoint:
    return Endpoint(name=p.name, address=p.address, job_id=p.job_id, task_index=p.task_index, metadata=dict(p.metadata))


def worker_view_to_proto(w: WorkerView) -> controller_pb2.WorkerSummary:
    """A worker as ``ListWorkers`` shows it: capacity and use are cpu and memory (devices are in
    its attributes)."""
    return controller_pb2.WorkerSummary(
        worker_id=w.worker_id,
        capacity=common_pb2.ResourceSpec(cpu=w.cpu, memory_bytes=w.memory_bytes),
        used=common_pb2.ResourceSpec(cpu=w.used_cpu, memory_bytes=w.used_memory),
        attributes=w.attributes,
        last_seen=w.last_seen,
        running_attempts=w.running_attempts,
        slice_id=w.slice_id,
        lost=w.lost,
    )


def autoscaler_status_to_proto(groups: Iterable[dict[str, Any]]) -> controller_pb2.GetAutoscalerStatusResponse:
    """The scale groups as ``ClusterManager.autoscaler_status()`` describes them (plain dicts)."""
    response = controller_pb2.GetAutoscalerStatusResponse()
    for g in groups:
        group = response.groups.add(
            name=g["name"], state=g["state"], detail=g.get("detail", ""), min_slices=g["min_slices"], max_slices=g["max_slices"]
        )
        for sl in g["slices"]:
            group.slices.add(
                slice_id=sl["slice_id"],
                state=sl["state"],
                created_at=sl.get("created_at", 0.0),
                idle_since=sl.get("idle_since") or 0.0,
                error=sl.get("error", ""),
                vms=sl.get("vms", 0),
            )
    return response


def autoscaler_status_from_proto(p: controller_pb2.GetAutoscalerStatusResponse) -> list[dict[str, Any]]:
    return [
        {
            "name": g.name,
            "state": g.state,
            "detail": g.detail,
            "min_slices": g.min_slices,
            "max_slices": g.max_slices,
            "slices": [
                {"slice_id": s.slice_id, "state": s.state, "created_at": s.created_at, "idle_since": s.idle_since, "error": s.error, "vms": s.vms}
                for s in g.slices
            ],
        }
        for g in p.groups
    ]


def vms_to_proto(vms: Iterable[dict[str, Any]]) -> controller_pb2.ListVmsResponse:
    """The VMs as ``ClusterManager.list_vms()`` describes them (plain dicts)."""
    response = controller_pb2.ListVmsResponse()
    for vm in vms:
        response.vms.add(
            vm_id=vm["vm_id"],
            slice_id=vm["slice_id"],
            scale_group=vm["scale_group"],
            address=vm["address"],
            state=vm["state"],
            attributes=vm["attributes"],
            slice_error=vm.get("slice_error", ""),
        )
    return response


def vms_from_proto(p: controller_pb2.ListVmsResponse) -> list[dict[str, Any]]:
    return [
        {
            "vm_id": v.vm_id,
            "slice_id": v.slice_id,
            "scale_group": v.scale_group,
            "address": v.address,
            "state": v.state,
            "attributes": dict(v.attributes),
            "slice_error": v.slice_error,
        }
        for v in p.vms
    ]


# --- the reconcile exchange (worker.proto) ---------------------------------------------------


def worker_identity_to_proto(w: WorkerIdentity) -> worker_pb2.WorkerIdentity:
    return worker_pb2.WorkerIdentity(
        worker_id=w.worker_id,
        slice_id=w.slice_id,
        capacity=common_pb2.ResourceSpec(cpu=w.cpu, memory_bytes=w.memory_bytes),
        attributes=dict(w.attributes),
    )


def worker_identity_from_proto(p: worker_pb2.WorkerIdentity) -> WorkerIdentity:
    return WorkerIdentity(
        worker_id=p.worker_id,
        slice_id=p.slice_id,
        cpu=p.capacity.cpu,
        memory_bytes=p.capacity.memory_bytes,
        attributes=dict(p.attributes),
    )


def _observed_fields(o: ObservedAttempt) -> dict[str, Any]:
    return {
        "task_id": o.task_id,
        "attempt_id": o.attempt_id,
        "state": task_state_to_proto(o.state),
        "exit_code": o.exit_code or 0,
        "error": o.error,
        "log_offset": o.log_offset,
        "log_data": o.log_data,
        "log_complete": o.log_complete,
        "oom": o.oom,
        "ports": o.ports,
        "result": o.result,
        "result_is_error": o.result_is_error,
    }


def observed_attempt_to_proto(o: ObservedAttempt) -> worker_pb2.ObservedAttempt:
    return worker_pb2.ObservedAttempt(**_observed_fields(o))


def observed_attempt_from_proto(p: worker_pb2.ObservedAttempt) -> ObservedAttempt:
    return ObservedAttempt(
        task_id=p.task_id,
        attempt_id=p.attempt_id,
        state=task_state_from_proto(p.state),
        exit_code=p.exit_code,
        error=p.error,
        log_offset=p.log_offset,
        log_data=p.log_data,
        log_complete=p.log_complete,
        oom=p.oom,
        ports=dict(p.ports),
        result=p.result,
        result_is_error=p.result_is_error,
    )


def task_results_to_proto(results: Iterable[TaskResult]) -> controller_pb2.GetResultsResponse:
    return controller_pb2.GetResultsResponse(
        results=[
            controller_pb2.TaskResult(task_index=r.task_index, attempt_id=r.attempt_id, data=r.data, is_error=r.is_error)
            for r in results
        ]
    )


def task_results_from_proto(p: controller_pb2.GetResultsResponse) -> list[TaskResult]:
    return [TaskResult(r.task_index, r.attempt_id, r.data, r.is_error) for r in p.results]


def reconcile_request_to_proto(
    identity: WorkerIdentity, observed: Iterable[ObservedAttempt], known_version: int, wait_seconds: float
) -> worker_pb2.ReconcileRequest:
    request = worker_pb2.ReconcileRequest(
        worker=worker_identity_to_proto(identity), known_version=known_version, wait_seconds=wait_seconds
    )
    add = request.attempts.add
    for o in observed:
        add(**_observed_fields(o))
    return request


def attempt_ack_to_proto(a: AttemptAck) -> worker_pb2.AttemptAck:
    return worker_pb2.AttemptAck(task_id=a.task_id, attempt_id=a.attempt_id, log_offset=a.log_offset, done=a.done)


def attempt_ack_from_proto(p: worker_pb2.AttemptAck) -> AttemptAck:
    return AttemptAck(task_id=p.task_id, attempt_id=p.attempt_id, log_offset=p.log_offset, done=p.done)


def attempt_spec_to_proto(
    d: DesiredAttempt, bundle_url: str, limits: BundleLimits = BundleLimits(), token: str = ""
) -> worker_pb2.AttemptSpec:
    """Everything a worker needs to start the attempt ``d`` (whose ``spec`` is set), how much it
    may unpack from the bundle, and ``token``, the task's credential (empty when auth is off)."""
    spec = d.spec
    if spec is None:
        raise ValueError(f"attempt {d.task_id}/{d.attempt_id}: no spec to send")
    return worker_pb2.AttemptSpec(
        job_id=d.job_id,
        task_index=d.task_index,
        num_tasks=spec.replicas,
        entrypoint=entrypoint_to_proto(spec.entrypoint),
        resources=resources_to_proto(spec.resources),
        env=spec.environment.env,
        extras=list(spec.environment.extras),
        pip_packages=list(spec.environment.pip_packages),
        bundle_url=bundle_url,
        timeout_seconds=spec.timeout_seconds,
        ports=list(spec.ports),
        task_image=spec.task_image,
        bundle_max_unpacked_bytes=limits.max_unpacked_bytes,
        bundle_max_files=limits.max_files,
        token=token,
    )


def bundle_limits_from_attempt_spec(p: worker_pb2.AttemptSpec) -> BundleLimits:
    """The unpacking limits an attempt carries (a controller that sends none: the defaults)."""
    default = BundleLimits()
    return BundleLimits(
        max_unpacked_bytes=p.bundle_max_unpacked_bytes or default.max_unpacked_bytes,
        max_files=p.bundle_max_files or default.max_files,
    )


def desired_attempt_to_proto(
    d: DesiredAttempt, bundle_url: str, limits: BundleLimits = BundleLimits(), token: str = ""
) -> worker_pb2.DesiredAttempt:
    """``bundle_url`` locates ``d.spec.bundle_id`` (unused when the worker already has the spec)."""
    desired = worker_pb2.DesiredAttempt(task_id=d.task_id, attempt_id=d.attempt_id)
    if d.spec is not None:
        desired.spec.CopyFrom(attempt_spec_to_proto(d, bundle_url, limits, token))
    return desired


def reconcile_result_to_proto(
    result: ReconcileResult,
    bundle_url_for: Callable[[str], str],
    token_for: Callable[[DesiredAttempt], str] | None = None,
) -> worker_pb2.ReconcileResponse:
    """``bundle_url_for(bundle_id)`` is where workers fetch a job's bundle; ``token_for(d)``
    mints the credential of the task an attempt runs (None: auth is off)."""
    response = worker_pb2.ReconcileResponse(version=result.version)
    for d in result.desired:
        bundle_id = d.spec.bundle_id if d.spec is not None else ""
        token = token_for(d) if token_for is not None and d.spec is not None else ""
        response.attempts.append(
            desired_attempt_to_proto(d, bundle_url_for(bundle_id) if bundle_id else "", result.bundle_limits, token)
        )
    response.acks.extend(attempt_ack_to_proto(a) for a in result.acks)
    return response
