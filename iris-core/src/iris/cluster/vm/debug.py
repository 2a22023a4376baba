"""``controller_tunnel(zone, project)``: a local URL for the Iris controller VM in a zone.

As seeds 000 and 002 use it::

    from iris.cluster.vm.debug import controller_tunnel

    with controller_tunnel(config.provider.zone, config.provider.project_id) as url:
        client = IrisClient.remote(url)

The controller VM is found through the Compute API by its labels (``<prefix>-role=controller``,
and ``<prefix>-cluster=<cluster>`` when ``cluster`` is given); the tunnel is the ``ssh`` one
(iris-manual's), to the VM's external address if it has one, else its internal one. It needs
iris-gcp installed; the Google client is imported only when it is called.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from iris.errors import IrisError


@contextmanager
def controller_tunnel(
    zone: str,
    project: str,
    *,
    label_prefix: str = "iris",
    cluster: str = "",
    tunnel: str = "ssh",
    tunnel_options: dict[str, Any] | None = None,
    compute_api_endpoint: str = "",
) -> Iterator[str]:
    """Yield a URL on this machine that reaches the controller VM in ``zone`` of ``project``.

    :param cluster: which cluster's controller, when the zone has several.
    :param tunnel: the Tunnel plugin (``ssh``; ``direct`` when this machine reaches the VM).
    :param tunnel_options: the tunnel's settings (``ssh_user``, ``ssh_key``, ``ssh_port``, ...),
        as in a config's ``provider`` section.
    :param compute_api_endpoint: another Compute API endpoint (a local fake or emulator).
    """
    try:
        from iris_gcp.controller_vm import controller_vms
    except ImportError:
        raise IrisError("controller_tunnel needs the gcp provider: pip install iris-gcp") from None
    from iris.plugin.registry import get_registry

    options = {"compute_api_endpoint": compute_api_endpoint} if compute_api_endpoint else {}
    found = list(controller_vms(project, zone, label_prefix=label_prefix, cluster=cluster, options=options))
    if not found:
        which = f" of cluster {cluster!r}" if cluster else ""
        raise IrisError(
            f"no Iris controller VM{which} in project {project!r}, zone {zone!r} (labelled {label_prefix}-role=controller); "
            "start one with iris cluster --config C start"
        )
    if len(found) > 1:
        names = ", ".join(sorted(name or "?" for name, _ in found))
        raise IrisError(f"{len(found)} Iris controller VMs in project {project!r}, zone {zone!r} (clusters: {names}); pass cluster=NAME")
    _, placement = found[0]
    if not placement.url:
        raise IrisError(f"the controller VM ({placement.where}) has no address yet (it is {placement.state}); try again shortly")
    if tunnel == "direct":
        yield placement.url
        return
    settings = dict(tunnel_options or {})
    if placement.tunnel_host and not settings.get("ssh_host"):
        settings["ssh_host"] = placement.tunnel_host
    with get_registry().tunnel(tunnel).factory(settings).connect(placement.url) as url:
        yield url
