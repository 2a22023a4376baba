"""The job model end to end on the local provider: gang scheduling, retries, timeouts,
constraints, OOM, ports, endpoints and child jobs, through real gRPC and real processes."""

from __future__ import annotations

import sys
from pathlib import Path


from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState
from iris.config import parse_config
from iris.testing import wait_until

SMALL = ResourceSpec(cpu=0.1, memory="64MB")


def cluster(workers: int, **group: object) -> IrisClient:
    config = parse_config(
        {
            "provider": {"type": "local"},
            "scale_groups": {"pool": {"min_slices": 1, "max_slices": 1, "vms_per_slice": workers, "cpu": 1, "memory": "2GB", **group}},
        }
    )
    return IrisClient.local(config)


def barrier_command(directory: Path, parties: int) -> list[str]:
    """Each task marks itself present, then waits (10 s at most) until all parties are present."""
    code = (
        "import os, pathlib, sys, time\n"
        f"d = pathlib.Path({str(directory)!r})\n"
        "(d / os.environ['IRIS_TASK_INDEX']).touch()\n"
        "deadline = time.time() + 10\n"
        f"while len(list(d.iterdir())) < {parties}:\n"
        "    if time.time() > deadline: sys.exit('peers never arrived')\n"
        "    time.sleep(0.01)\n"
        "print('all present')\n"
    )
    return [sys.executable, "-c", code]


def test_gang_of_four_on_four_workers_runs_all_tasks_at_once(tmp_path: Path) -> None:
    with cluster(4) as client:
        job = client.submit(entrypoint=Entrypoint.from_command(barrier_command(tmp_path, 4)), replicas=4, coscheduling="slice", resources=SMALL)
        status = job.wait(timeout=60)
        assert status.state is JobState.SUCCEEDED, status.error
        assert sorted(a.worker_id for t in status.tasks for a in t.attempts) == [f"iris-pool-0-{i}" for i in range(4)]


def test_gang_of_four_on_three_workers_starts_nothing(tmp_path: Path) -> None:
    """No slice of the only group has 4 workers: the gang can never start, and says so at once."""
    with cluster(3) as client:
        job = client.submit(entrypoint=Entrypoint.from_command(barrier_command(tmp_path, 4)), replicas=4, coscheduling="slice", resources=SMALL)
        status = job.wait(timeout=20, raise_on_failure=False)
        assert status.state is JobState.UNSCHEDULABLE
        assert all(not t.attempts for t in status.tasks)
        assert "a gang of 4 needs 4 VMs per slice" in status.error, status.error
        assert list(tmp_path.iterdir()) == []


def test_gang_member_failing_for_good_stops_its_siblings(tmp_path: Path) -> None:
    with cluster(2) as client:
        cmd = ["sh", "-c", 'if [ "$IRIS_TASK_INDEX" = 1 ]; then exit 4; fi; exec sleep 60']
        job = client.submit(entrypoint=Entrypoint.from_command(cmd), replicas=2, coscheduling="slice", resources=SMALL)
        status = job.wait(timeout=30, raise_on_failure=False)
        assert status.state is JobState.FAILED
        assert status.exit_code == 4
        states = {t.index: t.state for t in status.tasks}
        assert states == {0: TaskState.KILLED, 1: TaskState.FAILED}


