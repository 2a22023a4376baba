"""What a task knows about itself, as plain data read from the environment its worker gave it
(``get_job_info()``; ``None`` outside a task). See :mod:`iris.client.context` for ``iris_ctx()``."""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

from iris.errors import IrisError

__all__ = ["JobInfo", "get_job_info", "root_job_id"]

_PORT_PREFIX = "IRIS_PORT_"


@attrs.frozen
class JobInfo:
    """The facts of the running task, as plain data."""

    job_id: str
    task_index: int
    num_tasks: int
    attempt_id: int
    task_id: str
    worker_id: str
    controller_address: str
    ports: Mapping[str, int]
    advertise_host: str = "127.0.0.1"
    token: str = attrs.field(default="", repr=False)

    def port(self, name: str) -> int:
        """The port the worker allocated under ``name`` (the job's ``ports=[name]``)."""
        try:
            return self.ports[name.lower()]
        except KeyError:
            have = ", ".join(sorted(self.ports)) or "none"
            raise IrisError(
                f"task has no port named {name!r} (it has: {have}); submit the job with ports=[{name!r}]"
            ) from None

    @property
    def root_job_id(self) -> str:
        """The top-level job of this task's tree (``/user/name``): the namespace its actors share."""
        return root_job_id(self.job_id)


def root_job_id(job_id: str) -> str:
    """``/user/name/child/grandchild`` -> ``/user/name``; a job without a user (``/name/...``) -> ``/name``."""
    parts = [p for p in job_id.split("/") if p]
    if len(parts) <= 2:
        return "/" + "/".join(parts)
    return "/" + "/".join(parts[:2])


def get_job_info(environ: Mapping[str, str] | None = None) -> JobInfo | None:
    """This task's :class:`JobInfo`, or ``None`` when not running inside an Iris task."""
    env = os.environ if environ is None else environ
    job_id = env.get("IRIS_JOB_ID", "")
    if not job_id:
        return None
    ports = {}
    for key, value in env.items():
        if key.startswith(_PORT_PREFIX) and value.isdigit():
            ports[key[len(_PORT_PREFIX):].lower()] = int(value)
    return JobInfo(
        job_id=job_id,
        task_index=int(env.get("IRIS_TASK_INDEX", "0") or 0),
        num_tasks=int(env.get("IRIS_NUM_TASKS", "1") or 1),
        attempt_id=int(env.get("IRIS_ATTEMPT_ID", "0") or 0),
        task_id=env.get("IRIS_TASK_ID", ""),
        worker_id=env.get("IRIS_WORKER_ID", ""),
        controller_address=env.get("IRIS_CONTROLLER_ADDRESS", ""),
        ports=ports,
        advertise_host=env.get("IRIS_ADVERTISE_HOST", "") or "127.0.0.1",
        token=env.get("IRIS_TOKEN", ""),
    )
