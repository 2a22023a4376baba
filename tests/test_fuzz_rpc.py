"""Property-based fuzzing of the controller's RPC handlers, over real gRPC on 127.0.0.1: whatever
a request carries (NaN, infinities, negative and huge numbers, enum values no version defines,
megabyte strings, control characters), the answer is a deliberate status with a short message,
never UNKNOWN or INTERNAL (an exception that escaped a handler), and a refused request changes
nothing.

Derandomized and without an example database, so CI runs the same cases every time. Names and
ids are drawn mostly from small pools (plus arbitrary text), so accepted requests keep meeting
the same jobs and workers (duplicates, kills, reports on known tasks) and the state stays small.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.types import Entrypoint, ResourceSpec
from iris.job.records import Endpoint, JobSpec
from iris.job.validation import JOB_NAME_RE
from iris.rpc import common_pb2, controller_pb2, controller_pb2_grpc, convert, worker_pb2, worker_pb2_grpc
from iris.testing.fakes import InMemoryBundleStore

DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
MAX_DETAILS = 2048
# what a printed traceback looks like: its header, a line break, then a frame. Not the word
# "Traceback" alone (nor the header alone), which a fuzzed value echoed in a message may be:
# Hypothesis also draws strings from the literals of the code it runs, this file's included
TRACEBACK = re.compile(r"Traceback \(most recent call last\):\s*\n\s*File ")


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


# --- values ---------------------------------------------------------------------------------------

BIG = "x" * 5_000  # over every length limit (4096 and below); the 1 MB cases are in test_request_validation
# letters, digits, separators, control characters and non-ASCII (protobuf strings are UTF-8:
# no lone surrogates); a fixed alphabet keeps generation fast
ALPHABET = string.ascii_letters + string.digits + "/._-:=@ \0\n\t\x7féü€😀"
text = st.text(ALPHABET, max_size=20)
weird_text = st.one_of(text, st.just(BIG), st.sampled_from(["", " ", "\0", "a/b", "..", "\n", "é", "a" * 129]))
weird_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-0.0, -1.0, math.nan, math.inf, -math.inf, 1e308]))
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
weird_count = st.one_of(int32, st.sampled_from([-1, 2**31 - 1, -(2**31), 100_001]))
enum_value = st.integers(-2, 12)


def mostly(valid: st.SearchStrategy[Any], weird: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` 19 times in 20, else ``weird``: with a score of fields per request, about a
    third of requests are valid throughout and reach the controller, odd values and all."""
    return st.integers(0, 19).flatmap(lambda i: weird if i == 0 else valid)


small = mostly(st.integers(0, 3), weird_count)
# a positive wait would hold the call: 0, or a value the checks refuse
no_wait = mostly(st.just(0.0), weird_float.filter(lambda x: not (math.isfinite(x) and x > 0)))
# a short job timeout could fire mid-test and change state: 0, at least 1e7, or refused
far_timeout = mostly(st.sampled_from([0.0, 1e7, 1e300]), weird_float.filter(lambda x: not 0 < x < 1e7))
job_names = mostly(st.sampled_from([f"j{i}" for i in range(30)]), weird_text.filter(lambda s: not JOB_NAME_RE.match(s)))
users = mostly(st.sampled_from(["fuzz", "other", "u1", "u2"]), st.sampled_from(["", "bad user", "ü", "a" * 200]))
job_ids = mostly(st.sampled_from(["/fuzz/base", "/fuzz/j1", "/other/j2", "base", "j1"]), st.one_of(st.just("/nobody/none"), weird_text))
task_ids = mostly(st.sampled_from(["/fuzz/base/0", "/fuzz/j1/0", "/other/j2/1", "/fuzz/base/9"]), weird_text)
worker_ids = mostly(st.sampled_from([f"w-{i}" for i in range(5)]), st.sampled_from(["", "a/b", ".", "..", "w\0", "w\n", BIG]))
bundle_ids = mostly(st.just(""), st.one_of(st.sampled_from(["ab" * 32, "AB" * 32, "../x"]), text))
names = mostly(st.sampled_from(["svc", "zone", "http", "a.b"]), weird_text)


