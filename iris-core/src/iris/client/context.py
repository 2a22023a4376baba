"""The task context: what a task knows about itself, read from the environment its worker gave it.

    from iris.client import iris_ctx
    ctx = iris_ctx()                 # raises NotInTask outside an Iris task
    ctx.job_id, ctx.task_index, ctx.num_tasks, ctx.attempt_id, ctx.ports["actor"]
    ctx.client.submit(...)           # a child job of this task's job
    ctx.resolver                     # finds actors of this job tree (ClusterResolver)

``get_job_info()`` gives the same facts as a frozen record, or ``None`` outside a task. Only the
worker's variables are read (``IRIS_JOB_ID``, ``IRIS_TASK_INDEX``, ``IRIS_NUM_TASKS``,
``IRIS_ATTEMPT_ID``, ``IRIS_TASK_ID``, ``IRIS_WORKER_ID``, ``IRIS_CONTROLLER_ADDRESS``,
``IRIS_PORT_<NAME>``, ``IRIS_ADVERTISE_HOST``); a credential the worker passes (``IRIS_TOKEN``) is
carried as ``token``: the task's client presents it to the controller, and its actor clients to
the actors of its job tree (:mod:`iris.actor.auth`); it is never interpreted here.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from iris.client.job_info import JobInfo, get_job_info, root_job_id
from iris.errors import IrisError

if TYPE_CHECKING:
    from iris.client.client import IrisClient
    from iris.client.resolver import ClusterResolver

__all__ = ["IrisContext", "JobInfo", "NotInTask", "get_job_info", "iris_ctx", "root_job_id"]


class NotInTask(IrisError):
    """``iris_ctx()`` was called in a process that no Iris worker started."""


class IrisContext:
    """The running task's view of Iris: its identity, ports, a client, the endpoint registry and a
    resolver. Build it with :func:`iris_ctx`; the client and resolver are made on first use."""

    def __init__(self, info: JobInfo):
        self.info = info
        self._lock = threading.Lock()
        self._client: IrisClient | None = None
        self._resolver: ClusterResolver | None = None

    def __repr__(self) -> str:
        return f"IrisContext(job_id={self.job_id!r}, task_index={self.task_index}, attempt_id={self.attempt_id})"

    job_id = property(lambda self: self.info.job_id)
    task_index = property(lambda self: self.info.task_index)
    num_tasks = property(lambda self: self.info.num_tasks)
    attempt_id = property(lambda self: self.info.attempt_id)
    task_id = property(lambda self: self.info.task_id)
    worker_id = property(lambda self: self.info.worker_id)
    ports = property(lambda self: dict(self.info.ports))
    advertise_host = property(lambda self: self.info.advertise_host)

    def port(self, name: str) -> int:
        """The port the worker allocated under ``name`` (the job's ``ports=[name]``)."""
        return self.info.port(name)

    @property
    def client(self) -> IrisClient:
        """A client of the controller running this task; jobs it submits are children of this
        task's job and inherit its bundle and environment."""
        with self._lock:
            if self._client is None:
                from iris.client.client import IrisClient

                if not self.info.controller_address:
                    raise NotInTask("IRIS_CONTROLLER_ADDRESS is not set: this task was started without a controller")
                # the task's own credential (IRIS_TOKEN), which its actor calls present too
                self._client = IrisClient(self.info.controller_address, token=self.info.token or None)
            return self._client

    @property
    def registry(self) -> IrisClient:
        """The endpoint registry (``register_endpoint`` / ``lookup_endpoint``), on the controller."""
        return self.client

    @property
    def resolver(self) -> ClusterResolver:
        """Finds actors registered by any job of this task's job tree."""
        client = self.client
        with self._lock:
            if self._resolver is None:
                from iris.client.resolver import ClusterResolver

                self._resolver = ClusterResolver(client, namespace=self.info.root_job_id)
            return self._resolver


_context: IrisContext | None = None
_context_lock = threading.Lock()


def iris_ctx() -> IrisContext:
    """The running task's :class:`IrisContext` (one per process). Outside a task: :class:`NotInTask`."""
    global _context
    with _context_lock:
        info = get_job_info()
        if info is None:
            raise NotInTask(
                "iris_ctx(): not running inside an Iris task (IRIS_JOB_ID is not set); "
                "outside a task use IrisClient.remote(url) or IrisClient.local() and ClusterResolver(client, namespace=JOB_ID)"
            )
        if _context is None or _context.info != info:
            _context = IrisContext(info)
        return _context
