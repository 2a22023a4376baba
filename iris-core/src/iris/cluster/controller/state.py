"""The controller's records of jobs, tasks, attempts and workers (held in memory), and the
record of what one operation changed.

Only :mod:`iris.cluster.controller.transitions` writes the ``state`` of a job, task or attempt;
the other rooms read it. Reads leave the controller as snapshots (:mod:`.snapshots`), never as
these live records.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from iris.job.records import Endpoint, JobSpec, LogLine
from iris.cluster.types import JobState, ResourceSpec, TaskState

# JobSpec, Endpoint and LogLine cross the wire: they live in iris.job.records, re-exported here
__all__ = ["Attempt", "Changes", "ClusterState", "Endpoint", "Job", "JobSpec", "LogLine", "Task", "WorkerRecord", "worker_key"]


@attrs.define(eq=False)
class Attempt:
    attempt_id: int
    worker_id: str
    state: TaskState = TaskState.ASSIGNED
    exit_code: int | None = None
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    observed: bool = False  # the worker has reported it at least once
    stop_requested: bool = False
    log_offset: int = 0  # bytes of log received
    log_partial: bytes = b""  # an unfinished last line
    done: bool = False  # final state and full log recorded
    oom: bool = False
    ports: dict[str, int] = attrs.field(factory=dict)
    result: bytes = b""  # a callable's outcome as the worker sent it (opaque)
    result_is_error: bool = False


@attrs.define(eq=False)
class Task:
    job_id: str
    index: int
    state: TaskState = TaskState.PENDING
    attempts: list[Attempt] = attrs.field(factory=list)
    failures: int = 0
    preemptions: int = 0
    pending_reason: str = "waiting to be scheduled"
    pending_since: float = 0.0
    exit_code: int | None = None
    error: str = ""
    # why it waits, as a structure (placement.Wait); the text above is what users read
    wait: object = None
    avoid_worker: str = ""  # the worker its last attempt failed on: placed elsewhere if possible

    @property
    def task_id(self) -> str:
        return f"{self.job_id}/{self.index}"  # derived, not stored: memory per finished task

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


@attrs.define(eq=False)
class Job:
    job_id: str
    spec: JobSpec
    submitted_at: float
    tasks: list[Task] = attrs.field(factory=list)
    state: JobState = JobState.PENDING
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""
    kill_requested: bool = False
    keep_children: bool = False  # killed with keep_children: its children outlive it
    logs: list[LogLine] = attrs.field(factory=list)
    children: list[str] = attrs.field(factory=list)
    # tasks by state, kept by transitions.py so the job's state is derived in O(1)
    task_counts: dict[TaskState, int] = attrs.field(factory=dict)

    @property
    def is_gang(self) -> bool:
        return bool(self.spec.coschedule_by) and len(self.tasks) > 1


@attrs.define(eq=False)
class WorkerRecord:
    worker_id: str
    slice_id: str
    cpu: float
    memory_bytes: int
    attributes: dict[str, str]
    last_seen: float
    used_cpu: float = 0.0
    used_memory: int = 0
    version: int = 1
    lost: bool = False
    # restored from the database: gets no new work until it reconciles again
    awaiting_reconnect: bool = False
    # (task_id, attempt_id) -> (task, attempt) for every attempt placed here and not yet done
    attempts: dict[tuple[str, int], tuple[Task, Attempt]] = attrs.field(factory=dict)
    wait_key: str = attrs.field(init=False)  # announced when its desired set changes

    def __attrs_post_init__(self) -> None:
        self.wait_key = worker_key(self.worker_id)

    @property
    def has_accelerator(self) -> bool:
        return self.attributes.get("device", "cpu") not in ("", "cpu")

    def has_device(self, resources: ResourceSpec) -> bool:
        device = resources.device
        if device.kind in ("", "cpu"):
            return True
        return self.attributes.get("device") == device.kind and (
            not device.variant or self.attributes.get("device-variant") == device.variant
        )

    def fits(self, resources: ResourceSpec) -> bool:
        return (
            not self.lost
            and not self.awaiting_reconnect
            and self.has_device(resources)
            and self.cpu - self.used_cpu >= resources.cpu - 1e-9
            and self.memory_bytes - self.used_memory >= resources.memory
        )


@attrs.define(eq=False)
class Changes:
    """What the current operation changed: the rows to write before it is acknowledged, and
    the keys whose waiters to wake (a job id; ``worker:<id>`` for a worker's desired set)."""

    jobs: set[Job] = attrs.field(factory=set)
    tasks: set[Task] = attrs.field(factory=set)
    workers: set[WorkerRecord] = attrs.field(factory=set)
    endpoints: bool = False
    keys: set[str] = attrs.field(factory=set)

    def job(self, job: Job) -> None:
        self.jobs.add(job)
        self.keys.add(job.job_id)

    def task(self, task: Task) -> None:
        self.tasks.add(task)
        self.keys.add(task.job_id)

    def worker_desired(self, worker: WorkerRecord) -> None:
        """The worker's desired set changed: a new version for it to fetch."""
        worker.version += 1
        self.keys.add(worker.wait_key)

    def clear(self) -> None:
        self.jobs.clear()
        self.tasks.clear()
        self.workers.clear()
        self.endpoints = False
        self.keys.clear()


def worker_key(worker_id: str) -> str:
    return f"worker:{worker_id}"


@attrs.define(eq=False)
class ClusterState:
    """Everything the controller knows, shared by its rooms under the facade's lock."""

    jobs: dict[str, Job] = attrs.field(factory=dict)
    workers: dict[str, WorkerRecord] = attrs.field(factory=dict)
    pending: OrderedDict[str, Task] = attrs.field(factory=OrderedDict)  # task_id -> task, FIFO
    # jobs not yet ended (the periodic timeout checks look only at these)
    active: dict[str, Job] = attrs.field(factory=dict)
    changes: Changes = attrs.field(factory=Changes)