@st.composite
def constraints(draw: st.DrawFn) -> common_pb2.Constraint:
    op = draw(mostly(st.integers(1, 9), enum_value))
    count = 0 if op in (3, 4) else 2 if op == 9 else 1
    values = draw(mostly(st.lists(st.sampled_from(["1", "a", "2.5", "us-a"]), min_size=count, max_size=count), st.lists(weird_text, max_size=3)))
    return common_pb2.Constraint(key=draw(mostly(st.sampled_from(["zone", "memory-gb", "preemptible"]), weird_text)), op=op, values=values)


@st.composite
def job_specs(draw: st.DrawFn) -> controller_pb2.JobSpec:
    return controller_pb2.JobSpec(
        name=draw(job_names),
        entrypoint=common_pb2.Entrypoint(
            argv=draw(mostly(st.just(["true"]), st.lists(weird_text, max_size=3))), callable=draw(mostly(st.just(b""), st.just(b"x")))
        ),
        resources=common_pb2.ResourceSpec(
            cpu=draw(mostly(st.floats(0, 64), weird_float)),
            memory_bytes=draw(mostly(st.integers(0, 1 << 40), int64)),
            disk_bytes=draw(mostly(st.integers(0, 1 << 40), int64)),
            device_kind=draw(mostly(st.sampled_from(["", "cpu", "tpu", "gpu"]), weird_text)),
            device_variant=draw(mostly(st.sampled_from(["", "v5litepod-16", "v4-8", "v5litepod-4", "h100"]), weird_text)),
            device_count=draw(small),
        ),
        environment=common_pb2.EnvironmentSpec(
            env=draw(st.dictionaries(mostly(st.sampled_from(["A", "_B", "PATH"]), weird_text), mostly(st.just("1"), weird_text), max_size=2)),
            extras=draw(mostly(st.just([]), st.lists(weird_text, max_size=2))),
        ),
        bundle_id=draw(bundle_ids),
        replicas=draw(small),
        max_retries=draw(small),
        timeout_seconds=draw(far_timeout),
        constraints=draw(mostly(st.lists(constraints(), max_size=2), st.lists(constraints(), max_size=300))),
        coscheduling=common_pb2.Coscheduling(enabled=draw(st.booleans()), group_by=draw(mostly(st.sampled_from(["", "slice", "zone"]), weird_text))),
        ports=draw(mostly(st.lists(st.sampled_from(["http", "grpc"]), max_size=2, unique=True), st.lists(weird_text, max_size=3))),
        max_task_failures=draw(small),
        scheduling_timeout_seconds=draw(far_timeout),
        max_preemptions=draw(small),
        parent_job_id=draw(mostly(st.sampled_from(["", "", "", "/fuzz/base"]), st.one_of(st.just("/fuzz/none"), weird_text))),
        user=draw(users),
    )


@st.composite
def observed(draw: st.DrawFn) -> worker_pb2.ObservedAttempt:
    return worker_pb2.ObservedAttempt(
        task_id=draw(task_ids),
        attempt_id=draw(small),
        state=draw(mostly(st.integers(1, 10), enum_value)),
        exit_code=draw(mostly(st.integers(0, 2), int32)),
        error=draw(mostly(st.just(""), weird_text)),
        log_offset=draw(mostly(st.integers(0, 100), int64)),
        log_data=draw(mostly(st.just(b""), st.binary(max_size=20))),
        log_complete=draw(st.booleans()),
        oom=draw(st.booleans()),
        ports=draw(mostly(st.just({}), st.dictionaries(st.one_of(st.just("http"), text), int32, max_size=2))),
        result=draw(mostly(st.just(b""), st.binary(max_size=8))),
        result_is_error=draw(st.booleans()),
    )


