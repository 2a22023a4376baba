"""Controller checkpoints: the controller's state copied to a URL, so that a controller whose
machine (and state directory) is lost comes back with every job it had checkpointed.

A checkpoint is one zip file holding a consistent copy of ``controller.db`` taken with SQLite's
online backup API (never a copy of the live file, which a concurrent write could tear), the
cluster's token secret (``secret.key``, so workers of adopted slices keep authenticating) and a
``manifest.json``. The controller writes one every ``controller.checkpoint_interval_seconds``
when its database changed, and a last one when it stops; a controller that starts with no
``controller.db`` in its state directory restores the latest before it serves, then adopts the
running slices as after any restart.

Where checkpoints go is a :class:`~iris.plugin.protocols.CheckpointStore` found by URL scheme:
``file://`` is :class:`FileCheckpointStore` here (a local disk, or NFS); other schemes come from
the bundle store plugin for the scheme (``gs://`` from iris-gcp).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from iris.auth import SECRET_FILE, write_private
from iris.cluster.controller.store import StateError, check_database
from iris.errors import BundleCorrupt, IrisError

logger = logging.getLogger(__name__)

DB_FILE = "controller.db"
MANIFEST = "manifest.json"
FORMAT = 1
SUFFIX = ".ckpt"
LATEST = "LATEST"


class CheckpointError(IrisError):
    """A checkpoint cannot be written or restored; the message says which and why."""


def checkpoint_name(now: float | None = None) -> str:
    """A new checkpoint's name: sortable by time (UTC, microseconds), unique by a random tail."""
    at = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return f"{at:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:8]}{SUFFIX}"


# --- the snapshot ----------------------------------------------------------------------------


def write_snapshot(db_path: Path, state_dir: Path, out: Path, source: sqlite3.Connection | None = None) -> None:
    """Write a checkpoint archive of the database at ``db_path`` (and the token secret) to ``out``.

    The database is copied with SQLite's backup API, in one step, so the copy is one consistent
    transaction boundary even while the controller keeps writing."""
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=".snapshot-", suffix=".db")
    os.close(fd)
    tmp = Path(tmp_name)
    own = source is None
    src = source if source is not None else sqlite3.connect(db_path)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)  # pages=-1: the whole database in one step, under one read transaction
            dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        finally:
            dst.close()
        version = sqlite3.connect(tmp).execute("PRAGMA user_version").fetchone()[0]
        manifest = {"format": FORMAT, "created_at": time.time(), "schema_version": version, "files": [DB_FILE]}
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(tmp, DB_FILE)
            secret = state_dir / SECRET_FILE
            if secret.exists():
                archive.write(secret, SECRET_FILE)
                manifest["files"].append(SECRET_FILE)
            archive.writestr(MANIFEST, json.dumps(manifest))
    finally:
        if own:
            src.close()
        tmp.unlink(missing_ok=True)


def unpack_snapshot(archive_path: Path, state_dir: Path, source: str) -> None:
    """Put a checkpoint's database and secret into ``state_dir``: checked first (zip CRCs, the
    manifest, SQLite's integrity check), then moved into place, the database last, so a failure
    at any point leaves no ``controller.db`` behind."""
    db_path = state_dir / DB_FILE
    tmp_db = state_dir / f".{DB_FILE}.restoring"
    try:
        try:
            with zipfile.ZipFile(archive_path) as archive:
                manifest = json.loads(archive.read(MANIFEST))
                if manifest.get("format") != FORMAT:
                    raise CheckpointError(
                        f"checkpoint {source} has format {manifest.get('format')!r}; this controller reads format {FORMAT}: "
                        "run the Iris version that wrote it"
                    )
                with archive.open(DB_FILE) as src, open(tmp_db, "wb") as out:
                    while block := src.read(1024 * 1024):
                        out.write(block)
                secret = archive.read(SECRET_FILE).decode() if SECRET_FILE in archive.namelist() else None
        except (zipfile.BadZipFile, KeyError, ValueError, zipfile.LargeZipFile) as exc:
            raise CheckpointError(f"checkpoint {source} is not a readable Iris checkpoint ({exc})") from None
        try:
            check_database(tmp_db)
        except StateError as exc:
            raise CheckpointError(f"checkpoint {source}: {exc}") from None
        if secret is not None:
            write_private(state_dir / SECRET_FILE, secret)
        os.chmod(tmp_db, 0o600)
        os.replace(tmp_db, db_path)
    finally:
        tmp_db.unlink(missing_ok=True)


# --- file:// --------------------------------------------------------------------------------


class FileCheckpointStore:
    """Checkpoints as files in a directory (``file:///path``): ``<name>.ckpt`` files and a
    ``LATEST`` file naming the newest, each written to a temporary file and renamed into place."""

    keep = 3

    def __init__(self, url: str):
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise CheckpointError(
                f"controller.checkpoint_url: {url!r} is not a file:// URL with an absolute path, e.g. file:///mnt/nfs/iris-checkpoints"
            )
        self.url = url.rstrip("/")
        self._dir = Path(unquote(parsed.path))

    def _write_atomically(self, dest: Path, write: Any) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(dir=self._dir, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, dest)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    def save(self, snapshot: Path, name: str) -> str:
        def copy(out: Any) -> None:
            with open(snapshot, "rb") as src:
                while block := src.read(1024 * 1024):
                    out.write(block)

        try:
            self._write_atomically(self._dir / name, copy)
            self._write_atomically(self._dir / LATEST, lambda out: out.write(f"{name}\n".encode()))
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {name} to {self.url}: {exc.strerror or exc}") from None
        for old in sorted(p.name for p in self._dir.glob(f"*{SUFFIX}"))[: -self.keep]:
            if old != name:
                (self._dir / old).unlink(missing_ok=True)
        return f"{self.url}/{name}"

    def restore_latest(self, dest: Path) -> str | None:
        try:
            name = (self._dir / LATEST).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.url}/{LATEST}: {exc.strerror or exc}") from None
        if not name.endswith(SUFFIX) or "/" in name:
            raise CheckpointError(f"{self.url}/{LATEST}: names {name!r}, which is not a checkpoint")
        source = self._dir / name
        try:
            self._write_atomically_to(dest, source)
        except FileNotFoundError:
            raise CheckpointError(f"{self.url}/{LATEST} names {name}, which is missing") from None
        return f"{self.url}/{name}"

    @staticmethod
    def _write_atomically_to(dest: Path, source: Path) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                while block := src.read(1024 * 1024):
                    out.write(block)
            os.replace(tmp_name, dest)
        finally:
            Path(tmp_name).unlink(missing_ok=True)


