"""The plugin system: hookspecs, protocols, records and the registry.

Plugin authors import ``hookimpl`` and the record classes from here::

    from iris.plugin import hookimpl, VmManagerPlugin

    @hookimpl
    def iris_register_vm_managers(register):
        register(VmManagerPlugin(name="foo", factory=make_foo_manager))
"""

from iris.plugin.records import (
    BundleStorePlugin,
    ContainerRuntimePlugin,
    ProviderContext,
    TunnelPlugin,
    VmManagerPlugin,
)
from iris.plugin.hookspecs import hookimpl

__all__ = [
    "BundleStorePlugin",
    "ContainerRuntimePlugin",
    "ProviderContext",
    "TunnelPlugin",
    "VmManagerPlugin",
    "hookimpl",
]
