"""The Python client: ``from iris.client import IrisClient``."""

from iris.client.client import IrisClient, Job, JobFailed, JobStatus, LogLine, RemoteTraceback, TaskStatus

__all__ = ["IrisClient", "Job", "JobFailed", "JobStatus", "LogLine", "RemoteTraceback", "TaskStatus"]
