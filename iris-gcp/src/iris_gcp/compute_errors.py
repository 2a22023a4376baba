"""Errors from the Compute Engine API, as one line naming the resource and what to do.

``compute_error(exc, ...)`` turns what ``google.cloud.compute_v1`` raises (``GoogleAPICallError``
subclasses parsed from Google's error body, transport errors, missing credentials) into an
:class:`~iris.errors.IrisError` the CLI prints as one line. Google's own message is kept at the
end (it often names the exact quota or permission), never a stack of API internals.
"""

from __future__ import annotations

import re

from iris.errors import IrisError


class ComputeError(IrisError):
    """A Compute Engine call failed; ``reason`` is Google's reason word (``quotaExceeded``,
    ``forbidden``, ``notFound``, ...) or ``unreachable``/``credentials``."""

    def __init__(self, message: str, reason: str = "", code: int = 0):
        super().__init__(message)
        self.reason = reason
        self.code = code


class ComputeQuotaExceeded(ComputeError):
    """The project's quota (CPUs, addresses, instances) does not allow the request."""


def _reasons(exc: BaseException) -> list[str]:
    out = [str(r) for r in (getattr(exc, "reason", None),) if r]
    for error in getattr(exc, "errors", None) or []:
        if isinstance(error, dict):
            out.extend(str(error[k]) for k in ("reason", "code") if error.get(k))
        else:
            out.extend(str(getattr(error, k)) for k in ("reason", "code") if getattr(error, k, None))
    return out


def _google_message(exc: BaseException) -> str:
    message = " ".join(str(getattr(exc, "message", None) or exc).split())
    return re.sub(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ", "", message)  # the request line adds nothing for the user


def compute_error(exc: BaseException, *, action: str, resource: str, project: str, zone: str) -> ComputeError:
    """One line for ``exc``, raised while doing ``action`` (e.g. "create the controller VM") on
    ``resource`` (e.g. "instance iris-x-controller")."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, ComputeError):
        return exc
    where = f"project {project!r}, zone {zone!r}"
    try:
        from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError
    except ImportError:  # pragma: no cover - google-auth ships with the client
        DefaultCredentialsError = RefreshError = TransportError = ()  # type: ignore[assignment,misc]
    if isinstance(exc, DefaultCredentialsError):
        return ComputeError(
            f"cannot {action}: no Google credentials found; run `gcloud auth application-default login` "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key",
            "credentials",
        )
    if isinstance(exc, RefreshError):
        return ComputeError(f"cannot {action}: your Google credentials were refused ({_google_message(exc)}); log in again "
                            "with `gcloud auth application-default login`", "credentials")  # fmt: skip
    if isinstance(exc, TransportError) or type(exc).__module__.startswith(("requests", "urllib3")):
        return ComputeError(
            f"cannot {action}: the Compute API is unreachable ({type(exc).__name__}); check this machine's network, "
            "or provider.options.compute_api_endpoint if you set one",
            "unreachable",
        )
    if not isinstance(exc, gexc.GoogleAPICallError):
        return ComputeError(f"cannot {action} ({resource}, {where}): {type(exc).__name__}: {_google_message(exc)}")
    code = int(getattr(exc, "code", 0) or 0)
    reasons = {r.lower() for r in _reasons(exc)}
    google = _google_message(exc)
    if reasons & {"quotaexceeded", "quota_exceeded", "ratelimitexceeded", "zone_resource_pool_exhausted"} or "Quota" in google:
        return ComputeQuotaExceeded(
            f"cannot {action}: quota exceeded in {where}; request more at "
            f"https://console.cloud.google.com/iam-admin/quotas?project={project}, or pick a smaller "
            f"controller.vm.machine_type or another zone (Google: {google})",
            "quotaExceeded",
            code,
        )
    if code == 403:
        roles = "roles/compute.instanceAdmin.v1 and roles/iam.serviceAccountUser"
        if resource.startswith("address"):  # the controller's reserved internal address
            roles = "roles/compute.networkAdmin (or compute.addresses.createInternal, get and deleteInternal)"
        return ComputeError(
            f"cannot {action}: permission denied on {resource} in {where}; your account needs "
            f"{roles} there, and the Compute Engine API "
            f"must be enabled (gcloud services enable compute.googleapis.com --project {project}) (Google: {google})",
            "forbidden",
            code,
        )
    region = zone.rsplit("-", 1)[0]
    if code == 404 and (f"zones/{zone}' was not found" in google or f"regions/{region}' was not found" in google or "Unknown zone" in google):
        return ComputeError(
            f"cannot {action}: zone {zone!r} does not exist in project {project!r}; check provider.zone "
            f"(`gcloud compute zones list`) and provider.project_id (Google: {google})",
            "notFound",
            code,
        )
    if code == 404:
        return ComputeError(f"cannot {action}: {resource} was not found in {where} (Google: {google})", "notFound", code)
    if code == 400 and "machineType" in google:
        return ComputeError(
            f"cannot {action}: the machine type is not available in zone {zone!r}; check controller.vm.machine_type "
            f"(`gcloud compute machine-types list --zones {zone}`) (Google: {google})",
            "invalid",
            code,
        )
    if code == 400 and "zone" in google.lower():
        return ComputeError(f"cannot {action}: zone {zone!r} is not valid; check provider.zone (Google: {google})", "invalid", code)
    if code == 409:
        return ComputeError(f"cannot {action}: {resource} already exists in {where} (Google: {google})", "alreadyExists", code)
    return ComputeError(f"cannot {action} ({resource}, {where}): HTTP {code}: {google}", next(iter(reasons), ""), code)
