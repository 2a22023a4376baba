"""The Python client: ``from iris.client import IrisClient``."""

from iris.client.client import IrisClient, Job, JobStatus, LogLine, TaskStatus

__all__ = ["IrisClient", "Job", "JobStatus", "LogLine", "TaskStatus"]
