"""Registers the ``gcp`` provider (entry point ``gcp``).

The ``gs://`` bundle store and controller checkpoints are :mod:`iris_gcp.gcs`. Creating TPU
slices and the controller VM are not implemented yet: their factories raise an error saying so. The ``ssh`` tunnel to the controller VM
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


def _gcs_store(url: str) -> Any:
    from iris_gcp.gcs import GcsBundleStore

    return GcsBundleStore(url)


def _gcs_checkpoints(url: str) -> Any:
    from iris_gcp.gcs import GcsCheckpointStore

    return GcsCheckpointStore(url)


@hookimpl
def iris_register_vm_managers(register):  # type: ignore[no-untyped-def]
    register(
        VmManagerPlugin(
            name="gcp",
            factory=_vm_manager,
            default_runtime="docker",
            default_bundle_scheme="gs",
            default_tunnel="ssh",
            description="TPU slices on Google Cloud (not yet implemented)",
        )
    )


@hookimpl
def iris_register_bundle_stores(register):  # type: ignore[no-untyped-def]
    register(
        BundleStorePlugin(
            name="gs", factory=_gcs_store, checkpoints=_gcs_checkpoints,
            description="Google Cloud Storage (bundles and controller checkpoints)",
        )
    )

