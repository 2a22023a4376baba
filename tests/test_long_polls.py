"""Long-polls (WaitJob, GetLogs with wait_seconds, Reconcile with wait_seconds) hold no server
thread: more of them than the old server's 512-thread pool stay open while other RPCs answer,
each answers when what it waits on changes, and the server's thread count does not follow them.

The controller and its server run in this process, so ``threading.active_count()`` counts the
server's threads (plus the few of the test's gRPC channels, taken into the baseline).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import EVENT_LOOPS, ControllerServer
from iris.job.records import JobSpec, WorkerIdentity
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.rpc import controller_pb2, controller_pb2_grpc, convert, worker_pb2_grpc
from iris.testing.fakes import InMemoryBundleStore
from iris.testing.polling import wait_until

POLLS_OF_EACH_KIND = 200  # 600 in all: more than the 512 threads the old server had
WAIT = 30.0  # each long-poll's own wait: answering well before it means something woke it
DEADLINE = 20.0


@pytest.fixture(params=EVENT_LOOPS)
def server(request: pytest.FixtureRequest) -> Iterator[ControllerServer]:
    """On each loop the server can run on (the controller process uses uvloop, in-process asyncio)."""
    server = ControllerServer(Controller(), InMemoryBundleStore(), port=0, event_loop=request.param)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def channel(server: ControllerServer) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(server.address.removeprefix("http://"))
    yield channel
    channel.close()


def idle_job(server: ControllerServer, name: str = "idle", cpu: float = 1000) -> str:
    """A job no worker can take (it stays PENDING), so long-polls on it wait."""
    return server.controller.launch_job(JobSpec(name=name, entrypoint=Entrypoint(argv=("true",)), resources=ResourceSpec(cpu=cpu)))


def register(channel: grpc.Channel, worker_id: str) -> int:
    """Register a worker with one non-waiting Reconcile; returns its desired-set version."""
    request = convert.reconcile_request_to_proto(WorkerIdentity(worker_id, cpu=1, memory_bytes=1 << 30), [], 0, 0.0)
    return worker_pb2_grpc.WorkerServiceStub(channel).Reconcile(request, timeout=DEADLINE).version


def reconcile_poll(channel: grpc.Channel, worker_id: str, version: int) -> grpc.Future:
    request = convert.reconcile_request_to_proto(WorkerIdentity(worker_id, cpu=1, memory_bytes=1 << 30), [], version, WAIT)
    return worker_pb2_grpc.WorkerServiceStub(channel).Reconcile.future(request, timeout=WAIT + 30)


def test_long_polls_beyond_the_old_thread_pool_hold_no_thread_and_other_rpcs_answer(
    server: ControllerServer, channel: grpc.Channel
) -> None:
    stub = controller_pb2_grpc.ControllerServiceStub(channel)
    job_id = idle_job(server)
    versions = {f"w{i}": register(channel, f"w{i}") for i in range(POLLS_OF_EACH_KIND)}
    baseline = threading.active_count()

    polls = [reconcile_poll(channel, worker_id, version) for worker_id, version in versions.items()]
    for _ in range(POLLS_OF_EACH_KIND):
        polls.append(stub.WaitJob.future(controller_pb2.WaitJobRequest(job_id=job_id, timeout_seconds=WAIT), timeout=WAIT + 30))
        polls.append(stub.GetLogs.future(controller_pb2.GetLogsRequest(job_id=job_id, wait_seconds=WAIT), timeout=WAIT + 30))
    try:
        assert wait_until(lambda: server.wakeups.parked == len(polls), timeout=DEADLINE), (
            f"{server.wakeups.parked} of {len(polls)} long-polls are waiting in the server"
        )
        threads = threading.active_count()
        assert threads < 100, f"{threads} threads with {len(polls)} long-polls open (baseline {baseline})"

        # the old server queued these behind the long-polls until they timed out (30 s)
        assert [j.job_id for j in stub.ListJobs(controller_pb2.ListJobsRequest(), timeout=DEADLINE).jobs] == [job_id]
        assert len(stub.ListWorkers(controller_pb2.ListWorkersRequest(), timeout=DEADLINE).workers) == POLLS_OF_EACH_KIND
        assert not [p for p in polls if p.done()], "a long-poll answered though nothing changed"
    finally:
        for poll in polls:
            poll.cancel()

    assert wait_until(lambda: server.wakeups.parked == 0, timeout=DEADLINE), f"{server.wakeups.parked} still waiting after cancel"
    assert wait_until(lambda: threading.active_count() <= baseline + 2, timeout=DEADLINE), (
        f"{threading.active_count()} threads after the long-polls ended (baseline {baseline})"
    )


def test_long_polls_answer_when_what_they_wait_on_changes(server: ControllerServer, channel: grpc.Channel) -> None:
    stub = controller_pb2_grpc.ControllerServiceStub(channel)
    job_id = idle_job(server)
    wait_job = stub.WaitJob.future(controller_pb2.WaitJobRequest(job_id=job_id, timeout_seconds=WAIT), timeout=WAIT + 30)
    logs = stub.GetLogs.future(controller_pb2.GetLogsRequest(job_id=job_id, wait_seconds=WAIT), timeout=WAIT + 30)
    worker = reconcile_poll(channel, "w1", register(channel, "w1"))
    assert wait_until(lambda: server.wakeups.parked == 3, timeout=DEADLINE)

    server.controller.kill_job(job_id)
    assert convert.job_state_from_proto(wait_job.result(timeout=DEADLINE).state) is JobState.KILLED
    assert logs.result(timeout=DEADLINE).finished
    assert not worker.done()

    placed = idle_job(server, name="fits", cpu=1)  # placed on w1: its desired set changes
    response = worker.result(timeout=DEADLINE)
    assert [d.task_id for d in response.attempts] == [f"{placed}/0"]
    assert response.attempts[0].spec.job_id == placed


def test_long_polls_answer_with_what_they_have_when_the_server_stops(server: ControllerServer, channel: grpc.Channel) -> None:
    stub = controller_pb2_grpc.ControllerServiceStub(channel)
    job_id = idle_job(server)
    wait_job = stub.WaitJob.future(controller_pb2.WaitJobRequest(job_id=job_id, timeout_seconds=WAIT), timeout=WAIT + 30)
    assert wait_until(lambda: server.wakeups.parked == 1, timeout=DEADLINE)

    server.stop()
    assert convert.job_state_from_proto(wait_job.result(timeout=DEADLINE).state) is JobState.PENDING


def test_long_polls_server_on_an_unknown_event_loop_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="event_loop 'trio' is not one of: asyncio, uvloop"):
        ControllerServer(Controller(), InMemoryBundleStore(), port=0, event_loop="trio")