@st.composite
def reconciles(draw: st.DrawFn) -> worker_pb2.ReconcileRequest:
    return worker_pb2.ReconcileRequest(
        worker=worker_pb2.WorkerIdentity(
            worker_id=draw(worker_ids),
            slice_id=draw(mostly(st.sampled_from(["", "s1"]), weird_text)),
            capacity=common_pb2.ResourceSpec(
                cpu=draw(mostly(st.floats(0, 64), weird_float)), memory_bytes=draw(mostly(st.integers(0, 1 << 40), int64))
            ),
            attributes=draw(mostly(st.dictionaries(st.sampled_from(["zone", "device"]), st.sampled_from(["a", "tpu"]), max_size=2), st.dictionaries(weird_text, weird_text, max_size=2))),
        ),
        attempts=draw(st.lists(observed(), max_size=2)),
        known_version=draw(mostly(st.integers(0, 3), int64)),
        wait_seconds=draw(no_wait),
    )


C = "/iris.v1.ControllerService/"
others = st.one_of(
    st.builds(lambda j: (C + "GetJob", controller_pb2.GetJobRequest(job_id=j)), job_ids),
    st.builds(lambda j: (C + "GetResults", controller_pb2.GetResultsRequest(job_id=j)), job_ids),
    st.builds(lambda j, t: (C + "WaitJob", controller_pb2.WaitJobRequest(job_id=j, timeout_seconds=t)), job_ids, no_wait),
    st.builds(
        lambda j, k, r: (C + "KillJob", controller_pb2.KillJobRequest(job_id=j, keep_children=k, reason=r)),
        job_ids,
        st.booleans(),
        mostly(st.just(""), weird_text),
    ),
    st.builds(
        lambda s, p: (C + "ListJobs", controller_pb2.ListJobsRequest(states=s, prefix=p)),
        mostly(st.lists(st.integers(1, 7), max_size=2), st.lists(enum_value, max_size=3)),
        mostly(st.sampled_from(["", "/fuzz"]), weird_text),
    ),
    st.builds(
        lambda j, c, m, w, i, s, t: (
            C + "GetLogs",
            controller_pb2.GetLogsRequest(job_id=j, cursor=c, max_lines=m, wait_seconds=w, include_children=i, since=s, tail=t),
        ),
        job_ids,
        mostly(st.sampled_from(["", "e30="]), weird_text),
        small,
        no_wait,
        st.booleans(),
        mostly(st.just(0.0), weird_float),
        small,
    ),
    st.builds(
        lambda n, a, j, i, m: (
            C + "RegisterEndpoint",
            controller_pb2.RegisterEndpointRequest(endpoint=controller_pb2.Endpoint(name=n, address=a, job_id=j, task_index=i, metadata=m)),
        ),
        names,
        mostly(st.just("127.0.0.1:1"), weird_text),
        job_ids,
        small,
        mostly(st.just({}), st.dictionaries(weird_text, weird_text, max_size=2)),
    ),
    st.builds(lambda n: (C + "LookupEndpoint", controller_pb2.LookupEndpointRequest(name=n)), names),
    st.builds(lambda b: (C + "HasBundle", controller_pb2.HasBundleRequest(bundle_id=b)), mostly(st.just("ab" * 32), bundle_ids)),
    st.builds(
        lambda b, d: (C + "UploadBundle", controller_pb2.UploadBundleRequest(bundle_id=b, data=d)), mostly(st.just("ab" * 32), bundle_ids), st.binary(max_size=64)
    ),
    st.builds(lambda g: (C + "CreateSlice", controller_pb2.CreateSliceRequest(scale_group=g)), names),
    st.builds(
        lambda s, a: (C + "TerminateSlices", controller_pb2.TerminateSlicesRequest(slice_ids=s, all=a)), st.lists(names, max_size=2), st.booleans()
    ),
    st.just((C + "ListWorkers", controller_pb2.ListWorkersRequest())),
    st.just((C + "GetAutoscalerStatus", controller_pb2.GetAutoscalerStatusRequest())),
    st.just((C + "ListVms", controller_pb2.ListVmsRequest())),
    st.builds(lambda v, t: (C + "GetVmLogs", controller_pb2.GetVmLogsRequest(vm_id=v, tail=t)), names, small),
)