def test_retries_two_failures_then_success_shows_three_attempts(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    cmd = ["sh", "-c", f'echo run >> {counter}; n=$(wc -l < {counter}); echo "attempt $IRIS_ATTEMPT_ID"; [ "$n" -ge 3 ] || exit 1']
    with cluster(1) as client:
        job = client.submit(entrypoint=Entrypoint.from_command(cmd), max_retries=2, resources=SMALL)
        status = job.wait(timeout=60)
        assert status.state is JobState.SUCCEEDED
        (task,) = status.tasks
        assert [(a.attempt_id, a.state, a.exit_code) for a in task.attempts] == [
            (0, TaskState.FAILED, 1),
            (1, TaskState.FAILED, 1),
            (2, TaskState.SUCCEEDED, 0),
        ]
        assert [ln.data for ln in job.logs()] == ["attempt 0", "attempt 1", "attempt 2"]


def test_retries_exhausted_fails_job_with_last_exit_code(tmp_path: Path) -> None:
    with cluster(1) as client:
        job = client.submit(entrypoint=Entrypoint.from_command("sh", "-c", "exit 9"), max_retries=1, resources=SMALL)
        status = job.wait(timeout=60, raise_on_failure=False)
        assert status.state is JobState.FAILED
        assert status.exit_code == 9
        assert len(status.tasks[0].attempts) == 2


def test_timeout_ends_a_sleeping_job_as_timed_out_within_seconds() -> None:
    with cluster(1) as client:
        job = client.submit(entrypoint=Entrypoint.from_command("sleep", "60"), timeout=2, resources=SMALL)
        status = job.wait(timeout=20, raise_on_failure=False)
        assert status.state is JobState.FAILED
        assert "timed out after 2s" in status.error
        assert status.finished_at - status.started_at < 6


def test_constraint_nothing_matches_ends_unschedulable_at_once_with_reason() -> None:
    with cluster(1) as client:
        job = client.submit(entrypoint=Entrypoint.from_command("true"), constraints=["zone=mars"], resources=SMALL)
        status = job.wait(timeout=20, raise_on_failure=False)
        assert status.state is JobState.UNSCHEDULABLE
        assert "no scale group can serve it" in status.error and "the job needs zone=mars" in status.error


def test_scheduling_timeout_ends_a_task_that_waits_for_a_busy_cluster() -> None:
    with cluster(1) as client:
        blocker = client.submit(entrypoint=Entrypoint.from_command("sleep", "30"), resources=ResourceSpec(cpu=1, memory="64MB"))
        assert wait_until(lambda: blocker.status().state is JobState.RUNNING, timeout=10)
        job = client.submit(entrypoint=Entrypoint.from_command("true"), scheduling_timeout=2, resources=ResourceSpec(cpu=1, memory="64MB"))
        status = job.wait(timeout=20, raise_on_failure=False)
        assert status.state is JobState.UNSCHEDULABLE
        assert "not scheduled within 2s:" in status.error
        blocker.kill()


def test_constraint_on_custom_attribute_places_task_on_matching_worker() -> None:
    with cluster(2, attributes={"rack": "r7"}) as client:
        job = client.submit(
            entrypoint=Entrypoint.from_command("sh", "-c", "echo $IRIS_WORKER_ID"),
            constraints=["rack=r7", "vm-index=1", "zone in local,elsewhere"],
            resources=SMALL,
        )
        assert job.wait(timeout=30).succeeded
        assert [ln.data for ln in job.logs()] == ["iris-pool-0-1"]


def test_oom_is_reported_as_oom_and_spends_the_failure_budget() -> None:
    with cluster(1) as client:
        code = "import time\nblob = b'x' * (400 * 1024 * 1024)\ntime.sleep(30)\n"
        job = client.submit(
            entrypoint=Entrypoint.from_command(sys.executable, "-c", code),
            resources=ResourceSpec(cpu=0.1, memory="100MB"),
            max_retries=0,
        )
        status = job.wait(timeout=60, raise_on_failure=False)
        assert status.state is JobState.FAILED
        (attempt,) = status.tasks[0].attempts
        assert attempt.oom
        assert "out of memory" in attempt.error


def test_ports_are_passed_to_each_task_and_endpoints_resolve_while_job_runs() -> None:
    server = (
        "import os, http.server, threading\n"
        "from iris.client import IrisClient\n"
        "port = int(os.environ['IRIS_PORT_HTTP'])\n"
        "srv = http.server.HTTPServer(('127.0.0.1', port), http.server.SimpleHTTPRequestHandler)\n"
        "IrisClient.from_env().register_endpoint('files', f'127.0.0.1:{port}')\n"
        "print('serving', flush=True)\n"
        "srv.serve_forever()\n"
    )
    with cluster(1) as client:
        job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", server), ports=["http"], resources=SMALL)
        assert wait_until(lambda: client.lookup_endpoint("files"), timeout=30)
        (address,) = client.lookup_endpoint("files")
        port = job.status().tasks[0].attempts[0].ports["http"]
        assert address == f"127.0.0.1:{port}"
        import urllib.request

        assert urllib.request.urlopen(f"http://{address}/", timeout=10).status == 200
        job.kill()
        assert wait_until(lambda: client.lookup_endpoint("files") == [], timeout=10)


def test_child_job_inherits_env_and_is_killed_with_parent(tmp_path: Path) -> None:
    parent = (
        "from iris.client import IrisClient\n"
        "from iris.cluster.types import Entrypoint, EnvironmentSpec\n"
        "c = IrisClient.from_env()\n"
        "c.submit(name='kid', entrypoint=Entrypoint.from_command('sh', '-c', 'echo $FROM_PARENT $OWN; exec sleep 60'),\n"
        "         environment=EnvironmentSpec(env={'OWN': 'mine'}))\n"
        "import time; time.sleep(60)\n"
    )
    from iris.cluster.types import EnvironmentSpec

    with cluster(2) as client:
        job = client.submit(
            entrypoint=Entrypoint.from_command(sys.executable, "-c", parent),
            environment=EnvironmentSpec(env={"FROM_PARENT": "inherited"}),
            resources=SMALL,
        )
        child_id = f"{job.job_id}/kid"
        assert wait_until(lambda: job.status().children == (child_id,), timeout=30)
        child = client.job(child_id)
        assert wait_until(lambda: [ln.data for ln in child.logs()] == ["inherited mine"], timeout=30)
        lines = [ln for ln in job.logs(include_children=True)]
        assert [(ln.job_id, ln.data) for ln in lines] == [(child_id, "inherited mine")]
        job.kill()
        assert child.wait(timeout=30, raise_on_failure=False).state is JobState.KILLED
