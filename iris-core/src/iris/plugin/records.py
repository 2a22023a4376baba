"""Named records that plugins register, one kind per seam."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class ProviderContext:
    """What a VmManager factory gets from the host.

    :ivar controller_address: URL workers use to reach the controller.
    :ivar state_dir: a directory the provider may keep its files in.
    :ivar label_prefix: prefix for labels on every resource the provider creates.
    :ivar options: the provider section of the cluster config, as a plain dict, with ``runtime``
        (the workers' ContainerRuntime name) and ``docker_image`` (the cluster's ``docker.image``,
        the image of tasks whose job names none) added.
    :ivar registry: the plugin registry, to build runtimes and bundle stores by name.
    :ivar start_worker: runs a worker inside this process
        (:data:`iris.plugin.worker_host.StartInProcess`); None where the host cannot.
    :ivar worker_token: ``worker_token(worker_id) -> str`` mints the credential a worker
        presents (put it in ``WorkerLaunch.token``); None when the controller runs without auth.
    """

    controller_address: str
    state_dir: Path
    label_prefix: str = "iris"
    options: dict[str, Any] = attrs.field(factory=dict)
    registry: Any = None
    start_worker: Any = None
    worker_token: Any = None


#: An in-process local cluster keeps its state in a temporary directory named with this prefix,
#: holding ``OWNER_FILE`` (JSON: the owning process's ``pid`` and ``start_time``), so that a later
#: local cluster can stop what a dead one left running and remove its directory.
TEMP_STATE_PREFIX = "iris-local-"
OWNER_FILE = "owner.json"


@attrs.frozen
class VmManagerPlugin:
    """A provider: ``factory(ProviderContext) -> VmManager``.

    The ``default_*`` names say which runtime, bundle store scheme and tunnel the provider
    uses unless the config picks others.
    """

    name: str
    factory: Callable[[ProviderContext], Any]
    default_runtime: str = "process"
    default_bundle_scheme: str = "file"
    default_tunnel: str = "direct"
    description: str = ""
    #: ``controller_host(ClusterConfig) -> ControllerHost``: places the controller on one of the
    #: provider's machines when the config says ``controller.vm.enabled`` (None: it cannot).
    controller_host: Callable[[Any], Any] | None = None


@attrs.frozen
class ContainerRuntimePlugin:
    """``factory(root_dir: Path) -> ContainerRuntime``; root_dir holds the runtime's files."""

    name: str
    factory: Callable[[Path], Any]
    description: str = ""


@attrs.frozen
class BundleStorePlugin:
    """``factory(url_prefix: str) -> BundleStore``; ``name`` is the URL scheme it serves.

    ``checkpoints``, if given, is ``checkpoints(url) -> CheckpointStore``: where a controller
    keeps snapshots of its state under a URL of the same scheme (``controller.checkpoint_url``).
    ``file://`` checkpoints are built into iris-core.
    """

    name: str
    factory: Callable[[str], Any]
    description: str = ""
    checkpoints: Callable[[str], Any] | None = None


@attrs.frozen
class TunnelPlugin:
    """``factory(options: dict) -> Tunnel``."""

    name: str
    factory: Callable[[dict[str, Any]], Any]
    description: str = ""
