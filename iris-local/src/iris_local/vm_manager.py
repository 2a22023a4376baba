"""VmManager ``local``: a "slice" is a set of workers on this machine.

Each VM of a slice is an Iris worker, started through :mod:`iris.plugin.worker_host` as any
provider starts one, that talks to the controller over real gRPC and runs tasks through the
configured ContainerRuntime (the ``process`` runtime by default). The provider option
``worker_mode`` says where the workers run:

``thread`` (the default)
    Inside this process. Slices live as long as this process; ``list_slices`` reports the ones
    this manager holds and ``close`` deletes them.

``process``
    One ``python -m iris.cluster.worker.main`` process per VM, in its own session, logging to
    ``<state_dir>/workers/<vm id>/worker.log``. Each slice is recorded (worker pids and start
    times) in ``<state_dir>/slices/<slice id>.json``, so a new manager on the same state_dir, as
    after a controller restart, lists, describes and deletes slices it did not start. A slice is
    BOOTING until every worker has written its ready marker, then READY, and FAILED once any of
    its worker processes is gone; creating a slice whose workers are all gone starts it afresh.
    Deleting a slice SIGTERMs its workers (which kill their tasks), SIGKILLs any that outlive the
    grace period, then kills the tasks a worker left behind (a SIGKILLed worker's tasks keep
    running as orphans). ``close`` leaves these slices running. A worker keeps the controller
    address it was started with, so a restarted controller that should get its workers back
    listens on the same address (a fixed ``controller.port``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

from iris.errors import ConfigError, PluginError
from iris.plugin.protocols import SliceInfo, SliceRequest, SliceState, VmInfo
from iris.plugin.records import OWNER_FILE, TEMP_STATE_PREFIX, ProviderContext
from iris.plugin.worker_host import LABEL_WORKER, InProcessWorker, WorkerLaunch, is_ready, ready_marker
from iris.procfs import pid_start_time

logger = logging.getLogger(__name__)

WORKER_MODES = ("thread", "process")
#: How long ``create_slice`` waits for process workers' ready markers before returning BOOTING.
READY_TIMEOUT_SECONDS = 10.0
#: How long a SIGTERMed worker process gets to stop its tasks before it is SIGKILLed.
STOP_GRACE_SECONDS = 20.0
#: Grace for the tasks a worker process left behind.
ORPHAN_KILL_GRACE_SECONDS = 1.0
POLL_SECONDS = 0.02
WORKER_LOG = "worker.log"


def parse_worker_mode(options: Mapping[str, Any]) -> str:
    """``worker_mode`` given directly, or inside the config's ``provider.options`` mapping."""
    nested = options.get("options")
    mode = options.get("worker_mode") or (nested.get("worker_mode") if isinstance(nested, Mapping) else None) or "thread"
    if mode not in WORKER_MODES:
        raise ConfigError(f"provider.options.worker_mode: {mode!r} is invalid; choose one of: {', '.join(WORKER_MODES)}")
    return str(mode)


@attrs.frozen
class WorkerProcess:
    """One VM of a process-mode slice: its worker process, told apart from a later process that
    reuses the pid by its start time."""

    vm_id: str
    pid: int
    start_time: str | None
    work_dir: str
    attributes: dict[str, str] = attrs.field(factory=dict)

    @property
    def running(self) -> bool:
        return self.start_time is not None and pid_start_time(self.pid) == self.start_time

    @property
    def ready(self) -> bool:
        return is_ready(self.work_dir, pid=self.pid) and self.running

    @property
    def state(self) -> SliceState:
        if self.ready:
            return SliceState.READY
        return SliceState.BOOTING if self.running else SliceState.FAILED


@attrs.frozen
class SliceRecord:
    """What ``<state_dir>/slices/<slice id>.json`` holds for a process-mode slice."""

    slice_id: str
    scale_group: str
    labels: dict[str, str] = attrs.field(factory=dict)
    controller_address: str = ""
    workers: tuple[WorkerProcess, ...] = ()
    deleting: bool = False

    def info(self) -> SliceInfo:
        states = [w.state for w in self.workers]
        dead = [w for w, s in zip(self.workers, states) if s is SliceState.FAILED]
        error = ""
        if self.deleting:
            state = SliceState.DELETING
        elif dead:
            state = SliceState.FAILED
            error = "; ".join(
                f"the worker process of {w.vm_id} (pid {w.pid}) is not running; see {Path(w.work_dir) / WORKER_LOG}"
                for w in dead
            )
        elif all(s is SliceState.READY for s in states):
            state = SliceState.READY
        else:
            state = SliceState.BOOTING
        vms = tuple(
            VmInfo(vm_id=w.vm_id, address="127.0.0.1", state=s, attributes=w.attributes)
            for w, s in zip(self.workers, states)
        )
        return SliceInfo(
            slice_id=self.slice_id, scale_group=self.scale_group, state=state, labels=self.labels, vms=vms, error=error
        )


