"""gRPC adapters: translate protobuf requests into Controller calls and back.

Every RPC passes through one interceptor (``_ErrorInterceptor``): user-facing errors become
gRPC status codes with the message intact, so clients can print them as one line.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent import futures
from typing import Any

import grpc

from iris import faults
from iris.cluster.controller.controller import (
    AlreadyExists,
    Controller,
    InvalidRequest,
    ObservedAttempt,
    WorkerIdentity,
)
from iris.cluster.controller.state import Endpoint, Job, JobSpec
from iris.errors import IrisError, JobNotFound
from iris.rpc import common_pb2, controller_pb2, controller_pb2_grpc, worker_pb2, worker_pb2_grpc
from iris.rpc.convert import (
    constraint_from_proto,
    constraint_to_proto,
    job_state_from_proto,
    entrypoint_from_proto,
    entrypoint_to_proto,
    environment_from_proto,
    job_state_to_proto,
    resources_from_proto,
    resources_to_proto,
    task_state_from_proto,
    task_state_to_proto,
)

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
MAX_WAIT_SECONDS = 30.0
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]

_STATUS = {
    JobNotFound: grpc.StatusCode.NOT_FOUND,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    ValueError: grpc.StatusCode.INVALID_ARGUMENT,  # ConstraintError, ResourceError
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
}


class _ErrorInterceptor(grpc.ServerInterceptor):
    """The one door every RPC passes: maps Iris errors to status codes."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except IrisError as exc:
                code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), grpc.StatusCode.FAILED_PRECONDITION)
                context.abort(code, str(exc))

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _active(context: grpc.ServicerContext, controller: Controller) -> Any:
    """A predicate for long-polls: False once the caller has gone; the callback wakes the wait."""
    context.add_callback(controller.notify)
    return context.is_active


