"""The state database: a row per task and attempt (a change costs what changed, not the size of
its job), log lines with their stream, and a schema-1 database (one document per job) migrated
forward untouched in meaning."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from iris.cluster.controller.controller import Controller, ObservedAttempt, WorkerIdentity
from iris.cluster.controller.state import JobSpec
from iris.cluster.controller.store import _SCHEMA_1, SCHEMA_VERSION, Store
from iris.cluster.types import Entrypoint, JobState, ResourceSpec, TaskState
from iris.runtime.output_log import ENV, STDERR, STDOUT, encode, encode_text

GB = 1 << 30


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_store_big_job_keeps_a_row_per_task_and_attempt_and_one_spec(tmp_path: Path) -> None:
    db = tmp_path / "controller.db"
    controller = Controller(store=Store(db))
    worker = WorkerIdentity("w0", cpu=1000, memory_bytes=1000 * GB)
    controller.reconcile(worker, [], 0)
    job_id = controller.launch_job(JobSpec(name="big", entrypoint=Entrypoint.from_command("true"), resources=ResourceSpec(cpu=1), replicas=500))
    result = controller.reconcile(worker, [], 0)
    assert len(result.desired) == 500
    spec_size = rows(db, "SELECT length(spec) FROM job_rows")[0][0]
    before = rows(db, "SELECT idx, doc FROM tasks WHERE job_id = ?".replace("?", repr(job_id)))
    # one task ends: its own row changes, no other task's
    done = ObservedAttempt(f"{job_id}/7", 0, TaskState.SUCCEEDED, exit_code=0, log_complete=True)
    controller.reconcile(worker, [done], result.version)
    after = rows(db, "SELECT idx, doc FROM tasks WHERE job_id = ?".replace("?", repr(job_id)))
    assert len(after) == 500 and rows(db, "SELECT count(*) FROM attempts") == [(500,)]
    assert [i for (i, a), (_, b) in zip(before, after) if a != b] == [7]
    assert "tasks" not in json.loads(rows(db, "SELECT spec FROM job_rows")[0][0])
    assert rows(db, "SELECT length(spec) FROM job_rows")[0][0] == spec_size  # the spec is written once
    reopened = Controller(store=Store(db))
    job = reopened.get_job(job_id)
    assert job.tasks[7].state is TaskState.SUCCEEDED and job.tasks[8].state is TaskState.ASSIGNED
    assert job.state is JobState.RUNNING


def test_store_schema_1_database_is_migrated_with_tasks_attempts_and_children(tmp_path: Path) -> None:
    db = tmp_path / "controller.db"
    conn = sqlite3.connect(db)
    conn.executescript(_SCHEMA_1)
    spec = {"name": "parent", "entrypoint": {"argv": ["true"], "callable_bytes": ""}, "replicas": 1}
    child_spec = {**spec, "name": "child", "parent_job_id": "/parent"}
    attempt = {"attempt_id": 0, "worker_id": "w0", "state": "SUCCEEDED", "exit_code": 0, "done": True, "log_partial": ""}
    task = {"job_id": "/parent", "index": 0, "state": "SUCCEEDED", "attempts": [attempt], "failures": 0, "exit_code": 0}
    parent = {"job_id": "/parent", "spec": spec, "submitted_at": 1.0, "tasks": [task], "state": "SUCCEEDED", "children": ["/parent/child"]}
    child = {"job_id": "/parent/child", "spec": child_spec, "submitted_at": 2.0,
             "tasks": [{"job_id": "/parent/child", "index": 0, "state": "PENDING", "attempts": []}], "state": "PENDING"}
    for doc in (parent, child):
        conn.execute("INSERT INTO jobs VALUES (?, ?, ?)", (doc["job_id"], doc["submitted_at"], json.dumps(doc)))
    conn.execute("INSERT INTO logs VALUES ('/parent', 0, 0, 0, 1.4, '[iris env] using the cached environment')")
    conn.execute("INSERT INTO logs VALUES ('/parent', 1, 0, 0, 1.5, 'hello')")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    controller = Controller(store=Store(db))
    assert rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    job = controller.get_job("/parent")
    assert job.state is JobState.SUCCEEDED and job.children == ("/parent/child",)
    assert job.tasks[0].attempts[0].worker_id == "w0" and job.tasks[0].attempts[0].state is TaskState.SUCCEEDED
    lines, _, _, _ = controller.read_logs("/parent", "")
    # lines from before streams: stdout, except the environment's (told apart by their prefix then)
    assert [(line.stream, line.data) for _, line in lines] == [("env", "using the cached environment"), ("stdout", "hello")]
    assert controller.get_job("/parent/child").tasks[0].state is TaskState.PENDING


def test_store_log_lines_keep_their_stream_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "controller.db"
    controller = Controller(store=Store(db))
    worker = WorkerIdentity("w0", cpu=1000, memory_bytes=1000 * GB)
    controller.reconcile(worker, [], 0)
    job_id = controller.launch_job(JobSpec(name="streams", entrypoint=Entrypoint.from_command("true"), resources=ResourceSpec(cpu=1)))
    result = controller.reconcile(worker, [], 0)
    data = encode_text(ENV, "building") + encode(STDOUT, b"out") + encode(STDERR, b"err") + encode(STDERR, b"tail", complete=False)
    done = ObservedAttempt(f"{job_id}/0", 0, TaskState.SUCCEEDED, exit_code=0, log_data=data, log_complete=True)
    controller.reconcile(worker, [done], result.version)
    expected = [("env", "building"), ("stdout", "out"), ("stderr", "err"), ("stderr", "tail")]
    lines, _, _, _ = controller.read_logs(job_id, "")
    assert [(line.stream, line.data) for _, line in lines] == expected
    lines, _, _, _ = Controller(store=Store(db)).read_logs(job_id, "")
    assert [(line.stream, line.data) for _, line in lines] == expected
    assert rows(db, "SELECT stream FROM logs ORDER BY seq") == [(2,), (0,), (1,), (1,)]


def test_store_keeps_a_jobs_extras_and_pip_packages_and_reads_older_specs_without_them(tmp_path: Path) -> None:
    from iris.cluster.types import EnvironmentSpec

    db = tmp_path / "controller.db"
    environment = EnvironmentSpec(env={"A": "1"}, extras=["marin:cpu"], pip_packages=["numpy>=2"])
    job_id = Controller(store=Store(db)).launch_job(JobSpec(name="env", entrypoint=Entrypoint.from_command("true"), environment=environment))
    assert Controller(store=Store(db)).get_job(job_id).spec.environment == environment
    # a spec written before pip_packages existed
    conn = sqlite3.connect(db)
    spec = json.loads(conn.execute("SELECT spec FROM job_rows").fetchone()[0])
    del spec["environment"]["pip_packages"]
    conn.execute("UPDATE job_rows SET spec = ?", (json.dumps(spec),))
    conn.commit()
    conn.close()
    older = Controller(store=Store(db)).get_job(job_id).spec.environment
    assert (older.extras, older.pip_packages) == (["marin:cpu"], [])
