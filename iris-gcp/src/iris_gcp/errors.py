"""Errors from Google's APIs, as Iris reports them: one line naming the resource and what to do.

:func:`google_error` turns a ``google.api_core.exceptions.GoogleAPICallError`` (raised by every
Google client library, for a failed call or a failed long-running operation) into

- :class:`~iris.plugin.protocols.QuotaExceeded` for a quota refusal (the autoscaler holds the
  scale group for ``quota_hold_seconds``);
- :class:`CapacityUnavailable` (a :class:`~iris.errors.PluginError`) for a stockout: the zone has
  no machines of that kind right now (the autoscaler backs the group off and retries);
- :class:`~iris.errors.PluginError` for everything else (permission denied, not found, a bad zone
  or machine type, an unreachable API), with the API's own message trimmed to its first line and
  what to do.

Any other exception passes through unchanged. The Google libraries are imported inside the
functions only, so importing this module costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from iris.errors import PluginError
from iris.plugin.protocols import QuotaExceeded


class CapacityUnavailable(PluginError):
    """The zone has no capacity for the requested machines now (a stockout); try later or elsewhere."""


# Messages that say "no machines left" rather than "over your quota" (both come as
# RESOURCE_EXHAUSTED, and a stockout also as UNAVAILABLE): matched case-insensitively.
_STOCKOUT = re.compile(
    r"no more capacity|insufficient (reserved )?capacity|does not have enough resources|not enough resources|out of capacity|stockout|"
    r"currently unavailable in|resource pool exhausted|ZONE_RESOURCE_POOL_EXHAUSTED",
    re.IGNORECASE,
)
_QUOTA = re.compile(r"quota", re.IGNORECASE)
_TRAILER = re.compile(r"\s*\[EID: [^\]]*\]\s*$")


def _first_line(text: str) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return _TRAILER.sub("", line).strip().rstrip(".")


def api_message(exc: BaseException) -> str:
    """The API's own message of a Google error, one line, without the status prefix, the
    request id trailer or the list of error details the library appends."""
    message = getattr(exc, "message", None)
    if not isinstance(message, str) or not message:
        message = str(exc)
    return _first_line(message) or type(exc).__name__


def google_error(exc: BaseException, *, action: str, resource: str, hint: str = "") -> BaseException:
    """The Iris error for ``exc`` raised while doing ``action`` (e.g. ``"create TPU node"``) on
    ``resource`` (e.g. ``"projects/p/locations/z/nodes/n"``). ``hint`` overrides the advice for
    a not-found or invalid-argument error (e.g. which config field holds the zone)."""
    from google.api_core import exceptions as gexc

    if not isinstance(exc, gexc.GoogleAPICallError):
        if isinstance(exc, gexc.RetryError):
            cause = exc.cause
            if isinstance(cause, gexc.GoogleAPICallError):
                return google_error(cause, action=action, resource=resource, hint=hint)
            return PluginError(f"{action} {resource}: gave up retrying ({api_message(exc)}); check that the API is reachable and try again")
        return exc
    message = api_message(exc)
    where = f"{action} {resource}"
    if isinstance(exc, (gexc.ResourceExhausted, gexc.ServiceUnavailable, gexc.TooManyRequests)) and _STOCKOUT.search(message):
        return CapacityUnavailable(f"{where}: no capacity ({message}); Iris retries with backoff, or add another zone to the scale group's zones")
    if isinstance(exc, gexc.TooManyRequests):  # ResourceExhausted is one too
        if not _QUOTA.search(message):
            return PluginError(f"{where}: too many requests ({message}); this is transient: Iris retries with backoff")
        return QuotaExceeded(f"{where}: quota exceeded ({message}); request more quota in the Google Cloud console (IAM & Admin > Quotas) or lower max_slices")
    if isinstance(exc, (gexc.PermissionDenied, gexc.Forbidden)):  # Forbidden: the REST clients' 403
        return PluginError(
            f"{where}: permission denied ({message}); grant the account Iris runs as the needed role "
            "(e.g. roles/tpu.admin for TPU nodes, roles/compute.instanceAdmin.v1 for instances) and check that the API is enabled in the project"
        )
    if isinstance(exc, (gexc.Unauthenticated, gexc.Unauthorized)):
        return PluginError(f"{where}: not authenticated ({message}); run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS")
    if isinstance(exc, gexc.NotFound):
        return PluginError(f"{where}: not found ({message}); {hint or 'check the project, zone and name in the config'}")
    if isinstance(exc, gexc.FailedPrecondition):
        return PluginError(f"{where}: refused in its current state ({message}); check it in the Google Cloud console and try again")
    if isinstance(exc, (gexc.InvalidArgument, gexc.BadRequest)):  # after FailedPrecondition, also a BadRequest
        return PluginError(f"{where}: rejected ({message}); {hint or 'check the values in the config'}")
    if isinstance(exc, gexc.AlreadyExists) or type(exc) is gexc.Conflict:  # not Aborted, also a Conflict
        return PluginError(f"{where}: already exists ({message}); delete it or choose another name")
    if isinstance(exc, (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.GatewayTimeout, gexc.InternalServerError)):
        return PluginError(f"{where}: the API did not answer ({message}); this is usually transient: Iris retries with backoff")
    return PluginError(f"{where}: {message}")


@contextmanager
def google_errors(action: str, resource: str, hint: str = "") -> Iterator[None]:
    """Raise :func:`google_error` of any Google error raised inside, chained to it."""
    try:
        yield
    except Exception as exc:
        mapped = google_error(exc, action=action, resource=resource, hint=hint)
        if mapped is exc:
            raise
        raise mapped from exc
