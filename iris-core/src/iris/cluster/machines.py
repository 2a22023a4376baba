"""The machines of a cluster's slices as ``iris cluster vm`` shows them, whether it asks the
provider itself (``--config``) or the controller (``--controller-url``: ``ListVms``,
``GetVmLogs``). Plain data and messages only: the CLI imports this without the controller."""

from __future__ import annotations

from typing import Any


def vm_rows(slices: Any) -> list[dict[str, Any]]:
    """One dict per VM of ``slices`` (``SliceInfo`` records): vm_id, address, state, attributes,
    slice_id, scale_group and slice_error, what ``iris cluster vm status`` shows whether it asks
    the provider itself (``--config``) or the controller (``--controller-url``, ``ListVms``)."""
    return [
        {
            "vm_id": vm.vm_id,
            "address": vm.address,
            "state": vm.state.value,
            "attributes": dict(vm.attributes),
            "slice_id": info.slice_id,
            "scale_group": info.scale_group,
            "slice_error": info.error or "",
        }
        for info in slices
        for vm in info.vms
    ]


def no_vm_message(vm_id: str) -> str:
    return f"no VM {vm_id!r} in this cluster; `iris cluster vm status` lists them"


def vm_logs_unsupported(provider: str) -> str:
    return f"provider {provider!r} cannot show VM logs"
