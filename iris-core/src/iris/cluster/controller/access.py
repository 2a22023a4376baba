"""What each principal may do: every authorization decision of the controller, in one place.

The service's interceptor authenticates a call (:mod:`iris.auth`) and the handler asks this
module before acting. The rules (docs/security.md):

* **admin**: everything, including slices, every job and minting tokens.
* **user**: submits top-level jobs as themself (the job's ``user`` comes from the token, not the
  request), and reads, kills, starts children under and registers endpoints for their own jobs
  only. ``ListJobs`` shows a user their own jobs: other users' command lines are theirs.
* **task** (the credential a worker hands each task as ``IRIS_TOKEN``): the same, but only for
  its own job and the jobs below it; children it starts belong to the job's owner.
* **worker**: only ``Reconcile``, and only as the worker id its token names.
* **open** (auth off): anything, as before auth existed.

Reading the cluster's shape (workers, scale groups) and looking endpoints up is open to every
authenticated caller but workers.
"""

from __future__ import annotations

import attrs

from iris.auth import PermissionDenied, Principal, Role
from iris.job.records import JobSpec

_PEOPLE = (Role.ADMIN, Role.USER, Role.TASK)


def _deny(principal: Principal, what: str) -> PermissionDenied:
    return PermissionDenied(f"permission denied: {principal.describe()} may not {what}")


def require_admin(principal: Principal, what: str) -> None:
    """Slices, and anything else that changes the cluster rather than one job."""
    if principal.role not in (Role.ADMIN, Role.OPEN):
        raise _deny(principal, f"{what} (admins only)")


def require_person(principal: Principal, what: str) -> None:
    """Calls a client makes (bundles, endpoint lookups, cluster status), but not a worker."""
    if principal.role is Role.WORKER:
        raise _deny(principal, what)


def _in_scope(principal: Principal, job_id: str) -> bool:
    return job_id == principal.job_id or job_id.startswith(principal.job_id + "/")


def may_see(principal: Principal, job_id: str, owner: str) -> bool:
    """Whether ``principal`` may read, kill or act for the job ``job_id`` owned by ``owner``."""
    role = principal.role
    if role in (Role.ADMIN, Role.OPEN):
        return True
    if role is Role.USER:
        return bool(owner) and owner == principal.name
    if role is Role.TASK:
        return _in_scope(principal, job_id)
    return False


def check_job(principal: Principal, job_id: str, owner: str, what: str) -> None:
    if not may_see(principal, job_id, owner):
        raise _deny(principal, f"{what} {job_id} (it belongs to {owner or 'nobody'})")


def check_launch(principal: Principal, spec: JobSpec, parent: tuple[str, str] | None) -> JobSpec:
    """Whether ``principal`` may launch ``spec``; returns it with the ``user`` the job runs as.

    ``parent`` is the (full id, owner) of ``spec.parent_job_id`` when it names one."""
    role = principal.role
    if role is Role.OPEN:
        return spec
    if role is Role.WORKER:
        raise _deny(principal, "launch jobs")
    if parent is not None:
        parent_id, owner = parent
        check_job(principal, parent_id, owner, "start a child job under")
        if role is Role.ADMIN:
            return spec
        return attrs.evolve(spec, user=owner)  # a child runs as its parent's owner
    if role is Role.TASK:
        raise _deny(principal, "launch a top-level job (a task starts children of its own job)")
    if role is Role.USER:  # the request's user (the client's login name) gives way to the token's
        return attrs.evolve(spec, user=principal.name)
    return spec if spec.user else attrs.evolve(spec, user=principal.name)  # an admin may name any user


def check_reconcile(principal: Principal, worker_id: str) -> None:
    """Only a worker reconciles, and only as itself."""
    if principal.role is Role.OPEN:
        return
    if principal.role is not Role.WORKER:
        raise _deny(principal, "reconcile as a worker (only workers do)")
    if principal.name != worker_id:
        raise _deny(principal, f"reconcile as worker {worker_id!r}")


def check_mint(principal: Principal, role: Role, name: str) -> None:
    require_admin(principal, f"create a {role.value} token for {name!r}")