_converter = cattrs.Converter()


def user_env_cache() -> Path:
    """Where local workers cache task environments unless told otherwise: one directory per user
    (``$XDG_CACHE_HOME/iris/envs``, else ``~/.cache/iris/envs``), shared by every local cluster,
    so the next ``iris run --provider local`` (a new cluster in a new temporary directory) finds
    the environment the last one built. Environments are keyed by what determines them and built
    under a lock, so sharing is safe."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iris" / "envs"


def _valid_slice_id(slice_id: str) -> bool:
    """Process-mode slice ids name files: ``<state_dir>/slices/<slice id>.json``."""
    return bool(slice_id) and "/" not in slice_id and "\0" not in slice_id and not slice_id.startswith(".")


def _signal_group(worker: WorkerProcess, sig: int) -> None:
    if not worker.running:  # never signal a later process that reused the pid
        return
    try:
        os.killpg(worker.pid, sig)  # the worker leads its own session, so its group is its pid
    except ProcessLookupError:
        pass


def _check_cgroups_setting() -> None:
    """A forced ``IRIS_CGROUPS`` this machine cannot give fails the cluster at once: otherwise
    every worker start fails and the autoscaler backs off forever with the job PENDING."""
    from iris_local.cgroups import CgroupError, Cgroups

    try:
        Cgroups.detect()
    except CgroupError as exc:
        raise PluginError(f"{exc}; leave IRIS_CGROUPS unset (auto) or set it to off") from None


class LocalVmManager:
    def __init__(self, context: ProviderContext):
        self._context = context
        self._runtime_name = str(context.options.get("runtime") or "process")
        self._mode = parse_worker_mode(context.options)
        self._slices: dict[str, tuple[SliceInfo, list[InProcessWorker]]] = {}
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()  # process mode: one create at a time
        self._runtime = None
        self._state_dir = Path(context.state_dir)
        self._records_dir = self._state_dir / "slices"
        self._children: dict[int, subprocess.Popen] = {}  # worker processes this manager started
        if self._runtime_name == "process":
            _check_cgroups_setting()
        if self._mode == "thread" and self._state_dir.name.startswith(TEMP_STATE_PREFIX):
            self._reap_dead_siblings()

    @property
    def worker_mode(self) -> str:
        return self._mode

    def _reap_dead_siblings(self) -> None:
        """An in-process local cluster whose process died (SIGKILL, a crash) leaves its tasks
        running and its temporary directory behind: stop those tasks and remove the directory.
        Only directories whose owner process is gone are touched."""
        for directory in self._state_dir.parent.glob(f"{TEMP_STATE_PREFIX}*"):
            if directory == self._state_dir:
                continue
            try:
                owner = json.loads((directory / OWNER_FILE).read_text())
                pid, start_time = int(owner["pid"]), owner["start_time"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not ours, or still being set up
            if pid_start_time(pid) == start_time:
                continue  # its owner is alive
            runtime_root = directory / "runtime"
            if runtime_root.exists():
                try:
                    runtime = self._context.registry.container_runtime(self._runtime_name).factory(runtime_root)
                    for handle in runtime.list_containers({}):
                        handle.kill(grace_seconds=1.0)
                        handle.remove()
                    runtime.close()
                except Exception:  # noqa: BLE001  (never fail a new cluster over an old one's leftovers)
                    logger.warning("could not stop what the dead local cluster in %s left running", directory, exc_info=True)
                    continue
            logger.info("removed %s, left by local cluster process %d that is gone", directory, pid)
            shutil.rmtree(directory, ignore_errors=True)

    def _get_runtime(self):  # type: ignore[no-untyped-def]
        if self._runtime is None:
            plugin = self._context.registry.container_runtime(self._runtime_name)
            self._runtime = plugin.factory(self._state_dir / "runtime")
        return self._runtime

    def _vm_attributes(self, request: SliceRequest, index: int) -> dict[str, str]:
        attributes = {
            "slice": request.slice_id,
            "scale-group": request.scale_group,
            "vm-index": str(index),
            "hostname": socket.gethostname(),
            **request.attributes,
        }
        if attributes.get("device") == "tpu":
            attributes.update({"tpu-name": request.slice_id, "tpu-worker-id": str(index)})
        return attributes

    def _labels(self, request: SliceRequest) -> dict[str, str]:
        return {f"{self._context.label_prefix}.slice": request.slice_id, **request.labels}

    def _launch(self, request: SliceRequest, index: int) -> WorkerLaunch:
        """VM ``index`` of the slice: a worker of the slice's shape (this machine's size where
        the request gives none), its files under ``<state_dir>/workers/<vm id>``, sharing one
        runtime root so the manager finds every worker's containers."""
        vm_id = f"{request.slice_id}-{index}"
        return WorkerLaunch(
            worker_id=vm_id,
            controller_address=self._context.controller_address,
            work_dir=self._state_dir / "workers" / vm_id,
            slice_id=request.slice_id,
            cpu=request.cpu,
            memory_bytes=request.memory_bytes,
            attributes=self._vm_attributes(request, index),
            runtime=self._runtime_name,
            runtime_root=self._state_dir / "runtime",
            task_image=str(self._context.options.get("docker_image") or ""),
            task_python=str(self._context.options.get("task_python") or ""),
            env_dir=self._context.options.get("env_dir") or os.environ.get("IRIS_ENV_DIR") or user_env_cache(),
            token=self._context.worker_token(vm_id) if self._context.worker_token else "",
        )

    # --- the VmManager protocol -----------------------------------------------------------

    def create_slice(self, request: SliceRequest) -> SliceInfo:
        if self._mode == "process":
            return self._create_process_slice(request)
        with self._lock:
            if request.slice_id in self._slices:
                return self._slices[request.slice_id][0]
            start = self._context.start_worker
            if start is None:
                raise PluginError(
                    "provider local: worker_mode thread runs workers inside the controller's process, "
                    "and this host cannot (ProviderContext.start_worker is not set); use worker_mode: process"
                )
            runtime = self._get_runtime()
            workers: list[InProcessWorker] = []
            vms: list[VmInfo] = []
            for i in range(request.vm_count):
                launch = self._launch(request, i)
                workers.append(start(launch, runtime=runtime, bundle_store_for=self._context.registry.open_bundle_store))
                vms.append(VmInfo(vm_id=launch.worker_id, address="in-process", state=SliceState.READY, attributes=launch.attributes))
            info = SliceInfo(
                slice_id=request.slice_id,
                scale_group=request.scale_group,
                state=SliceState.READY,
                labels=self._labels(request),
                vms=tuple(vms),
            )
            self._slices[request.slice_id] = (info, workers)
            return info

    def list_slices(self, labels: Mapping[str, str]) -> list[SliceInfo]:
        if self._mode == "process":
            infos = [record.info() for record in self._read_records()]
        else:
            with self._lock:
                infos = [info for info, _ in self._slices.values()]
        return [info for info in infos if all(info.labels.get(k) == v for k, v in labels.items())]

    def describe_slice(self, slice_id: str) -> SliceInfo | None:
        if self._mode == "process":
            record = self._read_record(slice_id)
            return record.info() if record else None
        with self._lock:
            entry = self._slices.get(slice_id)
            return entry[0] if entry else None

    def delete_slice(self, slice_id: str) -> None:
        if self._mode == "process":
            self._delete_process_slice(slice_id)
            return
        with self._lock:
            entry = self._slices.pop(slice_id, None)
        if entry is None:
            return
        for worker in entry[1]:
            worker.stop(kill_attempts=True)

    def vm_logs(self, vm_id: str, tail_lines: int = 100) -> str:
        """The last ``tail_lines`` lines of a process-mode VM's worker log."""
        if self._mode != "process":
            raise PluginError("provider local: thread-mode workers log into the cluster's own process; there is no VM log")
        for record in self._read_records():
            for worker in record.workers:
                if worker.vm_id == vm_id:
                    try:
                        lines = (Path(worker.work_dir) / WORKER_LOG).read_text(errors="replace").splitlines()
                    except OSError as exc:
                        raise PluginError(f"provider local: cannot read the log of {vm_id}: {exc}") from None
                    return "".join(f"{line}\n" for line in lines[-tail_lines:])
        raise PluginError(f"provider local: no VM {vm_id!r}; `iris cluster vm status` lists them")

    def close(self) -> None:
        """Thread mode: delete every slice (its workers cannot outlive this process). Process
        mode: the slices keep running for the next manager on this state_dir."""
        for slice_id in list(self._slices):
            self.delete_slice(slice_id)
        self._reap()
        if self._runtime is not None:
            self._runtime.close()

    # --- introspection (tests) ------------------------------------------------------------

    def workers(self, slice_id: str) -> list[InProcessWorker]:
        """The in-process workers of a thread-mode slice ([] in process mode)."""
        with self._lock:
            entry = self._slices.get(slice_id)
            return list(entry[1]) if entry else []

    def worker_pid(self, vm_id: str) -> int | None:
        """The pid of a process-mode VM's worker while it runs; None otherwise (and in thread mode)."""
        for record in self._read_records() if self._mode == "process" else []:
            for worker in record.workers:
                if worker.vm_id == vm_id and worker.running:
                    return worker.pid
        return None

    # --- process mode ---------------------------------------------------------------------

    def _record_path(self, slice_id: str) -> Path:
        return self._records_dir / f"{slice_id}.json"

    def _read_record(self, slice_id: str) -> SliceRecord | None:
        return self._load(self._record_path(slice_id)) if _valid_slice_id(slice_id) else None

    def _read_records(self) -> list[SliceRecord]:
        paths = sorted(self._records_dir.glob("*.json")) if self._records_dir.is_dir() else []
        return [record for record in map(self._load, paths) if record is not None]

    def _load(self, path: Path) -> SliceRecord | None:
        try:
            return _converter.structure(json.loads(path.read_text()), SliceRecord)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, cattrs.BaseValidationError) as exc:
            logger.warning("ignoring unreadable slice record %s: %s", path, exc)
            return None

    def _write_record(self, record: SliceRecord) -> None:
        path = self._record_path(record.slice_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_converter.unstructure(record), indent=1))
        os.replace(tmp, path)

    def _reap(self) -> None:
        """Collect the exit status of worker processes this manager started that have ended."""
        with self._lock:
            for pid, child in list(self._children.items()):
                if child.poll() is not None:
                    del self._children[pid]

    def _wait(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._reap()
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)

    def _create_process_slice(self, request: SliceRequest) -> SliceInfo:
        if not _valid_slice_id(request.slice_id):
            raise PluginError(f"local provider: slice id {request.slice_id!r} is invalid; it must be usable as a file name")
        with self._create_lock:
            record = self._read_record(request.slice_id)
            if record is not None and not any(w.running for w in record.workers):
                # Every worker is gone (a reboot, or all were killed): nothing to return; start afresh.
                self._delete_process_slice(request.slice_id)
            with self._lock:
                record = self._read_record(request.slice_id)
                if record is None:
                    self._get_runtime()  # an unknown runtime fails here, before any process starts
                    record = self._spawn_slice(request)
        workers = record.workers
        self._wait(lambda: all(w.ready or not w.running for w in workers), READY_TIMEOUT_SECONDS)
        return record.info()

    def _spawn_slice(self, request: SliceRequest) -> SliceRecord:
        """Start one worker process per VM, recording each in the slice's file as it starts."""
        record = SliceRecord(
            slice_id=request.slice_id,
            scale_group=request.scale_group,
            labels=self._labels(request),
            controller_address=self._context.controller_address,
        )
        try:
            for i in range(request.vm_count):
                worker = self._spawn_worker(self._launch(request, i))
                record = attrs.evolve(record, workers=(*record.workers, worker))
                self._write_record(record)
        except BaseException:
            for worker in record.workers:  # just started: nothing of theirs to stop gracefully
                _signal_group(worker, signal.SIGKILL)
                child = self._children.pop(worker.pid, None)
                if child is not None:
                    child.wait()
            self._record_path(request.slice_id).unlink(missing_ok=True)
            raise
        return record

    def _spawn_worker(self, launch: WorkerLaunch) -> WorkerProcess:
        launch.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ready_marker(launch.work_dir).unlink(missing_ok=True)
        with open(launch.work_dir / WORKER_LOG, "ab") as log:
            child = subprocess.Popen(
                launch.argv(), cwd=launch.work_dir, env=launch.env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._children[child.pid] = child
        return WorkerProcess(launch.worker_id, child.pid, pid_start_time(child.pid), str(launch.work_dir), dict(launch.attributes))

    def _delete_process_slice(self, slice_id: str) -> None:
        with self._lock:
            record = self._read_record(slice_id)
            if record is None:
                return
            if not record.deleting:
                record = attrs.evolve(record, deleting=True)
                self._write_record(record)
        workers = record.workers
        for worker in workers:
            _signal_group(worker, signal.SIGTERM)  # the worker kills its tasks, then exits
        if not self._wait(lambda: not any(w.running for w in workers), STOP_GRACE_SECONDS):
            logger.warning("slice %s: worker processes outlived SIGTERM by %gs; killing them", slice_id, STOP_GRACE_SECONDS)
            for worker in workers:
                _signal_group(worker, signal.SIGKILL)
            self._wait(lambda: not any(w.running for w in workers), STOP_GRACE_SECONDS)
        # A worker that was SIGKILLed (or killed by delete) left its tasks running: end them.
        runtime = self._get_runtime()
        for worker in workers:
            for handle in runtime.list_containers({LABEL_WORKER: worker.vm_id}):
                try:
                    if handle.status().running:
                        handle.kill(grace_seconds=ORPHAN_KILL_GRACE_SECONDS)
                    handle.remove()
                except Exception:
                    logger.exception("slice %s: failed to clean up container %s", slice_id, handle.container_id)
        with self._lock:
            self._record_path(slice_id).unlink(missing_ok=True)
