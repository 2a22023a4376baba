"""The controller VM: a Compute Engine instance that runs the cluster's controller.

:class:`ControllerVm` is the ``gcp`` provider's ControllerHost (``iris.plugin.protocols``):
``iris cluster start`` with ``controller.vm.enabled: true`` creates one instance per cluster,

- named ``<label_prefix>-<cluster>-controller``, labelled ``<prefix>-cluster=<cluster>`` and
  ``<prefix>-role=controller`` (found by these labels, never by name alone);
- in ``provider.zone`` of ``provider.project_id``, machine type ``controller.vm.machine_type``
  (default ``n2-standard-4``), a boot disk from ``provider.options.controller_boot_image``
  (default Debian 12's image family), on ``provider.options.network`` (default ``default``),
  with the service account ``provider.options.service_account`` (default: the project's
  Compute default) and ``provider.options.scopes`` (default ``cloud-platform``);
- with the metadata of :func:`iris_gcp.bootstrap.controller_metadata`: the startup script, the
  image ``controller.vm.image``, and the cluster config adapted for the VM
  (:func:`vm_config`): it listens on every interface of the VM on ``controller.vm.port`` (HTTP
  on the next port), keeps its state in ``/var/lib/iris/controller`` on the boot disk, and does
  not try to place itself again.

The controller's address outlives its VM: before creating the instance, ``start`` reserves a
static internal address (Compute ``addresses`` API, ``addressType: INTERNAL``, named
``<instance name>-ip``, in the zone's region, on ``provider.options.subnetwork``, else the
network's subnetwork of that region, which an auto-mode network such as ``default`` has) and
creates the VM with it as ``networkIP``. The TPU workers were given that address
(``iris-controller-address``), so when the VM is lost and ``start`` creates a new one, the new
controller (restored from the checkpoint) is where the workers look for it: they reconnect, and
their running tasks are adopted. Without it, a new VM would get a new ephemeral address and the
workers would never find it. The address is released by ``iris cluster stop`` (:meth:`release`,
once the slices are gone), not by ``controller stop`` (the slices still point at it).

The VM carries a digest of the config it was started from (:func:`iris.cluster.lifecycle.config_digest`, metadata
``iris-config-digest`` and label ``<prefix>-config``): ``start``, ``find`` (so ``run``, ``job``,
``status`` and ``cluster stop``), ``restart`` and ``stop`` with a config that differs (two
configs with one ``name`` in one project and zone, or a config changed since) are refused in one
line (:class:`~iris.errors.OtherConfigError`) instead of handing over, or deleting, the other
config's controller; ``find(force=True)`` and ``stop(progress, force=True)`` (``--force``) do
not compare.

``restart`` resets the instance: a reset keeps the boot disk (so the controller's SQLite state)
and the internal address workers know; the metadata (so the config) is the one it was created
with. ``restart(progress, config=C)`` (``iris cluster restart --force``) first sets the
instance's metadata to ``C``'s (``iris-config``, the image, ``iris-config-digest``,
``iris-started-by``; other keys are kept) and its ``<prefix>-config`` label, so the startup
script writes ``C`` to ``/etc/iris/config.yaml`` at the reset's boot and ``C`` is the recorded
config from then on. What the instance was created with (machine type, disk, network, service
account) stays: to change those, ``stop`` and ``start``. ``stop`` deletes every instance with
the cluster's controller labels.

The Google client is imported inside methods only. ``provider.options.compute_api_endpoint``
points it at another endpoint (an ``http://`` one is a local fake or emulator, used without
credentials).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from iris.errors import ConfigError, OtherConfigError
from iris.plugin.protocols import ControllerPlacement
from iris_gcp import bootstrap
from iris_gcp.compute_errors import ComputeError, compute_error

DEFAULT_MACHINE_TYPE = "n2-standard-4"
DEFAULT_BOOT_IMAGE = "projects/debian-cloud/global/images/family/debian-12"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
VM_STATE_DIR = "/var/lib/iris/controller"
OPERATION_TIMEOUT = 600.0
STOPPED = ("TERMINATED", "STOPPED", "SUSPENDED")  # instance states a start (not a reset) brings back
CONFIG_DIGEST = "iris-config-digest"  # metadata: the sha256 of the config the VM was started from
STARTED_BY = "iris-started-by"  # metadata: user@host that created the VM


def label_value(text: str) -> str:
    """``text`` as a GCE label value / name part: lowercase letters, digits and ``-``, at most 63."""
    value = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return value[:63] or "iris"


def labels_for(config: Any) -> dict[str, str]:
    prefix = label_value(config.label_prefix)
    return {f"{prefix}-cluster": label_value(config.name), f"{prefix}-role": "controller"}


def instance_name(config: Any) -> str:
    name = f"{label_value(config.label_prefix)}-{label_value(config.name)}-controller"
    if not name[0].isalpha():
        name = f"iris-{name}"
    return name[:63].rstrip("-")


def http_port_for(config: Any) -> int:
    """The controller's HTTP port on the VM: ``controller.http_port`` if set, else the gRPC port + 1."""
    http = config.controller.http_port
    return http if http > 0 else config.controller.vm.port + 1


