"""Registers the ``manual`` provider (entry point ``manual``).

This release registers the name so ``iris plugins`` and ``--provider manual`` find the
distribution, but bootstrapping and probing hosts over SSH is not implemented yet: the factory
raises an error saying so. It also provides the ``ssh`` tunnel (a local port forwarded through an
SSH host to the controller). libcloud/paramiko are imported only inside factories.
"""

from __future__ import annotations

from typing import Any

from iris.errors import PluginError
from iris.plugin import TunnelPlugin, VmManagerPlugin, hookimpl

VERSION = "0.1.0"


def _vm_manager(context: Any) -> Any:
    raise PluginError(
        f"iris-manual {VERSION} does not support bootstrapping hosts over SSH yet; try the same config "
        "on this machine with `iris cluster --config C start --local` (or `iris run --provider local`), or connect to a "
        "running controller with --controller-url"
    )


def _ssh_tunnel(options: dict[str, Any]) -> Any:
    from iris_manual.tunnel import SshTunnel

    return SshTunnel(options)


@hookimpl
def iris_register_tunnels(register):  # type: ignore[no-untyped-def]
    register(TunnelPlugin(name="ssh", factory=_ssh_tunnel, description="forwards a local port through an SSH host (paramiko)"))


@hookimpl
def iris_register_vm_managers(register):  # type: ignore[no-untyped-def]
    register(
        VmManagerPlugin(
            name="manual",
            factory=_vm_manager,
            default_runtime="docker",
            default_bundle_scheme="file",
            default_tunnel="direct",
            description="a fixed list of hosts over SSH (not yet implemented)",
        )
    )
