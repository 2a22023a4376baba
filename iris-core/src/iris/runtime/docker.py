"""ContainerRuntime ``docker``: each attempt is a container of a Docker engine.

The engine is the one ``DOCKER_HOST`` names (the local socket by default), reached with the
``docker`` SDK, imported only when a runtime is built. A container:

- runs ``spec.argv`` (replacing the image's entrypoint) from the task image (``spec.image``,
  else the runtime's default image: ``IRIS_DOCKER_IMAGE``) under a tiny init (``--init``), so
  signals reach the task and a kill ends every process of the container;
- sees ``spec.cwd`` and every path in ``spec.writable_mounts`` read-write and every path in
  ``spec.mounts`` read-only, each at the same path as on this machine; runs as this process's
  uid and gid, so the files it writes belong to the worker;
- has exactly ``spec.env`` as its environment (the engine adds ``HOSTNAME``, and ``HOME`` when
  the spec has none, and the entrypoint shell exports ``PWD``; an image's own ``ENV`` lines are
  kept for variables the spec does not set);
- uses host networking: named ports (``IRIS_PORT_<NAME>``, allocated by the worker) work as for
  a process, and nothing is put on a bridge;
- is limited to the task's cpu (``NanoCpus``), memory (``Memory`` = ``MemorySwap``: no swap) and a
  number of processes that grows with its cpu (:func:`pids_limit`);
- gets the accelerator the task asked for: GPUs as a device request, a TPU VM's chips as Google
  documents for containers on TPU VMs (privileged, host network, unlimited locked memory;
  ``IRIS_DOCKER_TPU_ACCESS=none`` runs TPU tasks as plain containers instead, on a machine
  that has no TPU chips, such as the tests' fake TPU hosts);
- carries the labels ``iris.managed=true``, ``iris.container=<container id>``,
  ``iris.runtime-root=<the runtime's directory>`` and the spec's labels, so a restarted worker
  finds it with :meth:`DockerRuntime.list_containers`. A runtime lists only the containers of
  runtimes over its own directory, as the process runtime does: two clusters (or two workers
  with their own directories) sharing an engine never see each other's.

Logs: the container's entrypoint is ``/bin/sh -c 'exec "$@"'`` (so a task image needs
``/bin/sh``; a command that is not found exits 127 with the shell's message on stderr). The
engine keeps stdout and stderr apart, each frame of its log stream tagged with its stream; a
thread per running container follows that stream into ``<root>/containers/<id>/output.log``, a
record per line tagged with its stream (:mod:`iris.runtime.output_log`, which the process
runtime writes too); ``read_logs`` and ``log_size`` read that file. Lines keep their order within
each stream; between the streams, the engine's order (it copies the two pipes apart). A runtime
adopting a container resumes following where the records end (the engine's log is replayed and
the bytes of each stream already recorded are skipped).
The follower's end closes a pipe, which is the handle's ``exit_fd``, so the worker sees an ending
at once without polling the engine.

``remove`` deletes the container and its directory. The pure function :func:`create_kwargs`
builds what is sent to the engine; it is tested without one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import shutil
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from iris.errors import IrisError
from iris.plugin.protocols import ContainerSpec, ContainerStatus, TaskStartError
from iris.runtime.output_log import STDERR, STDOUT, LineWriter, OutputLog

logger = logging.getLogger(__name__)

LABEL_MANAGED = "iris.managed"
LABEL_CONTAINER = "iris.container"
LABEL_ROOT = "iris.runtime-root"
DEFAULT_IMAGE_ENV = "IRIS_DOCKER_IMAGE"
#: How TPU task containers reach the chips: ``privileged`` (the default: :data:`TPU_HOST_CONFIG`
#: and unlimited locked memory, as on a TPU VM) or ``none`` (a machine without TPU chips, e.g. the
#: tests' fake TPU hosts, whose engine can give neither: the task runs as a plain container).
TPU_ACCESS_ENV = "IRIS_DOCKER_TPU_ACCESS"
TPU_ACCESS = ("privileged", "none")
PIDS_PER_CPU = 1024
MIN_PIDS = 1024
STATUS_POLL_SECONDS = 0.5
FOLLOW_JOIN_SECONDS = 30.0
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The container's entrypoint: a shell, so a command that is not found says so (exit 127).
ENTRYPOINT = ["/bin/sh", "-c", 'exec "$@"', "iris-task"]
# The engine's multiplexed log stream: an 8-byte header (stream, 3 zero bytes, big-endian
# length) before each frame; stream 1 is stdout, 2 stderr.
_FRAME_STREAMS = {1: STDOUT, 2: STDERR}

#: What Google documents for a container that uses a TPU VM's chips: privileged (the chips are
#: /dev/accel* on v2-v4 and /dev/vfio/* on v5 and later), host networking (the chips of a
#: multi-host slice talk over the VM's network), unlimited locked memory.
TPU_HOST_CONFIG: dict[str, Any] = {"privileged": True, "network_mode": "host"}


class DockerRuntimeError(IrisError):
    """The engine cannot be reached or refused something that is not the task's fault."""


