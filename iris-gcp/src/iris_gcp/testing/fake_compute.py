"""A fake of the Compute Engine API (``compute/v1``, REST) for instances, that boots what it creates.

The real ``google.cloud.compute_v1`` clients talk to it::

    fake = FakeCompute(booter).start()
    client = InstancesClient(credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": fake.endpoint})

It serves the subset Iris uses: ``instances.insert|get|list|aggregatedList|delete|reset|stop|
start`` and ``zoneOperations.get|wait``. Mutations return a zone operation that is ``DONE`` after
``operation_delay`` seconds; its effect (booting, halting) happens then. An inserted instance is
booted through the :class:`~iris_gcp.testing.boot.Booter`: its metadata items become the host's
metadata (``startup-script`` included) and the booted address is its
``networkInterfaces[0].networkIP``; deleting or stopping it halts the host.

``fail_next(method, error)`` makes the next call of one method fail the way Google fails it
(the same status codes and error bodies): ``permission``, ``quota``, ``not_found``,
``bad_zone``, ``bad_machine_type``, or an :class:`InjectedError` of your own.

What it does not do: IAM, networks and firewalls (any network name is accepted), external
addresses (``natIP`` stays empty), disks as resources, pagination (one page holds every item),
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

from iris_gcp.testing.boot import Booter, HostSpec

ZONES = (
    "europe-west4-a", "europe-west4-b", "europe-west4-c", "us-central1-a", "us-central1-b", "us-central1-c",
    "us-central1-f", "us-central2-b", "us-east1-d", "us-east5-a", "us-west4-a", "asia-northeast1-b",
)  # fmt: skip
MACHINE_TYPE = re.compile(r"^(e2|n1|n2|n2d|n4|c2|c2d|c3|c3d|c4|t2d|m1|m3)-(standard|highmem|highcpu|micro|small|medium)(-\d+)?$")
NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
LABEL_VALUE = re.compile(r"^[-_a-z0-9]{0,63}$")
BASE = "https://www.googleapis.com/compute/v1"


@attrs.frozen
class InjectedError:
    """An HTTP error as Google returns it: ``{"error": {"code", "message", "errors": [{reason}]}}``."""

    code: int
    reason: str
    message: str
    status: str = ""


def _named_error(kind: str, resource: str, method: str = "get") -> InjectedError:
    permission = f"compute.{'zoneOperations' if method.startswith('operations') else 'instances'}.{method.split('.')[-1]}"
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


@attrs.define
class _Operation:
    project: str
    zone: str
    name: str
    op_type: str
    target: str
    done_at: float
    effect: Any  # callable run once when the operation completes
    status: str = "RUNNING"
    error: InjectedError | None = None
    insert_time: str = attrs.field(factory=_now)
    end_time: str = ""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(abs(hash(self.name)) % 10**18),
            "name": self.name,
            "zone": f"{BASE}/projects/{self.project}/zones/{self.zone}",
            "operationType": self.op_type,
            "targetLink": self.target,
            "status": self.status,
            "progress": 100 if self.status == "DONE" else 0,
            "insertTime": self.insert_time,
            "startTime": self.insert_time,
            "selfLink": f"{BASE}/projects/{self.project}/zones/{self.zone}/operations/{self.name}",
        }
        if self.end_time:
            body["endTime"] = self.end_time
        if self.error is not None:
            body["error"] = {"errors": [{"code": self.error.status or self.error.reason.upper(), "message": self.error.message}]}
            body["httpErrorStatusCode"] = self.error.code
            body["httpErrorMessage"] = {403: "FORBIDDEN", 404: "NOT FOUND", 400: "BAD REQUEST"}.get(self.error.code, "ERROR")
        return body


class FakeCompute:
    """The fake API's state and HTTP server (on 127.0.0.1, a free port unless given)."""

    def __init__(self, booter: Booter, *, operation_delay: float = 0.0, zones: tuple[str, ...] = ZONES, port: int = 0):
        self.booter = booter
        self.operation_delay = operation_delay
        self.zones = set(zones)
        self.instances: dict[tuple[str, str, str], dict[str, Any]] = {}  # (project, zone, name) -> instance JSON
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

    def _operation(self, project: str, zone: str, op_type: str, target: str, effect: Any) -> dict[str, Any]:
        name = f"operation-{int(time.time() * 1000)}-{next(self._ids):06d}"
        op = _Operation(project, zone, name, op_type, target, time.monotonic() + self.operation_delay, effect)
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
        name = str(body.get("name", ""))
        if not NAME.match(name):
            raise ApiError(InjectedError(
                400, "invalid", f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'",
                "INVALID_ARGUMENT"))  # fmt: skip
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
            for nic in interfaces:
                for access in nic.get("accessConfigs") or []:
                    access.setdefault("natIP", "")  # no external address here: nothing leaves the machine
            instance = {
                **body,
                "kind": "compute#instance",
                "id": str(next(self._ids) + 4_000_000_000_000_000_000),
                "name": name,
                "zone": f"{BASE}/projects/{project}/zones/{zone}",
                "machineType": f"{BASE}/projects/{project}/zones/{zone}/machineTypes/{machine_type}",
                "status": "PROVISIONING",
                "labels": labels,
                "labelFingerprint": "42WmSpB8rSM=",
                "networkInterfaces": interfaces,
                "creationTimestamp": _now(),
                "selfLink": self_link,
            }
            self.instances[(project, zone, name)] = instance

        def boot() -> None:
            self._boot(instance)

        return self._operation(project, zone, "insert", self_link, boot)

    def _boot(self, instance: dict[str, Any]) -> None:
        items = (instance.get("metadata") or {}).get("items") or []
        spec = HostSpec(_host_id(instance), {i["key"]: i.get("value", "") for i in items}, dict(instance.get("labels") or {}))
        address = self.booter.boot(spec)
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

    def operation(self, project: str, zone: str, name: str, *, wait: bool) -> dict[str, Any]:
        self._check_zone(project, zone)
        deadline = time.monotonic() + 120.0  # zoneOperations.wait returns when done or after 2 minutes
        while True:
            with self._lock:
                op = self.operations.get((project, zone, name))
            if op is None:
                resource = f"projects/{project}/zones/{zone}/operations/{name}"
                raise ApiError(InjectedError(404, "notFound", f"The resource '{resource}' was not found", "NOT_FOUND"))
            if not wait or op.status == "DONE" or time.monotonic() >= deadline or self._stop.is_set():
                return op.to_json()
            time.sleep(0.02)


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
    ("GET", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/operations/([^/]+)$"), "operations.get"),
    ("POST", re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/operations/([^/]+)/wait$"), "operations.wait"),
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
            if method == "insert":
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    raise ApiError(InjectedError(400, "parseError", "Parse Error", "INVALID_ARGUMENT")) from None
                return fake.insert(args[0], args[1], body)
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
