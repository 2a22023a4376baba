"""The endpoint registry: names tasks publish (``address`` under a job), looked up by name.
An endpoint lives while the job runs and the task attempt that registered it runs: when an
attempt ends its task's endpoints go, so a retried task (perhaps on another worker) is never
looked up at its dead address; the new attempt registers its own."""

from __future__ import annotations

import attrs

from iris.cluster.controller.state import Changes, Endpoint


class Endpoints:
    """Endpoints by name (called with the controller's lock held)."""

    def __init__(self, changes: Changes):
        self._changes = changes
        self._by_name: dict[str, list[Endpoint]] = {}
        self._names_of: dict[str, set[str]] = {}  # job id -> names it registered

    def load(self, endpoints: list[Endpoint]) -> None:
        for endpoint in endpoints:
            self._by_name.setdefault(endpoint.name, []).append(endpoint)
            self._names_of.setdefault(endpoint.job_id, set()).add(endpoint.name)

    def register(self, endpoint: Endpoint) -> None:
        """Add or replace the endpoint of (name, job, task)."""
        key = (endpoint.job_id, endpoint.task_index)
        entries = [e for e in self._by_name.get(endpoint.name, []) if (e.job_id, e.task_index) != key]
        entries.append(attrs.evolve(endpoint, metadata=dict(endpoint.metadata)))
        self._by_name[endpoint.name] = entries
        self._names_of.setdefault(endpoint.job_id, set()).add(endpoint.name)
        self._changes.endpoints = True

    def lookup(self, name: str) -> list[Endpoint]:
        return list(self._by_name.get(name, []))

    def drop_job(self, job_id: str) -> None:
        for name in self._names_of.pop(job_id, ()):
            entries = self._by_name.get(name, [])
            kept = [e for e in entries if e.job_id != job_id]
            if len(kept) == len(entries):
                continue
            self._changes.endpoints = True
            if kept:
                self._by_name[name] = kept
            else:
                del self._by_name[name]

    def drop_task(self, job_id: str, task_index: int) -> None:
        """Remove what task ``task_index`` of the job registered (its attempt ended)."""
        for name in self._names_of.get(job_id, ()):
            entries = self._by_name.get(name, [])
            kept = [e for e in entries if (e.job_id, e.task_index) != (job_id, task_index)]
            if len(kept) == len(entries):
                continue
            self._changes.endpoints = True
            if kept:
                self._by_name[name] = kept
            else:
                del self._by_name[name]

    def all(self) -> list[Endpoint]:
        return [e for entries in self._by_name.values() for e in entries]
