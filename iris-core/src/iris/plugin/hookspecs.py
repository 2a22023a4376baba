"""Hook specifications: one ``register_*`` hook per seam.

Each hook receives a ``register`` callback and calls it once per implementation the plugin
provides, with a named record from :mod:`iris.plugin.records`. The core owns the registry:
it detects a name claimed twice and lists the choices when a name is unknown.

The registry calls these through pluggy. Hooks evolve only by adding arguments: a hookimpl may
take any subset of its hook's arguments, and must not give one a default value (pluggy never
passes it). A hookimpl named after no hook here, or an unmarked ``iris_`` function, is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from iris.plugin.records import BundleStorePlugin, ContainerRuntimePlugin, TunnelPlugin, VmManagerPlugin

PROJECT_NAME = "iris"
ENTRY_POINT_GROUP = "iris.plugins"

_hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- Machines -------------------------------------------------------------------------------


@_hookspec
def iris_register_vm_managers(register: Callable[[VmManagerPlugin], None]) -> None:
    """Register VmManager implementations (one per provider name).

    :param register: call with a :class:`~iris.plugin.records.VmManagerPlugin` per implementation.
        The record's ``name`` is the provider name users pass to ``--provider``.
    """


# --- Running tasks --------------------------------------------------------------------------


@_hookspec
def iris_register_container_runtimes(register: Callable[[ContainerRuntimePlugin], None]) -> None:
    """Register ContainerRuntime implementations (``process``, ``docker``, ...).

    :param register: call with a :class:`~iris.plugin.records.ContainerRuntimePlugin`.
    """


# --- Workspace bundles ----------------------------------------------------------------------


@_hookspec
def iris_register_bundle_stores(register: Callable[[BundleStorePlugin], None]) -> None:
    """Register BundleStore implementations, each keyed by the URL scheme it serves.

    :param register: call with a :class:`~iris.plugin.records.BundleStorePlugin`; its ``name``
        is the URL scheme (``file``, ``gs``).
    """


# --- Reaching the controller ----------------------------------------------------------------


@_hookspec
def iris_register_tunnels(register: Callable[[TunnelPlugin], None]) -> None:
    """Register Tunnel implementations (``direct``, ``ssh``, ...).

    :param register: call with a :class:`~iris.plugin.records.TunnelPlugin`.
    """


SEAMS = {
    "vm_manager": "iris_register_vm_managers",
    "container_runtime": "iris_register_container_runtimes",
    "bundle_store": "iris_register_bundle_stores",
    "tunnel": "iris_register_tunnels",
}
