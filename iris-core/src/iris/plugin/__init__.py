"""The plugin system: hookspecs, protocols, records and the registry.

Plugin authors import ``hookimpl`` and the record classes from here::

    from iris.plugin import hookimpl, VmManagerPlugin

    @hookimpl
    def iris_register_vm_managers(register):
        register(VmManagerPlugin(name="foo", factory=make_foo_manager))

A VmManager starts workers through :mod:`iris.plugin.worker_host` (``WorkerLaunch``, readiness,
machine size, the worker label), never through the worker's own modules.
"""

from iris.plugin.records import (
    BundleStorePlugin,
    ContainerRuntimePlugin,
    ProviderContext,
    TunnelPlugin,
    VmManagerPlugin,
)
from iris.plugin.hookspecs import hookimpl
from iris.plugin.protocols import TaskStartError
from iris.plugin.worker_host import (
    LABEL_WORKER,
    WorkerLaunch,
    is_ready,
    machine_cpus,
    machine_memory_bytes,
    ready_marker,
    wait_ready,
)

__all__ = [
    "LABEL_WORKER",
    "BundleStorePlugin",
    "ContainerRuntimePlugin",
    "ProviderContext",
    "TaskStartError",
    "TunnelPlugin",
    "VmManagerPlugin",
    "WorkerLaunch",
    "hookimpl",
    "is_ready",
    "machine_cpus",
    "machine_memory_bytes",
    "ready_marker",
    "wait_ready",
]
