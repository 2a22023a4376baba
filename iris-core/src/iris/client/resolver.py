"""ClusterResolver: finds actors through the controller's endpoint registry.

Endpoints are namespaced by job: a resolver sees only those registered by jobs in its namespace
(a job id and its descendants). Inside a task the default namespace is the task's top-level job,
so a coordinator and its workers, children of one driver job, find each other. An endpoint is
visible only while the job that registered it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iris.actor.resolver import ResolvedEndpoint
from iris.client.job_info import get_job_info
from iris.errors import IrisError

if TYPE_CHECKING:
    from iris.client.client import IrisClient

__all__ = ["ClusterResolver"]


class ClusterResolver:
    """``ClusterResolver(client, namespace=JOB_ID)``; inside a task both default (``iris_ctx()``)."""

    def __init__(self, client: IrisClient | None = None, *, namespace: str | None = None):
        if client is None or namespace is None:
            info = get_job_info()
            if info is None:
                missing = "a client and a namespace" if client is None else "a namespace"
                raise IrisError(
                    f"ClusterResolver outside an Iris task needs {missing}: "
                    "ClusterResolver(client, namespace=job.job_id) (the job whose actors to find)"
                )
            if client is None:
                from iris.client.client import IrisClient

                client = IrisClient(info.controller_address)
            if namespace is None:
                namespace = info.root_job_id
        self.client = client
        self.namespace = "/" + namespace.strip("/")

    def __repr__(self) -> str:
        return f"ClusterResolver(namespace={self.namespace!r})"

    def _in_namespace(self, job_id: str) -> bool:
        return job_id == self.namespace or job_id.startswith(self.namespace + "/")

    def resolve(self, name: str) -> list[ResolvedEndpoint]:
        endpoints = [
            ResolvedEndpoint(e.address, e.task_index, e.job_id, dict(e.metadata))
            for e in self.client.lookup_endpoints(name)
            if self._in_namespace(e.job_id)
        ]
        return sorted(endpoints, key=lambda e: (e.job_id, e.task_index))
