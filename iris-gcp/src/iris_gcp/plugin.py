"""Registers the ``gcp`` provider (entry point ``gcp``).

The controller VM (``controller.vm.enabled``) is :class:`iris_gcp.controller_vm.ControllerVm`,
offered as the provider's ``controller_host``. Creating TPU slices and the ``gs://`` bundle
store are not implemented in this release: each factory raises an error saying so. The ``ssh`` tunnel to the controller VM
is iris-manual's (a dependency), not registered here. The Google client
libraries are imported only inside factories, never when the plugin loads.
"""

from __future__ import annotations

from typing import Any, NoReturn

from iris.errors import PluginError
from iris.plugin import BundleStorePlugin, VmManagerPlugin, hookimpl

VERSION = "0.1.0"


def _unsupported(what: str) -> NoReturn:
    raise PluginError(
        f"iris-gcp {VERSION} does not support {what} yet; try the same config on this machine with "
        "`iris cluster --config C start --local` (or `iris run --provider local`), or connect to a running controller with --controller-url"
    )


def _vm_manager(context: Any) -> Any:
    _unsupported("creating TPU slices")


def _controller_host(config: Any) -> Any:
    from iris_gcp.controller_vm import ControllerVm

    return ControllerVm(config)


def _gcs_store(url: str) -> Any:
    _unsupported(f"the gs:// bundle store ({url})")


@hookimpl
def iris_register_vm_managers(register):  # type: ignore[no-untyped-def]
    register(
        VmManagerPlugin(
            name="gcp",
            factory=_vm_manager,
            default_runtime="docker",
            default_bundle_scheme="gs",
            default_tunnel="ssh",
            controller_host=_controller_host,
            description="TPU slices on Google Cloud (not yet implemented)",
        )
    )


@hookimpl
def iris_register_bundle_stores(register):  # type: ignore[no-untyped-def]
    register(BundleStorePlugin(name="gs", factory=_gcs_store, description="Google Cloud Storage (not yet implemented)"))

