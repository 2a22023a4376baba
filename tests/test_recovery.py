"""What survives what: a controller SIGKILLed mid-run, a worker SIGKILLed mid-run, a worker
restarted in place. Real processes throughout: the controller (python -m
iris.cluster.controller.main), process-mode workers, task processes, gRPC on loopback, SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iris.auth import WORKER_TOKEN_ENV, Principal, Role, TokenSigner, cluster_secret
from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState
from iris.testing import wait_until
from iris.testing.processes import ControllerProcess, free_port, kill_strays

JOBS = 200
SMALL = ResourceSpec(cpu=0.1, memory="16MB")


@pytest.fixture
def controller(tmp_path: Path):
    process = ControllerProcess(tmp_path)
    try:
        yield process
    finally:
        process.stop()
        process.delete_slices()
        kill_strays(str(tmp_path))


def job_command(markers: Path, name: str, seconds: float) -> list[str]:
    return ["sh", "-c", f"echo ran >> {markers}/{name}; sleep {seconds}"]


def submit_batch(client: IrisClient, markers: Path, names: list[str], seconds: float) -> list[str]:
    return [
        client.submit(name=name, entrypoint=Entrypoint.from_command(job_command(markers, name, seconds)), resources=SMALL).job_id
        for name in names
    ]


def wait_all(client: IrisClient, job_ids: list[str], timeout: float = 120) -> dict[str, object]:
    return {job_id: client.job(job_id).wait(timeout=timeout) for job_id in job_ids}


def test_controller_sigkilled_mid_run_restarts_with_every_job(controller: ControllerProcess, tmp_path: Path, iris) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    url = controller.start()
    first = IrisClient.remote(url, token=controller.token)
    names = [f"job{i:03d}" for i in range(JOBS)]
    ids = submit_batch(first, markers, names[: JOBS // 2], 0.3)
    assert wait_until(lambda: len(list(markers.iterdir())) >= 20, timeout=60)  # some ran, many are running or pending
    controller.kill()
    first.close()

    controller.start()
    client = IrisClient.remote(url, token=controller.token)
    try:
        ids += submit_batch(client, markers, names[JOBS // 2 :], 0.05)
        statuses = wait_all(client, ids)
        assert {s.state for s in statuses.values()} == {JobState.SUCCEEDED}
        for name in names:  # every task ran exactly once: none that had finished ran again
            assert (markers / name).read_text() == "ran\n", name
        assert all(len(s.tasks[0].attempts) == 1 for s in statuses.values())
        listed = iris("job", "list", "--controller-url", url, "--json", cwd=tmp_path, env={"IRIS_TOKEN": controller.token})
        assert listed.returncode == 0, listed.stderr
        assert sorted(j["job_id"] for j in json.loads(listed.stdout)) == sorted(ids)
    finally:
        client.close()


def test_worker_sigkilled_mid_run_reruns_only_unfinished_tasks(controller: ControllerProcess, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    url = controller.start()
    client = IrisClient.remote(url, token=controller.token)
    try:
        names = [f"job{i:03d}" for i in range(JOBS)]
        ids = submit_batch(client, markers, names, 0.5)
        assert wait_until(lambda: len(list(markers.iterdir())) >= 40, timeout=60)
        victim, pid = sorted(controller.worker_pids().items())[0]
        os.kill(pid, signal.SIGKILL)
        statuses = wait_all(client, ids)
        assert {s.state for s in statuses.values()} == {JobState.SUCCEEDED}
        moved = 0
        for name, job_id in zip(names, ids):
            attempts = statuses[job_id].tasks[0].attempts
            # each attempt ran at most once (one assigned to the dying worker may never have
            # started); only the last succeeded; the earlier ones died with the worker
            assert 1 <= (markers / name).read_text().count("ran") <= len(attempts), name
            assert attempts[-1].state is TaskState.SUCCEEDED
            assert all(a.state is TaskState.WORKER_FAILED and a.worker_id == victim for a in attempts[:-1])
            moved += len(attempts) > 1
            task = statuses[job_id].tasks[0]
            assert task.state is TaskState.SUCCEEDED
        assert moved > 0
    finally:
        client.close()


def test_worker_restarted_in_place_adopts_its_running_task(tmp_path: Path) -> None:
    # a slow autoscaler, so it does not replace the slice whose worker process we restart by hand
    controller = ControllerProcess(tmp_path, autoscaler_interval=600)
    try:
        _adopt_scenario(controller, tmp_path)
    finally:
        controller.stop()
        controller.delete_slices()
        kill_strays(str(tmp_path))


def _adopt_scenario(controller: ControllerProcess, tmp_path: Path) -> None:
    url = controller.start()
    client = IrisClient.remote(url, token=controller.token)
    gate = tmp_path / "gate"
    try:
        cmd = ["sh", "-c", f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done; echo finished"]
        job = client.submit(name="adopted", entrypoint=Entrypoint.from_command(cmd), resources=SMALL)
        assert wait_until(lambda: [ln.data for ln in job.logs()] == ["started"], timeout=60)
        worker_id = job.status().tasks[0].attempts[0].worker_id
        pid = controller.worker_pids()[worker_id]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        # the same command, with a credential for that worker id minted from the cluster's secret
        # (the worker scrubbed the one it started with from its environment)
        signer = TokenSigner(cluster_secret(controller.state_dir))
        environ = {**os.environ, WORKER_TOKEN_ENV: signer.mint(Principal(Role.WORKER, worker_id))}
        os.kill(pid, signal.SIGKILL)
        restarted = subprocess.Popen(
            [arg.decode() for arg in cmdline],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            gate.touch()
            status = job.wait(timeout=60)
            assert status.state is JobState.SUCCEEDED
            assert [(a.worker_id, a.state) for a in status.tasks[0].attempts] == [(worker_id, TaskState.SUCCEEDED)]
            assert [ln.data for ln in job.logs()] == ["started", "finished"]
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(timeout=30)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"this is not a database at all" * 100, "is unreadable (file is not a database); it may be corrupt"),
        (None, "has schema version 99, newer than this controller understands"),
    ],
)
def test_controller_refuses_corrupt_or_too_new_database_and_touches_nothing(tmp_path: Path, content: bytes | None, expected: str) -> None:
    import hashlib
    import sqlite3

    state = tmp_path / "state"
    state.mkdir()
    db = state / "controller.db"
    if content is None:
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE future (x)")
        conn.execute("PRAGMA user_version=99")
        conn.commit()
        conn.close()
    else:
        db.write_bytes(content)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = subprocess.run(
        [sys.executable, "-m", "iris.cluster.controller.main", "serve", "--state-dir", str(state), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in state.iterdir()) == ["controller.db"]


def test_controller_fresh_moves_saved_state_aside(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "controller.db").write_bytes(b"garbage" * 100)
    proc = subprocess.Popen(
        [sys.executable, "-m", "iris.cluster.controller.main", "serve", "--state-dir", str(state), "--port", "0", "--fresh"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: (state / "controller.url").exists(), timeout=60)
        assert any(p.name.startswith("controller.db.") and p.name.endswith(".old") for p in state.iterdir())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        kill_strays(str(tmp_path))  # its slices keep running after SIGTERM, by design: remove them


def test_following_logs_survives_a_controller_restart_and_resumes_from_its_cursor(tmp_path: Path) -> None:
    """A reader following a job's log while its controller is SIGKILLed and restarted keeps
    going and gets every line once, in order."""
    import threading

    controller = ControllerProcess(tmp_path, workers=1)
    url = controller.start()
    try:
        with IrisClient.remote(url, token=controller.token) as client:
            code = "import time\nfor i in range(60):\n    print(f'tick {i}', flush=True); time.sleep(0.1)\n"
            job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", code), resources=SMALL)
            seen: list[str] = []
            failure: list[BaseException] = []

            def follow() -> None:
                try:
                    seen.extend(line.data for line in job.logs(follow=True))
                except BaseException as exc:  # noqa: BLE001  (the assertion below reports it)
                    failure.append(exc)

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            assert wait_until(lambda: len(seen) >= 5, timeout=30)
            controller.kill()
            controller.start()
            reader.join(timeout=90)
            assert not reader.is_alive() and not failure, failure
            assert seen == [f"tick {i}" for i in range(60)]
            assert job.wait(timeout=30).state is JobState.SUCCEEDED
    finally:
        controller.stop()
        controller.delete_slices()


def test_served_controller_on_a_plain_local_config_keeps_running_work_across_a_restart(tmp_path: Path) -> None:
    """`serve` with a local config that says nothing about worker_mode: its workers are processes
    of their own, so a job survives a controller restart and is adopted, not re-run."""
    state = tmp_path / "state"
    marker = tmp_path / "runs"
    port = free_port()
    argv = [sys.executable, "-m", "iris.cluster.controller.main", "serve", "--state-dir", str(state), "--port", str(port)]

    def serve() -> subprocess.Popen:
        (state / "controller.url").unlink(missing_ok=True)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        assert wait_until(lambda: (state / "controller.url").exists(), timeout=60)
        return proc

    proc = serve()
    url = (state / "controller.url").read_text().strip()
    try:
        with IrisClient.remote(url, token=(state / "owner.token").read_text().strip()) as client:
            code = f"import time\nopen({str(marker)!r}, 'a').write('run\\n')\ntime.sleep(4)\nprint('done')\n"
            job = client.submit(entrypoint=Entrypoint.from_command(sys.executable, "-c", code), resources=SMALL)
            assert wait_until(marker.exists, timeout=30)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            proc = serve()
            assert job.wait(timeout=60).state is JobState.SUCCEEDED
            assert marker.read_text() == "run\n"  # adopted, not run again
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        kill_strays(str(tmp_path))  # the slices it left running (workers and tasks mention this directory)