def vm_config(config: Any) -> Any:
    """The cluster config as the controller on the VM runs it: listening on every interface of
    the VM on ``controller.vm.port`` (HTTP on :func:`http_port_for`), state under
    ``/var/lib/iris/controller``, ``controller.vm.enabled`` off (it is the VM)."""
    controller = attrs.evolve(
        config.controller,
        host="0.0.0.0",
        port=config.controller.vm.port,
        http_port=http_port_for(config),
        state_dir=VM_STATE_DIR,
        vm=attrs.evolve(config.controller.vm, enabled=False),
    )
    return attrs.evolve(config, controller=controller)


def address_name(config: Any) -> str:
    """The name of the controller's static internal address (``<instance name>-ip``)."""
    return f"{instance_name(config)[:60].rstrip('-')}-ip"


def _hashed_host(name: str, salt_b64: str) -> str:
    salt = base64.b64decode(salt_b64)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{salt_b64}|{base64.b64encode(digest).decode()}"


def forget_host_key(known_hosts: Path, host: str, port: int) -> bool:
    """Remove the recorded SSH host key of ``host`` (port ``port``) from ``known_hosts``, plain
    or hashed entries (as ``ssh-keygen -R`` does); lines with markers (``@cert-authority``) and
    comments are kept. True if one was removed."""
    if not host or not known_hosts.is_file():
        return False
    name = host if port == 22 else f"[{host}]:{port}"
    lines = known_hosts.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith(("#", "@")):
            kept.append(line)
            continue
        names = fields[0].split(",")
        hashed = [n for n in names if n.startswith("|1|") and n.count("|") == 3]
        if name in names or any(_hashed_host(name, n.split("|")[2]) == n for n in hashed):
            continue
        kept.append(line)
    if len(kept) == len(lines):
        return False
    known_hosts.write_text("".join(kept))
    return True


def filter_for(labels: dict[str, str]) -> str:
    return " AND ".join(f"labels.{k}={v}" for k, v in sorted(labels.items()))


def _client_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a Compute client: ``compute_api_endpoint`` when set (anonymous
    credentials for a plain-HTTP one, the local fake), else the library's defaults."""
    endpoint = str(options.get("compute_api_endpoint") or "")
    kwargs: dict[str, Any] = {}
    if endpoint:
        kwargs["client_options"] = {"api_endpoint": endpoint}
        if endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
    return kwargs


def compute_clients(options: dict[str, Any]) -> tuple[Any, Any]:
    """(InstancesClient, ZoneOperationsClient) for the provider options (``compute_api_endpoint``)."""
    from google.cloud import compute_v1

    kwargs = _client_kwargs(options)
    return compute_v1.InstancesClient(**kwargs), compute_v1.ZoneOperationsClient(**kwargs)


def address_clients(options: dict[str, Any]) -> tuple[Any, Any]:
    """(AddressesClient, RegionOperationsClient) for the provider options, as :func:`compute_clients`."""
    from google.cloud import compute_v1

    kwargs = _client_kwargs(options)
    return compute_v1.AddressesClient(**kwargs), compute_v1.RegionOperationsClient(**kwargs)