def container_name(container_id: str) -> str:
    """The engine's name for a container id (``[A-Za-z0-9][A-Za-z0-9_.-]*``)."""
    if _NAME_OK.match(container_id):
        return container_id
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", container_id).lstrip("_.-") or "c"
    import hashlib

    return f"{safe}-{hashlib.sha256(container_id.encode()).hexdigest()[:8]}"


def pids_limit(cpu: float) -> int:
    """Processes a container may run: ``PIDS_PER_CPU`` per requested cpu, at least ``MIN_PIDS``."""
    return max(MIN_PIDS, int(math.ceil(cpu)) * PIDS_PER_CPU)


def tpu_access_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """``IRIS_DOCKER_TPU_ACCESS`` (default ``privileged``). A bad value raises a
    DockerRuntimeError naming the variable, the value and what is accepted."""
    value = environ.get(TPU_ACCESS_ENV, "").strip() or "privileged"
    if value not in TPU_ACCESS:
        raise DockerRuntimeError(f"{TPU_ACCESS_ENV}={value!r}: accepted: {', '.join(TPU_ACCESS)}")
    return value


def create_kwargs(
    spec: ContainerSpec, *, image: str, uid: int, gid: int, host_cpus: int, tpu_access: str = "privileged"
) -> dict[str, Any]:
    """The keyword arguments of ``docker.APIClient.create_container`` for ``spec`` (with
    ``host_config`` as a plain dict of ``create_host_config`` arguments). ``tpu_access``: how a
    TPU task reaches the chips (:data:`TPU_ACCESS_ENV`).

    Raises TaskStartError for a spec no engine can run: an empty command, a bad variable name, an
    unknown accelerator kind."""
    argv = list(spec.argv)
    if not argv or not argv[0]:
        raise TaskStartError("cannot run an empty command", exit_code=127)
    for arg in argv:
        if "\0" in arg:
            raise TaskStartError(f"cannot run {argv[0]!r}: argument {arg!r} contains a NUL byte")
    for key, value in spec.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise TaskStartError(f"cannot run {argv[0]!r}: environment variable {key!r} is not valid")
    cwd = str(spec.cwd)
    binds: dict[str, dict[str, str]] = {cwd: {"bind": cwd, "mode": "rw"}}
    for path in spec.writable_mounts:
        path = str(path)
        binds[path] = {"bind": path, "mode": "rw"}
    for path in spec.mounts:
        path = str(path)
        if path not in binds:
            binds[path] = {"bind": path, "mode": "ro"}
    host: dict[str, Any] = {
        "binds": binds,
        "network_mode": "host",
        "init": True,
        "pids_limit": pids_limit(spec.cpu),
        "log_config": {"type": "json-file", "config": {}},
    }
    if spec.memory_bytes:
        host["mem_limit"] = int(spec.memory_bytes)
        host["memswap_limit"] = int(spec.memory_bytes)  # no swap: over the limit is an OOM kill
    if spec.cpu > 0:
        host["nano_cpus"] = int(min(spec.cpu, float(host_cpus)) * 1e9)
    kind = (spec.device_kind or "cpu").lower()
    if kind == "gpu":
        # all of them when the task asks for none in particular, as `docker run --gpus all`
        host["device_requests"] = [{"Driver": "", "Count": spec.device_count or -1, "Capabilities": [["gpu"]]}]
    elif kind == "tpu":
        if tpu_access == "privileged":
            host.update(TPU_HOST_CONFIG)
            host["ulimits"] = [{"Name": "memlock", "Soft": -1, "Hard": -1}]
    elif kind != "cpu":
        raise TaskStartError(f"device kind {spec.device_kind!r} is not supported by the docker runtime; accepted: cpu, gpu, tpu")
    labels = {**{str(k): str(v) for k, v in spec.labels.items()}, LABEL_MANAGED: "true", LABEL_CONTAINER: spec.container_id}
    return {
        "image": image,
        "entrypoint": ENTRYPOINT,
        "command": argv,
        "name": container_name(spec.container_id),
        "working_dir": cwd,
        "environment": {str(k): str(v) for k, v in spec.env.items()},
        "labels": labels,
        "user": f"{uid}:{gid}",
        "stdin_open": False,
        "tty": False,
        "detach": True,
        "host_config": host,
    }


