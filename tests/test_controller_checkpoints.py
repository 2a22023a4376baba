"""The controller survives losing its machine: its state is checkpointed to a URL and a new
controller with an empty state directory restores it, then adopts the running slices.

Real processes throughout: the controller (python -m iris.cluster.controller.main serve), process-
mode local workers, task processes, gRPC on loopback, SQLite; for gs://, the real
google-cloud-storage client against the fake GCS (which also holds the workspace bundles).

The local provider keeps its "machines" (slice records, worker directories, the task runtime)
under the controller's state directory. Here they stand for the TPU slices of a real cluster,
which live on other machines: losing the controller's machine is deleting everything else in the
state directory (the database, the token secret, the owner token, the bundles)."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import tempfile
from pathlib import Path

import pytest

from iris.client import IrisClient
from iris.cluster.controller.checkpoint import open_checkpoint_store, restore_if_empty
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.plugin.registry import PluginRegistry
from iris.testing import wait_until
from iris.testing.processes import ControllerProcess, kill_strays
from iris_gcp.testing.gcs_pytest import GcsBucket, fake_gcs, gcs_bucket  # noqa: F401 (fixtures)

SMALL = ResourceSpec(cpu=0.1, memory="16MB")
#: what the local provider's slices keep in the state directory (they are not the controller's)
SLICE_FILES = {"slices", "workers", "runtime"}


@pytest.fixture(params=["file", "gs"])
def checkpoint_target(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The checkpoint URL, bundle prefix and environment for each kind of store."""
    if request.param == "file":
        return {"checkpoint_url": f"file://{tmp_path / 'nfs' / 'checkpoints'}",
                "bundle_prefix": f"file://{tmp_path / 'nfs' / 'bundles'}"}
    bucket: GcsBucket = request.getfixturevalue("gcs_bucket")
    return {"checkpoint_url": f"{bucket.url}/cluster/checkpoints", "bundle_prefix": f"{bucket.url}/cluster/bundles", **bucket.env}


@pytest.fixture
def controller(tmp_path: Path, checkpoint_target: dict[str, str]):
    env = {k: v for k, v in checkpoint_target.items() if k.isupper()}
    process = ControllerProcess(tmp_path, workers=1, env=env)
    settings = (
        f"  checkpoint_url: {checkpoint_target['checkpoint_url']}\n"
        "  checkpoint_interval_seconds: 0.3\n"
        f"  bundle_prefix: {checkpoint_target['bundle_prefix']}\n"
    )
    process.config.write_text(process.config.read_text().replace("controller:\n", "controller:\n" + settings, 1))
    try:
        yield process
    finally:
        process.stop()
        process.delete_slices()
        kill_strays(str(tmp_path))