# --- the controller's side ------------------------------------------------------------------


def restore_if_empty(store: Any, state_dir: Path) -> str | None:
    """If ``state_dir`` has no ``controller.db``, restore the latest checkpoint into it.

    Returns the checkpoint's URL, or None when there was nothing to do (a database exists, or
    the store holds no checkpoint yet)."""
    if (state_dir / DB_FILE).exists():
        return None
    fd, tmp_name = tempfile.mkstemp(dir=state_dir, prefix=".checkpoint-", suffix=SUFFIX)
    os.close(fd)
    archive = Path(tmp_name)
    try:
        try:
            found = store.restore_latest(archive)
            if found is None:
                logger.info("no checkpoint at %s yet: starting with empty state", store.url)
                return None
            unpack_snapshot(archive, state_dir, found)
        except (CheckpointError, BundleCorrupt) as exc:
            raise CheckpointError(
                f"cannot restore the controller's state from {store.url}: {exc}; fix or remove the checkpoint, "
                "or start with --fresh to begin with empty state"
            ) from None
        except IrisError as exc:  # the store cannot be read: no access, no bucket, ...
            raise CheckpointError(
                f"cannot restore the controller's state from {store.url}: {exc}; "
                "or start with --fresh to begin with empty state"
            ) from None
        logger.warning("restored the controller's state from %s", found)
        return found
    finally:
        archive.unlink(missing_ok=True)


class Checkpointer:
    """Writes a checkpoint of ``<state_dir>/controller.db`` every ``interval`` seconds when the
    database changed since the last one, and once more on :meth:`stop`."""

    def __init__(self, store: Any, state_dir: Path, interval: float):
        self.store = store
        self._state_dir = Path(state_dir)
        self._interval = interval
        self._conn = sqlite3.connect(self._state_dir / DB_FILE, check_same_thread=False)
        self._lock = threading.Lock()  # one checkpoint at a time
        self._saved_version: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: the URL of the last checkpoint written, and when (unix time)
        self.last_url = ""
        self.last_at = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="controller-checkpoints", daemon=True)
        self._thread.start()

    def _version(self) -> tuple[int, int]:
        # data_version changes whenever another connection commits; the file size catches the rest
        return (self._conn.execute("PRAGMA data_version").fetchone()[0], (self._state_dir / DB_FILE).stat().st_size)

    def checkpoint(self, *, force: bool = False) -> str | None:
        """Write a checkpoint now if the state changed (or ``force``); return its URL or None."""
        with self._lock:
            version = self._version()
            if not force and version == self._saved_version:
                return None
            name = checkpoint_name()
            fd, tmp_name = tempfile.mkstemp(dir=self._state_dir, prefix=".checkpoint-", suffix=SUFFIX)
            os.close(fd)
            archive = Path(tmp_name)
            try:
                write_snapshot(self._state_dir / DB_FILE, self._state_dir, archive, source=self._conn)
                url = self.store.save(archive, name)
            finally:
                archive.unlink(missing_ok=True)
            self._saved_version = version
            self.last_url, self.last_at = url, time.time()
            logger.info("checkpointed the controller's state to %s", url)
            return url

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.checkpoint()
            except Exception as exc:  # noqa: BLE001 - keep serving; the next tick tries again
                logger.warning("checkpoint to %s failed (will retry): %s", self.store.url, exc)

    def stop(self, *, final: bool = True) -> None:
        """Stop the periodic checkpoints; with ``final``, write one last checkpoint first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        try:
            if final:
                self.checkpoint()
        except Exception as exc:  # noqa: BLE001 - shutting down: say so, do not hide the shutdown
            logger.warning("the final checkpoint to %s failed: %s", self.store.url, exc)
        finally:
            self._conn.close()


def open_checkpoint_store(registry: Any, url: str) -> Any:
    """The CheckpointStore for ``controller.checkpoint_url`` (``file:///dir``, ``gs://bucket/prefix``):
    ``file://`` is :class:`FileCheckpointStore`; other schemes come from the bundle store plugin
    registered for the scheme (its ``checkpoints`` factory) in ``registry``."""
    from iris.errors import PluginError

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "file":
        return FileCheckpointStore(url)
    plugin = registry.bundle_store(scheme)
    if plugin.checkpoints is None:
        with_checkpoints = ["file", *registry.checkpoint_schemes()]
        raise PluginError(
            f"controller.checkpoint_url: {url!r}: the {scheme}:// store keeps no checkpoints; "
            f"use one of: {', '.join(s + '://' for s in with_checkpoints)}"
        )
    return plugin.checkpoints(url)
