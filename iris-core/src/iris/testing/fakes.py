"""In-memory implementations of the seams, for tests of code that uses them.

They pass the same contract suites as real implementations (see ``iris-core/tests``), so a
test that uses a fake exercises the behaviour a real provider promises, minus the I/O.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from iris.errors import BundleError
from iris.plugin.protocols import QuotaExceeded, SliceInfo, SliceRequest, SliceState, VmInfo

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
    """A VmManager whose slices are records in a dict, with ``vm_count`` VMs each.

    By default a slice is READY at once. For tests of code that drives a provider (the
    autoscaler) it can also behave like a slow or unreliable cloud, on an injected ``clock``:

    - ``boot_delay``: a new slice reports BOOTING until ``clock()`` passes its creation time
      plus the delay, then READY (settable at any time; applies to slices created afterwards).
    - :meth:`fail_next_creates` / :meth:`quota_exceeded_next_creates`: the next N
      ``create_slice`` calls raise (an error, or :class:`QuotaExceeded`) and create nothing.
    - :meth:`die_after_ready`: a slice reports FAILED or PREEMPTED once it has been READY for a
      while; :meth:`set_state` changes a slice's state at once.

    ``label_prefix`` adds ``<prefix>.slice = <slice_id>`` to each slice's labels, as real
    providers do. ``deleted`` records every slice id deleted, in order; ``created`` every slice
    id created (not the failed or repeated creates); ``calls`` counts calls by method name.
    """

    def __init__(self, label_prefix: str = "iris", *, clock: Callable[[], float] = time.monotonic, boot_delay: float = 0.0):
        self._label_prefix = label_prefix
        self._clock = clock
        self.boot_delay = boot_delay
        self._slices: dict[str, SliceInfo] = {}
        self._ready_at: dict[str, float] = {}
        self._death: dict[str, tuple[float, SliceState, str]] = {}  # slice id -> (seconds after ready, state, error)
        self._pinned: set[str] = set()  # states set by set_state, not derived from the clock
        self._create_failures: list[BaseException] = []
        self._lock = threading.Lock()
        self.deleted: list[str] = []
        self.created: list[str] = []
        self.calls: Counter[str] = Counter()

    # --- fault injection ------------------------------------------------------------------

    def fail_next_creates(self, count: int = 1, error: BaseException | None = None) -> None:
        """Make the next ``count`` creates raise ``error`` (default a RuntimeError)."""
        with self._lock:
            for _ in range(count):
                self._create_failures.append(error or RuntimeError("injected create failure"))

    def quota_exceeded_next_creates(self, count: int = 1, message: str = "quota exceeded (injected)") -> None:
        """Make the next ``count`` creates raise :class:`QuotaExceeded`."""
        with self._lock:
            for _ in range(count):
                self._create_failures.append(QuotaExceeded(message))

    def die_after_ready(
        self, slice_id: str, after: float = 0.0, state: SliceState = SliceState.PREEMPTED, error: str = "died (injected)"
    ) -> None:
        """Make the slice report ``state`` once it has been READY for ``after`` seconds."""
        if state not in (SliceState.FAILED, SliceState.PREEMPTED):
            raise ValueError(f"a slice dies FAILED or PREEMPTED, not {state.value}")
        with self._lock:
            if slice_id not in self._slices:
                raise KeyError(slice_id)
            self._death[slice_id] = (after, state, error)

    def set_state(self, slice_id: str, state: SliceState, error: str = "") -> SliceInfo:
        """Move a slice to ``state`` (e.g. PREEMPTED), as a cloud would behind your back."""
        with self._lock:
            info = attrs.evolve(self._slices[slice_id], state=state, error=error)
            self._slices[slice_id] = info
            self._pinned.add(slice_id)
            return info

    # --- the VmManager protocol -----------------------------------------------------------

    def create_slice(self, request: SliceRequest) -> SliceInfo:
        with self._lock:
            self.calls["create_slice"] += 1
            existing = self._slices.get(request.slice_id)
            if existing is not None:
                return self._current(existing)
            if self._create_failures:
                raise self._create_failures.pop(0)
            now = self._clock()
            state = SliceState.READY if self.boot_delay <= 0 else SliceState.BOOTING
            vms = tuple(
                VmInfo(
                    vm_id=f"{request.slice_id}-{i}",
                    address=f"{request.slice_id}-{i}.invalid",
                    state=state,
                    attributes={"vm-index": str(i), **request.attributes},
                )
                for i in range(request.vm_count)
            )
            info = SliceInfo(
                slice_id=request.slice_id,
                scale_group=request.scale_group,
                state=state,
                labels={f"{self._label_prefix}.slice": request.slice_id, **request.labels},
                vms=vms,
            )
            self._slices[request.slice_id] = info
            self._ready_at[request.slice_id] = now + max(self.boot_delay, 0.0)
            self.created.append(request.slice_id)
            return info

    def list_slices(self, labels: Mapping[str, str]) -> list[SliceInfo]:
        with self._lock:
            self.calls["list_slices"] += 1
            return [
                self._current(s) for s in list(self._slices.values()) if all(s.labels.get(k) == v for k, v in labels.items())
            ]

    def describe_slice(self, slice_id: str) -> SliceInfo | None:
        with self._lock:
            self.calls["describe_slice"] += 1
            info = self._slices.get(slice_id)
            return None if info is None else self._current(info)

    def delete_slice(self, slice_id: str) -> None:
        with self._lock:
            self.calls["delete_slice"] += 1
            if self._slices.pop(slice_id, None) is not None:
                self._ready_at.pop(slice_id, None)
                self._death.pop(slice_id, None)
                self._pinned.discard(slice_id)
                self.deleted.append(slice_id)

    def close(self) -> None:
        pass

    def _current(self, info: SliceInfo) -> SliceInfo:
        """The slice as of ``clock()``: booted, dead, or as it was (states set by hand stay)."""
        slice_id = info.slice_id
        if slice_id in self._pinned or info.state in (SliceState.FAILED, SliceState.PREEMPTED):
            return info
        ready_at = self._ready_at.get(slice_id)
        if ready_at is None:  # a subclass stored the slice itself
            return info
        now = self._clock()
        state, error = info.state, info.error
        if now >= ready_at:
            state = SliceState.READY
            death = self._death.get(slice_id)
            if death is not None and now >= ready_at + death[0]:
                state, error = death[1], death[2]
        if state is info.state:
            return info
        vm_state = SliceState.READY if state is SliceState.READY else state
        info = attrs.evolve(info, state=state, error=error, vms=tuple(attrs.evolve(vm, state=vm_state) for vm in info.vms))
        self._slices[slice_id] = info
        return info
