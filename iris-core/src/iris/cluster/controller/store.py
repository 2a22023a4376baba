"""Durable controller state in SQLite (WAL, one writer).

The controller keeps its working set in memory and writes every change through to this store
before it acknowledges anything (a launched job's id, a worker's log or outcome). A controller
killed at any instant reopens the same file and finds every job, task, attempt, worker,
endpoint and log line it had acknowledged.

Layout (schema 3): a job's spec is written once; its small mutable header, each task and each
attempt are rows of their own, so a change costs what changed, not the size of the job. Log
lines are rows, each with its stream (schema 3); workers, endpoints and the bundle index too.
The schema version is ``PRAGMA user_version``; migrations only move forward (schema 1 kept one
JSON document per job; schema 2's log lines had no stream: they read as stdout, except the
environment's lines, which carried the ``[iris env] `` prefix then).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cattrs

from iris.cluster.constraints import Constraint, Op
from iris.cluster.controller.state import Attempt, Endpoint, Job, JobSpec, LogLine, Task, WorkerRecord
from iris.cluster.types import JobState, TaskState
from iris.errors import IrisError

_SCHEMA_1 = """
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
"""

_SCHEMA_2 = """
CREATE TABLE job_rows (
    job_id TEXT PRIMARY KEY, submitted_at REAL NOT NULL, spec TEXT NOT NULL, header TEXT NOT NULL
);
CREATE TABLE tasks (job_id TEXT NOT NULL, idx INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
CREATE TABLE attempts (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, attempt_id INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (job_id, idx, attempt_id)
) WITHOUT ROWID;
"""


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
_dumps = json.JSONEncoder(separators=(",", ":")).encode


# --- rows ---------------------------------------------------------------------------------


def spec_doc(spec: JobSpec) -> str:
    return _dumps(_conv.unstructure(spec))


def header_doc(job: Job) -> str:
    return _dumps(
        [job.state.value, job.started_at, job.finished_at, job.error, job.kill_requested, job.keep_children]
    )


def task_doc(task: Task) -> str:
    return _dumps([task.state.value, task.failures, task.preemptions, task.pending_reason, task.exit_code, task.error])


def attempt_doc(a: Attempt) -> str:
    return _dumps(
        [a.worker_id, a.state.value, a.exit_code, a.error, a.started_at, a.finished_at, a.observed, a.stop_requested,
         a.log_offset, base64.b64encode(a.log_partial).decode() if a.log_partial else "", a.done, a.oom, a.ports,
         base64.b64encode(a.result).decode() if a.result else "", a.result_is_error]
    )


def _attempt_from(attempt_id: int, doc: str) -> Attempt:
    (worker_id, state, exit_code, error, started_at, finished_at, observed, stop_requested, log_offset, partial, done, oom,
     ports, *rest) = json.loads(doc)
    result, result_is_error = (rest + ["", False])[:2]  # rows written before results were kept have neither
    return Attempt(
        attempt_id=attempt_id, worker_id=worker_id, state=TaskState(state), exit_code=exit_code, error=error,
        started_at=started_at, finished_at=finished_at, observed=observed, stop_requested=stop_requested,
        log_offset=log_offset, log_partial=base64.b64decode(partial) if partial else b"", done=done, oom=oom, ports=ports,
        result=base64.b64decode(result) if result else b"", result_is_error=bool(result_is_error),
    )


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Split each schema-1 job document into a spec, a header, and a row per task and attempt."""
    for statement in _SCHEMA_2.split(";"):
        if statement.strip():
            conn.execute(statement)
    for job_id, submitted_at, doc in conn.execute("SELECT job_id, submitted_at, doc FROM jobs").fetchall():
        data = json.loads(doc)
        tasks = data.pop("tasks", [])
        spec = _conv.structure(data["spec"], JobSpec)
        job = Job(job_id=job_id, spec=spec, submitted_at=submitted_at, state=JobState(data["state"]),
                  started_at=data.get("started_at", 0.0), finished_at=data.get("finished_at", 0.0),
                  error=data.get("error", ""), kill_requested=data.get("kill_requested", False),
                  keep_children=data.get("keep_children", False))
        conn.execute("INSERT INTO job_rows VALUES (?, ?, ?, ?)", (job_id, submitted_at, spec_doc(spec), header_doc(job)))
        for t in tasks:
            attempts = t.pop("attempts", [])
            task = Task(job_id=job_id, index=t["index"], state=TaskState(t["state"]), failures=t.get("failures", 0),
                        preemptions=t.get("preemptions", 0), pending_reason=t.get("pending_reason", ""),
                        exit_code=t.get("exit_code"), error=t.get("error", ""))
            conn.execute("INSERT INTO tasks VALUES (?, ?, ?)", (job_id, task.index, task_doc(task)))
            for a in attempts:
                attempt = _conv.structure(a, Attempt)
                conn.execute("INSERT INTO attempts VALUES (?, ?, ?, ?)", (job_id, task.index, attempt.attempt_id, attempt_doc(attempt)))
    conn.execute("DROP TABLE jobs")


#: A log line's stream in the ``logs`` table: the values of the wire's LogStream.
_STREAM_CODES = {"stdout": 0, "stderr": 1, "env": 2}
_STREAM_NAMES = {code: name for name, code in _STREAM_CODES.items()}

# 3: log lines carry their stream. Before, the environment's lines were told apart by a prefix
# of their text (substr is 1-based: the text after the 11 characters of "[iris env] ").
_MIGRATE_2_TO_3 = """
ALTER TABLE logs ADD COLUMN stream INTEGER NOT NULL DEFAULT 0;
UPDATE logs SET stream = 2, data = substr(data, 12) WHERE substr(data, 1, 11) = '[iris env] '
"""

MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    _SCHEMA_1,  # 1: the initial schema
    _migrate_1_to_2,  # 2: a row per task and attempt
    _MIGRATE_2_TO_3,  # 3: a stream per log line
]
SCHEMA_VERSION = len(MIGRATIONS)


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


