"""Google errors as Iris reports them (iris_gcp.errors): the kind the autoscaler acts on and one
line naming the resource and what to do."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from iris.errors import PluginError
from iris.plugin.protocols import QuotaExceeded
from iris_gcp.errors import CapacityUnavailable, google_error, google_errors

RESOURCE = "projects/p/zones/europe-west4-b/instances/iris-controller"


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (gexc.ResourceExhausted("Quota 'CPUS' exceeded. Limit: 24.0 in region europe-west4."), QuotaExceeded, ("quota exceeded", "CPUS")),
        (gexc.TooManyRequests("Quota exceeded for quota metric 'Write requests'"), QuotaExceeded, ("quota exceeded",)),
        (
            gexc.ServiceUnavailable("The zone 'europe-west4-b' does not have enough resources available to fulfill the request."),
            CapacityUnavailable,
            ("no capacity", "zones"),
        ),
        (
            gexc.ResourceExhausted("Insufficient reserved capacity. Contact customer support to increase your reservation. [EID: 0x7adf6d58c08b0aa4]"),
            CapacityUnavailable,
            ("no capacity", "Insufficient reserved capacity"),
        ),
        (gexc.Forbidden("Required 'compute.instances.create' permission for 'projects/p'"), PluginError, ("permission denied", "compute.instances.create")),
        (gexc.PermissionDenied("Permission denied"), PluginError, ("permission denied", "role")),
        (gexc.Unauthenticated("Request had invalid authentication credentials."), PluginError, ("gcloud auth application-default login",)),
        (gexc.NotFound("The resource 'projects/p/zones/nowhere' was not found"), PluginError, ("not found", "nowhere")),
        (gexc.BadRequest("Invalid value for field 'resource.machineType'"), PluginError, ("machineType",)),
        (gexc.DeadlineExceeded("Deadline Exceeded"), PluginError, ("did not answer", "transient")),
    ],
)
def test_google_error_maps_kind_and_names_resource_in_one_line(error, kind, words) -> None:
    mapped = google_error(error, action="create instance", resource=RESOURCE)
    assert isinstance(mapped, kind)
    text = str(mapped)
    assert "\n" not in text
    assert text.startswith(f"create instance {RESOURCE}: ")
    for word in words:
        assert word in text


def test_google_error_unwraps_retry_error_and_passes_other_exceptions_through() -> None:
    retry = gexc.RetryError("Deadline of 120.0s exceeded", gexc.ServiceUnavailable("backend unavailable"))
    assert "backend unavailable" in str(google_error(retry, action="list", resource="r"))
    other = KeyError("x")
    assert google_error(other, action="list", resource="r") is other


def test_google_errors_context_manager_raises_mapped_error_chained() -> None:
    with pytest.raises(QuotaExceeded) as raised:
        with google_errors("create TPU node", "projects/p/locations/z/nodes/n"):
            raise gexc.ResourceExhausted("Quota limit 'TPUV4PodPerProjectPerZoneForTPUAPI' has been exceeded.")
    assert isinstance(raised.value.__cause__, gexc.ResourceExhausted)
    with pytest.raises(ZeroDivisionError):
        with google_errors("x", "y"):
            1 / 0


def test_google_error_rate_limit_is_transient_not_quota_and_precondition_is_not_invalid() -> None:
    rate = google_error(gexc.ResourceExhausted("Rate limit exceeded, retry later"), action="list", resource="r")
    assert not isinstance(rate, QuotaExceeded) and "transient" in str(rate)
    state = google_error(gexc.FailedPrecondition("The node is being deleted"), action="delete", resource="r")
    assert "current state" in str(state)
    aborted = google_error(gexc.Aborted("concurrent modification"), action="update", resource="r")
    assert "already exists" not in str(aborted)