def _checkpointed_states(url: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Job id -> state as the latest checkpoint at ``url`` has it (read the way a new controller would)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    scratch = Path(tempfile.mkdtemp(prefix="iris-ckpt-read-"))
    try:
        if restore_if_empty(open_checkpoint_store(PluginRegistry(), url), scratch) is None:
            return {}
        conn = sqlite3.connect(scratch / "controller.db")
        try:
            import json

            return {job_id: JobState(json.loads(header)[0]).name for job_id, header in conn.execute("SELECT job_id, header FROM job_rows")}
        finally:
            conn.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_controller_restored_from_checkpoint_keeps_finished_jobs_and_adopts_running_ones(
    controller: ControllerProcess, checkpoint_target: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "say.py").write_text("import sys\nprint('hello from', sys.argv[1])\n")
    markers = tmp_path / "markers"
    markers.mkdir()
    go = tmp_path / "go"
    env = {k: v for k, v in checkpoint_target.items() if k.isupper()}

    url = controller.start()
    client = IrisClient.remote(url, token=controller.token, workspace=workspace)
    done_id = client.submit(name="done", entrypoint=Entrypoint.from_command("python", "say.py", "done"), resources=SMALL).job_id
    assert client.job(done_id).wait(timeout=120).state == JobState.SUCCEEDED
    long_cmd = f"echo started >> {markers}/long; while [ ! -e {go} ]; do sleep 0.1; done; python say.py long"
    long_id = client.submit(name="long", entrypoint=Entrypoint.from_command("sh", "-c", long_cmd), resources=SMALL).job_id
    assert wait_until(lambda: (markers / "long").exists(), timeout=120), controller.log()
    assert wait_until(lambda: client.job(long_id).status().state == JobState.RUNNING, timeout=30)
    client.close()
    # the periodic checkpoint has both: one finished, one running
    assert wait_until(
        lambda: _checkpointed_states(checkpoint_target["checkpoint_url"], env, monkeypatch) == {done_id: "SUCCEEDED", long_id: "RUNNING"},
        timeout=30,
    ), controller.log()

    controller.kill()  # the controller's machine is gone...
    for entry in controller.state_dir.iterdir():  # ...and its disk with it (the slices live elsewhere)
        if entry.name not in SLICE_FILES:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    assert not (controller.state_dir / "controller.db").exists()

    controller.start()
    assert "restored the controller's state from" in controller.log()
    client = IrisClient.remote(url, token=controller.token, workspace=workspace)
    try:
        done = client.job(done_id).status()
        assert done.state == JobState.SUCCEEDED
        assert [ln.data for ln in client.job(done_id).logs()] == ["hello from done"]
        assert client.job(long_id).status().state == JobState.RUNNING  # adopted: its worker still runs it
        go.touch()
        try:
            final = client.job(long_id).wait(timeout=120)
        except TimeoutError:
            pytest.fail(f"the adopted job did not finish; controller log:\n{controller.log()[-6000:]}\n{_machine_report(controller.state_dir)}")
        assert final.state == JobState.SUCCEEDED
        assert len(final.tasks[0].attempts) == 1  # the same attempt finished: adopted, not rerun
        assert (markers / "long").read_text() == "started\n"
        assert [ln.data for ln in client.job(long_id).logs()] == ["hello from long"]
        # a new job runs too, its bundle going through the same store
        again = client.submit(name="again", entrypoint=Entrypoint.from_command("python", "say.py", "again"), resources=SMALL)
        assert again.wait(timeout=120).state == JobState.SUCCEEDED
    finally:
        client.close()

    controller.stop()  # SIGTERM: a last checkpoint on the way out
    assert _checkpointed_states(checkpoint_target["checkpoint_url"], env, monkeypatch) == {
        done_id: "SUCCEEDED", long_id: "SUCCEEDED", again.job_id: "SUCCEEDED"
    }
    assert controller.proc is not None and controller.proc.returncode in (0, -signal.SIGTERM)


def test_controller_with_unreachable_checkpoint_bucket_refuses_to_start_in_one_line(fake_gcs, tmp_path: Path) -> None:  # noqa: F811
    """A controller that cannot read its checkpoints must not start empty (and later overwrite
    them): it stops with one line naming the bucket and what to do."""
    import os
    import subprocess
    import sys

    config = tmp_path / "cluster.yaml"
    config.write_text(
        "provider: {type: local}\n"
        f"controller: {{state_dir: {tmp_path / 'state'}, checkpoint_url: 'gs://no-such-bucket-here/ckpt'}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "iris.cluster.controller.main", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "STORAGE_EMULATOR_HOST": fake_gcs.url},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "iris-controller: error: cannot restore the controller's state from gs://no-such-bucket-here/ckpt: "
        "gs://no-such-bucket-here: the bucket does not exist; create it (gcloud storage buckets create gs://no-such-bucket-here) "
        "or fix the URL; or start with --fresh to begin with empty state"
    ]
    assert not (tmp_path / "state" / "controller.db").exists()


def _machine_report(state_dir: Path) -> str:
    """What the slices' side shows when an adopted job does not finish: worker logs, the task
    processes still alive, the runtime's files."""
    import subprocess

    lines = []
    for log in sorted(state_dir.glob("workers/*/worker.log")):
        lines.append(f"--- {log}:\n{log.read_text(errors='replace')[-3000:]}")
    for path in sorted((state_dir / "runtime").rglob("*"))[:60]:
        lines.append(f"{path}: {path.read_text(errors='replace')[:200]!r}" if path.is_file() else f"{path}/")
    lines.append(subprocess.run(["ps", "-eo", "pid,ppid,stat,etime,cmd"], capture_output=True, text=True).stdout[-4000:])
    return "\n".join(lines)


def test_controller_restored_from_a_snapshot_older_than_the_logs_it_acknowledged_gets_them_again(tmp_path: Path) -> None:
    """A checkpoint lags the controller: the one restored may predate log bytes the lost
    controller already acknowledged. The worker must send them again from what the restored
    controller acknowledges (it used to keep its higher offset, every later send was refused as a
    gap, and the attempt's end was never accepted: the job stayed RUNNING forever)."""
    from iris.cluster.controller.checkpoint import DB_FILE, unpack_snapshot, write_snapshot

    process = ControllerProcess(tmp_path, workers=1)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    gate_a, gate_b, started = tmp_path / "a", tmp_path / "b", tmp_path / "started"
    command = (f"touch {started}; while [ ! -e {gate_a} ]; do sleep 0.05; done; echo one; "
               f"while [ ! -e {gate_b} ]; do sleep 0.05; done; echo two")  # fmt: skip
    try:
        url = process.start()
        client = IrisClient.remote(url, token=process.token, workspace=workspace)
        job_id = client.submit(name="lagged", entrypoint=Entrypoint.from_command("sh", "-c", command), resources=SMALL).job_id
        assert wait_until(started.exists, timeout=120), process.log()
        assert wait_until(lambda: client.job(job_id).status().state == JobState.RUNNING, timeout=30)
        old = tmp_path / "old.ckpt"
        write_snapshot(process.state_dir / DB_FILE, process.state_dir, old)  # the checkpoint, taken now
        gate_a.touch()
        assert wait_until(lambda: [ln.data for ln in client.job(job_id).logs()] == ["one"], timeout=60)  # acknowledged
        client.close()
        process.kill()
        (process.state_dir / DB_FILE).unlink()
        for extra in process.state_dir.glob(f"{DB_FILE}-*"):
            extra.unlink()
        unpack_snapshot(old, process.state_dir, str(old))  # restored: it has not seen "one"
        process.start()
        client = IrisClient.remote(url, token=process.token, workspace=workspace)
        try:
            gate_b.touch()
            try:
                final = client.job(job_id).wait(timeout=120)
            except TimeoutError:
                pytest.fail(f"the job did not finish after the restore; {_machine_report(process.state_dir)}")
            assert final.state == JobState.SUCCEEDED
            assert len(final.tasks[0].attempts) == 1
            assert [ln.data for ln in client.job(job_id).logs()] == ["one", "two"]
        finally:
            client.close()
    finally:
        process.stop()
        process.delete_slices()
        kill_strays(str(tmp_path))
