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
from iris.cluster.controller.controller import AlreadyExists, Controller, InvalidRequest
from iris.errors import IrisError, JobNotFound
from iris.rpc import controller_pb2, controller_pb2_grpc, convert, worker_pb2_grpc

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
        return convert.autoscaler_status_to_proto(self._need_cluster().autoscaler_status())

    def CreateSlice(self, request, context):  # noqa: N802
        return controller_pb2.CreateSliceResponse(slice_id=self._need_cluster().create_slice(request.scale_group))

    def TerminateSlices(self, request, context):  # noqa: N802
        ids = self._need_cluster().terminate_slices(list(request.slice_ids), all_slices=request.all)
        return controller_pb2.TerminateSlicesResponse(slice_ids=ids)

    def LaunchJob(self, request, context):  # noqa: N802
        spec = convert.job_spec_from_proto(request.spec)
        if spec.bundle_id and not self._bundles.exists(spec.bundle_id):
            raise InvalidRequest(f"bundle {spec.bundle_id} is not uploaded; upload it before launching the job")
        return controller_pb2.LaunchJobResponse(job_id=self._controller.launch_job(spec))

    def GetJob(self, request, context):  # noqa: N802
        return convert.job_view_to_proto(self._controller.get_job(request.job_id))

    def WaitJob(self, request, context):  # noqa: N802
        job = self._controller.wait_job(
            request.job_id, min(request.timeout_seconds, MAX_WAIT_SECONDS), _active(context, self._controller)
        )
        return convert.job_view_to_proto(job)

    def ListJobs(self, request, context):  # noqa: N802
        jobs = self._controller.list_jobs(states=[convert.job_state_from_proto(s) for s in request.states], prefix=request.prefix)
        return controller_pb2.ListJobsResponse(jobs=[convert.job_view_to_proto(j) for j in jobs])

    def KillJob(self, request, context):  # noqa: N802
        job = self._controller.kill_job(request.job_id, keep_children=request.keep_children)
        return controller_pb2.KillJobResponse(state=convert.job_state_to_proto(job.state))

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
        return convert.logs_to_proto(lines, cursor, finished)

    def RegisterEndpoint(self, request, context):  # noqa: N802
        self._controller.register_endpoint(convert.endpoint_from_proto(request.endpoint))
        return controller_pb2.RegisterEndpointResponse()

    def LookupEndpoint(self, request, context):  # noqa: N802
        endpoints = self._controller.lookup_endpoint(request.name)
        return controller_pb2.LookupEndpointResponse(endpoints=[convert.endpoint_to_proto(e) for e in endpoints])

    def ListWorkers(self, request, context):  # noqa: N802
        return controller_pb2.ListWorkersResponse(workers=[convert.worker_view_to_proto(w) for w in self._controller.list_workers()])


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, controller: Controller, bundle_store: Any):
        self._controller = controller
        self._bundles = bundle_store

    def Reconcile(self, request, context):  # noqa: N802
        identity = convert.worker_identity_from_proto(request.worker)
        observed = [convert.observed_attempt_from_proto(o) for o in request.attempts]
        result = self._controller.reconcile(
            identity,
            observed,
            request.known_version,
            min(request.wait_seconds, MAX_WAIT_SECONDS),
            _active(context, self._controller),
        )
        response = convert.reconcile_result_to_proto(result, self._bundles.url_for)
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