def job_to_proto(controller: Controller, job: Job) -> controller_pb2.JobInfo:
    info = controller_pb2.JobInfo(
        job_id=job.job_id,
        name=job.spec.name,
        state=job_state_to_proto(job.state),
        submitted_at=job.submitted_at,
        finished_at=job.finished_at,
        error=job.error,
        exit_code=controller.job_exit_code(job) if job.state.is_terminal else 0,
        entrypoint=job.spec.entrypoint.describe(),
        parent_job_id=job.spec.parent_job_id,
        children=job.children,
        replicas=job.spec.replicas,
        resources=resources_to_proto(job.spec.resources),
        user=job.spec.user,
        started_at=job.started_at,
        constraints=[constraint_to_proto(c) for c in job.spec.constraints],
        coscheduling=common_pb2.Coscheduling(enabled=bool(job.spec.coschedule_by), group_by=job.spec.coschedule_by),
    )
    for task in job.tasks:
        t = info.tasks.add(
            index=task.index,
            state=task_state_to_proto(task.state),
            pending_reason=task.pending_reason if not task.state.is_terminal else "",
            exit_code=task.exit_code or 0,
            error=task.error,
        )
        for a in task.attempts:
            t.attempts.add(
                attempt_id=a.attempt_id,
                worker_id=a.worker_id,
                state=task_state_to_proto(a.state),
                exit_code=a.exit_code or 0,
                error=a.error,
                started_at=a.started_at,
                finished_at=a.finished_at,
                oom=a.oom,
                ports=a.ports,
            )
    return info


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    def __init__(self, controller: Controller, bundle_store: Any, cluster: Any = None):
        """``cluster`` (the ClusterManager) answers the autoscaler RPCs; None = no autoscaler."""
        self._controller = controller
        self._bundles = bundle_store
        self.cluster = cluster

    def _need_cluster(self) -> Any:
        if self.cluster is None:
            raise InvalidRequest("this controller runs without an autoscaler")
        return self.cluster

    def GetAutoscalerStatus(self, request, context):  # noqa: N802
        response = controller_pb2.GetAutoscalerStatusResponse()
        for g in self._need_cluster().autoscaler_status():
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

    def CreateSlice(self, request, context):  # noqa: N802
        return controller_pb2.CreateSliceResponse(slice_id=self._need_cluster().create_slice(request.scale_group))

    def TerminateSlices(self, request, context):  # noqa: N802
        ids = self._need_cluster().terminate_slices(list(request.slice_ids), all_slices=request.all)
        return controller_pb2.TerminateSlicesResponse(slice_ids=ids)

    def LaunchJob(self, request, context):  # noqa: N802
        p = request.spec
        spec = JobSpec(
            name=p.name,
            entrypoint=entrypoint_from_proto(p.entrypoint),
            resources=resources_from_proto(p.resources),
            environment=environment_from_proto(p.environment),
            bundle_id=p.bundle_id,
            replicas=p.replicas or 1,
            max_retries=p.max_retries,
            timeout_seconds=p.timeout_seconds,
            constraints=tuple(constraint_from_proto(c) for c in p.constraints),
            coschedule_by=(p.coscheduling.group_by or "slice") if p.coscheduling.enabled else "",
            ports=tuple(p.ports),
            max_task_failures=p.max_task_failures,
            scheduling_timeout_seconds=p.scheduling_timeout_seconds,
            max_preemptions=p.max_preemptions,
            parent_job_id=p.parent_job_id,
            user=p.user,
        )
        if spec.bundle_id and not self._bundles.exists(spec.bundle_id):
            raise InvalidRequest(f"bundle {spec.bundle_id} is not uploaded; upload it before launching the job")
        return controller_pb2.LaunchJobResponse(job_id=self._controller.launch_job(spec))

    def GetJob(self, request, context):  # noqa: N802
        return job_to_proto(self._controller, self._controller.get_job(request.job_id))

    def WaitJob(self, request, context):  # noqa: N802
        job = self._controller.wait_job(
            request.job_id, min(request.timeout_seconds, MAX_WAIT_SECONDS), _active(context, self._controller)
        )
        return job_to_proto(self._controller, job)

    def ListJobs(self, request, context):  # noqa: N802
        jobs = self._controller.list_jobs(states=[job_state_from_proto(s) for s in request.states], prefix=request.prefix)
        return controller_pb2.ListJobsResponse(jobs=[job_to_proto(self._controller, j) for j in jobs])

    def KillJob(self, request, context):  # noqa: N802
        job = self._controller.kill_job(request.job_id, keep_children=request.keep_children)
        return controller_pb2.KillJobResponse(state=job_state_to_proto(job.state))

    def HasBundle(self, request, context):  # noqa: N802
        return controller_pb2.HasBundleResponse(exists=self._bundles.exists(request.bundle_id))

    def UploadBundle(self, request, context):  # noqa: N802
        actual = hashlib.sha256(request.data).hexdigest()
        if actual != request.bundle_id:
            raise InvalidRequest(f"bundle id {request.bundle_id} does not match its content (sha256 {actual})")
        url = self._bundles.put(request.bundle_id, request.data)
        self._controller.record_bundle(request.bundle_id, len(request.data))
        return controller_pb2.UploadBundleResponse(bundle_url=url)

    def GetLogs(self, request, context):  # noqa: N802
        lines, cursor, finished = self._controller.get_logs(
            request.job_id,
            request.cursor,
            request.max_lines,
            min(request.wait_seconds, MAX_WAIT_SECONDS),
            _active(context, self._controller),
            include_children=request.include_children,
            since=request.since,
            tail=request.tail,
        )
        return controller_pb2.GetLogsResponse(
            lines=[
                controller_pb2.LogLine(
                    job_id=job_id, task_index=ln.task_index, attempt_id=ln.attempt_id, timestamp=ln.timestamp, data=ln.data
                )
                for job_id, ln in lines
            ],
            cursor=cursor,
            finished=finished,
        )

    def RegisterEndpoint(self, request, context):  # noqa: N802
        e = request.endpoint
        self._controller.register_endpoint(
            Endpoint(name=e.name, address=e.address, job_id=e.job_id, task_index=e.task_index, metadata=dict(e.metadata))
        )
        return controller_pb2.RegisterEndpointResponse()

    def LookupEndpoint(self, request, context):  # noqa: N802
        return controller_pb2.LookupEndpointResponse(
            endpoints=[
                controller_pb2.Endpoint(name=e.name, address=e.address, job_id=e.job_id, task_index=e.task_index, metadata=e.metadata)
                for e in self._controller.lookup_endpoint(request.name)
            ]
        )

    def ListWorkers(self, request, context):  # noqa: N802
        out = controller_pb2.ListWorkersResponse()
        for w in self._controller.list_workers():
            out.workers.add(
                worker_id=w.worker_id,
                capacity=common_pb2.ResourceSpec(cpu=w.cpu, memory_bytes=w.memory_bytes),
                used=common_pb2.ResourceSpec(cpu=w.used_cpu, memory_bytes=w.used_memory),
                attributes=w.attributes,
                last_seen=w.last_seen,
                running_attempts=w.running_attempts,
            )
        return out


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, controller: Controller, bundle_store: Any):
        self._controller = controller
        self._bundles = bundle_store

    def Reconcile(self, request, context):  # noqa: N802
        w = request.worker
        identity = WorkerIdentity(
            worker_id=w.worker_id,
            slice_id=w.slice_id,
            cpu=w.capacity.cpu,
            memory_bytes=w.capacity.memory_bytes,
            attributes=dict(w.attributes),
        )
        observed = [
            ObservedAttempt(
                task_id=o.task_id,
                attempt_id=o.attempt_id,
                state=task_state_from_proto(o.state),
                exit_code=o.exit_code,
                error=o.error,
                log_offset=o.log_offset,
                log_data=o.log_data,
                log_complete=o.log_complete,
                oom=o.oom,
                ports=dict(o.ports),
            )
            for o in request.attempts
        ]
        result = self._controller.reconcile(
            identity,
            observed,
            request.known_version,
            min(request.wait_seconds, MAX_WAIT_SECONDS),
            _active(context, self._controller),
        )
        response = worker_pb2.ReconcileResponse(version=result.version)
        for d in result.desired:
            desired = response.attempts.add(task_id=d.task_id, attempt_id=d.attempt_id)
            if d.spec is not None:
                spec = d.spec
                desired.spec.CopyFrom(
                    worker_pb2.AttemptSpec(
                        job_id=d.job_id,
                        task_index=d.task_index,
                        num_tasks=spec.replicas,
                        entrypoint=entrypoint_to_proto(spec.entrypoint),
                        resources=resources_to_proto(spec.resources),
                        env=spec.environment.env,
                        bundle_url=self._bundles.url_for(spec.bundle_id) if spec.bundle_id else "",
                        timeout_seconds=spec.timeout_seconds,
                        ports=list(spec.ports),
                    )
                )
        for a in result.acks:
            response.acks.add(task_id=a.task_id, attempt_id=a.attempt_id, log_offset=a.log_offset, done=a.done)
        faults.inject("controller.dispatch")  # the exchange is recorded; the answer may be lost
        return response


class ControllerServer:
    """The controller's gRPC server plus its periodic tick thread."""

    def __init__(self, controller: Controller, bundle_store: Any, host: str = "127.0.0.1", port: int = 0, max_workers: int = 512):
        """``max_workers`` bounds concurrent RPCs; every worker's long-poll holds one, so it must
        exceed the number of workers plus clients."""
        self.controller = controller
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="iris-rpc"),
            interceptors=[_ErrorInterceptor()],
            options=GRPC_OPTIONS,
        )
        self.servicer = ControllerServicer(controller, bundle_store)
        controller_pb2_grpc.add_ControllerServiceServicer_to_server(self.servicer, self._server)
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(controller, bundle_store), self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise IrisError(f"controller: cannot listen on {host}:{port} (address in use or not allowed)")
        self.address = f"http://{host}:{self.port}"
        controller.address = self.address
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="iris-controller-tick", daemon=True)

    def start(self) -> str:
        self._server.start()
        self._ticker.start()
        return self.address

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.controller.tick()
            except Exception:  # keep ticking; the log says what broke
                logger.exception("controller tick failed")

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        self.controller.shutdown()
        self._server.stop(grace).wait()
        if self._ticker.is_alive():
            self._ticker.join(timeout=2)
