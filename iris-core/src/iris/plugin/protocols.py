"""What the objects built by plugin factories must do, one Protocol per seam.

The value types passed across the seams (slices, container specs, statuses) are defined here
too, so a plugin depends on nothing but this module and :mod:`iris.plugin.records`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs

# --- VmManager ------------------------------------------------------------------------------


class SliceState(enum.Enum):
    REQUESTING = "REQUESTING"
    BOOTING = "BOOTING"
    INITIALIZING = "INITIALIZING"
    READY = "READY"
    FAILED = "FAILED"
    PREEMPTED = "PREEMPTED"
    DELETING = "DELETING"


@attrs.frozen
class SliceRequest:
    """Ask for one slice of ``vm_count`` machines for a scale group.

    ``slice_id`` is chosen by the caller, so a retried create is idempotent.
    """

    slice_id: str
    scale_group: str
    vm_count: int = 1
    cpu: float = 0.0
    memory_bytes: int = 0
    labels: Mapping[str, str] = attrs.field(factory=dict)
    attributes: Mapping[str, str] = attrs.field(factory=dict)
    template: Mapping[str, object] = attrs.field(factory=dict)


@attrs.frozen
class VmInfo:
    vm_id: str
    address: str = ""
    state: SliceState = SliceState.BOOTING
    attributes: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class SliceInfo:
    slice_id: str
    scale_group: str
    state: SliceState
    labels: Mapping[str, str] = attrs.field(factory=dict)
    vms: Sequence[VmInfo] = ()
    error: str = ""


class QuotaExceeded(Exception):
    """Raised by ``VmManager.create_slice`` when the provider refuses for lack of quota.

    The autoscaler holds the scale group for a while instead of retrying at once.
    """


@runtime_checkable
class VmManager(Protocol):
    """Creates, lists (by labels), describes and deletes slices. Every call is idempotent."""

    def create_slice(self, request: SliceRequest) -> SliceInfo:
        """Create the slice, or return the existing one with that id."""

    def list_slices(self, labels: Mapping[str, str]) -> list[SliceInfo]:
        """Every slice carrying all of ``labels``, including ones this process did not create."""

    def describe_slice(self, slice_id: str) -> SliceInfo | None:
        """The slice, or None if it does not exist."""

    def delete_slice(self, slice_id: str) -> None:
        """Delete the slice and everything on it; deleting a missing slice is not an error."""

    def close(self) -> None:
        """Release client resources (not the slices)."""

    # Optional (looked up with getattr; ``iris cluster vm logs`` says the provider has none):
    #
    # def vm_logs(self, vm_id: str, tail_lines: int = 100) -> str:
    #     """The last lines of the worker's log on that VM."""
    #
    # def check(self, progress: Callable[[str], None]) -> None:
    #     """Before ``iris cluster start`` starts a controller here: reach the machines and raise
    #     a PluginError naming what cannot be used; report lesser problems through progress."""


# --- ControllerHost (optional, offered by a VmManagerPlugin) ---------------------------------


@attrs.frozen
class ControllerPlacement:
    """Where a provider placed the controller.

    :ivar url: the controller's gRPC URL as workers reach it (e.g. the VM's internal address).
    :ivar http_url: its HTTP side (``/health``, the dashboard), "" if none.
    :ivar where: the machine in words, for messages ("instance iris-x-controller in europe-west4-a").
    :ivar state: the provider's word for the machine's state (``RUNNING``, ``PROVISIONING``, ...).
    :ivar tunnel_host: the address a tunnel to the controller connects to ("" = the host of ``url``),
        e.g. the VM's external address.
    :ivar logs_hint: what to look at when the controller does not come up (a command to read the
        machine's boot log).
    """

    url: str
    http_url: str = ""
    where: str = ""
    state: str = ""
    tunnel_host: str = ""
    logs_hint: str = ""


