"""Every RPC field is checked before a handler runs: a bad one is refused as INVALID_ARGUMENT
with one short line naming the field, the value and what is accepted, and changes nothing.
Real gRPC against a real controller server on 127.0.0.1."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from iris.client import IrisClient
from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.types import Entrypoint, ResourceSpec
from iris.errors import InvalidRequest, ResourceError
from iris.job.records import Endpoint, JobSpec, WorkerIdentity
from iris.rpc import common_pb2, controller_pb2, controller_pb2_grpc, convert, worker_pb2, worker_pb2_grpc
from iris.rpc.validate import CHECKS
from iris.testing.fakes import InMemoryBundleStore

MAX_DETAILS = 1024  # an error must stay small whatever the request carried
BIG = "a" * 1_000_000
HEX = "ab" * 32


class Cluster:
    """A controller server, a stub for each service, and a view of its state."""

    def __init__(self) -> None:
        self.controller = Controller()
        self.server = ControllerServer(self.controller, InMemoryBundleStore(), port=0)
        self.server.start()
        self.channel = grpc.insecure_channel(
            self.server.address.removeprefix("http://"), options=[("grpc.max_send_message_length", 64 << 20)]
        )
        self.stub = controller_pb2_grpc.ControllerServiceStub(self.channel)
        self.worker = worker_pb2_grpc.WorkerServiceStub(self.channel)

    def call(self, method: str, request: Any) -> Any:
        service, name = method.rsplit("/", 1)
        stub = self.worker if service.endswith("WorkerService") else self.stub
        return getattr(stub, name)(request, timeout=20)

    def state(self) -> tuple[Any, ...]:
        """Everything a request could change: jobs (and their states), workers (and their
        versions), endpoints."""
        jobs = tuple((j.job_id, j.state, len(j.tasks), j.error) for j in self.controller.list_jobs())
        workers = tuple((w.worker_id, w.cpu, w.memory_bytes, w.lost, tuple(sorted(w.attributes.items()))) for w in self.controller.list_workers())
        versions = tuple(self.controller.worker_version(w[0]) for w in workers)
        endpoints = tuple(self.controller.lookup_endpoint("svc"))
        return jobs, workers, versions, endpoints

    def close(self) -> None:
        self.channel.close()
        self.server.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    identity = WorkerIdentity(worker_id="w-0", cpu=4, memory_bytes=8 << 30, attributes={"zone": "a"})
    c.call("/iris.v1.WorkerService/Reconcile", convert.reconcile_request_to_proto(identity, [], 0, 0))
    spec = JobSpec(name="base", entrypoint=Entrypoint(argv=("sleep", "600")), resources=ResourceSpec(cpu=0.1, memory="1MB"), user="tester")
    job_id = c.call("/iris.v1.ControllerService/LaunchJob", controller_pb2.LaunchJobRequest(spec=convert.job_spec_to_proto(spec))).job_id
    c.controller.register_endpoint(Endpoint("svc", "127.0.0.1:1", job_id))
    yield c
    c.close()


def job(**fields: Any) -> controller_pb2.LaunchJobRequest:
    """A launch request that is valid but for ``fields`` (set on the JobSpec message)."""
    spec = JobSpec(name="ok", entrypoint=Entrypoint(argv=("true",)), user="tester")
    message = convert.job_spec_to_proto(spec)
    for name, value in fields.items():
        target, _, leaf = name.rpartition(".")
        holder = message
        for part in filter(None, target.split(".")):
            holder = getattr(holder, part)
        if isinstance(value, list):
            getattr(holder, leaf).extend(value)
        elif isinstance(value, dict):
            getattr(holder, leaf).update(value)
        else:
            setattr(holder, leaf, value)
    return controller_pb2.LaunchJobRequest(spec=message)


def reconcile(worker_id: str = "w-0", *, cpu: float = 4, attempts: list[dict[str, Any]] | None = None, **request: Any) -> worker_pb2.ReconcileRequest:
    identity = worker_pb2.WorkerIdentity(worker_id=worker_id, capacity=common_pb2.ResourceSpec(cpu=cpu, memory_bytes=8 << 30), attributes={"zone": "a"})
    return worker_pb2.ReconcileRequest(worker=identity, attempts=[worker_pb2.ObservedAttempt(**a) for a in attempts or []], **request)


LAUNCH = "/iris.v1.ControllerService/LaunchJob"
RECONCILE = "/iris.v1.WorkerService/Reconcile"
C = "/iris.v1.ControllerService/"

BAD = [
    # SubmitJob: numbers, enums, names, sizes, identities
    (LAUNCH, job(**{"resources.cpu": math.nan}), "cpu: nan; must be a finite number >= 0"),
    (LAUNCH, job(**{"resources.cpu": math.inf}), "cpu: inf; must be a finite number >= 0"),
    (LAUNCH, job(timeout_seconds=math.nan), "timeout: nan; must be a finite number >= 0"),
    (LAUNCH, job(scheduling_timeout_seconds=-1.0), "scheduling_timeout: -1.0; must be a finite number >= 0"),
    (LAUNCH, job(**{"resources.device_count": -1}), "device count: -1; must be a whole number from 0 to 2147483647"),
    (LAUNCH, job(**{"resources.memory_bytes": -5}), "memory: -5; must be a whole number from 0"),
    (LAUNCH, job(max_retries=-1), "max_retries: -1; must be a whole number from 0"),
    (LAUNCH, job(replicas=10_000_000), "replicas: 10000000; must be a whole number from 1 to 100000"),
    (LAUNCH, job(user=""), "user is empty; a top-level job needs a user"),
    (LAUNCH, job(user="bad user"), "user 'bad user' is invalid"),
    (LAUNCH, job(constraints=[common_pb2.Constraint(key="zone", op=99, values=["a"])]), "constraint on 'zone': op: 99 is not a known value; use one of EQ, NE"),
    (LAUNCH, job(constraints=[common_pb2.Constraint(key="zone", op=0, values=["a"])]), "constraint on 'zone': the operator is missing"),
    (LAUNCH, job(constraints=[common_pb2.Constraint(key="mem", op=5, values=["lots"])]), "the value must be a number"),
    (LAUNCH, job(constraints=[common_pb2.Constraint(key="bad key", op=1, values=["a"])]), "constraint key 'bad key' is invalid"),
    (LAUNCH, job(name=BIG), "job name 'aaaa"),
    (LAUNCH, job(name=""), "job name is empty"),
    (LAUNCH, job(name="a/b"), "job name 'a/b' is invalid; use 1-128 letters"),
    (LAUNCH, job(ports=["http", "http"]), "ports: http, http names a port twice"),
    (LAUNCH, job(ports=["1bad"]), "port name '1bad' is invalid"),
    (LAUNCH, job(**{"environment.env": {"A=B": "x"}}), "environment variable name 'A=B' is invalid"),
    (LAUNCH, job(**{"environment.env": {BIG: "x"}}), "environment variable name 'aaaa"),
    (LAUNCH, job(**{"entrypoint.argv": ["x\0y"]}), "argument 1 'x\\x00y' contains a NUL byte"),
    (LAUNCH, job(bundle_id="not-a-digest"), "bundle id 'not-a-digest' is invalid; a bundle id is a sha256 hex digest"),
    (LAUNCH, job(**{"resources.device_kind": "Quantum Chip"}), "device kind 'Quantum Chip' is invalid"),
    (LAUNCH, job(parent_job_id=BIG), "parent job id 'aaaa"),
    (LAUNCH, job(parent_job_id="/tester/missing", user=""), "parent job '/tester/missing' not found"),
    # Reconcile: identity, capacity, attempt reports
    (RECONCILE, reconcile(""), "worker.worker_id is empty; a worker needs an id"),
    (RECONCILE, reconcile("a/b"), "worker.worker_id 'a/b' is invalid"),
    (RECONCILE, reconcile(BIG), "worker.worker_id 'aaaa"),
    (RECONCILE, reconcile(cpu=math.nan), "worker.capacity.cpu: nan; must be a finite number >= 0"),
    (RECONCILE, reconcile(cpu=-1), "worker.capacity.cpu: -1.0; must be a finite number >= 0"),
    (RECONCILE, reconcile(wait_seconds=math.inf), "wait_seconds: inf; must be a finite number >= 0"),
    (RECONCILE, reconcile(attempts=[{"task_id": "/tester/base/0", "attempt_id": 0, "state": 99}]), "attempts[0].state: 99 is not a known value"),
    (RECONCILE, reconcile(attempts=[{"task_id": "", "attempt_id": 0, "state": 4}]), "attempts[0].task_id is empty"),
    (RECONCILE, reconcile(attempts=[{"task_id": "/tester/base/0", "attempt_id": -3, "state": 4}]), "attempts[0].attempt_id: -3"),
    (RECONCILE, reconcile(attempts=[{"task_id": "/tester/base/0", "attempt_id": 0, "state": 4, "log_offset": -1}]), "attempts[0].log_offset: -1"),
    (RECONCILE, reconcile(attempts=[{"task_id": "/tester/base/0", "attempt_id": 0, "state": 4, "ports": {"http": -1}}]), "attempts[0].ports[http]: -1"),
    # endpoints
    (C + "RegisterEndpoint", controller_pb2.RegisterEndpointRequest(endpoint=controller_pb2.Endpoint(name="", address="x:1", job_id="/tester/base")), "endpoint.name is empty"),
    (C + "RegisterEndpoint", controller_pb2.RegisterEndpointRequest(endpoint=controller_pb2.Endpoint(name="svc", address="", job_id="/tester/base")), "endpoint.address is empty"),
    (C + "RegisterEndpoint", controller_pb2.RegisterEndpointRequest(endpoint=controller_pb2.Endpoint(name="svc", address="x:1", job_id="")), "endpoint.job_id is empty"),
    (C + "RegisterEndpoint", controller_pb2.RegisterEndpointRequest(endpoint=controller_pb2.Endpoint(name="svc", address="x:1", job_id="/tester/base", task_index=-1)), "endpoint.task_index: -1"),
    (C + "RegisterEndpoint", controller_pb2.RegisterEndpointRequest(endpoint=controller_pb2.Endpoint(name=BIG, address="x:1", job_id="/tester/base")), "endpoint.name 'aaaa"),
    (C + "LookupEndpoint", controller_pb2.LookupEndpointRequest(name=""), "name is empty"),
    # kill, get, wait, list filters
    (C + "KillJob", controller_pb2.KillJobRequest(job_id=""), "job_id is empty"),
    (C + "KillJob", controller_pb2.KillJobRequest(job_id=BIG), "job_id 'aaaa"),
    (C + "KillJob", controller_pb2.KillJobRequest(job_id="/tester/base", reason=BIG), "reason: 1000000 characters; at most 65536"),
    (C + "GetJob", controller_pb2.GetJobRequest(job_id="\0"), "job_id '\\x00' contains a control character"),
    (C + "GetResults", controller_pb2.GetResultsRequest(job_id=""), "job_id is empty"),
    (C + "WaitJob", controller_pb2.WaitJobRequest(job_id="/tester/base", timeout_seconds=math.nan), "timeout_seconds: nan"),
    (C + "ListJobs", controller_pb2.ListJobsRequest(states=[99]), "states: 99 is not a known value; use one of PENDING"),
    (C + "ListJobs", controller_pb2.ListJobsRequest(prefix=BIG), "prefix 'aaaa"),
    # log reads
    (C + "GetLogs", controller_pb2.GetLogsRequest(job_id="/tester/base", max_lines=-1), "max_lines: -1"),
    (C + "GetLogs", controller_pb2.GetLogsRequest(job_id="/tester/base", tail=-5), "tail: -5"),
    (C + "GetLogs", controller_pb2.GetLogsRequest(job_id="/tester/base", since=math.nan), "since: nan"),
    (C + "GetLogs", controller_pb2.GetLogsRequest(job_id="/tester/base", cursor="x" * 2_000_000), "cursor: 2000000 characters"),
    (C + "GetLogs", controller_pb2.GetLogsRequest(job_id="/tester/base", cursor="not-a-cursor"), "log cursor 'not-a-cursor' is invalid"),
    # bundles
    (C + "HasBundle", controller_pb2.HasBundleRequest(bundle_id="../../etc/passwd"), "bundle_id '../../etc/passwd' is invalid"),
    (C + "UploadBundle", controller_pb2.UploadBundleRequest(bundle_id=HEX, data=b""), "data is empty"),
    # slice ops
    (C + "CreateSlice", controller_pb2.CreateSliceRequest(scale_group=""), "scale_group is empty"),
    (C + "TerminateSlices", controller_pb2.TerminateSlicesRequest(slice_ids=[""]), "slice_ids entry is empty"),
]


@pytest.mark.parametrize(("method", "request_", "message"), BAD, ids=[f"{m.rsplit('/', 1)[1]}-{i}" for i, (m, _, _) in enumerate(BAD)])
def test_request_with_a_bad_field_is_invalid_argument_naming_it_and_changes_nothing(
    cluster: Cluster, method: str, request_: Any, message: str
) -> None:
    before = cluster.state()
    with pytest.raises(grpc.RpcError) as raised:
        cluster.call(method, request_)
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert message in error.details()
    assert len(error.details()) < MAX_DETAILS
    assert "Traceback" not in error.details() and "Unexpected" not in error.details()
    assert cluster.state() == before


def test_valid_requests_still_pass_the_checks(cluster: Cluster) -> None:
    """The table above refuses for the field it names, not for everything: the same requests,
    with that field right, are answered."""
    launched = cluster.call(LAUNCH, job(name="valid", **{"resources.cpu": 0.1, "resources.memory_bytes": 1 << 20})).job_id
    assert launched == "/tester/valid"
    cluster.call(RECONCILE, reconcile(attempts=[]))
    cluster.call(C + "GetLogs", controller_pb2.GetLogsRequest(job_id="/tester/base", max_lines=10, tail=5))
    cluster.call(C + "ListJobs", controller_pb2.ListJobsRequest(states=[common_pb2.JOB_STATE_PENDING]))
    cluster.call(C + "KillJob", controller_pb2.KillJobRequest(job_id=launched, reason="done"))


def test_every_rpc_has_a_request_check() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (controller_pb2, worker_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert methods == set(CHECKS)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ResourceSpec(cpu=math.nan), "cpu: nan is not a finite number"),
        (lambda: ResourceSpec(cpu="inf"), "cpu: 'inf' is not a finite number"),
        (lambda: ResourceSpec(memory=math.inf), "memory: inf is not a finite size"),
        (lambda: ResourceSpec(memory="99999999999TB"), "memory: '99999999999TB' is too large"),
    ],
)
def test_resource_spec_refuses_what_the_controller_would_at_construction(build: Any, message: str) -> None:
    with pytest.raises(ResourceError) as raised:
        build()
    assert message in str(raised.value)


def test_client_submit_refuses_a_bad_spec_before_sending_or_uploading(cluster: Cluster) -> None:
    before = cluster.state()
    with IrisClient.remote(cluster.server.address, bundle_blob=b"never uploaded") as client:
        with pytest.raises(InvalidRequest) as raised:
            client.submit(Entrypoint.from_command("true"), name="x" * 500, resources=ResourceSpec(cpu=0.1))
        assert "job name 'xxxx" in str(raised.value) and "is longer than 128 characters" in str(raised.value)
        with pytest.raises(InvalidRequest, match="replicas: -1; must be a whole number from 1"):
            client.submit(Entrypoint.from_command("true"), name="neg", replicas=-1)
    assert cluster.state() == before
