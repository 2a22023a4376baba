"""The ``gcp`` provider's VmManager: one TPU VM node (Cloud TPU API v2) per Iris slice.

A slice is a TPU node named after the slice id, in the scale group's zone, with one Iris worker
per host (``<slice id>-w<index>``, the host's ``agent-worker-number``). What the node is comes
from the SliceRequest the autoscaler builds (:mod:`iris.cluster.scale_groups`):

- accelerator type: the template's ``accelerator_type``, else the ``device-variant`` attribute
  (the group's ``accelerator_variant``);
- zone: the template's ``zone``, else the ``zone`` attribute (the group's first zone), else
  ``provider.zone``;
- runtime version: the template's ``runtime_version`` (the group's ``runtime_version``), else the
  usual one for the TPU generation (:data:`DEFAULT_RUNTIME_VERSIONS`);
- preemptible (``preemptible: true``) or spot (template ``spot: true``);
- network, subnetwork and external IPs: template, else ``provider.options``;
- labels: GCP's rules allow only ``[a-z0-9_-]``, at most 63 characters, keys starting with a letter;
  :func:`gcp_labels` maps Iris labels onto them (``iris.cluster`` -> ``iris-cluster``) for the
  console and billing, and the exact Iris labels travel in the node's metadata (``iris-labels``),
  which is what :meth:`TpuVmManager.list_slices` filters on;
- metadata: :func:`iris_gcp.bootstrap.worker_metadata` (startup script, image, controller address,
  a token per host index when auth is on).

Listing costs one ``ListNodes`` per zone (more pages only beyond 500 nodes), whatever the number of
slices: ``list_slices`` and ``describe_slice`` read a per-zone snapshot no older than
``list_max_age_seconds`` (default 1 s), and concurrent callers share one fetch; a create or delete
refreshes the snapshot of its zone.

Node states map to slice states by :data:`STATES` (REPAIRING is FAILED: a host of the slice is
down, so a gang on it cannot run; the autoscaler replaces the slice).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from iris.errors import PluginError
from iris.plugin.protocols import SliceInfo, SliceRequest, SliceState, VmInfo
from iris.plugin.records import ProviderContext
from iris_gcp import bootstrap
from iris_gcp.errors import google_errors

logger = logging.getLogger(__name__)

#: Node metadata keys Iris adds beside the bootstrap keys.
SLICE_ID = "iris-slice-id"
SCALE_GROUP = "iris-scale-group"
LABELS = "iris-labels"

#: The runtime version used when the scale group gives none, by TPU generation.
DEFAULT_RUNTIME_VERSIONS = {
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}

#: Node state name -> slice state. Anything not listed (UNKNOWN, a state added later) is FAILED.
STATES: dict[str, SliceState] = {
    "STATE_UNSPECIFIED": SliceState.BOOTING,
    "CREATING": SliceState.BOOTING,
    "STARTING": SliceState.BOOTING,
    "RESTARTING": SliceState.BOOTING,
    "REIMAGING": SliceState.BOOTING,
    "READY": SliceState.READY,
    "REPAIRING": SliceState.FAILED,
    "STOPPING": SliceState.FAILED,
    "STOPPED": SliceState.FAILED,
    "PREEMPTED": SliceState.PREEMPTED,
    "TERMINATED": SliceState.FAILED,
    "DELETING": SliceState.DELETING,
    "HIDING": SliceState.DELETING,
    "HIDDEN": SliceState.DELETING,
    "UNHIDING": SliceState.BOOTING,
}

_ERRORS = {
    "REPAIRING": "Google is repairing the TPU node {node} (a host failed); its workers are down, so Iris replaces the slice",
    "STOPPING": "the TPU node {node} is being stopped outside Iris; Iris replaces the slice",
    "STOPPED": "the TPU node {node} was stopped outside Iris; Iris replaces the slice",
    "PREEMPTED": "the TPU node {node} was preempted by Google (preemptible/spot capacity was reclaimed)",
    "TERMINATED": "the TPU node {node} was terminated",
}

_NODE_ID = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_CHARS = re.compile(r"[^a-z0-9_-]")
_PAGE_SIZE = 500
_CALL_TIMEOUT = 60.0  # seconds for one API call (an operation is waited for separately)


# --- names and labels -----------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def node_id(slice_id: str) -> str:
    """The TPU node id of a slice: the slice id itself when it is a valid node id (lowercase
    letters, digits and hyphens, starting with a letter, at most 63), else a cleaned version with
    a short hash of the original (so two slice ids never share a node)."""
    if _NODE_ID.match(slice_id):
        return slice_id
    cleaned = re.sub(r"[^a-z0-9-]+", "-", slice_id.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"iris-{cleaned}".rstrip("-")
    return f"{cleaned[:54].rstrip('-')}-{_digest(slice_id)}"


def gcp_label(text: str, *, key: bool) -> str:
    """``text`` as a GCP label key or value: lowercase, characters outside ``[a-z0-9_-]`` become
    ``-``, a key starts with a letter (``x`` is put in front otherwise), and a text longer than
    63 keeps its first 54 characters and a hash of the whole."""
    cleaned = _LABEL_CHARS.sub("-", text.lower())
    if key and not cleaned[:1].isalpha():
        cleaned = f"x{cleaned}"
    if len(cleaned) > 63:
        cleaned = f"{cleaned[:54]}-{_digest(text)}"
    return cleaned


def gcp_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Iris labels as GCP labels (see :func:`gcp_label`)."""
    return {gcp_label(k, key=True): gcp_label(v, key=False) for k, v in labels.items()}


