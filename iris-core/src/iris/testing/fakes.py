"""In-memory implementations of the seams, for tests of code that uses them.

They pass the same contract suites as real implementations (see ``iris-core/tests``), so a
test that uses a fake exercises the behaviour a real provider promises, minus the I/O.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import attrs

from iris.errors import BundleError
from iris.plugin.protocols import SliceInfo, SliceRequest, SliceState, VmInfo

_HEX = frozenset("0123456789abcdef")


def check_bundle_id(bundle_id: str) -> str:
    """Return ``bundle_id`` if it is a sha256 hex digest, else raise BundleError."""
    if not isinstance(bundle_id, str) or len(bundle_id) != 64 or not set(bundle_id) <= _HEX:
        raise BundleError(f"bundle id {bundle_id!r} is not a sha256 hex digest")
    return bundle_id


class InMemoryBundleStore:
    """A BundleStore keeping bundles in a dict; ``get`` writes the bytes into ``dest_dir``."""

    def __init__(self, url_prefix: str = "mem://bundles"):
        self._prefix = url_prefix.rstrip("/")
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def url_for(self, bundle_id: str) -> str:
        return f"{self._prefix}/{check_bundle_id(bundle_id)}.zip"

    def exists(self, bundle_id: str) -> bool:
        with self._lock:
            return check_bundle_id(bundle_id) in self._data

    def put(self, bundle_id: str, data: bytes) -> str:
        check_bundle_id(bundle_id)
        actual = hashlib.sha256(data).hexdigest()
        if actual != bundle_id:
            raise BundleError(f"bundle id {bundle_id} does not match its content (sha256 {actual})")
        with self._lock:
            self._data.setdefault(bundle_id, bytes(data))
        return self.url_for(bundle_id)

    def get(self, bundle_id: str, dest_dir: Path) -> Path:
        with self._lock:
            data = self._data.get(check_bundle_id(bundle_id))
        if data is None:
            raise BundleError(f"bundle {bundle_id} not found in {self._prefix}")
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest_dir, prefix=f".{bundle_id}-", delete=False) as f:
            f.write(data)
        target = dest_dir / f"{bundle_id}.zip"
        Path(f.name).replace(target)
        return target


class InMemoryVmManager:
    """A VmManager whose slices are records in a dict: READY at once, with ``vm_count`` VMs.

    ``label_prefix`` adds ``<prefix>.slice = <slice_id>`` to each slice's labels, as real
    providers do. ``deleted`` records every slice id deleted, in order.
    """

    def __init__(self, label_prefix: str = "iris"):
        self._label_prefix = label_prefix
        self._slices: dict[str, SliceInfo] = {}
        self._lock = threading.Lock()
        self.deleted: list[str] = []

    def create_slice(self, request: SliceRequest) -> SliceInfo:
        with self._lock:
            existing = self._slices.get(request.slice_id)
            if existing is not None:
                return existing
            vms = tuple(
                VmInfo(
                    vm_id=f"{request.slice_id}-{i}",
                    address=f"{request.slice_id}-{i}.invalid",
                    state=SliceState.READY,
                    attributes={"vm-index": str(i), **request.attributes},
                )
                for i in range(request.vm_count)
            )
            info = SliceInfo(
                slice_id=request.slice_id,
                scale_group=request.scale_group,
                state=SliceState.READY,
                labels={f"{self._label_prefix}.slice": request.slice_id, **request.labels},
                vms=vms,
            )
            self._slices[request.slice_id] = info
            return info

    def list_slices(self, labels: Mapping[str, str]) -> list[SliceInfo]:
        with self._lock:
            return [s for s in self._slices.values() if all(s.labels.get(k) == v for k, v in labels.items())]

    def describe_slice(self, slice_id: str) -> SliceInfo | None:
        with self._lock:
            return self._slices.get(slice_id)

    def delete_slice(self, slice_id: str) -> None:
        with self._lock:
            if self._slices.pop(slice_id, None) is not None:
                self.deleted.append(slice_id)

    def set_state(self, slice_id: str, state: SliceState, error: str = "") -> SliceInfo:
        """Move a slice to ``state`` (e.g. PREEMPTED), as a cloud would behind your back."""
        with self._lock:
            info = attrs.evolve(self._slices[slice_id], state=state, error=error)
            self._slices[slice_id] = info
            return info

    def close(self) -> None:
        pass
