"""The gs:// bundle store and checkpoint store, with the real google-cloud-storage client against
the local fake GCS (iris_gcp.testing.fake_gcs) over HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from iris.cluster.controller.checkpoint import open_checkpoint_store
from iris.errors import BundleCorrupt, BundleError, PluginError
from iris.plugin.registry import PluginRegistry
from iris.testing.contracts import BundleStoreContract
from iris_gcp.gcs import GcsBundleStore, GcsCheckpointStore
from iris_gcp.testing.gcs_pytest import GcsBucket, fake_gcs, gcs_bucket  # noqa: F401 (fixtures)

CHUNK = 256 * 1024


def _bundle(size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    return hashlib.sha256(data).hexdigest(), data


class TestGcsBundleStoreContract(BundleStoreContract):
    @pytest.fixture
    def bundle_store(self, gcs_bucket: GcsBucket) -> GcsBundleStore:
        return PluginRegistry().open_bundle_store(f"{gcs_bucket.url}/iris-contract")


def test_gcs_store_put_uploads_once_with_absent_precondition(gcs_bucket: GcsBucket) -> None:
    store = GcsBundleStore(f"{gcs_bucket.url}/bundles")
    bundle_id, data = _bundle(1000)
    before = len(gcs_bucket.fake.requests)
    store.put(bundle_id, data)
    store.put(bundle_id, data)
    uploads = [path for method, path in gcs_bucket.fake.requests[before:] if method == "POST" and path.startswith("/upload/")]
    assert len(uploads) == 1
    assert "ifGenerationMatch=0" in uploads[0]
    assert gcs_bucket.fake.object_names(gcs_bucket.name) == [f"bundles/{bundle_id}.zip"]


def test_gcs_store_racing_uploaders_keep_the_first_generation(gcs_bucket: GcsBucket) -> None:
    """Two stores that both saw the bundle absent upload it at once: exactly one write lands, the
    other meets the precondition and returns the same URL."""
    bundle_id, data = _bundle(CHUNK)
    stores = [GcsBundleStore(gcs_bucket.url) for _ in range(4)]
    for store in stores:  # every store looks first and sees nothing
        assert not store.exists(bundle_id)
    barrier = threading.Barrier(len(stores))
    results: list[str] = []
    errors: list[BaseException] = []

    def upload(store: GcsBundleStore) -> None:
        try:
            barrier.wait()
            # skip the exists() check: go straight to the conditional upload, as a racer that lost would
            import io

            store._upload_file(store._name(f"{bundle_id}.zip"), io.BytesIO(data), len(data), if_generation_match=0)
            results.append("uploaded")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from google.api_core.exceptions import PreconditionFailed

    assert results == ["uploaded"]
    assert len(errors) == 3 and all(isinstance(e, PreconditionFailed) for e in errors)
    assert stores[0].put(bundle_id, data) == stores[0].url_for(bundle_id)  # put treats "already there" as done


def test_gcs_store_large_bundle_goes_resumable_in_chunks(gcs_bucket: GcsBucket, tmp_path: Path) -> None:
    store = GcsBundleStore(gcs_bucket.url, chunk_size=CHUNK)
    bundle_id, data = _bundle(3 * CHUNK + 123)
    source = tmp_path / "bundle.zip"
    source.write_bytes(data)
    before = len(gcs_bucket.fake.requests)
    store.put_file(bundle_id, source)
    requests = gcs_bucket.fake.requests[before:]
    starts = [p for m, p in requests if m == "POST" and "uploadType=resumable" in p]
    chunks = [p for m, p in requests if m == "PUT" and "upload_id=" in p]
    assert len(starts) == 1 and "ifGenerationMatch=0" in starts[0]
    assert len(chunks) >= 4
    assert Path(store.get(bundle_id, tmp_path / "out")).read_bytes() == data


def test_gcs_store_small_bundle_goes_in_one_request(gcs_bucket: GcsBucket) -> None:
    store = GcsBundleStore(gcs_bucket.url, chunk_size=CHUNK)
    bundle_id, data = _bundle(CHUNK // 2)
    before = len(gcs_bucket.fake.requests)
    store.put(bundle_id, data)
    uploads = [p for m, p in gcs_bucket.fake.requests[before:] if m in ("POST", "PUT") and p.startswith("/upload/")]
    assert len(uploads) == 1 and "uploadType=multipart" in uploads[0]


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_gcs_store_get_damaged_object_raises_naming_bundle_and_leaves_nothing(
    gcs_bucket: GcsBucket, tmp_path: Path, damage: str
) -> None:
    store = GcsBundleStore(f"{gcs_bucket.url}/b")
    bundle_id, data = _bundle(CHUNK + 17)
    store.put(bundle_id, data)
    # flip every bit of one byte: replacing it with a fixed byte left random data unchanged 1 time in 256
    bad = data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:] if damage == "tampered" else data[: len(data) // 2]
    gcs_bucket.fake.replace_bytes(gcs_bucket.name, f"b/{bundle_id}.zip", bad)
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match=f"bundle {bundle_id} at gs://{gcs_bucket.name}/b/{bundle_id}.zip is damaged"):
        store.get(bundle_id, dest)
    assert list(dest.iterdir()) == []


def test_gcs_store_get_replaces_a_bad_local_copy_only_when_verified(gcs_bucket: GcsBucket, tmp_path: Path) -> None:
    store = GcsBundleStore(gcs_bucket.url)
    bundle_id, data = _bundle(500)
    store.put(bundle_id, data)
    (tmp_path / f"{bundle_id}.zip").write_bytes(b"stale")
    assert Path(store.get(bundle_id, tmp_path)).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{bundle_id}.zip"]


def test_gcs_store_missing_bucket_is_one_line_naming_it(fake_gcs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    store = GcsBundleStore("gs://no-such-bucket-here/x")
    bundle_id, data = _bundle(10)
    with pytest.raises(PluginError, match=r"^gs://no-such-bucket-here: the bucket does not exist; create it") as info:
        store.put(bundle_id, data)
    assert "\n" not in str(info.value)
    with pytest.raises(PluginError, match="bucket does not exist"):
        store.get(bundle_id, tmp_path)


def test_gcs_store_permission_denied_is_one_line_naming_bucket_and_role(gcs_bucket: GcsBucket, tmp_path: Path) -> None:
    store = GcsBundleStore(gcs_bucket.url)
    bundle_id, data = _bundle(10)
    gcs_bucket.fake.deny(gcs_bucket.name)
    for call in (lambda: store.put(bundle_id, data), lambda: store.get(bundle_id, tmp_path), lambda: store.exists(bundle_id)):
        with pytest.raises(PluginError, match=rf"^gs://{gcs_bucket.name}: permission denied while .*roles/storage.objectAdmin") as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket/x", "must start with gs://"),
        ("gs://", "'' is not a bucket name"),
        ("gs://Bad_Bucket/x", "'Bad_Bucket' is not a bucket name"),
    ],
)
def test_gcs_store_bad_url_is_rejected_naming_it(url: str, message: str) -> None:
    with pytest.raises(PluginError, match=f"bundle_prefix {url!r}: .*{message}"):
        GcsBundleStore(url)


def test_gcs_checkpoints_latest_wins_and_old_ones_are_pruned(gcs_bucket: GcsBucket, tmp_path: Path) -> None:
    registry = PluginRegistry()
    store = open_checkpoint_store(registry, f"{gcs_bucket.url}/ckpt")
    assert store.restore_latest(tmp_path / "none.db") is None
    for i in range(5):
        snap = tmp_path / f"snap{i}"
        snap.write_bytes(f"state {i}".encode() * 1000)
        store.save(snap, f"2026113010{i:02d}00-{i}.ckpt")
    out = tmp_path / "restored.db"
    assert store.restore_latest(out) == f"{gcs_bucket.url}/ckpt/20261130100400-4.ckpt"
    assert out.read_bytes() == b"state 4" * 1000
    names = gcs_bucket.fake.object_names(gcs_bucket.name)
    assert names == ["ckpt/2026113010020" + "0-2.ckpt", "ckpt/2026113010030" + "0-3.ckpt", "ckpt/2026113010040" + "0-4.ckpt", "ckpt/LATEST"]


def test_gcs_checkpoints_damaged_checkpoint_is_refused_and_dest_untouched(gcs_bucket: GcsBucket, tmp_path: Path) -> None:
    store = GcsCheckpointStore(gcs_bucket.url)
    snap = tmp_path / "snap"
    snap.write_bytes(b"good state")
    store.save(snap, "a.ckpt")
    gcs_bucket.fake.replace_bytes(gcs_bucket.name, "a.ckpt", b"good sta")
    dest = tmp_path / "controller.db"
    dest.write_bytes(b"before")
    with pytest.raises(BundleCorrupt, match="checkpoint a.ckpt at .* is damaged"):
        store.restore_latest(dest)
    assert dest.read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["controller.db", "snap"]


def test_gcs_checkpoints_second_writer_is_detected(gcs_bucket: GcsBucket, tmp_path: Path) -> None:
    first, second = GcsCheckpointStore(gcs_bucket.url), GcsCheckpointStore(gcs_bucket.url)
    snap = tmp_path / "snap"
    snap.write_bytes(b"x")
    first.save(snap, "1.ckpt")
    second.save(snap, "2.ckpt")
    with pytest.raises(PluginError, match="another controller checkpoints to the same URL"):
        first.save(snap, "3.ckpt")


# --- end to end: a cluster whose bundles live in the fake GCS ------------------------------


@pytest.fixture
def gcs_cluster(gcs_bucket: GcsBucket, tmp_path: Path):
    """An in-process cluster (one worker) whose bundle_prefix is the test's bucket."""
    from iris.client import IrisClient
    from iris.config import ClusterConfig, ControllerConfig, ScaleGroupConfig

    config = ClusterConfig(
        controller=ControllerConfig(state_dir=str(tmp_path / "state"), bundle_prefix=f"{gcs_bucket.url}/bundles"),
        scale_groups={"one": ScaleGroupConfig(min_slices=1, max_slices=1, cpu=1, memory="4GB")},
    )
    with IrisClient.local(config) as client:
        yield client


