"""Registers the local provider's implementations with Iris (entry point ``local``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iris.plugin import BundleStorePlugin, ContainerRuntimePlugin, ProviderContext, TunnelPlugin, VmManagerPlugin, hookimpl


def _vm_manager(context: ProviderContext) -> Any:
    from iris_local.vm_manager import LocalVmManager

    return LocalVmManager(context)


def _process_runtime(root: Path) -> Any:
    from iris_local.process_runtime import ProcessRuntime

    return ProcessRuntime(root)


def _file_store(url: str) -> Any:
    from iris_local.bundle_store import FileBundleStore

    return FileBundleStore(url)


def _direct_tunnel(options: dict[str, Any]) -> Any:
    from iris_local.tunnel import DirectTunnel

    return DirectTunnel(options)


@hookimpl
def iris_register_vm_managers(register):  # type: ignore[no-untyped-def]
    register(
        VmManagerPlugin(
            name="local",
            factory=_vm_manager,
            default_runtime="process",
            default_bundle_scheme="file",
            default_tunnel="direct",
            description="workers inside this process, tasks as local processes",
        )
    )


@hookimpl
def iris_register_container_runtimes(register):  # type: ignore[no-untyped-def]
    register(ContainerRuntimePlugin(name="process", factory=_process_runtime, description="local process groups"))


@hookimpl
def iris_register_bundle_stores(register):  # type: ignore[no-untyped-def]
    register(BundleStorePlugin(name="file", factory=_file_store, description="bundles as files on a shared filesystem"))


@hookimpl
def iris_register_tunnels(register):  # type: ignore[no-untyped-def]
    register(TunnelPlugin(name="direct", factory=_direct_tunnel, description="no tunnel: the address is reachable"))