@runtime_checkable
class ControllerHost(Protocol):
    """Runs the controller on a machine of the provider's (``controller.vm.enabled``) instead of
    as a process on this machine. Built by ``VmManagerPlugin.controller_host(config)``; the core
    waits for the controller's health check and reaches it through the config's tunnel."""

    def find(self) -> ControllerPlacement | None:
        """The controller machine of this cluster (found through the provider, by label), or None.

        A host records the config its machine was started from
        (:func:`iris.cluster.lifecycle.config_digest`) and raises
        :class:`~iris.errors.OtherConfigError` here, and in ``start``, ``restart`` and ``stop``,
        when the config it was built with differs (another config with this ``name``)."""

    def start(self, config: object, progress: Callable[[str], None]) -> ControllerPlacement:
        """Create the controller machine for ``config`` (a ClusterConfig, adapted by the host for
        running there) unless it exists; return once it is placed (the core waits for health)."""

    def restart(self, progress: Callable[[str], None]) -> ControllerPlacement:
        """Restart the controller machine, keeping its state; return its placement."""

    def stop(self, progress: Callable[[str], None]) -> bool:
        """Delete the controller machine(s) of this cluster; True if there was one. What the
        slices still rely on (the address their workers were given) is kept.

        A host may also offer ``release(progress) -> bool`` (optional, not part of this
        protocol's required methods): ``iris cluster stop`` calls it once the slices are deleted,
        to free what outlived the machine for their sake (e.g. a reserved address).

        ``--force`` (optional, keyword-only arguments the core passes only when the user asks
        for it; a host without them still works, and ``--force`` then fails naming the host):
        ``find(*, force=True)`` and ``stop(progress, *, force=True)`` do not compare the
        recorded config; ``restart(progress, *, config=C)`` restarts the machine with ``C`` (a
        ClusterConfig, as ``start`` gets it) whatever config it was started from, and records
        ``C`` as its config from then on (a stopped machine is started; none at all is an
        error that says to ``start`` it)."""

    def close(self) -> None: ...


# --- ContainerRuntime -----------------------------------------------------------------------


@attrs.frozen
class ContainerSpec:
    """One task attempt to run.

    ``argv`` runs with ``cwd`` as its working directory (the unpacked bundle) and exactly
    ``env`` as its environment. ``memory_bytes`` = 0 means no limit.

    For runtimes that run images (``docker``): ``image`` is the task image (empty: the
    runtime's default); ``cwd``, every path in ``mounts`` (the task's Python environment:
    read-only) and every path in ``writable_mounts`` (the attempt's directory, where a callable's
    payload and result live: read-write) must be visible inside the container at the same path.
    ``device`` is the accelerator the task asked for (kind ``gpu`` or ``tpu``, variant, count);
    runtimes that cannot provide it raise TaskStartError. Runtimes that run processes on this
    machine ignore ``image`` and the mounts.
    """

    container_id: str
    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str] = attrs.field(factory=dict)
    cpu: float = 0.0
    memory_bytes: int = 0
    labels: Mapping[str, str] = attrs.field(factory=dict)
    image: str = ""
    mounts: Sequence[Path] = ()
    writable_mounts: Sequence[Path] = ()
    device_kind: str = "cpu"
    device_variant: str = ""
    device_count: int = 0


@attrs.frozen
class ContainerStatus:
    """``running`` is True until the container ends; then ``exit_code`` is set.

    ``oom`` is True when the runtime killed it for exceeding its memory limit.
    """

    running: bool
    exit_code: int | None = None
    oom: bool = False
    error: str = ""


class TaskStartError(Exception):
    """Raised by ``ContainerRuntime.start`` when the task itself cannot run, whatever machine it
    is tried on: its command is not found or not executable, its argv or env is invalid.

    The worker reports the attempt FAILED with this message (the job's ``max_retries`` applies);
    any other exception from ``start`` is this machine's fault (WORKER_FAILED, retried on the
    preemption budget). ``exit_code`` is the code a shell would give (127 not found, 126 not
    executable), or None.
    """

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code


