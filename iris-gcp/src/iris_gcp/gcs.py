"""Google Cloud Storage for Iris: the ``gs://`` bundle store and controller checkpoints.

Bundles are content-addressed: ``gs://bucket/prefix/<sha256>.zip``. An upload happens only when
the object is absent, and is made with the precondition ``ifGenerationMatch=0`` so two uploaders
racing for the same bundle cannot overwrite each other (the loser finds it there). Uploads stream
from a file; above ``resumable_threshold`` bytes they go as a resumable upload in
``chunk_size`` chunks, so a large bundle survives a dropped connection. A download is written to
a temporary file beside its destination while its sha256 is computed, and only a file whose
digest is the bundle id is moved into place: a tampered or truncated object is an error naming
the bundle and leaves nothing behind.

Checkpoints (:class:`GcsCheckpointStore`) are objects ``gs://bucket/prefix/<name>``, each written
once (``ifGenerationMatch=0``), and a small ``LATEST`` object naming the newest with its sha256;
``LATEST`` is replaced with a generation precondition, so a second controller writing to the same
URL is noticed instead of silently interleaving.

The Google client library is imported here, never by the plugin module at load time.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from iris.errors import BundleCorrupt, BundleError, PluginError

logger = logging.getLogger(__name__)

#: Bundles larger than this go up as resumable uploads (in chunks of the same size).
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
_CHUNK_QUANTUM = 256 * 1024  # GCS wants resumable chunks in multiples of 256 KiB
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_gs_url(url: str, what: str = "gs:// URL") -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> (``bucket``, ``some/prefix``); a bad URL is a PluginError."""
    if not url.startswith("gs://"):
        raise PluginError(f"{what} {url!r}: must start with gs://, e.g. gs://my-bucket/iris")
    bucket, _, prefix = url[len("gs://"):].partition("/")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise PluginError(
            f"{what} {url!r}: {bucket!r} is not a bucket name (3-222 characters: lowercase letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit); e.g. gs://my-bucket/iris"
        )
    return bucket, prefix.strip("/")