def runtime_version_for(accelerator_type: str) -> str:
    generation = accelerator_type.split("-", 1)[0]
    return DEFAULT_RUNTIME_VERSIONS.get(generation, "tpu-ubuntu2204-base")


# --- the VmManager --------------------------------------------------------------------------


class _ZoneSnapshot:
    """The nodes of one zone as last listed; ``fetching`` is set while a list is in flight."""

    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}  # node id -> tpu_v2.Node
        self.fetched_at: float | None = None
        self.fetching: threading.Event | None = None
        self.error: BaseException | None = None


class TpuVmManager:
    """Implements :class:`iris.plugin.protocols.VmManager` on the Cloud TPU v2 API.

    :param context: ``options`` is the provider section of the config (``project_id``, ``zone``,
        and under ``options``: ``worker_image``, ``network``, ``subnetwork``, ``internal_ips``,
        ``zones``, ``list_max_age_seconds``, ``create_timeout_seconds``) plus ``docker_image``.
    :param client: a ``google.cloud.tpu_v2.TpuClient`` (tests pass one connected to the fake).
    :param clock: monotonic seconds, for the age of the per-zone snapshots.
    """

    def __init__(self, context: ProviderContext, client: Any, clock: Callable[[], float] = time.monotonic):
        options = dict(context.options or {})
        section = dict(options.get("options") or {})
        self._context = context
        self._client = client
        self._clock = clock
        self._project = str(options.get("project_id") or "")
        if not self._project:
            raise PluginError("provider.project_id: empty; the gcp provider needs the Google Cloud project to create TPU nodes in")
        self._zone = str(options.get("zone") or "")
        self._section = section
        self._prefix = context.label_prefix or "iris"
        self._docker_image = str(options.get("docker_image") or "")
        self._runtime = str(options.get("runtime") or "docker")
        self._list_max_age = float(section.get("list_max_age_seconds", 1.0))
        self._create_timeout = float(section.get("create_timeout_seconds", 900.0))
        zones = [self._zone, *_strings(section.get("zones"), "provider.options.zones"), *_strings(options.get("scale_group_zones"), "scale_groups.*.zones")]
        self._lock = threading.Lock()
        self._zones: dict[str, _ZoneSnapshot] = {z: _ZoneSnapshot() for z in zones if z}
        self._slice_zones: dict[str, str] = {}  # slice id -> zone, for slices seen or created

    # --- helpers ----------------------------------------------------------------------------

    def _parent(self, zone: str) -> str:
        return f"projects/{self._project}/locations/{zone}"

    def _zone_hint(self, zone: str) -> str:
        return (
            f"zone {zone!r} (from the scale group's zones or provider.zone) is not a zone where the project "
            f"{self._project!r} can create TPU nodes: check the spelling and https://cloud.google.com/tpu/docs/regions-zones"
        )

    def _snapshot(self, zone: str, max_age: float) -> dict[str, Any]:
        """The zone's nodes by id, listed at most ``max_age`` seconds ago; callers that arrive
        while a list is in flight wait for it instead of listing again."""
        while True:
            with self._lock:
                snap = self._zones.setdefault(zone, _ZoneSnapshot())
                fresh = snap.fetched_at is not None and self._clock() - snap.fetched_at <= max_age
                if fresh:
                    return dict(snap.nodes)
                if snap.fetching is None:
                    snap.fetching = threading.Event()
                    started = self._clock()
                    break
                waiting = snap.fetching
            waiting.wait()
            with self._lock:
                if snap.error is not None and snap.fetching is None:
                    raise snap.error
                if snap.fetched_at is not None:
                    return dict(snap.nodes)
        try:
            with google_errors("list TPU nodes in", self._parent(zone), self._zone_hint(zone)):
                nodes = {n.name.rsplit("/", 1)[-1]: n for n in self._client.list_nodes(request={"parent": self._parent(zone), "page_size": _PAGE_SIZE}, timeout=_CALL_TIMEOUT)}
        except BaseException as exc:
            with self._lock:
                snap.error, event, snap.fetching = exc, snap.fetching, None
            event.set()
            raise
        with self._lock:
            snap.nodes, snap.fetched_at, snap.error = nodes, started, None
            event, snap.fetching = snap.fetching, None
            for node in nodes.values():
                self._slice_zones[self._slice_id_of(node)] = zone
        event.set()
        return dict(nodes)

    def _invalidate(self, zone: str) -> None:
        with self._lock:
            snap = self._zones.setdefault(zone, _ZoneSnapshot())
            snap.fetched_at = None

    def _zone_list(self) -> list[str]:
        with self._lock:
            return sorted(self._zones)

    @staticmethod
    def _slice_id_of(node: Any) -> str:
        return node.metadata.get(SLICE_ID) or node.name.rsplit("/", 1)[-1]

    def _find(self, slice_id: str, max_age: float) -> tuple[str, Any] | None:
        """(zone, node) of the slice, or None."""
        with self._lock:
            known = self._slice_zones.get(slice_id)
        zones = [known] if known else self._zone_list()
        wanted = node_id(slice_id)
        for zone in zones:
            node = self._snapshot(zone, max_age).get(wanted)
            if node is not None and self._slice_id_of(node) == slice_id:
                return zone, node
        return None

    def slice_info(self, node: Any) -> SliceInfo:
        """The SliceInfo of a TPU node."""
        from iris.cluster.tpu import TPU_TOPOLOGIES

        state_name = node.state.name if hasattr(node.state, "name") else str(node.state)
        state = STATES.get(state_name, SliceState.FAILED)
        slice_id = self._slice_id_of(node)
        try:
            labels = json.loads(node.metadata[LABELS])
        except (KeyError, ValueError):
            labels = dict(node.labels)
        scale_group = node.metadata.get(SCALE_GROUP) or labels.get(f"{self._prefix}.scale-group", "")
        topology = TPU_TOPOLOGIES.get(node.accelerator_type)
        endpoints = [e.ip_address for e in node.network_endpoints]
        hosts = max(topology.hosts if topology is not None else 1, len(endpoints))
        vms = [
            VmInfo(
                vm_id=bootstrap.worker_id(slice_id, i),
                address=endpoints[i] if i < len(endpoints) else "",
                state=state,
                attributes={"worker-index": str(i), "tpu-node": node.name.rsplit("/", 1)[-1]},
            )
            for i in range(hosts)
        ]
        error = ""
        if state in (SliceState.FAILED, SliceState.PREEMPTED):
            template = _ERRORS.get(state_name, "the TPU node {node} is in state " + state_name)
            error = template.format(node=node.name)
            if node.health_description:
                error += f" ({node.health_description.rstrip('.')})"
        return SliceInfo(slice_id=slice_id, scale_group=scale_group, state=state, labels=labels, vms=vms, error=error)

    # --- VmManager --------------------------------------------------------------------------

    def create_slice(self, request: SliceRequest) -> SliceInfo:
        from google.api_core import exceptions as gexc

        zone, node = self._node_for(request)
        name = f"{self._parent(zone)}/nodes/{node_id(request.slice_id)}"
        with self._lock:
            self._slice_zones[request.slice_id] = zone
            self._zones.setdefault(zone, _ZoneSnapshot())
        try:
            with google_errors("create TPU node", name, self._zone_hint(zone)):
                try:
                    operation = self._client.create_node(parent=self._parent(zone), node_id=node_id(request.slice_id), node=node, timeout=_CALL_TIMEOUT)
                except gexc.AlreadyExists:
                    operation = None
                if operation is not None:
                    self._wait(operation, name)
        finally:
            self._invalidate(zone)
        with google_errors("read TPU node", name):
            try:
                created = self._client.get_node(name=name, timeout=_CALL_TIMEOUT)
            except gexc.NotFound:
                created = None
        if created is None:
            raise PluginError(f"create TPU node {name}: the node vanished right after it was created; Iris retries with backoff")
        return self.slice_info(created)

    def _wait(self, operation: Any, name: str) -> None:
        """Wait for a create to finish (it can take minutes on Google) up to
        ``create_timeout_seconds``; its failure raises. If it is still running then, the slice is
        returned BOOTING and the autoscaler polls it."""
        deadline = time.monotonic() + self._create_timeout
        interval = 0.05
        while not operation.done():
            if time.monotonic() >= deadline:
                logger.info("TPU node %s still creating after %.0f s; polling it from now on", name, self._create_timeout)
                return
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 1.5, 5.0)
        error = operation.exception()
        if error is not None:
            raise error

    def _node_for(self, request: SliceRequest) -> tuple[str, Any]:
        """(zone, tpu_v2.Node) to create for the request."""
        from google.cloud import tpu_v2

        from iris.cluster.tpu import TPU_TOPOLOGIES

        template: dict[str, Any] = dict(request.template or {})
        nested = template.pop("tpu", None)
        if isinstance(nested, Mapping):  # the seeds' shape: scale group provider: {tpu: {...}}
            template.update(nested)
        group = request.scale_group
        accelerator = str(template.get("accelerator_type") or request.attributes.get("device-variant") or "")
        if not accelerator:
            raise PluginError(
                f"scale_groups.{group}.accelerator_variant: empty; the gcp provider creates TPU nodes and needs a TPU type "
                f"(e.g. v5litepod-16; known: {', '.join(TPU_TOPOLOGIES)})"
            )
        topology = TPU_TOPOLOGIES.get(accelerator)
        if topology is not None and request.vm_count not in (0, 1, topology.hosts):
            raise PluginError(
                f"scale_groups.{group}.vms_per_slice: {request.vm_count}, but a {accelerator} node has {topology.hosts} "
                f"host(s); remove vms_per_slice or set it to {topology.hosts}"
            )
        zone = str(template.get("zone") or request.attributes.get("zone") or self._zone)
        if not zone:
            raise PluginError(f"scale_groups.{group}.zones: empty and provider.zone is not set; give the zone to create TPU nodes in (e.g. europe-west4-b)")
        image = str(template.get("worker_image") or self._section.get("worker_image") or self._docker_image)
        if not image:
            raise PluginError(
                "provider.options.worker_image: empty (and docker.image too); give the Iris worker image the TPU hosts run "
                "(e.g. europe-west4-docker.pkg.dev/PROJECT/iris/iris-worker:latest, built with `iris build worker-image`)"
            )
        hosts = topology.hosts if topology is not None else max(request.vm_count, 1)
        tokens = None
        if self._context.worker_token is not None:
            tokens = {i: self._context.worker_token(bootstrap.worker_id(request.slice_id, i)) for i in range(hosts)}
        metadata = bootstrap.worker_metadata(
            image=image,
            controller_address=self._context.controller_address,
            slice_id=request.slice_id,
            scale_group=group,
            attributes=request.attributes,
            runtime=self._runtime,
            task_image=self._docker_image,
            cpu=request.cpu,
            memory_bytes=request.memory_bytes,
            tokens=tokens,
        )
        metadata[SLICE_ID] = request.slice_id
        metadata[SCALE_GROUP] = group
        metadata[LABELS] = json.dumps(dict(request.labels), sort_keys=True)
        labels = gcp_labels(request.labels)
        labels[gcp_label(f"{self._prefix}-slice-id", key=True)] = gcp_label(request.slice_id, key=False)
        preemptible = _truthy(template.get("preemptible", request.attributes.get("preemptible", "false")))
        spot = _truthy(template.get("spot", self._section.get("spot", False)))
        network = str(template.get("network") or self._section.get("network") or "")
        subnetwork = str(template.get("subnetwork") or self._section.get("subnetwork") or "")
        internal = _truthy(template.get("internal_ips", self._section.get("internal_ips", False)))
        node = tpu_v2.Node(
            accelerator_type=accelerator,
            runtime_version=str(template.get("runtime_version") or runtime_version_for(accelerator)),
            description=f"Iris slice {request.slice_id} of scale group {group}",
            labels=labels,
            metadata=metadata,
            network_config=tpu_v2.NetworkConfig(network=network, subnetwork=subnetwork, enable_external_ips=not internal),
            scheduling_config=tpu_v2.SchedulingConfig(preemptible=preemptible and not spot, spot=spot),
        )
        service_account = template.get("service_account") or self._section.get("service_account")
        if service_account:
            node.service_account = tpu_v2.ServiceAccount(email=str(service_account), scope=["https://www.googleapis.com/auth/cloud-platform"])
        return zone, node

    def list_slices(self, labels: Mapping[str, str]) -> list[SliceInfo]:
        found = []
        for zone in self._zone_list():
            for node in self._snapshot(zone, self._list_max_age).values():
                if LABELS not in node.metadata and SLICE_ID not in node.metadata:
                    continue  # not an Iris node
                info = self.slice_info(node)
                if all(info.labels.get(k) == v for k, v in labels.items()):
                    found.append(info)
        return sorted(found, key=lambda s: s.slice_id)

    def describe_slice(self, slice_id: str) -> SliceInfo | None:
        found = self._find(slice_id, self._list_max_age)
        return None if found is None else self.slice_info(found[1])

    def delete_slice(self, slice_id: str) -> None:
        from google.api_core import exceptions as gexc

        found = self._find(slice_id, self._list_max_age) or self._find(slice_id, 0.0)
        if found is None:
            return
        zone, node = found
        if node.state.name == "DELETING":
            return
        try:
            with google_errors("delete TPU node", node.name):
                try:
                    self._client.delete_node(name=node.name, timeout=_CALL_TIMEOUT)
                except gexc.NotFound:
                    pass
        finally:
            self._invalidate(zone)

    def close(self) -> None:
        transport = getattr(self._client, "transport", None)
        if transport is not None:
            try:
                transport.close()
            except Exception:  # closing twice, or a transport without a channel
                pass


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _strings(value: object, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    raise PluginError(f"{field}: {value!r} is not a list of zones")


def open_client(options: Mapping[str, Any]) -> Any:
    """A TpuClient: to ``provider.options.tpu_api_endpoint`` when given (plain gRPC to a loopback
    address, e.g. the fake; TLS otherwise), else Google's endpoint with Application Default
    Credentials."""
    from google.cloud import tpu_v2

    section = dict(options.get("options") or {})
    endpoint = str(section.get("tpu_api_endpoint") or "")
    if not endpoint:
        from google.auth import exceptions as auth_exceptions

        try:
            return tpu_v2.TpuClient()
        except auth_exceptions.DefaultCredentialsError as exc:
            raise PluginError(
                f"the Cloud TPU API: no Google credentials ({str(exc).splitlines()[0]}); run "
                "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
            ) from exc
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    if host == "localhost" or host.startswith("127.") or host == "::1":
        import grpc
        from google.cloud.tpu_v2.services.tpu.transports import TpuGrpcTransport

        return tpu_v2.TpuClient(transport=TpuGrpcTransport(channel=grpc.insecure_channel(endpoint)))
    return tpu_v2.TpuClient(client_options={"api_endpoint": endpoint})
