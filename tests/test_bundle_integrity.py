"""A bundle is run only if it is the one that was uploaded, and unpacks only inside its task's
directory. End to end: a real controller and one worker (the local provider), bundles uploaded
over gRPC, then tampered with as an attacker with write access to the store (or to the worker's
cache) would: by rewriting the stored file itself."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from iris.client import IrisClient, Job
from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState
from iris.config import BundleConfig, ClusterConfig, ControllerConfig, ScaleGroupConfig
from iris.rpc import controller_pb2, controller_pb2_grpc

SMALL = ResourceSpec(cpu=0.1, memory="32MB")
TIMEOUT = 60.0
RUN = Entrypoint.from_command("sh", "run.sh")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integrity")


@pytest.fixture(scope="module")
def state(root: Path) -> Path:
    return root / "state"


@pytest.fixture(scope="module")
def client(state: Path) -> Iterator[IrisClient]:
    """One worker, so a second job reuses the first one's cached bundle; small unpack limits."""
    config = ClusterConfig(
        controller=ControllerConfig(state_dir=str(state)),
        bundle=BundleConfig(max_unpacked_size="1MB", max_files=50),
        scale_groups={"one": ScaleGroupConfig(min_slices=1, max_slices=1, cpu=1, memory="4GB")},
    )
    with IrisClient.local(config) as c:
        yield c


