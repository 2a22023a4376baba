"""ClusterManager: one lifecycle for every provider (seed 004).

``start()`` returns the controller URL, ``stop()`` cleans up, ``connect()`` yields a URL this
machine can reach (through the provider's Tunnel) and stops on exit.

The controller runs in this process. Until the autoscaler exists, ``start()`` brings up each
scale group's ``min_slices`` through the provider's VmManager, and for the local provider at
least one slice, so a job always has somewhere to run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from iris.config import ClusterConfig, ScaleGroupConfig
from iris.errors import IrisError
from iris.plugin.protocols import SliceRequest
from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry, get_registry

logger = logging.getLogger(__name__)


def make_local_config(config: ClusterConfig) -> ClusterConfig:
    """The same cluster on this machine: provider ``local``, every scale group's shape kept."""
    provider = attrs.evolve(config.provider, type="local")
    controller = attrs.evolve(config.controller, host="127.0.0.1", port=0, bundle_prefix="")
    return attrs.evolve(config, provider=provider, controller=controller)


def group_attributes(config: ClusterConfig, name: str, group: ScaleGroupConfig) -> dict[str, str]:
    """Well-known attributes every worker of the group carries (see iris.cluster.constraints)."""
    attributes = {
        "scale-group": name,
        "preemptible": "true" if group.preemptible else "false",
        "region": config.provider.region or ("local" if config.provider.type == "local" else ""),
        "zone": (group.zones[0] if group.zones else config.provider.zone)
        or ("local" if config.provider.type == "local" else ""),
    }
    attributes = {k: v for k, v in attributes.items() if v}
    device = group.accelerator_type or "cpu"
    variant = group.accelerator_variant
    if device.startswith(("v4-", "v5", "v6e-")) and not variant:  # seed 001 writes the type here
        device, variant = "tpu", device
    if device != "cpu":
        attributes["device"] = device
        if variant:
            attributes["device-variant"] = variant
    if device == "tpu" and variant:
        from iris.cluster.tpu import TPU_TOPOLOGIES

        if variant in TPU_TOPOLOGIES:
            attributes["topology"] = TPU_TOPOLOGIES[variant].topology
    attributes.update(group.attributes)
    return attributes


def group_vm_count(group: ScaleGroupConfig) -> int:
    """VMs per slice: the TPU type's host count unless the config says otherwise."""
    from iris.cluster.tpu import TPU_TOPOLOGIES

    variant = group.accelerator_variant or (group.accelerator_type if group.accelerator_type.startswith(("v4-", "v5", "v6e-")) else "")
    if group.vms_per_slice == 1 and variant in TPU_TOPOLOGIES:
        return TPU_TOPOLOGIES[variant].hosts
    return group.vms_per_slice


