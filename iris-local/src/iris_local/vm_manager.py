"""VmManager ``local``: a "slice" is a set of workers running inside this process.

Each VM of a slice is an in-process :class:`~iris.cluster.worker.worker.Worker` that talks to
the controller over real gRPC and runs tasks through the configured ContainerRuntime (the
``process`` runtime by default). Slices live as long as this process; ``list_slices`` reports
the ones this manager holds.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from pathlib import Path

from iris.cluster.worker.worker import Worker
from iris.plugin.protocols import SliceInfo, SliceRequest, SliceState, VmInfo
from iris.plugin.records import ProviderContext


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class LocalVmManager:
    def __init__(self, context: ProviderContext):
        self._context = context
        self._runtime_name = str(context.options.get("runtime") or "process")
        self._slices: dict[str, tuple[SliceInfo, list[Worker]]] = {}
        self._lock = threading.Lock()
        self._runtime = None

    def _get_runtime(self):  # type: ignore[no-untyped-def]
        if self._runtime is None:
            plugin = self._context.registry.container_runtime(self._runtime_name)
            self._runtime = plugin.factory(Path(self._context.state_dir) / "runtime")
        return self._runtime

    def create_slice(self, request: SliceRequest) -> SliceInfo:
        with self._lock:
            if request.slice_id in self._slices:
                return self._slices[request.slice_id][0]
            runtime = self._get_runtime()
            registry = self._context.registry
            cpu = request.cpu or float(machine_cpus())
            memory = request.memory_bytes or machine_memory_bytes()
            workers: list[Worker] = []
            vms: list[VmInfo] = []
            labels = {f"{self._context.label_prefix}.slice": request.slice_id, **request.labels}
            for i in range(request.vm_count):
                vm_id = f"{request.slice_id}-{i}"
                attributes = {
                    "slice": request.slice_id,
                    "scale-group": request.scale_group,
                    "vm-index": str(i),
                    "hostname": socket.gethostname(),
                    **request.attributes,
                }
                if attributes.get("device") == "tpu":
                    attributes.update({"tpu-name": request.slice_id, "tpu-worker-id": str(i)})
                worker = Worker(
                    worker_id=vm_id,
                    controller_address=self._context.controller_address,
                    runtime=runtime,
                    bundle_store_for=registry.open_bundle_store,
                    work_dir=Path(self._context.state_dir) / "workers" / vm_id,
                    cpu=cpu,
                    memory_bytes=memory,
                    attributes=attributes,
                    slice_id=request.slice_id,
                )
                worker.start()
                workers.append(worker)
                vms.append(VmInfo(vm_id=vm_id, address="in-process", state=SliceState.READY, attributes=attributes))
            info = SliceInfo(
                slice_id=request.slice_id,
                scale_group=request.scale_group,
                state=SliceState.READY,
                labels=labels,
                vms=tuple(vms),
            )
            self._slices[request.slice_id] = (info, workers)
            return info

    def list_slices(self, labels: Mapping[str, str]) -> list[SliceInfo]:
        with self._lock:
            return [
                info
                for info, _ in self._slices.values()
                if all(info.labels.get(k) == v for k, v in labels.items())
            ]

    def describe_slice(self, slice_id: str) -> SliceInfo | None:
        with self._lock:
            entry = self._slices.get(slice_id)
            return entry[0] if entry else None

    def delete_slice(self, slice_id: str) -> None:
        with self._lock:
            entry = self._slices.pop(slice_id, None)
        if entry is None:
            return
        for worker in entry[1]:
            worker.stop(kill_attempts=True)

    def workers(self, slice_id: str) -> list[Worker]:
        with self._lock:
            entry = self._slices.get(slice_id)
            return list(entry[1]) if entry else []

    def close(self) -> None:
        for slice_id in list(self._slices):
            self.delete_slice(slice_id)
        if self._runtime is not None:
            self._runtime.close()
