"""Registers the ``manual`` provider (entry point ``manual``).

The VmManager starts workers on the configured hosts over SSH (:mod:`iris_manual.vm_manager`);
the ``ssh`` tunnel forwards a local port through an SSH host to the controller
(:mod:`iris_manual.tunnel`). paramiko is imported only inside the factories.
"""

from __future__ import annotations

from typing import Any

from iris.plugin import TunnelPlugin, VmManagerPlugin, hookimpl

VERSION = "0.1.0"


def _vm_manager(context: Any) -> Any:
    from iris_manual.vm_manager import ManualVmManager

    return ManualVmManager(context)


def _controller_host(config: Any) -> Any:
    from iris_manual.controller_host import ManualControllerHost

    return ManualControllerHost(config)


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
            default_runtime="process",
            default_bundle_scheme="file",
            default_tunnel="direct",
            controller_host=_controller_host,
            description="a fixed list of hosts, workers started over SSH",
        )
    )
