"""What a scale group's slices are, read from the cluster config: the SliceRequest for a slice
of the group, with its VM count, per-VM size and worker attributes.

The autoscaler learns from these requests what each group offers (device, size, attributes to
match constraints against); the providers create slices from them. Only config and the TPU
table are needed here, so both the cluster manager and the autoscaler import this module.
"""

from __future__ import annotations

from collections.abc import Callable

from iris.cluster.tpu import TPU_TOPOLOGIES
from iris.config import ClusterConfig, ScaleGroupConfig
from iris.plugin.protocols import SliceRequest
from iris.plugin.worker_host import machine_cpus, machine_memory_bytes

RequestFor = Callable[[str, ScaleGroupConfig, str], SliceRequest]

_TPU_TYPE_PREFIXES = ("v4-", "v5", "v6e-")


def group_attributes(config: ClusterConfig, name: str, group: ScaleGroupConfig) -> dict[str, str]:
    """Well-known attributes every worker of the group carries (see iris.cluster.constraints)."""
    attributes = {
        "scale-group": name,
        "preemptible": "true" if group.preemptible else "false",
        "region": config.provider.region or ("local" if config.provider.type == "local" else ""),
        "zone": (group.zones[0] if group.zones else config.provider.zone)
        or ("local" if config.provider.type == "local" else ""),
    }
    attributes = {k: v for k, v in attributes.items() if v}
    device = group.accelerator_type or "cpu"
    variant = group.accelerator_variant
    if device.startswith(_TPU_TYPE_PREFIXES) and not variant:  # seed 001 writes the type here
        device, variant = "tpu", device
    if device != "cpu":
        attributes["device"] = device
        if variant:
            attributes["device-variant"] = variant
    if device == "tpu" and variant in TPU_TOPOLOGIES:
        attributes["topology"] = TPU_TOPOLOGIES[variant].topology
    attributes.update(group.attributes)
    return attributes


def group_vm_count(group: ScaleGroupConfig) -> int:
    """VMs per slice: the TPU type's host count unless the config says otherwise."""
    variant = group.accelerator_variant or (group.accelerator_type if group.accelerator_type.startswith(_TPU_TYPE_PREFIXES) else "")
    if group.vms_per_slice == 1 and variant in TPU_TOPOLOGIES:
        return TPU_TOPOLOGIES[variant].hosts
    return group.vms_per_slice


def group_template(group: ScaleGroupConfig) -> dict[str, object]:
    """The slice template a provider gets: the group's ``template``, with its ``runtime_version``
    (the TPU software image) added when the group sets one and the template does not."""
    template = dict(group.template)
    if group.runtime_version and "runtime_version" not in template:
        template["runtime_version"] = group.runtime_version
    return template


def scale_group_zones(config: ClusterConfig) -> list[str]:
    """Every zone a scale group names: where a provider must look for the cluster's slices."""
    return sorted({zone for group in config.scale_groups.values() for zone in group.zones})


def machine_size() -> tuple[float, int]:
    """(cpus, memory bytes) of this machine: the size of a local worker whose group gives none,
    counted as the worker counts it."""
    return float(machine_cpus()), machine_memory_bytes()


def slice_request_for(cluster: ClusterConfig) -> RequestFor:
    """The ``request_for`` that builds a group's SliceRequest as the cluster config describes it:
    labels ``<prefix>.cluster`` and ``<prefix>.scale-group``, the group's VM count, size, template
    and worker attributes (including region and zone from ``cluster.provider``).

    On the local provider a group that gives no ``cpu`` (or ``memory``) gets this machine's, as
    its workers will have: so the size is known when deciding what a group can serve."""
    prefix = cluster.label_prefix
    default_cpu, default_memory = machine_size() if cluster.provider.type == "local" else (0.0, 0)

    def request_for(name: str, group: ScaleGroupConfig, slice_id: str) -> SliceRequest:
        return SliceRequest(
            slice_id=slice_id,
            scale_group=name,
            vm_count=group_vm_count(group),
            cpu=group.cpu or default_cpu,
            memory_bytes=group.memory_bytes or default_memory,
            labels={f"{prefix}.cluster": cluster.name, f"{prefix}.scale-group": name},
            attributes=group_attributes(cluster, name, group),
            template=group_template(group),
        )

    return request_for