class ClusterManager:
    def __init__(self, config: ClusterConfig, registry: PluginRegistry | None = None, *, fresh: bool = False):
        """``fresh`` starts with empty controller state, moving any saved state aside."""
        self._config = config
        self._fresh = fresh
        self._store: Any = None
        self._registry = registry or get_registry()
        self._server: Any = None
        self._vm_manager: Any = None
        self._slices: list[str] = []
        self._temp_dir: str | None = None

    @property
    def config(self) -> ClusterConfig:
        return self._config

    @property
    def is_local(self) -> bool:
        return self._config.provider.type == "local"

    @property
    def controller(self) -> Any:
        if self._server is None:
            raise IrisError("ClusterManager.start() has not been called")
        return self._server.controller

    @property
    def vm_manager(self) -> Any:
        return self._vm_manager

    def start(self) -> str:
        """Start the controller and the initial slices; return the controller URL."""
        from iris.cluster.controller.controller import Controller
        from iris.cluster.controller.service import ControllerServer
        from iris.cluster.controller.store import Store

        config = self._config
        provider = self._registry.vm_manager(config.provider.type)  # fails early on an unknown provider
        state_dir = self._state_dir()
        db_path = state_dir / "controller.db"
        if self._fresh and db_path.exists():
            aside = db_path.with_name(f"controller.db.{int(time.time())}.old")
            for suffix in ("", "-wal", "-shm"):
                old = db_path.with_name(db_path.name + suffix)
                if old.exists():
                    old.rename(aside.with_name(aside.name + suffix))
            logger.warning("--fresh: moved the saved state aside to %s", aside)
        self._store = Store(db_path)
        bundle_prefix = config.controller.bundle_prefix or f"file://{state_dir / 'bundles'}"
        bundles = self._registry.open_bundle_store(bundle_prefix)
        controller = Controller(
            bundle_url=bundles.url_for, store=self._store, worker_timeout=config.controller.worker_timeout_seconds
        )
        self._server = ControllerServer(controller, bundles, host=config.controller.host, port=config.controller.port)
        address = self._server.start()
        try:
            options = {"runtime": config.worker.runtime or provider.default_runtime, **attrs.asdict(config.provider)}
            context = ProviderContext(
                controller_address=address,
                state_dir=state_dir,
                label_prefix=config.label_prefix,
                options=options,
                registry=self._registry,
            )
            self._vm_manager = provider.factory(context)
            self._bring_up_slices()
        except BaseException:
            self.stop()
            raise
        return address

    def _state_dir(self) -> Path:
        if self._config.controller.state_dir:
            path = Path(self._config.controller.state_dir).expanduser()
        elif self.is_local:
            self._temp_dir = tempfile.mkdtemp(prefix="iris-local-")
            path = Path(self._temp_dir)
        else:
            path = Path.home() / ".iris" / self._config.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _bring_up_slices(self) -> None:
        groups = dict(self._config.scale_groups)
        if self.is_local and sum(g.min_slices for g in groups.values()) == 0:
            name, group = next(iter(groups.items()), ("local", ScaleGroupConfig()))
            groups = {name: attrs.evolve(group, min_slices=1)}
        for name, group in groups.items():
            for i in range(group.min_slices):
                slice_id = f"{self._config.label_prefix}-{name}-{i}".replace("_", "-")
                attributes = group_attributes(self._config, name, group)
                request = SliceRequest(
                    slice_id=slice_id,
                    scale_group=name,
                    vm_count=group_vm_count(group),
                    cpu=group.cpu,
                    memory_bytes=group.memory_bytes,
                    labels={f"{self._config.label_prefix}.cluster": self._config.name, f"{self._config.label_prefix}.scale-group": name},
                    attributes=attributes,
                    template=group.template,
                )
                self._vm_manager.create_slice(request)
                self._slices.append(slice_id)

    def shutdown(self) -> None:
        """Stop the controller but leave the slices running, for a restart to adopt them."""
        if self._vm_manager is not None:
            self._vm_manager.close_keep_slices() if hasattr(self._vm_manager, "close_keep_slices") else None
            self._vm_manager = None
        self._slices.clear()
        self.stop()

    def stop(self) -> None:
        """Delete the slices this manager created, stop the controller, remove temp state."""
        if self._vm_manager is not None:
            for slice_id in reversed(self._slices):
                try:
                    self._vm_manager.delete_slice(slice_id)
                except Exception:
                    logger.exception("failed to delete slice %s", slice_id)
            self._slices.clear()
            self._vm_manager.close()
            self._vm_manager = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    @contextmanager
    def connect(self) -> Iterator[str]:
        """Start, yield a URL reachable from here (through the provider's tunnel), stop on exit."""
        address = self.start()
        try:
            provider = self._registry.vm_manager(self._config.provider.type)
            tunnel = self._registry.tunnel(provider.default_tunnel).factory(attrs.asdict(self._config.provider))
            with tunnel.connect(address) as url:
                yield url
        finally:
            self.stop()

    def __enter__(self) -> ClusterManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
