"""Controller checkpoints (iris.cluster.controller.checkpoint): consistent snapshots of a live
SQLite database, the file:// store, restoring into an empty state directory, the config fields."""

from __future__ import annotations

import sqlite3
import threading
import zipfile
from pathlib import Path

import pytest

from iris.cluster.controller.checkpoint import (
    Checkpointer,
    CheckpointError,
    FileCheckpointStore,
    checkpoint_name,
    open_checkpoint_store,
    restore_if_empty,
    unpack_snapshot,
    write_snapshot,
)
from iris.config import parse_config
from iris.errors import ConfigError, PluginError
from iris.plugin.registry import PluginRegistry


def _live_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, pair INTEGER NOT NULL)")
    conn.execute("PRAGMA user_version=2")
    return conn


def test_snapshot_of_database_being_written_is_consistent(tmp_path: Path) -> None:
    """Each transaction writes two rows; every snapshot taken meanwhile holds whole transactions
    and passes SQLite's integrity check."""
    db = tmp_path / "controller.db"
    writer = _live_db(db)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            writer.execute("BEGIN")
            writer.execute("INSERT INTO t(pair) VALUES (?)", (n,))
            writer.execute("INSERT INTO t(pair) VALUES (?)", (n,))
            writer.execute("COMMIT")
            n += 1

    thread = threading.Thread(target=write)
    thread.start()
    counts = []
    try:
        for i in range(10):
            out = tmp_path / f"s{i}.ckpt"
            write_snapshot(db, tmp_path, out)
            state = tmp_path / f"restored{i}"
            state.mkdir()
            unpack_snapshot(out, state, str(out))
            conn = sqlite3.connect(state / "controller.db")
            assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT pair) FROM t").fetchone()
            conn.close()
            assert rows[0] == 2 * rows[1]
            counts.append(rows[0])
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert counts[-1] > 0


def test_file_store_saves_restores_latest_and_prunes(tmp_path: Path) -> None:
    store = FileCheckpointStore(f"file://{tmp_path / 'ckpt'}")
    assert store.restore_latest(tmp_path / "x") is None
    names = []
    for i in range(5):
        snap = tmp_path / "snap"
        snap.write_bytes(f"state {i}".encode())
        names.append(checkpoint_name(1_700_000_000 + i))
        assert store.save(snap, names[-1]) == f"{store.url}/{names[-1]}"
    out = tmp_path / "out"
    assert store.restore_latest(out) == f"{store.url}/{names[-1]}"
    assert out.read_bytes() == b"state 4"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(["LATEST", *names[-3:]])


@pytest.mark.parametrize("url", ["file://relative/dir", "file://host/dir", "gs://bucket/x"])
def test_file_store_rejects_url_that_is_not_an_absolute_file_url(url: str) -> None:
    with pytest.raises(CheckpointError, match=f"controller.checkpoint_url: {url!r} is not a file:// URL with an absolute path"):
        FileCheckpointStore(url)


def _state_with_db(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    conn = _live_db(state / "controller.db")
    conn.execute("INSERT INTO t(pair) VALUES (42)")
    conn.close()
    (state / "secret.key").write_text("s" * 64 + "\n")


def test_checkpointer_writes_only_when_state_changed_and_restore_fills_empty_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _state_with_db(state)
    store = FileCheckpointStore(f"file://{tmp_path / 'ckpt'}")
    checkpointer = Checkpointer(store, state, interval=3600)
    first = checkpointer.checkpoint()
    assert first is not None
    assert checkpointer.checkpoint() is None  # nothing changed
    conn = sqlite3.connect(state / "controller.db", isolation_level=None)
    conn.execute("INSERT INTO t(pair) VALUES (43)")
    conn.close()
    second = checkpointer.checkpoint()
    assert second is not None and second != first
    checkpointer.stop(final=True)

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert restore_if_empty(store, fresh) == second
    conn = sqlite3.connect(fresh / "controller.db")
    assert [r[0] for r in conn.execute("SELECT pair FROM t ORDER BY i")] == [42, 43]
    conn.close()
    assert (fresh / "secret.key").read_text() == "s" * 64 + "\n"
    assert (fresh / "secret.key").stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in fresh.iterdir()) == ["controller.db", "secret.key"]
    assert restore_if_empty(store, fresh) is None  # a database is there: never overwritten


def test_restore_damaged_checkpoint_refuses_and_leaves_no_database(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _state_with_db(state)
    store = FileCheckpointStore(f"file://{tmp_path / 'ckpt'}")
    url = Checkpointer(store, state, interval=3600).checkpoint()
    assert url is not None
    path = tmp_path / "ckpt" / url.rsplit("/", 1)[1]
    with zipfile.ZipFile(path) as z:
        db = z.read("controller.db")
    with zipfile.ZipFile(path, "w") as z:  # a well-formed zip whose database is truncated
        z.writestr("controller.db", db[: len(db) // 2] + b"\0" * 100)
        z.writestr("manifest.json", '{"format": 1}')
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=rf"cannot restore the controller's state from {store.url}: checkpoint .* --fresh"):
        restore_if_empty(store, empty)
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize(
    ("controller", "message"),
    [
        ({"checkpoint_url": "/var/ckpt"}, "controller.checkpoint_url: '/var/ckpt': must be a URL such as file:///"),
        ({"checkpoint_url": "file://ckpt"}, "controller.checkpoint_url: 'file://ckpt': a file:// URL needs an absolute path"),
        ({"checkpoint_url": "gs://"}, "controller.checkpoint_url: 'gs://': names no place after gs://"),
        ({"checkpoint_interval_seconds": 0}, "controller.checkpoint_interval_seconds: 0; must be above 0"),
    ],
)
def test_config_bad_checkpoint_fields_name_field_value_and_accepted(controller: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^c.yaml: {message}"):
        parse_config({"provider": {"type": "local"}, "controller": controller}, "c.yaml")


def test_config_checkpoint_fields_parse() -> None:
    config = parse_config(
        {"provider": {"type": "local"}, "controller": {"checkpoint_url": "gs://b/p", "checkpoint_interval_seconds": 5}}, "c"
    )
    assert (config.controller.checkpoint_url, config.controller.checkpoint_interval_seconds) == ("gs://b/p", 5)


def test_registry_opens_file_checkpoints_itself_and_refuses_schemes_without_checkpoints(tmp_path: Path) -> None:
    registry = PluginRegistry(plugins=[])
    assert isinstance(open_checkpoint_store(registry, f"file://{tmp_path}"), FileCheckpointStore)
    with pytest.raises(PluginError, match="unknown bundle store scheme 'mem'"):
        open_checkpoint_store(registry, "mem://x/y")