def _status_name(instance: Any) -> str:
    status = instance.status
    return status if isinstance(status, str) else getattr(status, "name", str(status))


def _metadata(instance: Any) -> dict[str, str]:
    return {item.key: item.value for item in instance.metadata.items}


def placement_of(instance: Any) -> ControllerPlacement:
    """Where the controller of a controller instance is (its address, ports from its metadata)."""
    import yaml

    nic = instance.network_interfaces[0] if instance.network_interfaces else None
    address = nic.network_i_p if nic is not None else ""
    external = next((a.nat_i_p for a in (nic.access_configs if nic is not None else []) if a.nat_i_p), "")
    metadata = _metadata(instance)
    port = int(metadata.get(bootstrap.CONTROLLER_PORT) or 10000)
    try:
        http_port = int(((yaml.safe_load(metadata.get(bootstrap.CONFIG, "")) or {}).get("controller") or {}).get("http_port") or 0)
    except (yaml.YAMLError, AttributeError, TypeError, ValueError):
        http_port = 0
    zone = instance.zone.rsplit("/", 1)[-1]
    project = instance.self_link.split("/projects/", 1)[-1].split("/", 1)[0] if "/projects/" in instance.self_link else ""
    return ControllerPlacement(
        url=f"http://{address}:{port}" if address else "",
        http_url=f"http://{address}:{http_port}" if address and http_port > 0 else "",
        where=f"instance {instance.name} in {zone}",
        state=_status_name(instance),
        tunnel_host=external,
        logs_hint=(
            f"its boot log: gcloud compute instances get-serial-port-output {instance.name} --zone {zone}"
            + (f" --project {project}" if project else "")
            + f"; the controller's: gcloud compute ssh {instance.name} --zone {zone} -- sudo docker logs iris-controller"
        ),
    )


def find_controller_instances(
    *, project: str, zone: str, labels: dict[str, str], options: dict[str, Any] | None = None
) -> list[Any]:
    """Every instance in ``zone`` with all of ``labels`` (the real client's Instance objects)."""
    from google.cloud import compute_v1

    request = compute_v1.ListInstancesRequest(project=project, zone=zone, filter=filter_for(labels))
    try:
        instances, _ = compute_clients(options or {})
        return list(instances.list(request=request))
    except Exception as exc:
        raise compute_error(exc, action="list the controller VMs", resource=f"instances labelled {filter_for(labels)}",
                            project=project, zone=zone) from None  # fmt: skip


