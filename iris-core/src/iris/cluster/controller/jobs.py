"""Admission and the job tree: validate and launch jobs, resolve ids, kill, end jobs (and what
ending a job means for its children and endpoints), and the run and scheduling timeouts."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from iris.cluster.controller import transitions
from iris.cluster.controller.endpoints import Endpoints
from iris.cluster.controller.state import ClusterState, Job, JobSpec, Task
from iris.cluster.tpu import tpu_topology
from iris.cluster.types import TaskState
from iris.errors import InvalidRequest, IrisError, JobNotFound, ResourceError
from iris.job.validation import check_job_spec, show


class AlreadyExists(IrisError):
    pass


def expand_tpu(spec: JobSpec) -> JobSpec:
    """A multi-host TPU type runs one task per host, together on one slice (``tpu-name``)."""
    device = spec.resources.device
    if device.kind != "tpu" or not device.variant:
        return spec
    try:
        topology = tpu_topology(device.variant)
    except ResourceError as exc:
        raise InvalidRequest(str(exc)) from None
    if topology.hosts == 1:
        return spec
    if spec.replicas not in (1, topology.hosts):
        raise InvalidRequest(
            f"replicas: {device.variant} has {topology.hosts} hosts and runs one task per host; "
            f"use replicas {topology.hosts} (or leave it at 1), not {spec.replicas}"
        )
    return attrs.evolve(spec, replicas=topology.hosts, coschedule_by=spec.coschedule_by or "tpu-name")


class Jobs:
    """The job tree and every change of a job's fate (called with the controller's lock held)."""

    def __init__(self, state: ClusterState, endpoints: Endpoints, clock: Callable[[], float]):
        self._state = state
        self._endpoints = endpoints
        self._clock = clock
        # a task whose attempt ended: the worker that ran it is told to stop it (set by the facade)
        self.stop_attempt: Callable[[Task], None] = lambda task: None

    def launch(self, spec: JobSpec) -> Job:
        check_job_spec(spec)  # the same checks the RPC layer and the client make
        spec = expand_tpu(spec)
        state = self._state
        parent = None
        if spec.parent_job_id:
            parent = state.jobs.get(spec.parent_job_id)
            if parent is None:
                raise InvalidRequest(f"parent job {show(spec.parent_job_id)} not found")
            if parent.state.is_terminal:
                raise InvalidRequest(f"parent job {parent.job_id} is {parent.state.value}; it cannot start children")
            job_id = f"{parent.job_id}/{spec.name}"
            # children inherit the parent's bundle and environment (their own values win; extras
            # and packages are inherited as a whole unless the child sets its own)
            inherited = parent.spec.environment
            env = {**inherited.env, **spec.environment.env}
            own_python = bool(spec.environment.extras or spec.environment.pip_packages)
            spec = attrs.evolve(
                spec,
                bundle_id=spec.bundle_id or parent.spec.bundle_id,
                environment=attrs.evolve(
                    spec.environment,
                    env=env,
                    extras=list(spec.environment.extras if own_python else inherited.extras),
                    pip_packages=list(spec.environment.pip_packages if own_python else inherited.pip_packages),
                ),
                user=spec.user or parent.spec.user,
            )
        else:
            job_id = f"/{spec.user}/{spec.name}" if spec.user else f"/{spec.name}"
        if job_id in state.jobs:
            existing = state.jobs[job_id]
            raise AlreadyExists(f"job {job_id} already exists (state {existing.state.value}); choose another job name")
        now = self._clock()
        job = Job(job_id=job_id, spec=spec, submitted_at=now)
        transitions.new_job(job, now, state.changes)
        state.jobs[job_id] = job
        state.active[job_id] = job
        if parent is not None:
            parent.children.append(job_id)
            state.changes.keys.add(parent.job_id)  # a log reader of the tree now reads this child too
        for task in job.tasks:
            state.pending[task.task_id] = task
        return job

    def resolve(self, job_id: str) -> Job:
        jobs = self._state.jobs
        job = jobs.get(job_id) or jobs.get(f"/{job_id}")
        if job is not None:
            return job
        if job_id and not job_id.startswith("/"):
            matches = [j for j in jobs.values() if j.job_id.endswith(f"/{job_id}")]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                names = ", ".join(sorted(j.job_id for j in matches)[:5])
                raise InvalidRequest(f"job {show(job_id)} is ambiguous: {names}; give the full id")
        raise JobNotFound(f"job {show(job_id)} not found")

    def descendants(self, job: Job) -> list[Job]:
        jobs = self._state.jobs
        out: list[Job] = []
        stack = list(reversed(job.children))
        while stack:
            child = jobs[stack.pop()]
            out.append(child)
            stack.extend(reversed(child.children))
        return out

    def kill(self, job: Job, reason: str, *, keep_children: bool = False) -> None:
        if not keep_children:
            for child_id in job.children:
                self.kill(self._state.jobs[child_id], f"parent job {job.job_id} was killed")
        if job.state.is_terminal:
            return
        transitions.kill_job(job, reason, keep_children, self._state.changes)
        for task in job.tasks:
            if not task.state.is_terminal:
                self.stop_task(job, task, TaskState.KILLED, reason)
        self.update(job)

    def stop_task(self, job: Job, task: Task, state: TaskState, reason: str) -> None:
        """End a task now and ask its worker to stop what runs."""
        attempt = transitions.stop_task(job, task, state, reason, self._state.changes)
        self._state.pending.pop(task.task_id, None)
        if attempt is not None:
            self.stop_attempt(task)

    def attempt_ended(self, job: Job, task: Task) -> None:
        """A task's attempt ended: what it registered is no longer there."""
        self._endpoints.drop_task(job.job_id, task.index)

    def update(self, job: Job) -> None:
        """Derive the job's state; when it ends, stop what still runs, end its children (unless
        kept) and drop its endpoints."""
        ended = transitions.update_job(job, self._clock(), self._state.changes)
        if ended is None:
            return
        self._state.active.pop(job.job_id, None)
        for task in job.tasks:  # the job is over: stop what still runs
            if not task.state.is_terminal:
                self.stop_task(job, task, TaskState.KILLED, f"job {ended.value}")
        transitions.forget_counts(job)
        if not job.keep_children:
            for child_id in job.children:
                self.kill(self._state.jobs[child_id], f"parent job {job.job_id} ended {ended.value}")
        self._endpoints.drop_job(job.job_id)

    def enforce_timeouts(self, now: float) -> bool:
        """Fail jobs past their run timeout and tasks past their scheduling timeout. True if any."""
        changed = False
        for job in list(self._state.active.values()):
            spec = job.spec
            if spec.timeout_seconds and job.started_at and now - job.started_at > spec.timeout_seconds:
                reason = f"timed out after {spec.timeout_seconds:g}s"
                job.error = job.error or reason
                for task in job.tasks:
                    if not task.state.is_terminal:
                        self.stop_task(job, task, TaskState.FAILED, reason)
                self.update(job)
                changed = True
                continue
            if spec.scheduling_timeout_seconds and job.task_counts.get(TaskState.PENDING):
                expired = False
                for task in job.tasks:
                    if (
                        task.state is TaskState.PENDING
                        and task.task_id in self._state.pending
                        and now - task.pending_since > spec.scheduling_timeout_seconds
                    ):
                        reason = f"not scheduled within {spec.scheduling_timeout_seconds:g}s: {task.pending_reason}"
                        self.stop_task(job, task, TaskState.UNSCHEDULABLE, reason)
                        job.error = job.error or f"task {task.index}: {reason}"
                        expired = True
                if expired:
                    self.update(job)
                    changed = True
        return changed


__all__ = ["AlreadyExists", "InvalidRequest", "Jobs", "expand_tpu"]