# --- handles --------------------------------------------------------------------------------


class _Follower:
    """Follows one container's log stream into its files; ``done`` once the stream has ended
    with the container."""

    def __init__(self, handle: DockerHandle):
        self._handle = handle
        self.done = threading.Event()
        self._read_fd, self._write_fd = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"iris-docker-logs-{handle.container_id}", daemon=True)
        self._thread.start()

    @property
    def exit_fd(self) -> int:
        return self._read_fd

    def _run(self) -> None:
        try:
            while True:
                try:
                    self._handle._copy_logs(follow=True)
                except Exception as exc:  # the engine restarted, the connection broke, or it was removed
                    if not _not_found(exc) and not isinstance(exc, FileNotFoundError):
                        logger.warning("following the logs of %s failed: %s", self._handle.container_id, exc)
                        time.sleep(STATUS_POLL_SECONDS)
                try:
                    state = self._handle._inspect_state()
                except Exception as exc:
                    if _not_found(exc):
                        return
                    time.sleep(STATUS_POLL_SECONDS)
                    continue
                if not state.get("Running") and state.get("Status") not in ("created", "restarting"):
                    try:
                        self._handle._copy_logs(follow=False)  # whatever came after the stream ended
                    except Exception as exc:
                        if not _not_found(exc) and not isinstance(exc, FileNotFoundError):
                            logger.warning("reading the last logs of %s failed: %s", self._handle.container_id, exc)
                    return
        finally:
            self.done.set()
            os.close(self._write_fd)  # the read end becomes readable (EOF): the container ended

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def close(self) -> None:
        os.close(self._read_fd)


def _log_frames(api: Any, name: str, follow: bool) -> Iterator[tuple[str, bytes]]:
    """``(stream, bytes)`` of each frame of the container's log, from its start (following it
    while it runs with ``follow``). The SDK's ``logs`` drops which stream a frame is of, so
    this reads the engine's multiplexed stream itself (the request is the one ``logs`` sends)."""
    params = {"stdout": 1, "stderr": 1, "timestamps": 0, "follow": 1 if follow else 0, "tail": "all"}
    # no read timeout while following: a quiet task is not a broken connection
    response = api._get(api._url("/containers/{0}/logs", name), params=params, stream=True, timeout=None if follow else api.timeout)
    try:
        api._raise_for_status(response)
        raw = response.raw
        while True:
            header = raw.read(8)
            if len(header) < 8:
                return
            kind, length = struct.unpack(">BxxxL", header)
            data = raw.read(length) if length else b""
            if length and not data:
                return
            yield _FRAME_STREAMS.get(kind, STDOUT), data
    finally:
        response.close()


def _not_found(exc: BaseException) -> bool:
    return type(exc).__name__ == "NotFound"