def _make_private(path: Path) -> None:
    """The database holds every job's environment and every log line: readable by this user
    only (0600). SQLite gives its -wal and -shm files the database's mode; older files are fixed."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm"):
        try:
            os.chmod(path.with_name(path.name + suffix), 0o600)
        except FileNotFoundError:
            pass


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        check_database(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _make_private(self.path)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self._jobs_written: set[str] = {r[0] for r in self._conn.execute("SELECT job_id FROM job_rows")}

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                migration = MIGRATIONS[number]
                if callable(migration):
                    migration(self._conn)
                else:
                    for statement in migration.split(";"):
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
        tasks: Iterable[Task],
        logs: Iterable[tuple[str, int, LogLine]],
        workers: Iterable[WorkerRecord],
        endpoints: list[Endpoint] | None,
    ) -> None:
        """Write changed job headers (and the spec of a new job), changed tasks with their
        attempts, new log lines, changed workers and (if given) all endpoints, in one transaction."""
        conn = self._conn
        new_jobs = []
        headers = []
        for j in jobs:
            if j.job_id in self._jobs_written:
                headers.append((header_doc(j), j.job_id))
            else:
                new_jobs.append((j.job_id, j.submitted_at, spec_doc(j.spec), header_doc(j)))
        task_rows = []
        attempt_rows = []
        for t in tasks:
            task_rows.append((t.job_id, t.index, task_doc(t)))
            for a in t.attempts:
                attempt_rows.append((t.job_id, t.index, a.attempt_id, attempt_doc(a)))
        conn.execute("BEGIN")
        try:
            if new_jobs:
                conn.executemany("INSERT INTO job_rows(job_id, submitted_at, spec, header) VALUES (?, ?, ?, ?)", new_jobs)
            if headers:
                conn.executemany("UPDATE job_rows SET header = ? WHERE job_id = ?", headers)
            if task_rows:
                conn.executemany("INSERT OR REPLACE INTO tasks(job_id, idx, doc) VALUES (?, ?, ?)", task_rows)
            if attempt_rows:
                conn.executemany("INSERT OR REPLACE INTO attempts(job_id, idx, attempt_id, doc) VALUES (?, ?, ?, ?)", attempt_rows)
            conn.executemany(
                "INSERT OR IGNORE INTO logs(job_id, seq, task_index, attempt_id, ts, data, stream) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(job_id, seq, ln.task_index, ln.attempt_id, ln.timestamp, ln.data, _STREAM_CODES.get(ln.stream, 0))
                 for job_id, seq, ln in logs],  # fmt: skip
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
        self._jobs_written.update(row[0] for row in new_jobs)

    def add_bundle(self, bundle_id: str, size: int, created_at: float) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO bundles(bundle_id, size, created_at) VALUES (?, ?, ?)", (bundle_id, size, created_at)
        )

    # --- reads --------------------------------------------------------------------------

    def load_jobs(self) -> list[Job]:
        """Every job with its tasks, attempts and log lines, in submission order, children linked."""
        conn = self._conn
        jobs: list[Job] = []
        by_id: dict[str, Job] = {}
        for job_id, submitted_at, spec, header in conn.execute(
            "SELECT job_id, submitted_at, spec, header FROM job_rows ORDER BY submitted_at, job_id"
        ):
            state, started_at, finished_at, error, kill_requested, keep_children = json.loads(header)
            job = Job(
                job_id=job_id, spec=_conv.structure(json.loads(spec), JobSpec), submitted_at=submitted_at,
                state=JobState(state), started_at=started_at, finished_at=finished_at, error=error,
                kill_requested=kill_requested, keep_children=keep_children,
            )
            jobs.append(job)
            by_id[job_id] = job
        tasks: dict[tuple[str, int], Task] = {}
        for job_id, idx, doc in conn.execute("SELECT job_id, idx, doc FROM tasks ORDER BY job_id, idx"):
            job = by_id.get(job_id)
            if job is None:
                continue
            state, failures, preemptions, pending_reason, exit_code, error = json.loads(doc)
            task = Task(job_id=job_id, index=idx, state=TaskState(state), failures=failures, preemptions=preemptions,
                        pending_reason=pending_reason, exit_code=exit_code, error=error)
            job.tasks.append(task)
            tasks[(job_id, idx)] = task
        for job_id, idx, attempt_id, doc in conn.execute(
            "SELECT job_id, idx, attempt_id, doc FROM attempts ORDER BY job_id, idx, attempt_id"
        ):
            task = tasks.get((job_id, idx))
            if task is not None:
                task.attempts.append(_attempt_from(attempt_id, doc))
        names = _STREAM_NAMES
        for job_id, task_index, attempt_id, ts, data, stream in conn.execute(
            "SELECT job_id, task_index, attempt_id, ts, data, stream FROM logs ORDER BY job_id, seq"
        ):
            job = by_id.get(job_id)
            if job is not None:
                job.logs.append(LogLine(task_index, attempt_id, ts, data, names.get(stream, "stdout")))
        for job in jobs:
            parent = by_id.get(job.spec.parent_job_id) if job.spec.parent_job_id else None
            if parent is not None:
                parent.children.append(job.job_id)
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
