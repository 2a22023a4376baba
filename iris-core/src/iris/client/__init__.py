"""The Python client: ``from iris.client import IrisClient``; inside a task, ``iris_ctx()``."""

from iris.client.client import IrisClient, Job, JobFailed, JobStatus, LogLine, RemoteTraceback, TaskStatus
from iris.client.context import IrisContext, JobInfo, NotInTask, get_job_info, iris_ctx
from iris.client.resolver import ClusterResolver
from iris.client.worker_pool import WorkerLost, WorkerPool

__all__ = [
    "ClusterResolver",
    "IrisClient",
    "IrisContext",
    "Job",
    "JobFailed",
    "JobInfo",
    "JobStatus",
    "LogLine",
    "NotInTask",
    "RemoteTraceback",
    "TaskStatus",
    "WorkerLost",
    "WorkerPool",
    "get_job_info",
    "iris_ctx",
]
