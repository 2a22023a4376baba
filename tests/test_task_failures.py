"""A task that cannot start because of the task itself FAILS (on the job's max_retries); one that
cannot start because of the machine is WORKER_FAILED. End to end: a real controller, a real
worker (the local provider), bundles uploaded through the client, commands run as processes."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from iris.client import IrisClient, Job
from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState
from iris.config import ClusterConfig, ControllerConfig, ScaleGroupConfig
from iris.testing import wait_until

SMALL = ResourceSpec(cpu=0.1, memory="32MB")
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def client(state_dir: Path) -> Iterator[IrisClient]:
    with IrisClient.local(ClusterConfig(controller=ControllerConfig(state_dir=str(state_dir)))) as c:
        yield c


@contextmanager
def submitted_with_bundle(client: IrisClient, blob: bytes, *, max_retries: int = 0) -> Iterator[Job]:
    """A job running ``cat a.txt`` in the bundle ``blob``, uploaded through a client."""
    with IrisClient.remote(client.address, bundle_blob=blob) as uploader:
        yield uploader.submit(entrypoint=Entrypoint.from_command("cat", "a.txt"), resources=SMALL, max_retries=max_retries)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def files_under(root: Path, predicate: Callable[[str], bool]) -> list[Path]:
    """Files whose name satisfies ``predicate`` under ``root`` (directories that vanish while
    they are walked, as finished attempts are cleaned up, are skipped)."""
    return [Path(d) / n for d, _, names in os.walk(root) for n in names if predicate(n)]


def cached_copies(state_dir: Path, bundle_id: str) -> list[Path]:
    """Files named after the bundle in any worker's directory (its bundle cache included)."""
    return files_under(state_dir / "workers", lambda name: bundle_id in name)


def assert_failed_on_every_attempt(job: Job, max_retries: int, *messages: str) -> None:
    status = job.wait(timeout=TIMEOUT, raise_on_failure=False)
    assert status.state is JobState.FAILED, (status.state, status.error)
    [task] = status.tasks
    assert [a.state for a in task.attempts] == [TaskState.FAILED] * (max_retries + 1), task.attempts
    for message in messages:
        assert message in status.error, status.error
        assert all(message in a.error for a in task.attempts), task.attempts


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        (b"these bytes are not a zip archive\n", "File is not a zip file"),
        (zip_bytes({"a.txt": b"fine\n", "../escaped.txt": b"outside\n"}), "'../escaped.txt' escapes the task directory"),
    ],
)
def test_bundle_that_could_never_unpack_is_refused_at_upload_naming_it(client: IrisClient, state_dir: Path, blob: bytes, why: str) -> None:
    bundle_id = hashlib.sha256(blob).hexdigest()
    with pytest.raises(Exception) as raised:
        with submitted_with_bundle(client, blob):
            pass
    assert f"bundle {bundle_id} is not a usable bundle" in str(raised.value) and why in str(raised.value)
    assert cached_copies(state_dir, bundle_id) == [] and files_under(state_dir, lambda name: bundle_id in name and name.endswith(".zip")) == []


def test_bundle_with_a_corrupt_member_fails_and_leaves_no_cached_copy(client: IrisClient, state_dir: Path) -> None:
    blob = bytearray(zip_bytes({"a.txt": b"hello from a bundle that was damaged\n"}))
    blob[blob.index(b"hello")] ^= 0xFF  # the data no longer matches its CRC; the zip still opens
    bundle_id = hashlib.sha256(blob).hexdigest()
    with submitted_with_bundle(client, bytes(blob), max_retries=1) as job:
        assert_failed_on_every_attempt(job, 1, f"bundle {bundle_id} does not unpack", "CRC")
    assert cached_copies(state_dir, bundle_id) == []


def test_bundle_missing_from_the_store_is_a_worker_failure(tmp_path: Path) -> None:
    # One worker of one cpu: a blocker holds it while the job waits, and the bundle is lost meanwhile.
    state = tmp_path / "state"
    config = ClusterConfig(
        controller=ControllerConfig(state_dir=str(state)),
        scale_groups={"one": ScaleGroupConfig(min_slices=1, max_slices=1, cpu=1, memory="4GB")},
    )
    blob = zip_bytes({"a.txt": b"uploaded, then lost by the store\n"})
    bundle_id = hashlib.sha256(blob).hexdigest()
    with IrisClient.local(config) as cluster, IrisClient.remote(cluster.address, bundle_blob=blob) as uploader:
        blocker = cluster.submit(entrypoint=Entrypoint.from_command("sleep", "300"), resources=ResourceSpec(cpu=1, memory="32MB"))
        assert wait_until(lambda: blocker.status().state is JobState.RUNNING, TIMEOUT)
        job = uploader.submit(entrypoint=Entrypoint.from_command("cat", "a.txt"), resources=SMALL, max_preemptions=1)
        (state / "bundles" / f"{bundle_id}.zip").unlink()
        blocker.kill()
        status = job.wait(timeout=TIMEOUT, raise_on_failure=False)
    assert status.state is JobState.WORKER_FAILED, (status.state, status.error)
    [task] = status.tasks
    assert [a.state for a in task.attempts] == [TaskState.WORKER_FAILED] * 2
    assert f"could not fetch bundle {bundle_id}" in status.error


def test_command_not_found_fails_the_job_saying_so_after_max_retries(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_command("/nonexistent-command", "arg"), resources=SMALL, max_retries=1)
    assert_failed_on_every_attempt(job, 1, "cannot run '/nonexistent-command': not found")
    assert job.status().exit_code == 127


def test_command_not_executable_fails_the_job_saying_so(client: IrisClient, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o644)
    job = client.submit(entrypoint=Entrypoint.from_command(str(script)), resources=SMALL)
    assert_failed_on_every_attempt(job, 0, f"cannot run '{script}'", "is not an executable file")
    assert job.status().exit_code == 126


def test_run_nonexistent_command_fails_saying_it_was_not_found(iris, workspace: Path) -> None:
    result = iris("run", "--provider", "local", "--", "/nonexistent-command", cwd=workspace)
    assert result.returncode == 127, result.stderr
    assert "FAILED" in result.stderr
    assert "cannot run '/nonexistent-command': not found" in result.stderr
    assert "WORKER_FAILED" not in result.stderr


def test_command_found_through_the_task_path_runs(client: IrisClient) -> None:
    job = client.submit(entrypoint=Entrypoint.from_command("python", "-c", "print('found')"), resources=SMALL)
    assert job.wait(timeout=TIMEOUT).state is JobState.SUCCEEDED
    assert [line.data for line in job.logs()] == ["found"]
