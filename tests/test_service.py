"""The controller's gRPC service maps Iris errors to status codes with their message, whether the
RPC ran on the server's loop or on its thread pool."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.job.records import JobSpec
from iris.cluster.types import Entrypoint
from iris.rpc import controller_pb2, controller_pb2_grpc, convert
from iris.testing.fakes import InMemoryBundleStore


@pytest.fixture
def stub() -> Iterator[controller_pb2_grpc.ControllerServiceStub]:
    server = ControllerServer(Controller(), InMemoryBundleStore(), port=0)
    server.start()
    channel = grpc.insecure_channel(server.address.removeprefix("http://"))
    yield controller_pb2_grpc.ControllerServiceStub(channel)
    channel.close()
    server.stop()


def error_of(call, request) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=20)
    return caught.value


def launch(name: str, bundle_id: str = "") -> controller_pb2.LaunchJobRequest:
    spec = JobSpec(name=name, entrypoint=Entrypoint(argv=("true",)), bundle_id=bundle_id, user="tester")
    return controller_pb2.LaunchJobRequest(spec=convert.job_spec_to_proto(spec))


def test_service_bad_log_cursor_is_invalid_argument(stub) -> None:  # type: ignore[no-untyped-def]
    job_id = stub.LaunchJob(launch("logs"), timeout=20).job_id
    error = error_of(stub.GetLogs, controller_pb2.GetLogsRequest(job_id=job_id, cursor="not-a-cursor"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "log cursor 'not-a-cursor' is invalid" in error.details()


def test_service_unknown_job_is_not_found(stub) -> None:  # type: ignore[no-untyped-def]
    for call, request in [
        (stub.GetJob, controller_pb2.GetJobRequest(job_id="/nobody/nothing")),
        (stub.WaitJob, controller_pb2.WaitJobRequest(job_id="/nobody/nothing", timeout_seconds=5)),
        (stub.GetLogs, controller_pb2.GetLogsRequest(job_id="/nobody/nothing", wait_seconds=5)),
    ]:
        assert error_of(call, request).code() == grpc.StatusCode.NOT_FOUND


def test_service_duplicate_job_is_already_exists(stub) -> None:  # type: ignore[no-untyped-def]
    stub.LaunchJob(launch("twice"), timeout=20)
    error = error_of(stub.LaunchJob, launch("twice"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already exists" in error.details()


def test_service_errors_raised_on_the_thread_pool_keep_their_status(stub) -> None:  # type: ignore[no-untyped-def]
    missing = "0" * 64
    error = error_of(stub.LaunchJob, launch("needs-bundle", bundle_id=missing))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"bundle {missing} is not uploaded; upload it before launching the job",
    )
    error = error_of(stub.UploadBundle, controller_pb2.UploadBundleRequest(bundle_id=missing, data=b"zip"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not match its content" in error.details()
    error = error_of(stub.GetAutoscalerStatus, controller_pb2.GetAutoscalerStatusRequest())
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "this controller runs without an autoscaler")