class DockerHandle:
    def __init__(self, runtime: DockerRuntime, container_id: str, name: str, labels: Mapping[str, str], directory: Path):
        self._runtime = runtime
        self._container_id = container_id
        self._name = name
        self._labels = dict(labels)
        self._dir = directory
        self._log = OutputLog(directory / "output.log")
        self._write_lock = threading.Lock()
        self._follow_lock = threading.Lock()
        self._follower: _Follower | None = None
        self._final: ContainerStatus | None = None

    @property
    def container_id(self) -> str:
        return self._container_id

    @property
    def labels(self) -> Mapping[str, str]:
        return self._labels

    @property
    def name(self) -> str:
        return self._name

    @property
    def _api(self) -> Any:
        return self._runtime.api

    def _inspect_state(self) -> dict[str, Any]:
        return self._api.inspect_container(self._name)["State"]

    def _follow(self) -> None:
        with self._follow_lock:
            if self._follower is None:
                self._follower = _Follower(self)

    # --- logs ---------------------------------------------------------------------------

    def _copy_logs(self, follow: bool) -> None:
        """Append the engine's log of the container to our records, from where they end (the
        engine's log is replayed from its start and the bytes of each stream we have are skipped).

        One copier at a time per container, across handles and processes (a lock file): a
        second runtime adopting a container another still follows waits, then copies the rest."""
        with self._write_lock, open(self._dir / "copy.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._dir.joinpath("complete").exists():
                return
            writer = LineWriter(self._log, skip=self._log.captured())
            for stream, data in _log_frames(self._api, self._name, follow):
                writer.write(stream, data)
            if not follow:  # the container has ended: so have its streams
                writer.close((STDOUT, STDERR))
                self._dir.joinpath("complete").touch()

    def log_size(self) -> int:
        return self._log.size()

    def read_logs(self, offset: int, max_bytes: int) -> bytes:
        return self._log.read(offset, max_bytes)

    # --- status -------------------------------------------------------------------------

    def _status_from(self, state: Mapping[str, Any]) -> ContainerStatus:
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return ContainerStatus(running=True)
        code = int(state.get("ExitCode", -1))
        if state.get("OOMKilled"):
            return ContainerStatus(
                running=False, exit_code=code or 137, oom=True, error="out of memory: killed for exceeding its memory limit"
            )
        if state.get("Error"):
            return ContainerStatus(running=False, exit_code=code if code else -1, error=str(state["Error"]))
        return ContainerStatus(running=False, exit_code=code)

    def status(self) -> ContainerStatus:
        if self._final is not None:
            return self._final
        follower = self._follower
        if follower is not None and not follower.done.is_set():
            return ContainerStatus(running=True)  # the follower ends with the container
        try:
            state = self._inspect_state()
        except Exception as exc:
            if _not_found(exc):
                self._final = ContainerStatus(running=False, exit_code=-1, error="the container is gone from the engine")
                return self._final
            raise
        status = self._status_from(state)
        if status.running:
            self._follow()
            return status
        if follower is None:
            self._copy_logs(follow=False)  # ended before we followed it (adopted)
        self._final = status
        return status

    def wait(self, timeout: float | None = None) -> ContainerStatus:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if not status.running:
                return status
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return status
            follower = self._follower
            if follower is not None:
                follower.done.wait(STATUS_POLL_SECONDS if remaining is None else min(remaining, STATUS_POLL_SECONDS))
            else:
                time.sleep(min(0.05, remaining) if remaining is not None else 0.05)

    def exit_fd(self) -> int | None:
        """Readable once the container has ended and its log is complete."""
        if self._follower is None:
            return None
        return self._follower.exit_fd

    # --- ending ------------------------------------------------------------------------

    def kill(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM the container's processes (through its init), SIGKILL after the grace period."""
        try:
            self._api.stop(self._name, timeout=max(0, int(math.ceil(grace_seconds))))
        except Exception as exc:
            if _not_found(exc):
                return
            if "is not running" in str(exc):
                return
            raise
        self.wait(timeout=FOLLOW_JOIN_SECONDS)

    def remove(self) -> None:
        status = self.status()
        if status.running:
            raise RuntimeError(f"container {self.container_id} is still running; kill it first")
        try:
            self._api.remove_container(self._name, v=True, force=True)
        except Exception as exc:
            if not _not_found(exc):
                raise
        if self._follower is not None:
            self._follower.join(FOLLOW_JOIN_SECONDS)
            self._follower.close()
            self._follower = None
        shutil.rmtree(self._dir, ignore_errors=True)
        self._runtime._forget(self)


# --- the runtime ----------------------------------------------------------------------------


class DockerRuntime:
    """Runs attempts as containers of the engine at ``base_url`` (default: ``DOCKER_HOST`` or
    the local socket); see the module docstring."""

    def __init__(self, root_dir: Path, *, base_url: str | None = None, default_image: str | None = None):
        import docker

        self._root = Path(root_dir) / "containers"
        self._root.mkdir(parents=True, exist_ok=True)
        self._root_label = str(Path(root_dir).resolve())
        self._default_image = default_image if default_image is not None else os.environ.get(DEFAULT_IMAGE_ENV, "")
        self._tpu_access = tpu_access_from_env()
        url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            self.api = docker.APIClient(base_url=url, version="auto", timeout=120)
        except docker.errors.DockerException as exc:
            raise DockerRuntimeError(unreachable(url, exc)) from None
        self._docker = docker
        self._host_cpus: int | None = None
        self._images_seen: set[str] = set()
        self._lock = threading.Lock()
        # one handle (and one log follower) per container in this runtime; remove() drops it
        self._handles: dict[str, DockerHandle] = {}

    @property
    def default_image(self) -> str:
        return self._default_image

    def _cpus(self) -> int:
        if self._host_cpus is None:
            self._host_cpus = int(self.api.info().get("NCPU") or os.cpu_count() or 1)
        return self._host_cpus

    def _check_image(self, image: str) -> None:
        if image in self._images_seen:
            return
        try:
            self.api.inspect_image(image)
        except self._docker.errors.ImageNotFound:
            try:
                self.api.pull(image)  # a registry the engine can reach (a tag without one: Docker Hub)
            except Exception as exc:
                raise TaskStartError(
                    f"task image {image!r} is not on this machine's Docker engine and could not be pulled: "
                    f"{_short(exc)}; build it (iris build) or push it to a registry the workers can reach"
                ) from None
        self._images_seen.add(image)

    def start(self, spec: ContainerSpec) -> DockerHandle:
        image = spec.image or self._default_image
        if not image:
            raise TaskStartError(
                "no task image: give the job one (iris run --task-image, task_image=...) or set the cluster's "
                f"docker.image (the runtime's default, {DEFAULT_IMAGE_ENV})"
            )
        kwargs = create_kwargs(spec, image=image, uid=os.getuid(), gid=os.getgid(), host_cpus=self._cpus(), tpu_access=self._tpu_access)
        kwargs["labels"][LABEL_ROOT] = self._root_label
        self._check_image(image)
        directory = self._root / spec.container_id
        shutil.rmtree(directory, ignore_errors=True)  # left by an earlier attempt with this id
        directory.mkdir(parents=True)
        (directory / "meta.json").write_text(json.dumps({"container_id": spec.container_id, "labels": dict(spec.labels)}))
        name = kwargs["name"]
        self._remove_leftover(name)
        host_config = self.api.create_host_config(**kwargs.pop("host_config"))
        try:
            created = self.api.create_container(host_config=host_config, **kwargs)
        except self._docker.errors.APIError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            if exc.is_client_error():  # e.g. a memory limit below the engine's minimum
                raise TaskStartError(f"the Docker engine refused the task's container: {_short(exc)}") from None
            raise DockerRuntimeError(f"creating container {name}: {_short(exc)}") from exc
        handle = DockerHandle(self, spec.container_id, name, kwargs["labels"], directory)
        with self._lock:
            self._handles[spec.container_id] = handle
        try:
            self.api.start(created["Id"])
        except self._docker.errors.APIError as exc:
            message = _short(exc)
            try:
                self.api.remove_container(created["Id"], force=True)
            except Exception:
                pass
            shutil.rmtree(directory, ignore_errors=True)
            if "executable file not found" in message or "no such file or directory" in message:
                raise TaskStartError(f"cannot run {spec.argv[0]!r} in image {image!r}: {message}", exit_code=127) from None
            if "permission denied" in message:
                raise TaskStartError(f"cannot run {spec.argv[0]!r} in image {image!r}: {message}", exit_code=126) from None
            raise DockerRuntimeError(f"starting container {name}: {message}") from exc
        handle._follow()
        return handle

    def _remove_leftover(self, name: str) -> None:
        """An ended container with this name from an earlier process (same attempt id)."""
        try:
            self.api.remove_container(name, force=True)
        except self._docker.errors.NotFound:
            pass

    def list_containers(self, labels: Mapping[str, str]) -> list[DockerHandle]:
        labels = {**labels, LABEL_ROOT: self._root_label}
        filters = [f"{LABEL_MANAGED}=true", *(f"{k}={v}" for k, v in labels.items())]
        handles = []
        for info in self.api.containers(all=True, filters={"label": filters}):
            found = info.get("Labels") or {}
            if not all(found.get(k) == v for k, v in labels.items()):
                continue
            container_id = found.get(LABEL_CONTAINER) or info["Names"][0].lstrip("/")
            with self._lock:
                handle = self._handles.get(container_id)
                if handle is None:
                    directory = self._root / container_id
                    directory.mkdir(parents=True, exist_ok=True)
                    handle = self._handles[container_id] = DockerHandle(self, container_id, info["Names"][0].lstrip("/"), found, directory)
            if info.get("State") == "running":
                handle._follow()
            handles.append(handle)
        return handles

    def _forget(self, handle: DockerHandle) -> None:
        with self._lock:
            if self._handles.get(handle.container_id) is handle:
                del self._handles[handle.container_id]

    def close(self) -> None:
        try:
            self.api.close()
        except Exception:
            pass


def unreachable(url: str, exc: BaseException) -> str:
    """One line saying the engine at ``url`` cannot be reached, and the likely reason."""
    text = str(exc)
    for needle, reason in (
        ("No such file or directory", "no socket there"),
        ("Connection refused", "connection refused"),
        ("Permission denied", "permission denied"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            text = reason
            break
    return f"cannot reach the Docker engine at {url} ({text}); start dockerd or point DOCKER_HOST at a running engine"


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
