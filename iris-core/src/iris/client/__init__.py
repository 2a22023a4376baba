"""The Python client: ``from iris.client import IrisClient``; inside a task, ``iris_ctx()``."""

from iris.client.client import IrisClient, Job, JobFailed, JobStatus, LogLine, RemoteTraceback, TaskStatus
from iris.client.context import IrisContext, JobInfo, NotInTask, get_job_info, iris_ctx

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

# imported on first use, so `import iris.client` (every `iris run`) does not load the actor system
_LAZY = {"ClusterResolver": "iris.client.resolver", "WorkerLost": "iris.client.worker_pool", "WorkerPool": "iris.client.worker_pool"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'iris.client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