def zip_bytes(entries: dict[str, bytes | tuple[int, bytes]]) -> bytes:
    """A zip of ``name: data`` or ``name: (st_mode, data)`` entries, the modes as a unix zip stores them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in entries.items():
            mode, data = value if isinstance(value, tuple) else (stat.S_IFREG | 0o644, value)
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buffer.getvalue()


def script(text: str) -> bytes:
    return zip_bytes({"run.sh": text.encode()})


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def upload(client: IrisClient, blob: bytes) -> Path:
    """Upload through the controller's RPC, as a client does; the stored file's path."""
    with grpc.insecure_channel(client.address.removeprefix("http://")) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        stub.UploadBundle(controller_pb2.UploadBundleRequest(bundle_id=sha(blob), data=blob), timeout=30)
    return stored(client, blob)


def stored(client: IrisClient, blob: bytes) -> Path:
    return Path(client._cluster.config.controller.state_dir) / "bundles" / f"{sha(blob)}.zip"  # type: ignore[attr-defined]


def plant(state: Path, blob: bytes) -> Path:
    """Write a bundle straight into the store under its true id, bypassing the upload checks."""
    path = state / "bundles" / f"{sha(blob)}.zip"
    path.write_bytes(blob)
    return path


@pytest.fixture
def submit(client: IrisClient) -> Iterator[Callable[..., Job]]:
    """``submit(blob, max_retries=0)`` launches ``sh run.sh`` on the bundle ``blob`` through a
    client of its own, which uploads it only if the store lacks it."""
    opened: list[IrisClient] = []

    def launch(blob: bytes, *, max_retries: int = 0) -> Job:
        opened.append(IrisClient.remote(client.address, bundle_blob=blob))
        return opened[-1].submit(entrypoint=RUN, resources=SMALL, max_retries=max_retries)

    yield launch
    for submitter in opened:
        submitter.close()


def cached_copies(state: Path, blob: bytes) -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(state / "workers") for n in names if sha(blob) in n]


def failed_saying(job: Job, attempts: int, *messages: str) -> None:
    status = job.wait(timeout=TIMEOUT, raise_on_failure=False)
    assert status.state is JobState.FAILED, (status.state, status.error)
    [task] = status.tasks
    assert [a.state for a in task.attempts] == [TaskState.FAILED] * attempts, task.attempts
    for message in messages:
        assert message in status.error, status.error


def succeeded_printing(job: Job, text: str) -> None:
    status = job.wait(timeout=TIMEOUT, raise_on_failure=False)
    assert status.state is JobState.SUCCEEDED, (status.state, status.error)
    assert [line.data for line in job.logs()] == [text]


def test_stored_bundle_overwritten_after_upload_is_refused_and_never_runs(client: IrisClient, submit, state: Path, root: Path) -> None:
    marker = root / "tampered-ran"
    good = script("echo good\n")
    tampered = script(f"touch {marker}\necho tampered\n")
    upload(client, good).write_bytes(tampered)  # the attacker rewrites the stored object
    job = submit(good, max_retries=1)
    failed_saying(job, 2, f"bundle {sha(good)} in the store is not the bundle that was uploaded", f"sha256 {sha(tampered)}", "not run")
    assert not marker.exists()
    assert cached_copies(state, good) == []
    assert list(job.logs()) == []


def test_truncated_stored_bundle_is_refused_evicted_and_a_good_copy_runs_next(client: IrisClient, submit, state: Path) -> None:
    good = script("echo restored\n")
    path = upload(client, good)
    path.write_bytes(good[: len(good) // 2])
    failed_saying(submit(good), 1, "is not the bundle that was uploaded", f"the store holds {len(good) // 2} bytes")
    assert cached_copies(state, good) == []
    path.write_bytes(good)  # the operator restores the object
    succeeded_printing(submit(good), "restored")


def test_damaged_cached_copy_is_evicted_and_fetched_again(client: IrisClient, submit, state: Path, root: Path) -> None:
    marker = root / "cached-tampered-ran"
    good = script("echo from the store\n")
    upload(client, good)
    succeeded_printing(submit(good), "from the store")
    [cached] = cached_copies(state, good)
    cached.write_bytes(script(f"touch {marker}\necho tampered\n"))  # the worker's own copy is rewritten
    succeeded_printing(submit(good), "from the store")
    assert not marker.exists()
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha(good)  # the copy was fetched again


def test_cached_copy_is_reused_while_it_is_intact(client: IrisClient, submit, state: Path) -> None:
    good = script("echo reused\n")
    path = upload(client, good)
    succeeded_printing(submit(good), "reused")
    path.unlink()  # the store loses it: only the cached copy can serve the next job
    succeeded_printing(submit(good), "reused")
    assert len(cached_copies(state, good)) == 1


def escaping(root: Path) -> list[str]:
    """Anything named like a hostile entry under ``root`` (os.walk: attempt directories vanish
    while they are walked, as finished attempts are cleaned up)."""
    return sorted(os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files if "escaped" in n)


HOSTILE = {
    "parent path": ({"run.sh": b"echo x\n", "../" * 6 + "escaped-parent.txt": b"x"}, "escapes the task directory"),
    "absolute path": ({"run.sh": b"echo x\n", "{root}/escaped-absolute.txt": b"x"}, "escapes the task directory"),
    "link to an absolute path": (
        {"run.sh": b"echo x\n", "escaped-link": (stat.S_IFLNK | 0o777, b"{root}")},
        "symbolic link to the absolute path",
    ),
    "link climbing out": (
        {"run.sh": b"echo x\n", "escaped-up": (stat.S_IFLNK | 0o777, b"../" * 6)},
        "outside the task directory",
    ),
    "fifo": ({"run.sh": b"echo x\n", "escaped-fifo": (stat.S_IFIFO | 0o644, b"")}, "'escaped-fifo' is a FIFO"),
    "device": ({"run.sh": b"echo x\n", "escaped-dev": (stat.S_IFCHR | 0o666, b"")}, "'escaped-dev' is a character device"),
    "setuid": ({"run.sh": (stat.S_IFREG | 0o4755, b"echo x\n")}, "'run.sh' has mode 0o4755; setuid"),
    "zip bomb": (
        {"run.sh": b"echo x\n", "zeros.bin": bytes(4_000_000)},
        "unpacks to 4.0MB, over the limit of 1.0MB; raise bundle.max_unpacked_size in the cluster config",
    ),
    "too many files": (
        {"run.sh": b"echo x\n", **{f"f{i}.txt": b"" for i in range(60)}},
        "holds 61 entries, over the limit of 50; raise bundle.max_files in the cluster config",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bundle_in_the_store_fails_the_task_and_writes_nothing_outside(submit, state: Path, root: Path, case: str) -> None:
    spec, why = HOSTILE[case]
    entries = {
        name.replace("{root}", str(root)): (value[0], value[1].replace(b"{root}", str(root).encode())) if isinstance(value, tuple) else value
        for name, value in spec.items()
    }
    blob = zip_bytes(entries)
    plant(state, blob)
    failed_saying(submit(blob, max_retries=1), 2, f"bundle {sha(blob)} does not unpack", why)
    assert escaping(root) == []
    assert cached_copies(state, blob) == []


def test_bundle_over_the_unpack_limits_is_refused_at_upload_naming_the_setting(client: IrisClient) -> None:
    bomb = zip_bytes({"run.sh": b"echo x\n", "zeros.bin": bytes(3_000_000)})  # not the planted one above
    with IrisClient.remote(client.address, bundle_blob=bomb) as submitter:
        with pytest.raises(Exception) as raised:
            submitter.submit(entrypoint=RUN, resources=SMALL)
    assert f"bundle {sha(bomb)} is not a usable bundle: the bundle unpacks to 3.0MB, over the limit of 1.0MB" in str(raised.value)
    assert "raise bundle.max_unpacked_size in the cluster config" in str(raised.value)
    assert not stored(client, bomb).exists()