class ControllerVm:
    """The gcp ControllerHost: the controller instance of one cluster config."""

    def __init__(self, config: Any):
        provider = config.provider
        self.config = config
        self.options: dict[str, Any] = dict(provider.options)
        self.project = provider.project_id
        self.zone = provider.zone or str(self.options.get("controller_zone") or "")
        if not self.project:
            raise ConfigError("provider.project_id: empty; the controller VM needs the GCP project to create it in (e.g. my-project)")
        if not self.zone:
            raise ConfigError("provider.zone: empty; the controller VM needs a zone (e.g. europe-west4-a)")
        self.name = instance_name(config)
        self.labels = labels_for(config)
        self.region = self.zone.rsplit("-", 1)[0]
        self.address_name = address_name(config)
        self._clients: tuple[Any, Any] | None = None
        self._address_api_clients: tuple[Any, Any] | None = None

    # --- the API ---------------------------------------------------------------------------

    def _api(self) -> tuple[Any, Any]:
        if self._clients is None:
            try:
                self._clients = compute_clients(self.options)
            except Exception as exc:  # no credentials
                raise self._error(exc, "reach the Compute API") from None
        return self._clients

    def _address_api(self) -> tuple[Any, Any]:
        if self._address_api_clients is None:
            try:
                self._address_api_clients = address_clients(self.options)
            except Exception as exc:  # no credentials
                raise self._error(exc, "reach the Compute API") from None
        return self._address_api_clients

    def _error(self, exc: BaseException, action: str, resource: str = "") -> ComputeError:
        return compute_error(exc, action=action, resource=resource or f"instance {self.name}", project=self.project, zone=self.zone)

    def _wait(self, operation: Any, action: str, progress: Callable[[str], None], *, regional: bool = False) -> None:
        """Wait for a zone (or region) operation (``wait``, which returns when done or after ~2 min)."""
        from google.api_core import exceptions as gexc

        operations = self._address_api()[1] if regional else self._api()[1]
        where = {"region": self.region} if regional else {"zone": self.zone}
        resource = f"address {self.address_name}" if regional else ""
        deadline = time.monotonic() + OPERATION_TIMEOUT
        name = operation.name
        while True:
            status = operation.status if isinstance(operation.status, str) else getattr(operation.status, "name", "")
            if status == "DONE":
                break
            if time.monotonic() > deadline:
                flag = f"--region {self.region}" if regional else f"--zone {self.zone}"
                raise ComputeError(f"cannot {action}: operation {name} did not finish in {OPERATION_TIMEOUT:.0f}s "
                                   f"(gcloud compute operations describe {name} {flag})")  # fmt: skip
            try:
                operation = operations.wait(project=self.project, operation=name, timeout=130, **where)
            except Exception as exc:
                raise self._error(exc, action, resource) from None
        if operation.error and operation.error.errors:
            first = operation.error.errors[0]
            code = int(operation.http_error_status_code or 400)
            if first.code == "IP_IN_USE_BY_ANOTHER_RESOURCE":
                raise ComputeError(
                    f"cannot {action}: its internal address is in use by another resource in project {self.project!r} "
                    f"(Google: {first.message}); see gcloud compute addresses describe {self.address_name} --region {self.region}",
                    "ipInUse", code,
                )  # fmt: skip
            error = gexc.from_http_status(code, first.message, errors=[{"reason": first.code, "message": first.message}])
            raise self._error(error, action, resource)

    def _instances(self) -> list[Any]:
        return find_controller_instances(project=self.project, zone=self.zone, labels=self.labels, options=self.options)

    # --- ControllerHost ----------------------------------------------------------------------

    def find(self, *, force: bool = False) -> ControllerPlacement | None:
        found = self._instances()
        if not found:
            return None
        if not force:
            self._check_same_config(found[0], self.config)  # run, job, status and stop go through here
        return placement_of(found[0])

    def config_metadata(self, config: Any) -> dict[str, str]:
        """The metadata that makes ``config`` the VM's: the startup script, the image, the config
        adapted for the VM, its port, the config's digest and who started it."""
        import yaml

        from iris.cluster.lifecycle import config_digest
        from iris.config import config_to_dict

        if not config.controller.vm.image:
            raise ConfigError(
                "controller.vm.image: empty; name the controller image the VM pulls (e.g. "
                "europe-west4-docker.pkg.dev/my-project/iris/controller:latest, built with iris build controller-image)"
            )
        served = vm_config(config)
        metadata = bootstrap.controller_metadata(
            image=config.controller.vm.image, config_yaml=yaml.safe_dump(config_to_dict(served), sort_keys=False),
            port=served.controller.port,
        )  # fmt: skip
        metadata[CONFIG_DIGEST] = config_digest(config)
        metadata[STARTED_BY] = _who()
        return metadata

    def instance_body(self, config: Any, address: str = "") -> Any:
        """The Instance resource the controller VM is created from (with the internal
        ``address`` when given: the reserved one, see :meth:`reserve_address`)."""
        from google.cloud import compute_v1

        vm = config.controller.vm
        metadata = self.config_metadata(config)
        digest = metadata[CONFIG_DIGEST]
        o = self.options
        network = str(o.get("network") or "default")
        nic = compute_v1.NetworkInterface(network=network if "/" in network else f"global/networks/{network}")
        if o.get("subnetwork"):
            nic.subnetwork = self._subnetwork()
        if address:
            nic.network_i_p = address
        if o.get("controller_external_ip", True):
            nic.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
        scopes = o.get("scopes") or list(DEFAULT_SCOPES)
        if isinstance(scopes, str):
            scopes = [s.strip() for s in scopes.split(",") if s.strip()]
        machine_type = vm.machine_type or DEFAULT_MACHINE_TYPE
        return compute_v1.Instance(
            name=self.name,
            machine_type=f"zones/{self.zone}/machineTypes/{machine_type}",
            labels={**self.labels, f"{label_value(config.label_prefix)}-config": digest[:16]},
            tags=compute_v1.Tags(items=[f"{label_value(config.label_prefix)}-controller"]),
            metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]),
            network_interfaces=[nic],
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=str(o.get("controller_boot_image") or DEFAULT_BOOT_IMAGE),
                        disk_size_gb=int(o.get("controller_disk_gb") or 50),
                    ),
                )
            ],
            service_accounts=[compute_v1.ServiceAccount(email=str(o.get("service_account") or "default"), scopes=list(scopes))],
        )

    def _subnetwork(self) -> str:
        """The subnetwork of the VM and its address: ``provider.options.subnetwork``, else the
        network's subnetwork in the zone's region (auto-mode networks name it as the network)."""
        o = self.options
        subnetwork = str(o.get("subnetwork") or str(o.get("network") or "default").rsplit("/", 1)[-1])
        return subnetwork if "/" in subnetwork else f"regions/{self.region}/subnetworks/{subnetwork}"

    def reserve_address(self, progress: Callable[[str], None]) -> str:
        """The controller's static internal address (reserved now unless it exists): the IP
        workers are given, which a new VM of this cluster gets again."""
        from google.api_core import exceptions as gexc
        from google.cloud import compute_v1

        addresses, _ = self._address_api()
        resource = f"address {self.address_name}"
        action = "reserve the controller's internal address"
        try:
            found = addresses.get(project=self.project, region=self.region, address=self.address_name)
        except gexc.NotFound:
            found = None
        except Exception as exc:
            raise self._error(exc, action, resource) from None
        if found is None:
            progress(f"reserving the controller's internal address {self.address_name} in {self.region} "
                     "(it outlives the VM: the slices' workers find a new controller VM there)")  # fmt: skip
            body = compute_v1.Address(
                name=self.address_name,
                address_type="INTERNAL",
                purpose="GCE_ENDPOINT",
                subnetwork=self._subnetwork(),
                labels=dict(self.labels),
                description=f"the internal address of the Iris controller VM {self.name} (iris cluster stop releases it)",
            )
            try:
                operation = addresses.insert_unary(project=self.project, region=self.region, address_resource=body)
            except Exception as exc:
                raise self._error(exc, action, resource) from None
            self._wait(operation, action, progress, regional=True)
            try:
                found = addresses.get(project=self.project, region=self.region, address=self.address_name)
            except Exception as exc:
                raise self._error(exc, action, resource) from None
        kind = found.address_type if isinstance(found.address_type, str) else getattr(found.address_type, "name", "")
        if kind != "INTERNAL":
            raise ComputeError(f"cannot use the address {self.address_name} in {self.region} for the controller VM: it is {kind or 'not'} "
                               "INTERNAL; delete it or rename the cluster (name)")  # fmt: skip
        others = [u for u in found.users if not u.endswith(f"/instances/{self.name}")]
        if others:
            user = others[0].split("/projects/", 1)[-1]
            raise ComputeError(
                f"cannot create the controller VM: its address {found.address} (address {self.address_name} in {self.region}) "
                f"is in use by projects/{user}; delete that instance, or the address (gcloud compute addresses delete "
                f"{self.address_name} --region {self.region} --project {self.project}) to let Iris reserve another",
                "ipInUse",
            )  # fmt: skip
        return found.address

    def release(self, progress: Callable[[str], None]) -> bool:
        """Release the controller's static internal address (``iris cluster stop``, once the
        slices that were given it are gone); True if there was one."""
        from google.api_core import exceptions as gexc

        addresses, _ = self._address_api()
        action = "release the controller's internal address"
        try:
            operation = addresses.delete_unary(project=self.project, region=self.region, address=self.address_name)
        except gexc.NotFound:
            return False
        except Exception as exc:
            raise self._error(exc, action, f"address {self.address_name}") from None
        progress(f"releasing the controller's internal address {self.address_name}")
        self._wait(operation, action, progress, regional=True)
        return True

    def _check_same_config(self, instance: Any, config: Any) -> None:
        """Refuse to take over a controller VM started from another config with this name."""
        metadata = _metadata(instance)
        theirs = metadata.get(CONFIG_DIGEST, "")
        if not theirs:  # a VM made before digests were recorded: nothing to compare
            return
        from iris.cluster.lifecycle import config_digest

        ours = config_digest(config)
        if theirs == ours:
            return
        from iris.cluster.lifecycle import edited_config_hint

        who = metadata.get(STARTED_BY, "") or "someone"
        raise OtherConfigError(
            f"name: {config.name!r}: the controller VM {instance.name} in project {self.project!r}, zone {self.zone!r} runs "
            f"another config with this name (config digest {theirs[:12]}, started by {who}; see it with gcloud compute "
            f"instances describe {instance.name} --zone {self.zone} --project {self.project} "
            f"--format='value(metadata.items.{bootstrap.CONFIG})'), not this one (digest {ours[:12]}); give this config "
            "its own name, or stop that cluster with its own config (iris cluster --config THAT.yaml stop) and start this one; "
            f"{edited_config_hint()}"
        )

    def _apply_config(self, instance: Any, config: Any, progress: Callable[[str], None]) -> None:
        """Make ``config`` the one the VM runs from its next boot: its metadata (other keys kept)
        and its config label, each set against the fingerprint just read (as GCE requires)."""
        from google.cloud import compute_v1

        metadata = {**_metadata(instance), **self.config_metadata(config)}
        digest = metadata[CONFIG_DIGEST]
        instances, _ = self._api()
        action = "apply the config to the controller VM"
        progress(f"setting the controller VM {instance.name}'s config to this one (digest {digest[:12]})")
        body = compute_v1.Metadata(
            fingerprint=instance.metadata.fingerprint, items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]
        )
        try:
            operation = instances.set_metadata_unary(project=self.project, zone=self.zone, instance=instance.name, metadata_resource=body)
        except Exception as exc:
            raise self._error(exc, action) from None
        self._wait(operation, action, progress)
        labels = {**dict(instance.labels), f"{label_value(config.label_prefix)}-config": digest[:16]}
        request = compute_v1.InstancesSetLabelsRequest(label_fingerprint=instance.label_fingerprint, labels=labels)
        try:
            operation = instances.set_labels_unary(
                project=self.project, zone=self.zone, instance=instance.name, instances_set_labels_request_resource=request
            )
        except Exception as exc:
            raise self._error(exc, action) from None
        self._wait(operation, action, progress)

    def start(self, config: Any, progress: Callable[[str], None]) -> ControllerPlacement:
        existing = self._instances()
        if existing:
            self._check_same_config(existing[0], config)
            if _status_name(existing[0]) in STOPPED:  # stopped (by hand, or by GCE): start it again
                return self._power_on(existing[0].name, progress)
            return placement_of(existing[0])
        address = self.reserve_address(progress)
        body = self.instance_body(config, address)
        instances, _ = self._api()
        progress(f"creating the controller VM {self.name} ({body.machine_type.rsplit('/', 1)[-1]}) in {self.zone}")
        try:
            operation = instances.insert_unary(project=self.project, zone=self.zone, instance_resource=body)
        except Exception as exc:
            raise self._error(exc, "create the controller VM") from None
        self._wait(operation, "create the controller VM", progress)
        placement = self._get(progress, "create the controller VM")
        self._forget_old_host_key(placement, progress)
        return placement

    def _forget_old_host_key(self, placement: ControllerPlacement, progress: Callable[[str], None]) -> None:
        """A new VM at an address an earlier one had (the reserved address) has a new SSH host
        key: forget the one the tunnel recorded for that address, as it records a new host's."""
        from urllib.parse import urlparse

        if self.config.controller.tunnel not in ("", "ssh") or self.options.get("ssh_host"):
            return  # no SSH to the VM itself (another tunnel, or a bastion): nothing recorded for it
        host = placement.tunnel_host or (urlparse(placement.url).hostname or "")
        known_hosts = Path(str(self.options.get("ssh_known_hosts") or "~/.ssh/known_hosts")).expanduser()
        port = int(self.options.get("ssh_port") or 22)
        if forget_host_key(known_hosts, host, port):
            progress(f"forgot the SSH host key recorded for {host} in {known_hosts}: it was an earlier controller VM's")

    def _get(self, progress: Callable[[str], None], action: str) -> ControllerPlacement:
        instances, _ = self._api()
        deadline = time.monotonic() + OPERATION_TIMEOUT
        while True:
            try:
                instance = instances.get(project=self.project, zone=self.zone, instance=self.name)
            except Exception as exc:
                raise self._error(exc, action) from None
            placement = placement_of(instance)
            if placement.state == "RUNNING" and placement.url:
                return placement
            if time.monotonic() > deadline:
                raise ComputeError(f"cannot {action}: the VM {self.name} is {placement.state}, not RUNNING, after "
                                   f"{OPERATION_TIMEOUT:.0f}s; see {placement.logs_hint}")  # fmt: skip
            progress(f"the controller VM {self.name} is {placement.state}")
            time.sleep(2.0)

    def restart(self, progress: Callable[[str], None], *, config: Any = None) -> ControllerPlacement:
        """Reset the VM (start it if stopped). With ``config`` (``restart --force``): first make
        it the VM's config (:meth:`_apply_config`), whatever config it was started from."""
        found = self._instances()
        if not found:
            raise ComputeError(f"cannot restart the controller VM: there is none labelled {filter_for(self.labels)} in project "
                               f"{self.project!r}, zone {self.zone!r}; start it with iris cluster --config C start")  # fmt: skip
        if config is None:
            self._check_same_config(found[0], self.config)
        else:
            self._apply_config(found[0], config, progress)
        instances, _ = self._api()
        name = found[0].name
        if _status_name(found[0]) in STOPPED:
            return self._power_on(name, progress)
        progress(f"resetting the controller VM {name} (its disk and address are kept)")
        try:
            operation = instances.reset_unary(project=self.project, zone=self.zone, instance=name)
        except Exception as exc:
            raise self._error(exc, "restart the controller VM") from None
        self._wait(operation, "restart the controller VM", progress)
        return self._get(progress, "restart the controller VM")

    def _power_on(self, name: str, progress: Callable[[str], None]) -> ControllerPlacement:
        instances, _ = self._api()
        progress(f"starting the stopped controller VM {name} (its disk and address are kept)")
        try:
            operation = instances.start_unary(project=self.project, zone=self.zone, instance=name)
        except Exception as exc:
            raise self._error(exc, "start the controller VM") from None
        self._wait(operation, "start the controller VM", progress)
        return self._get(progress, "start the controller VM")

    def stop(self, progress: Callable[[str], None], *, force: bool = False) -> bool:
        found = self._instances()
        for instance in found:
            if not force:
                self._check_same_config(instance, self.config)
        instances, _ = self._api()
        pending = []
        for instance in found:
            progress(f"deleting the controller VM {instance.name}")
            try:
                pending.append(instances.delete_unary(project=self.project, zone=self.zone, instance=instance.name))
            except Exception as exc:
                error = self._error(exc, "delete the controller VM")
                if error.reason != "notFound":
                    raise error from None
        for operation in pending:
            self._wait(operation, "delete the controller VM", progress)
        return bool(found)

    def close(self) -> None:
        self._clients = None
        self._address_api_clients = None


def _who() -> str:
    import socket

    from iris.auth import current_user

    return f"{current_user()}@{socket.gethostname()}"


def controller_vms(project: str, zone: str, *, label_prefix: str = "iris", cluster: str = "",
                   options: dict[str, Any] | None = None) -> Iterator[tuple[str, ControllerPlacement]]:  # fmt: skip
    """(cluster name, placement) of every Iris controller VM in a zone (``cluster`` narrows it)."""
    prefix = label_value(label_prefix)
    labels = {f"{prefix}-role": "controller"}
    if cluster:
        labels[f"{prefix}-cluster"] = label_value(cluster)
    for instance in find_controller_instances(project=project, zone=zone, labels=labels, options=options):
        yield instance.labels.get(f"{prefix}-cluster", ""), placement_of(instance)