def _client() -> Any:
    """A storage client with the ambient credentials (``STORAGE_EMULATOR_HOST`` selects a fake)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except DefaultCredentialsError:
        raise PluginError(
            "gs://: no Google credentials found; run `gcloud auth application-default login` on this machine, "
            "or give the VM a service account with access to the bucket"
        ) from None


class _Gcs:
    """What the bundle store and the checkpoint store share: one bucket, a prefix, error mapping."""

    def __init__(self, url: str, what: str, client: Any = None, chunk_size: int = DEFAULT_CHUNK_SIZE):
        self._bucket_name, self._prefix = parse_gs_url(url, what)
        if chunk_size <= 0 or chunk_size % _CHUNK_QUANTUM:
            raise PluginError(f"gs:// chunk_size {chunk_size}: must be a positive multiple of {_CHUNK_QUANTUM} (256 KiB)")
        self._client_value = client
        self.chunk_size = chunk_size

    @property
    def _bucket(self) -> Any:
        if self._client_value is None:
            self._client_value = _client()
        return self._client_value.bucket(self._bucket_name)

    def _name(self, leaf: str) -> str:
        return f"{self._prefix}/{leaf}" if self._prefix else leaf

    def _url(self, leaf: str) -> str:
        return f"gs://{self._bucket_name}/{self._name(leaf)}"

    @contextmanager
    def _google_errors(self, doing: str) -> Iterator[None]:
        """Google's errors that the user must act on, as one-line PluginErrors naming the bucket."""
        from google.api_core import exceptions as gexc

        bucket = f"gs://{self._bucket_name}"
        try:
            yield
        except gexc.Forbidden as exc:
            raise PluginError(
                f"{bucket}: permission denied while {doing} ({_first_line(exc)}); grant this machine's account "
                f"roles/storage.objectAdmin on the bucket (roles/storage.objectViewer is enough to only read)"
            ) from None
        except gexc.Unauthorized as exc:
            raise PluginError(
                f"{bucket}: not authenticated while {doing} ({_first_line(exc)}); run "
                "`gcloud auth application-default login` or check the VM's service account"
            ) from None
        except gexc.NotFound as exc:
            if "bucket does not exist" in str(exc).lower():
                raise PluginError(
                    f"{bucket}: the bucket does not exist; create it (gcloud storage buckets create {bucket}) or fix the URL"
                ) from None
            raise
        except gexc.PreconditionFailed:
            raise
        except gexc.GoogleAPICallError as exc:
            raise PluginError(f"{bucket}: {doing} failed: {_first_line(exc)}") from None

    def _upload_file(self, name: str, stream: IO[bytes], size: int, *, if_generation_match: int | None,
                     metadata: dict[str, str] | None = None) -> Any:
        blob = self._bucket.blob(name, chunk_size=self.chunk_size)
        if metadata:
            blob.metadata = metadata
        # the client goes resumable above 8 MiB by itself; below that only when told the size is unknown
        blob.upload_from_file(
            stream, size=None if size > self.chunk_size else size, content_type="application/octet-stream",
            if_generation_match=if_generation_match, rewind=False,
        )
        return blob

    def _download_verified(self, name: str, expected_sha256: str, dest: Path, label: str) -> Path:
        """Download ``name`` to ``dest`` if and only if its sha256 is ``expected_sha256``."""
        from google.api_core import exceptions as gexc

        from google.cloud.storage.exceptions import DataCorruption  # the client's own checksum check failed
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                sink = _HashingWriter(out)
                try:
                    with self._google_errors(f"downloading {label}"):
                        self._bucket.blob(name).download_to_file(sink)
                except gexc.NotFound:
                    raise BundleError(f"{label} not found at {self._url(name.rpartition('/')[2])}") from None
                except DataCorruption as exc:
                    raise BundleError(f"{label} at gs://{self._bucket_name}/{name} arrived corrupted ({_first_line(exc)}); try again") from None
            actual = sink.sha256.hexdigest()
            if actual != expected_sha256:
                raise BundleCorrupt(
                    f"{label} at gs://{self._bucket_name}/{name} is damaged: its sha256 is {actual} ({sink.size} bytes), "
                    f"expected {expected_sha256}; it was tampered with or truncated. Delete the object so it is uploaded again",
                    held=f"{sink.size} bytes with sha256 {actual}",
                )
            os.replace(tmp, dest)
            return dest
        finally:
            tmp.unlink(missing_ok=True)


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through it."""

    def __init__(self, out: IO[bytes]):
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += len(view)
        self._out.write(view)
        return len(view)


def _first_line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message).strip().splitlines()[0] if str(message).strip() else type(exc).__name__


def _check_id(bundle_id: str) -> str:
    if not isinstance(bundle_id, str) or not _SHA256.fullmatch(bundle_id):
        raise BundleError(f"bundle id {bundle_id!r} is not a sha256 hex digest (64 characters 0-9a-f)")
    return bundle_id


def _sha256_of(stream: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for block in iter(lambda: stream.read(1024 * 1024), b""):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


class GcsBundleStore(_Gcs):
    """The ``gs://bucket/prefix`` BundleStore (see the module docstring)."""

    def __init__(self, url_prefix: str, client: Any = None, chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__(url_prefix, "bundle_prefix", client, chunk_size)

    def url_for(self, bundle_id: str) -> str:
        return self._url(f"{_check_id(bundle_id)}.zip")

    def exists(self, bundle_id: str) -> bool:
        name = self._name(f"{_check_id(bundle_id)}.zip")
        with self._google_errors(f"looking up bundle {bundle_id}"):
            return bool(self._bucket.blob(name).exists())

    def put(self, bundle_id: str, data: bytes) -> str:
        """Store the bytes unless the bundle is there already; return its URL."""
        return self.put_stream(bundle_id, io.BytesIO(data))

    def put_file(self, bundle_id: str, path: Path) -> str:
        """Like :meth:`put`, streaming from a file (never read whole into memory)."""
        with open(path, "rb") as f:
            return self.put_stream(bundle_id, f)

    def put_stream(self, bundle_id: str, stream: IO[bytes]) -> str:
        _check_id(bundle_id)
        start = stream.tell()
        actual, size = _sha256_of(stream)
        if actual != bundle_id:
            raise BundleError(f"bundle id {bundle_id} does not match its content (sha256 {actual})")
        if self.exists(bundle_id):
            return self.url_for(bundle_id)
        from google.api_core import exceptions as gexc

        stream.seek(start)
        try:
            with self._google_errors(f"uploading bundle {bundle_id}"):
                self._upload_file(self._name(f"{bundle_id}.zip"), stream, size, if_generation_match=0)
        except gexc.PreconditionFailed:
            logger.debug("bundle %s was uploaded by someone else meanwhile", bundle_id)  # same id, same bytes
        return self.url_for(bundle_id)

    def get(self, bundle_id: str, dest_dir: Path) -> Path:
        """Download the bundle to ``dest_dir/<id>.zip``, verified against its id."""
        _check_id(bundle_id)
        return self._download_verified(
            self._name(f"{bundle_id}.zip"), bundle_id, Path(dest_dir) / f"{bundle_id}.zip", f"bundle {bundle_id}"
        )


LATEST = "LATEST"


class GcsCheckpointStore(_Gcs):
    """Controller checkpoints under ``gs://bucket/prefix`` (see the module docstring).

    Implements :class:`iris.plugin.protocols.CheckpointStore`.
    """

    #: how many checkpoints to keep (the newest); older ones are deleted after each save
    keep = 3

    def __init__(self, url: str, client: Any = None, chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__(url, "controller.checkpoint_url", client, chunk_size)
        self._latest_generation: int | None = None  # LATEST's generation as this store last wrote it

    @property
    def url(self) -> str:
        return f"gs://{self._bucket_name}/{self._prefix}".rstrip("/")

    def save(self, snapshot: Path, name: str) -> str:
        from google.api_core import exceptions as gexc

        with open(snapshot, "rb") as f:
            digest, size = _sha256_of(f)
            f.seek(0)
            with self._google_errors(f"writing checkpoint {name}"):
                try:
                    self._upload_file(self._name(name), f, size, if_generation_match=0, metadata={"sha256": digest})
                except gexc.PreconditionFailed:
                    raise PluginError(f"{self._url(name)}: a checkpoint of that name exists already; another controller writes here") from None
        latest = self._bucket.blob(self._name(LATEST))
        with self._google_errors("updating the latest checkpoint"):
            if self._latest_generation is None:
                current = self._bucket.get_blob(self._name(LATEST))
                self._latest_generation = int(current.generation) if current is not None else 0
            try:
                latest.upload_from_string(f"{name} {digest}\n", if_generation_match=self._latest_generation)
            except gexc.PreconditionFailed:
                self._latest_generation = None
                raise PluginError(
                    f"{self._url(LATEST)} was changed by someone else since this controller wrote it: another controller "
                    "checkpoints to the same URL. Stop it, or give each cluster its own controller.checkpoint_url"
                ) from None
            self._latest_generation = int(latest.generation)
        self._prune(keep_name=name)
        return self._url(name)

    def _prune(self, keep_name: str) -> None:
        try:
            with self._google_errors("pruning old checkpoints"):
                prefix = self._name("")
                names = sorted(
                    b.name[len(prefix):] for b in self._bucket.list_blobs(prefix=prefix)
                    if b.name[len(prefix):].endswith(".ckpt") and "/" not in b.name[len(prefix):]
                )
                for old in names[:-self.keep]:
                    if old != keep_name:
                        self._bucket.blob(self._name(old)).delete()
        except Exception as exc:  # a checkpoint was saved; old ones linger until the next save
            logger.warning("could not prune old checkpoints under %s: %s", self.url, exc)

    def restore_latest(self, dest: Path) -> str | None:
        from google.api_core import exceptions as gexc

        try:
            with self._google_errors("reading the latest checkpoint"):
                text = self._bucket.blob(self._name(LATEST)).download_as_bytes().decode()
        except gexc.NotFound:
            return None
        try:
            name, digest = text.split()
        except ValueError:
            raise PluginError(f"{self._url(LATEST)}: unreadable ({text[:80]!r}); expected '<checkpoint name> <sha256>'") from None
        if "/" in name or not _SHA256.fullmatch(digest):
            raise PluginError(f"{self._url(LATEST)}: unreadable ({text[:80]!r}); expected '<checkpoint name> <sha256>'")
        try:
            self._download_verified(self._name(name), digest, Path(dest), f"checkpoint {name}")
        except BundleCorrupt:
            raise
        except BundleError as exc:  # missing
            raise PluginError(f"{self._url(LATEST)} names {name}, which cannot be read: {exc}") from None
        return self._url(name)