@runtime_checkable
class ContainerHandle(Protocol):
    @property
    def container_id(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    def status(self) -> ContainerStatus:
        """Current status, without blocking."""

    def wait(self, timeout: float | None = None) -> ContainerStatus:
        """Block until the container ends or ``timeout`` elapses; return the status then."""

    def kill(self, grace_seconds: float = 10.0) -> None:
        """Ask the container to stop, then force it after ``grace_seconds``. Idempotent."""

    def read_logs(self, offset: int, max_bytes: int) -> bytes:
        """At most ``max_bytes`` of the container's log from ``offset``. The log is records, one
        line of stdout or stderr each, tagged with its stream (:mod:`iris.runtime.output_log`,
        whose ``OutputLog`` and ``LineWriter`` a runtime can keep it with); each stream's lines
        in the order the task wrote them. It only grows."""

    def log_size(self) -> int:
        """Bytes of log written so far."""

    def remove(self) -> None:
        """Delete what the runtime kept for this container (logs, status). Must be ended."""

    # Optional (looked up with getattr; a handle without it is polled):
    #
    # def exit_fd(self) -> int | None:
    #     """A file descriptor that becomes readable when the container ends (a pidfd for a
    #     process), owned by the handle and closed by ``remove``; None when there is none. The
    #     worker waits on these instead of polling, so an ending is seen at once."""
    #
    # contained: bool
    #     """Read after ``remove``: True when nothing of the container runs any more (no process
    #     of the task can still use the attempt's directory), so the worker may reuse that
    #     directory for a later attempt instead of removing it."""


@runtime_checkable
class ContainerRuntime(Protocol):
    def start(self, spec: ContainerSpec) -> ContainerHandle:
        """Start the container; return once it is started (not when it ends).

        Raise :class:`TaskStartError` when the spec itself cannot run (see there)."""

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerHandle]:
        """Containers this runtime manages that carry all of ``labels``, running or ended,
        including ones started by an earlier process (for adoption after a restart)."""

    def close(self) -> None:
        """Release runtime resources; running containers keep running."""

    # Optional (looked up with getattr):
    #
    # memory_enforcement: str
    #     How a container is held to ``memory_bytes``: e.g. ``cgroup-v1``/``cgroup-v2`` (the
    #     kernel's limit: any spike over it ends the container as OOM) or ``sampled`` (usage is
    #     looked at periodically; a shorter spike can pass). Workers publish it as their
    #     ``memory-limits`` attribute, which ``iris job status`` shows per attempt and
    #     constraints can require.


# --- BundleStore ----------------------------------------------------------------------------


@runtime_checkable
class BundleStore(Protocol):
    """Content-addressed workspace bundles: the id is the sha256 hex digest of the bytes."""

    def url_for(self, bundle_id: str) -> str:
        """The URL a worker passes to ``get`` for this bundle."""

    def exists(self, bundle_id: str) -> bool: ...

    def put(self, bundle_id: str, data: bytes) -> str:
        """Store the bytes (a no-op if the id exists); return the URL. Rejects a wrong id."""

    def get(self, bundle_id: str, dest_dir: Path) -> Path:
        """A local file holding the bundle (may be inside ``dest_dir``)."""


@runtime_checkable
class CheckpointStore(Protocol):
    """Where a controller keeps snapshots of its state (``controller.checkpoint_url``); served
    by a bundle store plugin for its URL scheme (``BundleStorePlugin.checkpoints``).

    Both methods are atomic: a reader never sees a half-written checkpoint, and a failed restore
    leaves ``dest`` as it was.
    """

    url: str

    def save(self, snapshot: Path, name: str) -> str:
        """Store the file as a new checkpoint called ``name`` and make it the latest; return its URL."""

    def restore_latest(self, dest: Path) -> str | None:
        """Write the latest checkpoint, verified, to ``dest``; return its URL, or None if there is none."""


# --- Tunnel ---------------------------------------------------------------------------------


@runtime_checkable
class Tunnel(Protocol):
    def connect(self, address: str) -> AbstractContextManager[str]:
        """A context manager yielding a URL for ``address`` reachable from this machine."""


def iter_protocols() -> Iterator[tuple[str, type]]:
    yield "vm_manager", VmManager
    yield "container_runtime", ContainerRuntime
    yield "bundle_store", BundleStore
    yield "tunnel", Tunnel
