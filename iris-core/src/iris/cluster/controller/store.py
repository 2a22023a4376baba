"""Durable controller state in SQLite (WAL, one writer).

The controller keeps its working set in memory and writes every change through to this store
before it acknowledges anything (a launched job's id, a worker's log or outcome). A controller
killed at any instant reopens the same file and finds every job, task, attempt, worker,
endpoint and log line it had acknowledged.

Layout: one JSON document per job (spec, tasks, attempts; not the logs), one row per log line,
one document per worker, one row per endpoint, and the bundle index. The schema version is
``PRAGMA user_version``; migrations only move forward.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cattrs

from iris.cluster.constraints import Constraint, Op
from iris.cluster.controller.state import Endpoint, Job, LogLine, WorkerRecord
from iris.errors import IrisError

MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE jobs (job_id TEXT PRIMARY KEY, submitted_at REAL NOT NULL, doc TEXT NOT NULL);
    CREATE TABLE logs (
        job_id TEXT NOT NULL, seq INTEGER NOT NULL, task_index INTEGER NOT NULL, attempt_id INTEGER NOT NULL,
        ts REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE workers (worker_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
    CREATE TABLE endpoints (
        name TEXT NOT NULL, job_id TEXT NOT NULL, task_index INTEGER NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (name, job_id, task_index)
    );
    CREATE TABLE bundles (bundle_id TEXT PRIMARY KEY, size INTEGER NOT NULL, created_at REAL NOT NULL);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StateError(IrisError):
    """The state database cannot be used (corrupt, too new); nothing was changed."""


def _converter() -> cattrs.Converter:
    c = cattrs.Converter()
    c.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode())
    c.register_structure_hook(bytes, lambda v, _: base64.b64decode(v))
    c.register_unstructure_hook(Constraint, lambda k: {"key": k.key, "op": k.op.value, "values": list(k.values)})
    c.register_structure_hook(Constraint, lambda v, _: Constraint(v["key"], Op(v["op"]), tuple(v["values"])))
    return c


_conv = _converter()
_JOB_SKIP = ("logs",)


def job_to_doc(job: Job) -> str:
    data = _conv.unstructure(job)
    for key in _JOB_SKIP:
        data.pop(key, None)
    return json.dumps(data, separators=(",", ":"))


def job_from_doc(doc: str) -> Job:
    data = json.loads(doc)
    data["logs"] = []
    return _conv.structure(data, Job)


def check_database(path: Path) -> None:
    """Refuse, without writing anything, a file that is not a usable Iris state database."""
    if not path.exists():
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StateError(
            f"state database {path} is unreadable ({exc}); it may be corrupt. Move it aside to keep it, "
            "or start with --fresh to begin with empty state"
        ) from None
    if result != "ok":
        raise StateError(f"state database {path} failed its integrity check ({result}); move it aside or start with --fresh")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"state database {path} has schema version {version}, newer than this controller understands "
            f"({SCHEMA_VERSION}); run a newer Iris, or start with --fresh"
        )


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        check_database(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version={number + 1}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._conn.close()

    # --- writes (one transaction per controller operation) -----------------------------

    def write(
        self,
        jobs: Iterable[Job],
        logs: Iterable[tuple[str, int, LogLine]],
        workers: Iterable[WorkerRecord],
        endpoints: list[Endpoint] | None,
    ) -> None:
        """Write the changed jobs, new log lines, changed workers and (if given) all endpoints."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT INTO jobs(job_id, submitted_at, doc) VALUES (?, ?, ?) "
                "ON CONFLICT(job_id) DO UPDATE SET doc = excluded.doc",
                [(j.job_id, j.submitted_at, job_to_doc(j)) for j in jobs],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO logs(job_id, seq, task_index, attempt_id, ts, data) VALUES (?, ?, ?, ?, ?, ?)",
                [(job_id, seq, ln.task_index, ln.attempt_id, ln.timestamp, ln.data) for job_id, seq, ln in logs],
            )
            conn.executemany(
                "INSERT INTO workers(worker_id, doc) VALUES (?, ?) ON CONFLICT(worker_id) DO UPDATE SET doc = excluded.doc",
                [(w.worker_id, json.dumps(_worker_doc(w))) for w in workers],
            )
            if endpoints is not None:
                conn.execute("DELETE FROM endpoints")
                conn.executemany(
                    "INSERT INTO endpoints(name, job_id, task_index, doc) VALUES (?, ?, ?, ?)",
                    [(e.name, e.job_id, e.task_index, json.dumps(_conv.unstructure(e))) for e in endpoints],
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def add_bundle(self, bundle_id: str, size: int, created_at: float) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO bundles(bundle_id, size, created_at) VALUES (?, ?, ?)", (bundle_id, size, created_at)
        )

    # --- reads --------------------------------------------------------------------------

    def load_jobs(self) -> list[Job]:
        jobs = [job_from_doc(doc) for (doc,) in self._conn.execute("SELECT doc FROM jobs ORDER BY submitted_at, job_id")]
        by_id = {j.job_id: j for j in jobs}
        for job_id, task_index, attempt_id, ts, data in self._conn.execute(
            "SELECT job_id, task_index, attempt_id, ts, data FROM logs ORDER BY job_id, seq"
        ):
            job = by_id.get(job_id)
            if job is not None:
                job.logs.append(LogLine(task_index, attempt_id, ts, data))
        return jobs

    def load_workers(self) -> list[dict[str, Any]]:
        return [json.loads(doc) for (doc,) in self._conn.execute("SELECT doc FROM workers")]

    def load_endpoints(self) -> list[Endpoint]:
        return [_conv.structure(json.loads(doc), Endpoint) for (doc,) in self._conn.execute("SELECT doc FROM endpoints")]


def _worker_doc(w: WorkerRecord) -> dict[str, Any]:
    return {
        "worker_id": w.worker_id,
        "slice_id": w.slice_id,
        "cpu": w.cpu,
        "memory_bytes": w.memory_bytes,
        "attributes": w.attributes,
        "version": w.version,
        "lost": w.lost,
    }
