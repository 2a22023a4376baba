"""Registers the ``gcp`` provider (entry point ``gcp``).

The VmManager creates TPU slices (:mod:`iris_gcp.tpu`); the ``gs://`` bundle store and controller
checkpoints are :mod:`iris_gcp.gcs`; the controller VM (``controller.vm.enabled``) is
:class:`iris_gcp.controller_vm.ControllerVm`, offered as the provider's ``controller_host``. The ``ssh`` tunnel to the controller VM
is iris-manual's (a dependency), not registered here. The Google client
libraries are imported only inside factories, never when the plugin loads.
"""

from __future__ import annotations

from typing import Any

from iris.plugin import BundleStorePlugin, VmManagerPlugin, hookimpl

VERSION = "0.1.0"


def _vm_manager(context: Any) -> Any:
    from iris_gcp.tpu import TpuVmManager, open_client

    return TpuVmManager(context, open_client(context.options or {}))


def _controller_host(config: Any) -> Any:
    from iris_gcp.controller_vm import ControllerVm

    return ControllerVm(config)


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
            controller_host=_controller_host,
            description="TPU slices and the controller VM on Google Cloud",
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

