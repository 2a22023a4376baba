"""A local fake of the Cloud TPU v2 API that the real ``google-cloud-tpu`` client talks to.

:class:`FakeTpuServer` is a gRPC server on a loopback address serving ``google.cloud.tpu.v2.Tpu``
(CreateNode, GetNode, ListNodes with pagination, DeleteNode) and ``google.longrunning.Operations``
(GetOperation, ListOperations, DeleteOperation, CancelOperation) for its long-running operations.
No servicer classes ship for the TPU API, so a generic handler (de)serializes with the proto-plus
types of ``google.cloud.tpu_v2``. Connect the real client with :meth:`FakeTpuServer.client`::

    with FakeTpuServer(AddressOnlyBooter()) as fake:
        client = fake.client()            # google.cloud.tpu_v2.TpuClient over an insecure channel
        op = client.create_node(parent="projects/p/locations/europe-west4-b", node_id="n", node=...)
        node = op.result()                # READY, with one network endpoint per host

What it does like the real API:

- a create returns an operation; after ``create_delay`` seconds the node's hosts are booted
  through the :class:`~iris_gcp.testing.boot.Booter` (one per host of the accelerator type, see
  :mod:`iris.cluster.tpu`; each host's metadata is the node's plus ``agent-worker-number``), the
  node turns READY with a network endpoint per host, and the operation completes with the node;
- a delete turns the node DELETING and halts its hosts; after ``delete_delay`` it is gone;
- unknown zones are NOT_FOUND, accelerator types the zone does not offer INVALID_ARGUMENT, a
  node id that breaks the naming rule INVALID_ARGUMENT, an existing one ALREADY_EXISTS, and
  labels that break GCP's label rules INVALID_ARGUMENT.

Test hooks: :meth:`preempt` (PREEMPTED, hosts halted), :meth:`terminate` (TERMINATED),
:meth:`set_state`, :meth:`fail_next_create` (quota, stockout, permission, accelerator, zone),
:meth:`fail_next` (any status for the next call of a method), and :attr:`calls` (API calls by
method, for benchmarks and call-count tests).

What it does not do: IAM, real quotas, queued resources, health monitoring, maintenance events,
start/stop/update, and its error texts are modelled on Google's, not copied from a live API.
"""

from __future__ import annotations

import collections
import itertools
import re
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent import futures
from typing import Any

import grpc
from google.cloud import tpu_v2
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2, timestamp_pb2
from google.rpc import status_pb2

from iris.cluster.tpu import TPU_TOPOLOGIES
from iris_gcp.bootstrap import WORKER_INDEX
from iris_gcp.testing.boot import Booter, HostSpec

State = tpu_v2.Node.State

#: Zones the fake knows, each offering every TPU type of :data:`iris.cluster.tpu.TPU_TOPOLOGIES`
#: unless the server is given its own table.
DEFAULT_ZONES = ("europe-west4-a", "europe-west4-b", "us-central1-a", "us-central2-b", "us-east5-b", "us-west4-a")

_NODE_ID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_PARENT = re.compile(r"^projects/([^/]+)/locations/([^/]+)$")
_NODE_NAME = re.compile(r"^projects/([^/]+)/locations/([^/]+)/nodes/([^/]+)$")
_OPERATION_NAME = re.compile(r"^projects/([^/]+)/locations/([^/]+)/operations/([^/]+)$")