# --- the server -----------------------------------------------------------------------------------


class Server:
    def __init__(self) -> None:
        self.controller = Controller()
        self.server = ControllerServer(self.controller, InMemoryBundleStore(), port=0)
        self.server.start()
        self.channel = grpc.insecure_channel(self.server.address.removeprefix("http://"))
        self.stubs = {
            "ControllerService": controller_pb2_grpc.ControllerServiceStub(self.channel),
            "WorkerService": worker_pb2_grpc.WorkerServiceStub(self.channel),
        }
        spec = JobSpec(name="base", entrypoint=Entrypoint(argv=("true",)), resources=ResourceSpec(cpu=0.1, memory="1MB"), user="fuzz")
        job_id = self.controller.launch_job(spec)
        self.controller.register_endpoint(Endpoint("svc", "127.0.0.1:1", job_id))

    def state(self) -> tuple[Any, ...]:
        c = self.controller
        jobs = tuple((j.job_id, j.state, j.error, tuple((t.state, len(t.attempts)) for t in j.tasks)) for j in c.list_jobs())
        workers = tuple((w.worker_id, w.cpu, w.memory_bytes, w.lost, w.slice_id, tuple(sorted(w.attributes.items()))) for w in c.list_workers())
        versions = tuple(c.worker_version(w[0]) for w in workers)
        return jobs, workers, versions, tuple(c.lookup_endpoint("svc"))

    def call(self, method: str, request: Any) -> None:
        """Call, and check the answer is deliberate, short, and (if refused) changed nothing."""
        service, name = method.strip("/").split("/")
        before = self.state()
        try:
            getattr(self.stubs[service.rsplit(".", 1)[1]], name)(request, timeout=30)
            return
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
        assert code in DELIBERATE, (method, code, details[:500])
        assert len(details) <= MAX_DETAILS, (method, len(details), details[:200])
        assert not TRACEBACK.search(details) and not details.startswith("Unexpected"), details[:500]
        assert self.state() == before, (method, code, details[:200])

    def close(self) -> None:
        self.channel.close()
        self.server.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


# Drawing a whole job spec or reconcile request costs hypothesis a few milliseconds (the RPC
# itself well under one), so these two run 600 cases each; the other RPCs 1,200 together.
@fuzz(600)
@given(spec=job_specs())
def test_fuzz_launch_job_answers_deliberately_and_refusals_change_nothing(server: Server, spec: controller_pb2.JobSpec) -> None:
    server.call(C + "LaunchJob", controller_pb2.LaunchJobRequest(spec=spec))


@fuzz(600)
@given(request=reconciles())
def test_fuzz_reconcile_answers_deliberately_and_refusals_change_nothing(server: Server, request: worker_pb2.ReconcileRequest) -> None:
    server.call("/iris.v1.WorkerService/Reconcile", request)


@fuzz(1200)
@given(call=others)
def test_fuzz_other_rpcs_answer_deliberately_and_refusals_change_nothing(server: Server, call: tuple[str, Any]) -> None:
    server.call(*call)


def test_fuzz_server_is_still_consistent_afterwards(server: Server) -> None:
    """After thousands of odd requests the controller still launches and lists as usual."""
    stub = server.stubs["ControllerService"]
    spec = JobSpec(name="after-fuzz", entrypoint=Entrypoint(argv=("true",)), user="fuzz")
    job_id = stub.LaunchJob(controller_pb2.LaunchJobRequest(spec=convert.job_spec_to_proto(spec)), timeout=30).job_id
    assert job_id == "/fuzz/after-fuzz"
    assert job_id in {j.job_id for j in stub.ListJobs(controller_pb2.ListJobsRequest(), timeout=30).jobs}
