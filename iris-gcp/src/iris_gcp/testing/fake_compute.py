"""A fake of the Compute Engine API (``compute/v1``, REST) for instances, that boots what it creates.

The real ``google.cloud.compute_v1`` clients talk to it::

    fake = FakeCompute(booter).start()
    client = InstancesClient(credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": fake.endpoint})

It serves the subset Iris uses: ``instances.insert|get|list|aggregatedList|delete|reset|stop|
start|setMetadata|setLabels``, ``addresses.insert|get|list|delete`` (static internal addresses) and
``zoneOperations.get|wait``, ``regionOperations.get|wait``. Mutations return an operation that is
``DONE`` after ``operation_delay`` seconds; its effect (booting, halting, reserving) happens then.
An inserted instance is booted through the :class:`~iris_gcp.testing.boot.Booter`: its metadata
items become the host's metadata (``startup-script`` included) and the booted address is its
``networkInterfaces[0].networkIP``; deleting or stopping it halts the host.

``setMetadata`` and ``setLabels`` replace the instance's metadata items or labels as GCE does:
the body must carry the current ``metadata.fingerprint`` (``labelFingerprint``), else 412
``conditionNotMet``, and each change gives a new fingerprint. New metadata reaches a running
host through the booter's optional ``set_metadata(host_id, metadata)`` (what its metadata
server answers; the startup script reads it at the next boot); a booter without it sees the new
metadata when it boots the host again (a reset without ``reboot``, a stop then start).

Addresses, as GCE has them: an instance may ask for its internal address
(``networkInterfaces[0].networkIP``: an IP, or the URL of a reserved address); the booter gives
the host exactly that address, and if another resource holds it the insert's operation fails with
``IP_IN_USE_BY_ANOTHER_RESOURCE`` ("IP '...' is already being used by another resource.") and no
instance is left. ``addresses.insert`` with ``addressType: INTERNAL`` reserves an address of the
booter's pool (the booter's ``reserve``; a given ``address`` or the first free one): no instance
gets it unless it asks for it, it is ``IN_USE`` (``users``: the instance) while an instance holds
it and ``RESERVED`` again when that instance is deleted; deleting an address in use is refused.

``fail_next(method, error)`` makes the next call of one method fail the way Google fails it
(the same status codes and error bodies): ``permission``, ``quota``, ``not_found``,
``bad_zone``, ``bad_machine_type``, or an :class:`InjectedError` of your own.

What it does not do: IAM, networks and firewalls (any network or subnetwork name is accepted;
the booter's pool is every subnetwork's range), external addresses (``natIP`` stays empty;
``addresses.insert`` refuses ``EXTERNAL``), disks as resources, pagination (one page holds every item),
per-project quotas unless injected. A reset reboots the host when the booter can
(``reboot(host_id)``, as ``ContainerBooter``: disk and address kept, startup script run again),
else halts and boots it again with the same host id; a stop then start always does the latter
(the host keeps its address and disk only if the booter keeps them for that host id).

The client library's own polling (``operation.result()``) asks ``compute.googleapis.com``
whatever the endpoint; poll with a ``ZoneOperationsClient`` built with the same endpoint.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import attrs

from iris_gcp.testing.boot import AddressInUse, AddressUnavailable, Booter, HostSpec

ZONES = (
    "europe-west4-a", "europe-west4-b", "europe-west4-c", "us-central1-a", "us-central1-b", "us-central1-c",
    "us-central1-f", "us-central2-b", "us-east1-d", "us-east5-a", "us-west4-a", "asia-northeast1-b",
)  # fmt: skip
MACHINE_TYPE = re.compile(r"^(e2|n1|n2|n2d|n4|c2|c2d|c3|c3d|c4|t2d|m1|m3)-(standard|highmem|highcpu|micro|small|medium)(-\d+)?$")
NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
LABEL_VALUE = re.compile(r"^[-_a-z0-9]{0,63}$")
BASE = "https://www.googleapis.com/compute/v1"
ADDRESS_URL = re.compile(r"(?:^|/)projects/([^/]+)/regions/([^/]+)/addresses/([^/]+)$")
IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


@attrs.frozen

class InjectedError:
    """An HTTP error as Google returns it: ``{"error": {"code", "message", "errors": [{reason}]}}``."""

    code: int
    reason: str
    message: str
    status: str = ""


def _named_error(kind: str, resource: str, method: str = "get") -> InjectedError:
    collection = "zoneOperations" if method.startswith("operations") else method.split(".")[0] if "." in method else "instances"
    permission = f"compute.{collection}.{method.split('.')[-1]}"
    errors = {
        "permission": InjectedError(403, "forbidden", f"Required '{permission}' permission for '{resource}'", "PERMISSION_DENIED"),
        "quota": InjectedError(
            403, "quotaExceeded", "Quota 'CPUS' exceeded.  Limit: 8.0 in region europe-west4.", "QUOTA_EXCEEDED"
        ),
        "not_found": InjectedError(404, "notFound", f"The resource '{resource}' was not found", "NOT_FOUND"),
        "bad_zone": InjectedError(400, "invalid", "Invalid value for field 'zone': 'nowhere-1a'. Unknown zone.", "INVALID_ARGUMENT"),
        "bad_machine_type": InjectedError(
            400, "invalid",
            "Invalid value for field 'resource.machineType': 'zones/europe-west4-a/machineTypes/n9-huge-1'. "
            "Machine type with name 'n9-huge-1' does not exist in zone 'europe-west4-a'.",
            "INVALID_ARGUMENT",
        ),  # fmt: skip
    }
    if kind not in errors:
        raise ValueError(f"unknown error kind {kind!r}; choose one of: {', '.join(errors)}")
    return errors[kind]


class ApiError(Exception):
    def __init__(self, error: InjectedError):
        super().__init__(error.message)
        self.error = error


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _resource_name(body: dict[str, Any]) -> str:
    """``body["name"]``, or the 400 Compute answers for a name it does not accept."""
    name = str(body.get("name", ""))
    if not NAME.match(name):
        raise ApiError(InjectedError(
            400, "invalid", f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'",
            "INVALID_ARGUMENT"))  # fmt: skip
    return name

@attrs.define
class _Operation:
    project: str
    zone: str  # the zone, or the region of a regional operation (``scope``)
    name: str
    op_type: str
    target: str
    done_at: float
    effect: Any  # callable run once when the operation completes
    status: str = "RUNNING"
    error: InjectedError | None = None
    insert_time: str = attrs.field(factory=_now)
    end_time: str = ""
    scope: str = "zones"  # or "regions"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(abs(hash(self.name)) % 10**18),
            "name": self.name,
            ("zone" if self.scope == "zones" else "region"): f"{BASE}/projects/{self.project}/{self.scope}/{self.zone}",
            "operationType": self.op_type,
            "targetLink": self.target,
            "status": self.status,
            "progress": 100 if self.status == "DONE" else 0,
            "insertTime": self.insert_time,
            "startTime": self.insert_time,
            "selfLink": f"{BASE}/projects/{self.project}/{self.scope}/{self.zone}/operations/{self.name}",
        }
        if self.end_time:
            body["endTime"] = self.end_time
        if self.error is not None:
            body["error"] = {"errors": [{"code": self.error.status or self.error.reason.upper(), "message": self.error.message}]}
            body["httpErrorStatusCode"] = self.error.code
            body["httpErrorMessage"] = {403: "FORBIDDEN", 404: "NOT FOUND", 400: "BAD REQUEST", 409: "CONFLICT"}.get(self.error.code, "ERROR")
        return body


class FakeCompute:
    """The fake API's state and HTTP server (on 127.0.0.1, a free port unless given)."""

    def __init__(self, booter: Booter, *, operation_delay: float = 0.0, zones: tuple[str, ...] = ZONES, port: int = 0):
        self.booter = booter
        self.operation_delay = operation_delay
        self.zones = set(zones)
        self.instances: dict[tuple[str, str, str], dict[str, Any]] = {}  # (project, zone, name) -> instance JSON
        self.addresses: dict[tuple[str, str, str], dict[str, Any]] = {}  # (project, region, name) -> address JSON
        self._requested: dict[tuple[str, str, str], str] = {}  # instance key -> the networkIP it asked for
        self.operations: dict[tuple[str, str, str], _Operation] = {}
        self.calls: list[str] = []  # "method" per request, for tests that count API calls
        self._failures: dict[str, list[InjectedError | str]] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeCompute:
        for target, name in ((self._server.serve_forever, "fake-compute-http"), (self._tick, "fake-compute-ops")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        """Stop serving and halt every host still up."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            for instance in self.instances.values():
                self.booter.halt(_host_id(instance))
            self.instances.clear()
            release = getattr(self.booter, "release", None)
            for address in self.addresses.values():
                if release is not None and address.get("address"):
                    release(address["address"])
            self.addresses.clear()

    def __enter__(self) -> FakeCompute:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- test controls -------------------------------------------------------------------

    def fail_next(self, method: str, error: InjectedError | str) -> None:
        """The next call of ``method`` (``insert``, ``get``, ``list``, ``delete``, ``reset``,
        ``aggregatedList``, ``operations.get``, ...) fails with ``error`` (a kind name or an
        :class:`InjectedError`)."""
        with self._lock:
            self._failures.setdefault(method, []).append(error)

    def instance(self, project: str, zone: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.instances.get((project, zone, name))

    def address(self, project: str, region: str, name: str) -> dict[str, Any] | None:
        """The address resource as the API shows it (status and users derived from the instances)."""
        with self._lock:
            address = self.addresses.get((project, region, name))
            return None if address is None else self._address_json(address)

    # --- the API -------------------------------------------------------------------------

    def _injected(self, method: str, resource: str) -> None:
        with self._lock:
            pending = self._failures.get(method)
            if not pending:
                return
            error = pending.pop(0)
        raise ApiError(_named_error(error, resource, method) if isinstance(error, str) else error)

    def _check_zone(self, project: str, zone: str) -> None:
        if zone not in self.zones:
            raise ApiError(InjectedError(404, "notFound", f"The resource 'projects/{project}/zones/{zone}' was not found", "NOT_FOUND"))

    def _tick(self) -> None:
        while not self._stop.wait(0.02):
            self._advance()

    def _advance(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [op for op in self.operations.values() if op.status != "DONE" and op.done_at <= now]
        for op in due:
            try:
                op.effect()
            except ApiError as exc:
                op.error = exc.error
            except Exception as exc:  # a booter that failed: the operation fails as GCE's would
                op.error = InjectedError(503, "backendError", f"the machine failed to boot: {exc}", "UNAVAILABLE")
            with self._lock:
                op.status = "DONE"
                op.end_time = _now()

    def _operation(self, project: str, zone: str, op_type: str, target: str, effect: Any, scope: str = "zones") -> dict[str, Any]:
        name = f"operation-{int(time.time() * 1000)}-{next(self._ids):06d}"
        op = _Operation(project, zone, name, op_type, target, time.monotonic() + self.operation_delay, effect, scope=scope)
        with self._lock:
            self.operations[(project, zone, name)] = op
        if self.operation_delay <= 0:
            self._advance()
        return op.to_json()

    def _get_instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        self._check_zone(project, zone)
        with self._lock:
            instance = self.instances.get((project, zone, name))
        if instance is None:
            resource = f"projects/{project}/zones/{zone}/instances/{name}"
            raise ApiError(InjectedError(404, "notFound", f"The resource '{resource}' was not found", "NOT_FOUND"))
        return instance

    def insert(self, project: str, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_zone(project, zone)
        name = _resource_name(body)
        machine_type = str(body.get("machineType", "")).rsplit("/", 1)[-1]
        if not MACHINE_TYPE.match(machine_type):
            raise ApiError(InjectedError(
                400, "invalid", f"Invalid value for field 'resource.machineType': '{body.get('machineType', '')}'. "
                f"Machine type with name '{machine_type}' does not exist in zone '{zone}'.", "INVALID_ARGUMENT"))  # fmt: skip
        labels = dict(body.get("labels") or {})
        for key, value in labels.items():
            if not LABEL_KEY.match(key) or not LABEL_VALUE.match(str(value)):
                raise ApiError(InjectedError(
                    400, "invalid", f"Invalid value for field 'resource.labels': '{key}={value}'. Label keys and values may contain "
                    "only lowercase letters, digits, '-' and '_', and keys must start with a letter", "INVALID_ARGUMENT"))  # fmt: skip
        self_link = f"{BASE}/projects/{project}/zones/{zone}/instances/{name}"
        with self._lock:
            if (project, zone, name) in self.instances:
                raise ApiError(InjectedError(409, "alreadyExists", f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists", "ALREADY_EXISTS"))
            interfaces = [dict(n) for n in body.get("networkInterfaces") or [{"network": f"{BASE}/projects/{project}/global/networks/default"}]]
            interfaces[0].setdefault("name", "nic0")
            requested = self._requested_ip(project, zone, str(interfaces[0].pop("networkIP", "") or ""))
            for nic in interfaces:
                for access in nic.get("accessConfigs") or []:
                    access.setdefault("natIP", "")  # no external address here: nothing leaves the machine
            instance = {
                **body,
                "metadata": {**(body.get("metadata") or {}), "fingerprint": _fingerprint((body.get("metadata") or {}).get("items") or [])},
                "kind": "compute#instance",
                "id": str(next(self._ids) + 4_000_000_000_000_000_000),
                "name": name,
                "zone": f"{BASE}/projects/{project}/zones/{zone}",
                "machineType": f"{BASE}/projects/{project}/zones/{zone}/machineTypes/{machine_type}",
                "status": "PROVISIONING",
                "labels": labels,
                "labelFingerprint": _fingerprint(labels),
                "networkInterfaces": interfaces,
                "creationTimestamp": _now(),
                "selfLink": self_link,
            }
            self.instances[(project, zone, name)] = instance
            self._requested[(project, zone, name)] = requested

        def boot() -> None:
            try:
                self._boot(instance)
            except ApiError:  # the address is taken: the insert fails and leaves no instance
                with self._lock:
                    self.instances.pop((project, zone, name), None)
                    self._requested.pop((project, zone, name), None)
                raise

        return self._operation(project, zone, "insert", self_link, boot)

    def _requested_ip(self, project: str, zone: str, value: str) -> str:
        """The IP an instance's ``networkIP`` asks for (an IP, or a reserved address's URL)."""
        if not value:
            return ""
        field = "resource.networkInterfaces[0].networkIP"
        url = ADDRESS_URL.search(value)
        if url:
            key = (url[1], url[2], url[3])
            with self._lock:
                address = self.addresses.get(key)
            if address is None or not address.get("address"):
                raise ApiError(InjectedError(
                    400, "invalid", f"Invalid value for field '{field}': '{value}'. The referenced address resource was not found.",
                    "INVALID_ARGUMENT"))  # fmt: skip
            if url[2] != _region(zone):
                raise ApiError(InjectedError(
                    400, "invalid", f"Invalid value for field '{field}': '{value}'. The address is in region '{url[2]}', "
                    f"not in the instance's region '{_region(zone)}'.", "INVALID_ARGUMENT"))  # fmt: skip
            return str(address["address"])
        if not IPV4.match(value):
            raise ApiError(InjectedError(
                400, "invalid", f"Invalid value for field '{field}': '{value}'. Must be an IPv4 address or an address resource URL.",
                "INVALID_ARGUMENT"))  # fmt: skip
        return value

    def _boot(self, instance: dict[str, Any]) -> None:
        items = (instance.get("metadata") or {}).get("items") or []
        key = _key(instance)
        with self._lock:
            requested = self._requested.get(key, "")
        spec = HostSpec(_host_id(instance), {i["key"]: i.get("value", "") for i in items}, dict(instance.get("labels") or {}), address=requested)
        try:
            address = self.booter.boot(spec)
        except AddressInUse as exc:
            raise ApiError(InjectedError(
                400, "IP_IN_USE_BY_ANOTHER_RESOURCE", f"IP '{exc.address}' is already being used by another resource.",
                "IP_IN_USE_BY_ANOTHER_RESOURCE"))  # fmt: skip
        except AddressUnavailable as exc:
            raise ApiError(InjectedError(
                400, "invalid", f"Requested internal IP address '{requested}' is outside the subnetwork CIDR range ({exc}).",
                "INVALID_ARGUMENT") if requested else InjectedError(  # fmt: skip
                503, "IP_SPACE_EXHAUSTED", f"IP space of the subnetwork is exhausted ({exc}).", "IP_SPACE_EXHAUSTED"))
        if requested and address != requested:
            self.booter.halt(spec.host_id)
            raise RuntimeError(f"the booter gave {spec.host_id} the address {address}, not the requested {requested}")
        with self._lock:
            instance["networkInterfaces"][0]["networkIP"] = address
            instance["status"] = "RUNNING"
            instance["lastStartTimestamp"] = _now()

    def _halt(self, instance: dict[str, Any], status: str) -> None:
        self.booter.halt(_host_id(instance))
        with self._lock:
            instance["status"] = status
            if status == "TERMINATED":
                instance["lastStopTimestamp"] = _now()

    def delete(self, project: str, zone: str, name: str) -> dict[str, Any]:
        instance = self._get_instance(project, zone, name)
        with self._lock:
            instance["status"] = "STOPPING"

        def remove() -> None:
            self._halt(instance, "TERMINATED")
            with self._lock:
                self.instances.pop((project, zone, name), None)
                self._requested.pop((project, zone, name), None)

        return self._operation(project, zone, "delete", instance["selfLink"], remove)

    def reset(self, project: str, zone: str, name: str) -> dict[str, Any]:
        instance = self._get_instance(project, zone, name)
        if instance["status"] != "RUNNING":
            raise ApiError(InjectedError(400, "resourceNotReady", f"The resource '{instance['selfLink']}' is not ready", "FAILED_PRECONDITION"))

        def again() -> None:  # a reset keeps the machine's disk and its internal address
            reboot = getattr(self.booter, "reboot", None)
            if reboot is not None:  # a booter that can power-cycle a host keeps its disk and address
                with self._lock:
                    instance["status"] = "STAGING"
                reboot(_host_id(instance))
                with self._lock:
                    instance["status"] = "RUNNING"
                    instance["lastStartTimestamp"] = _now()
                return
            self._halt(instance, "STAGING")
            self._boot(instance)

        return self._operation(project, zone, "reset", instance["selfLink"], again)

    def stop(self, project: str, zone: str, name: str) -> dict[str, Any]:
        instance = self._get_instance(project, zone, name)
        return self._operation(project, zone, "stop", instance["selfLink"], lambda: self._halt(instance, "TERMINATED"))

    def set_metadata(self, project: str, zone: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``instances.setMetadata``: the items replace the instance's (the fingerprint must match)."""
        instance = self._get_instance(project, zone, name)
        items = [dict(i) for i in body.get("items") or []]
        for item in items:
            if not re.match(r"^[a-zA-Z0-9-_]{1,128}$", str(item.get("key", ""))):
                raise ApiError(InjectedError(400, "invalid", f"Invalid value for field 'resource.items[].key': '{item.get('key', '')}'.", "INVALID_ARGUMENT"))
        with self._lock:
            current = (instance.get("metadata") or {}).get("fingerprint", "")
        if body.get("fingerprint", "") != current:
            raise ApiError(InjectedError(
                412, "conditionNotMet", "Supplied fingerprint does not match current metadata fingerprint.", "FAILED_PRECONDITION"))  # fmt: skip

        def apply() -> None:
            with self._lock:
                instance["metadata"] = {"kind": "compute#metadata", "items": items, "fingerprint": _fingerprint(items)}
                running = instance["status"] == "RUNNING"
            update = getattr(self.booter, "set_metadata", None)
            if update is not None and running:
                update(_host_id(instance), {i["key"]: i.get("value", "") for i in items})

        return self._operation(project, zone, "setMetadata", instance["selfLink"], apply)

    def set_labels(self, project: str, zone: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``instances.setLabels``: the labels replace the instance's (the fingerprint must match)."""
        instance = self._get_instance(project, zone, name)
        labels = dict(body.get("labels") or {})
        for key, value in labels.items():
            if not LABEL_KEY.match(key) or not LABEL_VALUE.match(str(value)):
                raise ApiError(InjectedError(400, "invalid", f"Invalid value for field 'resource.labels': '{key}={value}'.", "INVALID_ARGUMENT"))
        with self._lock:
            current = instance.get("labelFingerprint", "")
        if body.get("labelFingerprint", "") != current:
            raise ApiError(InjectedError(
                412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed", "FAILED_PRECONDITION"))  # fmt: skip

        def apply() -> None:
            with self._lock:
                instance["labels"] = labels
                instance["labelFingerprint"] = _fingerprint(labels)

        return self._operation(project, zone, "setLabels", instance["selfLink"], apply)

    def start_instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        instance = self._get_instance(project, zone, name)
        return self._operation(project, zone, "start", instance["selfLink"], lambda: self._boot(instance))

    def list(self, project: str, zone: str, filter_text: str) -> dict[str, Any]:
        self._check_zone(project, zone)
        match = _parse_filter(filter_text)
        with self._lock:
            items = [json.loads(json.dumps(i)) for (p, z, _), i in sorted(self.instances.items()) if p == project and z == zone and match(i)]
        body: dict[str, Any] = {"kind": "compute#instanceList", "id": f"projects/{project}/zones/{zone}/instances",
                                "selfLink": f"{BASE}/projects/{project}/zones/{zone}/instances"}  # fmt: skip
        if items:
            body["items"] = items
        return body

    def aggregated_list(self, project: str, filter_text: str) -> dict[str, Any]:
        match = _parse_filter(filter_text)
        scoped: dict[str, Any] = {}
        with self._lock:
            for (p, z, _), instance in sorted(self.instances.items()):
                if p == project and match(instance):
                    scoped.setdefault(f"zones/{z}", {"instances": []})["instances"].append(json.loads(json.dumps(instance)))
        return {"kind": "compute#instanceAggregatedList", "id": f"projects/{project}/aggregated/instances", "items": scoped}

    # --- addresses (regional, static internal) ---------------------------------------------

    def _check_region(self, project: str, region: str) -> None:
        if region not in {_region(z) for z in self.zones}:
            raise ApiError(InjectedError(404, "notFound", f"The resource 'projects/{project}/regions/{region}' was not found", "NOT_FOUND"))

    def _address_json(self, address: dict[str, Any]) -> dict[str, Any]:
        """The address as the API shows it: IN_USE with its users while an instance holds it."""
        body = json.loads(json.dumps(address))
        users = [i["selfLink"] for i in self.instances.values()
                 if address.get("address") and i["networkInterfaces"][0].get("networkIP") == address["address"]]  # fmt: skip
        if body["status"] != "RESERVING":
            body["status"] = "IN_USE" if users else "RESERVED"
        if users:
            body["users"] = users
        return body

    def _get_address(self, project: str, region: str, name: str) -> dict[str, Any]:
        self._check_region(project, region)
        with self._lock:
            address = self.addresses.get((project, region, name))
        if address is None:
            raise ApiError(InjectedError(404, "notFound", f"The resource 'projects/{project}/regions/{region}/addresses/{name}' was not found", "NOT_FOUND"))
        return address

    def get_address(self, project: str, region: str, name: str) -> dict[str, Any]:
        address = self._get_address(project, region, name)
        with self._lock:
            return self._address_json(address)

    def insert_address(self, project: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_region(project, region)
        name = _resource_name(body)
        kind = str(body.get("addressType") or "EXTERNAL")
        if kind != "INTERNAL":
            raise ApiError(InjectedError(400, "invalid", f"Invalid value for field 'resource.addressType': '{kind}'. "
                                         "This fake serves INTERNAL addresses only (no external addresses leave this machine).",
                                         "INVALID_ARGUMENT"))  # fmt: skip
        wanted = str(body.get("address") or "")
        if wanted and not IPV4.match(wanted):
            raise ApiError(InjectedError(400, "invalid", f"Invalid value for field 'resource.address': '{wanted}'. Must be an IPv4 address.", "INVALID_ARGUMENT"))
        labels = dict(body.get("labels") or {})
        for key, value in labels.items():
            if not LABEL_KEY.match(key) or not LABEL_VALUE.match(str(value)):
                raise ApiError(InjectedError(400, "invalid", f"Invalid value for field 'resource.labels': '{key}={value}'.", "INVALID_ARGUMENT"))
        reserve = getattr(self.booter, "reserve", None)
        if reserve is None:
            raise ApiError(InjectedError(400, "invalid", f"{type(self.booter).__name__} cannot reserve addresses (no reserve())", "INVALID_ARGUMENT"))
        self_link = f"{BASE}/projects/{project}/regions/{region}/addresses/{name}"
        subnetwork = str(body.get("subnetwork") or "")
        if subnetwork and not subnetwork.startswith("https://"):
            subnetwork = f"{BASE}/projects/{project}/{subnetwork.split('projects/' + project + '/', 1)[-1]}"
        with self._lock:
            if (project, region, name) in self.addresses:
                raise ApiError(InjectedError(409, "alreadyExists", f"The resource 'projects/{project}/regions/{region}/addresses/{name}' already exists", "ALREADY_EXISTS"))
            address = {
                **{k: v for k, v in body.items() if k in ("description", "purpose", "networkTier", "prefixLength", "ipVersion")},
                "kind": "compute#address",
                "id": str(next(self._ids) + 7_000_000_000_000_000_000),
                "name": name,
                "addressType": kind,
                "status": "RESERVING",
                "region": f"{BASE}/projects/{project}/regions/{region}",
                "labels": labels,
                "labelFingerprint": "42WmSpB8rSM=",
                "creationTimestamp": _now(),
                "selfLink": self_link,
            }
            if subnetwork:
                address["subnetwork"] = subnetwork
            self.addresses[(project, region, name)] = address

        def reserved() -> None:
            try:
                ip = reserve(wanted)
            except (AddressInUse, AddressUnavailable) as exc:
                with self._lock:
                    self.addresses.pop((project, region, name), None)
                if isinstance(exc, AddressInUse):
                    raise ApiError(InjectedError(400, "IP_IN_USE_BY_ANOTHER_RESOURCE",
                                                 f"IP '{wanted}' is already being used by another resource.", "IP_IN_USE_BY_ANOTHER_RESOURCE")) from None  # fmt: skip
                raise ApiError(InjectedError(400, "invalid", f"Requested internal IP address '{wanted}' is outside the subnetwork CIDR range ({exc})."
                                             if wanted else f"IP space of the subnetwork is exhausted ({exc}).", "INVALID_ARGUMENT")) from None  # fmt: skip
            with self._lock:
                address["address"] = ip
                address["status"] = "RESERVED"

        return self._operation(project, region, "insert", self_link, reserved, scope="regions")

    def list_addresses(self, project: str, region: str, filter_text: str) -> dict[str, Any]:
        self._check_region(project, region)
        match = _parse_filter(filter_text)
        with self._lock:
            items = [self._address_json(a) for (p, r, _), a in sorted(self.addresses.items()) if p == project and r == region and match(a)]
        body: dict[str, Any] = {"kind": "compute#addressList", "id": f"projects/{project}/regions/{region}/addresses",
                                "selfLink": f"{BASE}/projects/{project}/regions/{region}/addresses"}  # fmt: skip
        if items:
            body["items"] = items
        return body

    def delete_address(self, project: str, region: str, name: str) -> dict[str, Any]:
        address = self._get_address(project, region, name)
        with self._lock:
            users = self._address_json(address).get("users") or []
        if users:
            user = users[0].split("/compute/v1/", 1)[-1]
            raise ApiError(InjectedError(
                400, "resourceInUseByAnotherResource",
                f"The address resource '{address['selfLink'].split('/compute/v1/', 1)[-1]}' is already being used by '{user}'",
                "FAILED_PRECONDITION"))  # fmt: skip

        def remove() -> None:
            with self._lock:
                self.addresses.pop((project, region, name), None)
            release = getattr(self.booter, "release", None)
            if release is not None and address.get("address"):
                release(address["address"])

        return self._operation(project, region, "delete", address["selfLink"], remove, scope="regions")

    # --- operations ------------------------------------------------------------------------

    def operation(self, project: str, zone: str, name: str, *, wait: bool, scope: str = "zones") -> dict[str, Any]:
        if scope == "zones":
            self._check_zone(project, zone)
        else:
            self._check_region(project, zone)
        deadline = time.monotonic() + 120.0  # zoneOperations.wait returns when done or after 2 minutes
        while True:
            with self._lock:
                op = self.operations.get((project, zone, name))
            if op is not None and op.scope != scope:
                op = None
            if op is None:
                resource = f"projects/{project}/{scope}/{zone}/operations/{name}"
                raise ApiError(InjectedError(404, "notFound", f"The resource '{resource}' was not found", "NOT_FOUND"))
            if not wait or op.status == "DONE" or time.monotonic() >= deadline or self._stop.is_set():
                return op.to_json()
            time.sleep(0.02)


def _fingerprint(value: Any) -> str:
    """A fingerprint of metadata items or labels, as GCE's: opaque, base64, new for each change."""
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()[:8]).decode()


def _region(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def _key(instance: dict[str, Any]) -> tuple[str, str, str]:
    zone = str(instance["zone"]).rsplit("/", 1)[-1]
    project = str(instance["selfLink"]).split("/projects/", 1)[-1].split("/", 1)[0]
    return project, zone, str(instance["name"])


def _host_id(instance: dict[str, Any]) -> str:
    zone = str(instance["zone"]).rsplit("/", 1)[-1]
    return f"{zone}/{instance['name']}"


_TERM = re.compile(r"""\(?\s*labels\.([-_a-z0-9]+)\s*(=|!=|:)\s*("([^"]*)"|'([^']*)'|[^\s()]+)\s*\)?""", re.I)


def _parse_filter(text: str) -> Any:
    """A matcher for the filter syntax Iris uses: ``labels.KEY=VALUE`` (or ``!=``, or ``:*`` for
    presence) terms joined by spaces or ``AND``, each optionally in parentheses. Anything else
    is refused as GCE refuses a bad filter (400)."""
    terms: list[tuple[str, str, str]] = []
    rest = text.strip()
    while rest:
        if rest.upper().startswith("AND "):
            rest = rest[4:].lstrip()
            continue
        m = _TERM.match(rest)
        if not m:
            raise ApiError(InjectedError(400, "invalid", f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.", "INVALID_ARGUMENT"))
        value = m.group(4) if m.group(4) is not None else m.group(5) if m.group(5) is not None else m.group(3)
        terms.append((m.group(1), m.group(2), value))
        rest = rest[m.end():].lstrip()

    def match(instance: Mapping[str, Any]) -> bool:
        labels = instance.get("labels") or {}
        for key, op, value in terms:
            if op == ":" and value == "*":
                ok = key in labels
            elif op == "!=":
                ok = labels.get(key) != value
            else:
                ok = labels.get(key) == value
            if not ok:
                return False
        return True

    return match


_ROUTES = [
    ("GET", re.compile(r"^/compute/v1/projects/([^/]+)/aggregated/instances$"), "aggregatedList"),
    ("GET", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances$"), "list"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances$"), "insert"),
    ("GET", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)$"), "get"),
    ("DELETE", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)$"), "delete"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)/reset$"), "reset"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)/stop$"), "stop"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)/start$"), "start"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)/setMetadata$"), "setMetadata"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)/setLabels$"), "setLabels"),
    ("GET", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/operations/([^/]+)$"), "operations.get"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/operations/([^/]+)/wait$"), "operations.wait"),
    ("GET", re.compile(r"^/compute/v1/projects/([^/]+)/regions/([^/]+)/addresses$"), "addresses.list"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/regions/([^/]+)/addresses$"), "addresses.insert"),
    ("GET", re.compile(r"^/compute/v1/projects/([^/]+)/regions/([^/]+)/addresses/([^/]+)$"), "addresses.get"),
    ("DELETE", re.compile(r"^/compute/v1/projects/([^/]+)/regions/([^/]+)/addresses/([^/]+)$"), "addresses.delete"),
    ("GET", re.compile(r"^/compute/v1/projects/([^/]+)/regions/([^/]+)/operations/([^/]+)$"), "regionOperations.get"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/regions/([^/]+)/operations/([^/]+)/wait$"), "regionOperations.wait"),
]


def _handler_for(fake: FakeCompute) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _dispatch(self, verb: str) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            for route_verb, pattern, method in _ROUTES:
                m = pattern.match(url.path)
                if route_verb != verb or not m:
                    continue
                args = [unquote(g) for g in m.groups()]
                fake.calls.append(method)
                try:
                    fake._injected(method, url.path.removeprefix("/compute/v1/"))
                    body = self._call(method, args, query, raw)
                except ApiError as exc:
                    e = exc.error
                    self._send(e.code, {"error": {"code": e.code, "message": e.message,
                                                  "errors": [{"message": e.message, "domain": "global", "reason": e.reason}]}})  # fmt: skip
                    return
                self._send(200, body)
                return
            self._send(404, {"error": {"code": 404, "message": f"no such method: {verb} {url.path}",
                                       "errors": [{"message": "not found", "domain": "global", "reason": "notFound"}]}})  # fmt: skip

        def _call(self, method: str, args: list[str], query: dict[str, list[str]], raw: bytes) -> dict[str, Any]:
            filter_text = (query.get("filter") or [""])[0]
            if method == "aggregatedList":
                return fake.aggregated_list(args[0], filter_text)
            if method == "list":
                return fake.list(args[0], args[1], filter_text)
            if method in ("insert", "addresses.insert", "setMetadata", "setLabels"):
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    raise ApiError(InjectedError(400, "parseError", "Parse Error", "INVALID_ARGUMENT")) from None
                if method == "addresses.insert":
                    return fake.insert_address(args[0], args[1], body)
                if method == "setMetadata":
                    return fake.set_metadata(*args, body)
                if method == "setLabels":
                    return fake.set_labels(*args, body)
                return fake.insert(args[0], args[1], body)
            if method == "addresses.list":
                return fake.list_addresses(args[0], args[1], filter_text)
            if method == "addresses.get":
                return fake.get_address(*args)
            if method == "addresses.delete":
                return fake.delete_address(*args)
            if method.startswith("regionOperations."):
                return fake.operation(*args, wait=method.endswith(".wait"), scope="regions")
            if method == "get":
                return fake._get_instance(*args)
            if method == "delete":
                return fake.delete(*args)
            if method == "reset":
                return fake.reset(*args)
            if method == "stop":
                return fake.stop(*args)
            if method == "start":
                return fake.start_instance(*args)
            return fake.operation(*args, wait=method == "operations.wait")

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

    return Handler