#: Presets for :meth:`FakeTpuServer.fail_next_create`: (where, status code, message template).
#: ``where`` is ``call`` (CreateNode itself fails) or ``operation`` (the operation fails).
CREATE_FAILURES: dict[str, tuple[str, grpc.StatusCode, str]] = {
    "quota": (
        "call",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Quota limit 'TPUV5sLitepodPerProjectPerZoneForTPUAPI' has been exceeded. Limit: 16 in zone {zone}.",
    ),
    "stockout": (
        "operation",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        'There is no more capacity in the zone "{zone}"; you can try in another zone where Cloud TPU Nodes '
        "are offered (see https://cloud.google.com/tpu/docs/regions) [EID: 0x5c1f2e3d4b5a6978]",
    ),
    "permission": (
        "call",
        grpc.StatusCode.PERMISSION_DENIED,
        "Permission 'tpu.nodes.create' denied on resource '//tpu.googleapis.com/{parent}/nodes/{node_id}' "
        "(or it may not exist).",
    ),
    "accelerator": (
        "call",
        grpc.StatusCode.INVALID_ARGUMENT,
        'Accelerator type "{accelerator_type}" is not available in zone "{zone}".',
    ),
    "zone": ("call", grpc.StatusCode.NOT_FOUND, 'Location "{parent}" not found.'),
}


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _copy(operation: operations_pb2.Operation) -> operations_pb2.Operation:
    copy = operations_pb2.Operation()
    copy.CopyFrom(operation)
    return copy


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class FakeTpuServer:
    """The fake TPU API on ``host`` (a loopback address) and a free port; see the module doc.

    :param booter: brings each host of a created node to life.
    :param zones: zone -> the accelerator types it offers (default: :data:`DEFAULT_ZONES`, every type).
    :param create_delay: seconds from CreateNode until the node is READY and its operation done.
    :param delete_delay: seconds from DeleteNode until the node is gone.
    :param page_size: ListNodes page size when the request gives none (and its maximum: 1000).
    """

    def __init__(
        self,
        booter: Booter,
        *,
        host: str = "127.0.0.1",
        zones: Mapping[str, Iterable[str]] | None = None,
        create_delay: float = 0.05,
        delete_delay: float = 0.05,
        page_size: int = 50,
    ):
        self.booter = booter
        self.create_delay = create_delay
        self.delete_delay = delete_delay
        self.page_size = page_size
        self._zones = {z: set(types) for z, types in zones.items()} if zones is not None else {z: set(TPU_TOPOLOGIES) for z in DEFAULT_ZONES}
        self._lock = threading.RLock()
        self._nodes: dict[str, tpu_v2.Node] = {}  # full node name -> node
        self._hosts: dict[str, list[str]] = {}  # full node name -> host ids booted for it
        self._operations: dict[str, operations_pb2.Operation] = {}
        self._timers: set[threading.Timer] = set()
        self._failures: dict[str, collections.deque[tuple[str, grpc.StatusCode, str]]] = collections.defaultdict(collections.deque)
        self._ids = itertools.count(1)
        self._closed = False
        self.calls: collections.Counter[str] = collections.Counter()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fake-tpu"))
        self._server.add_generic_rpc_handlers((self._tpu_handler(),))
        operations_pb2_grpc.add_OperationsServicer_to_server(_Operations(self), self._server)
        port = self._server.add_insecure_port(f"{host}:0")
        if not port:
            raise RuntimeError(f"fake TPU API: could not bind {host}")
        self.address = f"{host}:{port}"
        self._server.start()

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> FakeTpuServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server and halt every host it booted (the booter itself stays open)."""
        with self._lock:
            self._closed = True
            timers, self._timers = list(self._timers), set()
            hosts = [h for ids in self._hosts.values() for h in ids]
            self._hosts.clear()
        for timer in timers:
            timer.cancel()
        for host_id in hosts:
            self.booter.halt(host_id)
        self._server.stop(grace=None)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def client(self) -> Any:
        """A real ``google.cloud.tpu_v2.TpuClient`` connected to this server."""
        from google.cloud.tpu_v2.services.tpu.transports import TpuGrpcTransport

        return tpu_v2.TpuClient(transport=TpuGrpcTransport(channel=self.channel()))

    # --- test hooks -------------------------------------------------------------------------

    def reset_calls(self) -> None:
        self.calls.clear()

    def fail_next_create(self, kind: str) -> None:
        """Make the next CreateNode fail like the real API: ``quota`` (RESOURCE_EXHAUSTED on the
        call), ``stockout`` (the operation fails RESOURCE_EXHAUSTED: no capacity in the zone),
        ``permission`` (PERMISSION_DENIED), ``accelerator`` (INVALID_ARGUMENT: type not offered in
        the zone) or ``zone`` (NOT_FOUND: unknown location)."""
        if kind not in CREATE_FAILURES:
            raise ValueError(f"fail_next_create: unknown kind {kind!r}; accepted: {', '.join(CREATE_FAILURES)}")
        with self._lock:
            self._failures["CreateNode"].append(CREATE_FAILURES[kind])

    def fail_next(self, method: str, code: grpc.StatusCode, message: str) -> None:
        """Make the next call of ``method`` (e.g. ``ListNodes``) fail with ``code``."""
        with self._lock:
            self._failures[method].append(("call", code, message))

    def nodes(self) -> list[tpu_v2.Node]:
        with self._lock:
            return [tpu_v2.Node(n) for n in self._nodes.values()]

    def node(self, name_or_id: str) -> tpu_v2.Node | None:
        with self._lock:
            found = self._find(name_or_id)
            return None if found is None else tpu_v2.Node(found)

    def preempt(self, name_or_id: str) -> None:
        """The node is preempted: state PREEMPTED, its hosts halted (as Google does to spot VMs)."""
        self._end(name_or_id, State.PREEMPTED, "The TPU node was preempted.")

    def terminate(self, name_or_id: str) -> None:
        """The node is terminated behind the user's back: state TERMINATED, its hosts halted."""
        self._end(name_or_id, State.TERMINATED, "The TPU node was terminated.")

    def set_state(self, name_or_id: str, state: State) -> None:
        """Put the node in any state (e.g. REPAIRING) without touching its hosts."""
        with self._lock:
            node = self._require(name_or_id)
            node.state = state

    def _end(self, name_or_id: str, state: State, description: str) -> None:
        with self._lock:
            node = self._require(name_or_id)
            node.state = state
            node.health_description = description
            hosts = self._hosts.pop(node.name, [])
        for host_id in hosts:
            self.booter.halt(host_id)

    def _require(self, name_or_id: str) -> tpu_v2.Node:
        node = self._find(name_or_id)
        if node is None:
            raise KeyError(f"fake TPU API: no node {name_or_id!r}")
        return node

    def _find(self, name_or_id: str) -> tpu_v2.Node | None:
        if name_or_id in self._nodes:
            return self._nodes[name_or_id]
        matches = [n for name, n in self._nodes.items() if name.rsplit("/", 1)[-1] == name_or_id]
        return matches[0] if len(matches) == 1 else None

    # --- the TPU service --------------------------------------------------------------------

    def _tpu_handler(self) -> grpc.GenericRpcHandler:
        def unary(method: str, request_type: Any, fn: Any, response_serializer: Any) -> grpc.RpcMethodHandler:
            def handle(request: Any, context: grpc.ServicerContext) -> Any:
                with self._lock:
                    self.calls[method] += 1
                    failures = self._failures.get(method)
                    failure = failures.popleft() if failures and failures[0][0] == "call" else None
                try:
                    if failure is not None:
                        _, code, message = failure
                        raise _Abort(code, self._format(message, request))
                    return fn(request)
                except _Abort as abort:
                    context.abort(abort.code, abort.message)

            return grpc.unary_unary_rpc_method_handler(
                handle, request_deserializer=request_type.deserialize, response_serializer=response_serializer
            )

        op = operations_pb2.Operation.SerializeToString
        return grpc.method_handlers_generic_handler(
            "google.cloud.tpu.v2.Tpu",
            {
                "CreateNode": unary("CreateNode", tpu_v2.CreateNodeRequest, self._create_node, op),
                "GetNode": unary("GetNode", tpu_v2.GetNodeRequest, self._get_node, tpu_v2.Node.serialize),
                "ListNodes": unary("ListNodes", tpu_v2.ListNodesRequest, self._list_nodes, tpu_v2.ListNodesResponse.serialize),
                "DeleteNode": unary("DeleteNode", tpu_v2.DeleteNodeRequest, self._delete_node, op),
            },
        )

    @staticmethod
    def _format(message: str, request: Any) -> str:
        parent = getattr(request, "parent", "") or ""
        zone = parent.rsplit("/", 1)[-1]
        node = getattr(request, "node", None)
        return message.format(
            parent=parent,
            zone=zone,
            node_id=getattr(request, "node_id", ""),
            accelerator_type=getattr(node, "accelerator_type", "") if node is not None else "",
        )

    def _zone_of(self, parent: str) -> tuple[str, str]:
        match = _PARENT.match(parent)
        if match is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f'Invalid parent "{parent}": expected projects/{{project}}/locations/{{zone}}.')
        project, zone = match.groups()
        if zone not in self._zones:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f'Location "{parent}" not found.')
        return project, zone

    def _create_node(self, request: tpu_v2.CreateNodeRequest) -> operations_pb2.Operation:
        parent = request.parent
        with self._lock:
            _, zone = self._zone_of(parent)
            node_id = request.node_id
            if not _NODE_ID.match(node_id) or len(node_id) > 63:
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'Invalid node_id "{node_id}": it must be 1-63 characters, start with a lowercase letter and contain only lowercase letters, digits and hyphens.',
                )
            accelerator = request.node.accelerator_type
            if not accelerator:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Missing accelerator_type or accelerator_config.")
            if accelerator not in self._zones[zone]:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f'Accelerator type "{accelerator}" is not available in zone "{zone}".')
            if not request.node.runtime_version:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Missing runtime_version.")
            for key, value in request.node.labels.items():
                if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                    raise _Abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f'Invalid label "{key}={value}": keys must start with a lowercase letter; keys and values may contain only lowercase letters, digits, "_" and "-", at most 63 characters.',
                    )
            name = f"{parent}/nodes/{node_id}"
            if name in self._nodes:
                raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f'Resource "{name}" already exists.')
            node = tpu_v2.Node(request.node)
            node.name = name
            node.state = State.CREATING
            node.id = next(self._ids)
            node.api_version = tpu_v2.Node.ApiVersion.V2
            node.create_time = _now()
            node.network_endpoints = []
            self._nodes[name] = node
            failures = self._failures.get("CreateNode")
            failure = failures.popleft() if failures and failures[0][0] == "operation" else None
            operation = self._new_operation(zone, parent.split("/")[1], name, "create")
            if failure is not None:
                _, code, message = failure
                self._later(self.create_delay, self._fail_create, name, operation.name, code, self._format(message, request))
            else:
                self._later(self.create_delay, self._finish_create, name, operation.name)
            return _copy(operation)

    def _boot_hosts(self, node: tpu_v2.Node) -> list[tuple[str, str]]:
        topology = TPU_TOPOLOGIES.get(node.accelerator_type)
        hosts = topology.hosts if topology is not None else 1
        booted = []
        for index in range(hosts):
            host_id = f"{node.name.rsplit('/', 1)[-1]}/w-{index}"
            metadata = {**node.metadata, WORKER_INDEX: str(index)}
            address = self.booter.boot(HostSpec(host_id=host_id, metadata=metadata, labels=dict(node.labels)))
            booted.append((host_id, address))
        return booted

    def _finish_create(self, name: str, operation_name: str) -> None:
        with self._lock:
            node = self._nodes.get(name)
            if node is None or node.state != State.CREATING:
                self._complete(operation_name, error=(grpc.StatusCode.ABORTED, f'The node "{name}" was deleted while it was being created.'))
                return
            snapshot = tpu_v2.Node(node)
        try:
            booted = self._boot_hosts(snapshot)
        except Exception as exc:  # the booter could not start a host: the create fails
            with self._lock:
                self._nodes.pop(name, None)
            self._complete(operation_name, error=(grpc.StatusCode.INTERNAL, f"Internal error creating the TPU node: {exc}"))
            return
        with self._lock:
            node = self._nodes.get(name)
            if node is None or node.state != State.CREATING:  # deleted or preempted while booting
                halt = [h for h, _ in booted]
                error = (grpc.StatusCode.ABORTED, f'The node "{name}" was deleted while it was being created.')
                result = None
            else:
                halt = []
                self._hosts[name] = [h for h, _ in booted]
                node.network_endpoints = [tpu_v2.NetworkEndpoint(ip_address=a, port=8470) for _, a in booted]
                node.state = State.READY
                node.health = tpu_v2.Node.Health.HEALTHY
                error = None
                result = tpu_v2.Node(node)
        for host_id in halt:
            self.booter.halt(host_id)
        self._complete(operation_name, error=error, response=result)

    def _fail_create(self, name: str, operation_name: str, code: grpc.StatusCode, message: str) -> None:
        with self._lock:
            self._nodes.pop(name, None)
        self._complete(operation_name, error=(code, message))

    def _get_node(self, request: tpu_v2.GetNodeRequest) -> tpu_v2.Node:
        with self._lock:
            match = _NODE_NAME.match(request.name)
            if match is None:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f'Invalid node name "{request.name}".')
            self._zone_of(f"projects/{match.group(1)}/locations/{match.group(2)}")
            node = self._nodes.get(request.name)
            if node is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f'Resource "{request.name}" was not found.')
            return tpu_v2.Node(node)

    def _list_nodes(self, request: tpu_v2.ListNodesRequest) -> tpu_v2.ListNodesResponse:
        with self._lock:
            self._zone_of(request.parent)
            prefix = f"{request.parent}/nodes/"
            names = sorted(n for n in self._nodes if n.startswith(prefix))
            size = min(request.page_size or self.page_size, 1000)
            start = 0
            if request.page_token:
                try:
                    start = int(request.page_token)
                except ValueError:
                    raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f'Invalid page_token "{request.page_token}".') from None
            page = names[start : start + size]
            token = str(start + size) if start + size < len(names) else ""
            return tpu_v2.ListNodesResponse(nodes=[tpu_v2.Node(self._nodes[n]) for n in page], next_page_token=token)

    def _delete_node(self, request: tpu_v2.DeleteNodeRequest) -> operations_pb2.Operation:
        with self._lock:
            match = _NODE_NAME.match(request.name)
            if match is None:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f'Invalid node name "{request.name}".')
            project, zone, _ = match.groups()
            self._zone_of(f"projects/{project}/locations/{zone}")
            node = self._nodes.get(request.name)
            if node is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f'Resource "{request.name}" was not found.')
            node.state = State.DELETING
            hosts = self._hosts.pop(request.name, [])
            operation = self._new_operation(zone, project, request.name, "delete")
            self._later(self.delete_delay, self._finish_delete, request.name, operation.name, node.id)
        for host_id in hosts:
            self.booter.halt(host_id)
        return _copy(operation)

    def _finish_delete(self, name: str, operation_name: str, node_id: int) -> None:
        with self._lock:
            node = self._nodes.get(name)
            if node is not None and node.id == node_id:
                del self._nodes[name]
        self._complete(operation_name, response=None, empty=True)

    # --- operations -------------------------------------------------------------------------

    def _new_operation(self, zone: str, project: str, target: str, verb: str) -> operations_pb2.Operation:
        name = f"projects/{project}/locations/{zone}/operations/operation-{int(time.time() * 1000)}-{next(self._ids)}"
        operation = operations_pb2.Operation(name=name, done=False)
        meta = tpu_v2.OperationMetadata(create_time=_now(), target=target, verb=verb, api_version="v2")
        operation.metadata.Pack(tpu_v2.OperationMetadata.pb(meta))
        self._operations[name] = operation
        return operation

    def _complete(
        self,
        operation_name: str,
        *,
        error: tuple[grpc.StatusCode, str] | None = None,
        response: tpu_v2.Node | None = None,
        empty: bool = False,
    ) -> None:
        with self._lock:
            operation = self._operations.get(operation_name)
            if operation is None or operation.done:
                return
            operation.done = True
            if error is not None:
                code, message = error
                operation.error.CopyFrom(status_pb2.Status(code=code.value[0], message=message))
            elif empty:
                operation.response.Pack(empty_pb2.Empty())
            elif response is not None:
                operation.response.Pack(tpu_v2.Node.pb(response))

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        if self._closed:
            return

        def run() -> None:
            with self._lock:
                self._timers.discard(timer)
                if self._closed:
                    return
            fn(*args)

        timer = threading.Timer(delay, run)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _get_operation(self, name: str) -> operations_pb2.Operation:
        with self._lock:
            self.calls["GetOperation"] += 1
            operation = self._operations.get(name)
            if operation is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f'Operation "{name}" was not found.')
            return _copy(operation)

    def _list_operations(self, parent: str) -> list[operations_pb2.Operation]:
        with self._lock:
            self.calls["ListOperations"] += 1
            prefix = parent.rstrip("/") + "/operations/"
            return [_copy(self._operations[n]) for n in sorted(self._operations) if n.startswith(prefix)]


class _Operations(operations_pb2_grpc.OperationsServicer):
    def __init__(self, fake: FakeTpuServer):
        self._fake = fake

    def GetOperation(self, request: operations_pb2.GetOperationRequest, context: grpc.ServicerContext) -> operations_pb2.Operation:
        try:
            return self._fake._get_operation(request.name)
        except _Abort as abort:
            context.abort(abort.code, abort.message)

    def ListOperations(self, request: operations_pb2.ListOperationsRequest, context: grpc.ServicerContext) -> operations_pb2.ListOperationsResponse:
        return operations_pb2.ListOperationsResponse(operations=self._fake._list_operations(request.name))

    def DeleteOperation(self, request: operations_pb2.DeleteOperationRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        with self._fake._lock:
            self._fake._operations.pop(request.name, None)
        return empty_pb2.Empty()

    def CancelOperation(self, request: operations_pb2.CancelOperationRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self._fake._complete(request.name, error=(grpc.StatusCode.CANCELLED, "Operation cancelled."))
        return empty_pb2.Empty()