def _zip(script: str) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        info = zipfile.ZipInfo("run.sh", date_time=(1980, 1, 1, 0, 0, 0))
        zf.writestr(info, script)
    return buffer.getvalue()


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_gcs_cluster_damaged_bundle_fails_task_on_its_retries_never_runs_and_good_copy_runs_next(
    gcs_cluster, gcs_bucket: GcsBucket, tmp_path: Path, damage: str
) -> None:
    from iris.client import IrisClient
    from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState

    marker = tmp_path / "bad-ran"
    good = _zip("echo good\n")
    bundle_id = hashlib.sha256(good).hexdigest()
    bad = _zip(f"touch {marker}\necho bad\n") if damage == "tampered" else good[: len(good) // 2]
    run = Entrypoint.from_command("sh", "run.sh")
    small = ResourceSpec(cpu=0.1, memory="32MB")
    with IrisClient.remote(gcs_cluster.address, bundle_blob=good) as client:
        first = client.submit(entrypoint=run, resources=small, name="first")  # uploads the bundle to the bucket
        assert first.wait(timeout=60).state is JobState.SUCCEEDED
        name = f"bundles/{bundle_id}.zip"
        assert name in gcs_bucket.fake.object_names(gcs_bucket.name)
        gcs_bucket.fake.replace_bytes(gcs_bucket.name, name, bad)
        # a worker that cached the good copy would still run it: the job below goes to a fresh worker dir
        # (walked with os.walk, which skips what vanishes meanwhile: the runtime recycles the
        # first attempt's directories while this looks)
        for root, _dirs, files in os.walk(tmp_path):
            for cached in files:
                if bundle_id in cached:
                    Path(root, cached).unlink(missing_ok=True)
        job = client.submit(entrypoint=run, resources=small, name="second", max_retries=1)
        status = job.wait(timeout=60, raise_on_failure=False)
        assert status.state is JobState.FAILED, (status.state, status.error)
        assert [a.state for a in status.tasks[0].attempts] == [TaskState.FAILED] * 2
        assert f"bundle {bundle_id} in the store is not the bundle that was uploaded" in status.error
        assert f"sha256 {hashlib.sha256(bad).hexdigest()}" in status.error
        assert not marker.exists()
        gcs_bucket.fake.replace_bytes(gcs_bucket.name, name, good)  # the operator restores the object
        assert client.submit(entrypoint=run, resources=small, name="third").wait(timeout=60).state is JobState.SUCCEEDED
