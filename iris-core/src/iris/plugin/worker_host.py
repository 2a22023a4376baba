"""Starting workers from a provider: the one public way, for every VmManager.

A provider describes each worker it wants with a :class:`WorkerLaunch` and either runs it as a
process (``launch.argv()`` and ``launch.env()``: locally with ``subprocess``, over SSH with
``launch.command()``, or in a VM's startup script) or, on this machine, inside the current
process (``launch.start_in_process(...)``). A worker process writes a ready marker into its work
directory once it runs; :func:`is_ready` and :func:`wait_ready` read it. Every container a worker
starts carries the label ``LABEL_WORKER=<worker id>``, so whoever deletes a machine can find and
kill what a dead worker left running::

    launch = WorkerLaunch(worker_id="s1-0", controller_address=url, work_dir=Path("/var/iris/w"),
                          slice_id="s1", cpu=8, attributes={"zone": "us-a"})
    subprocess.Popen(launch.argv(), env=launch.env(), start_new_session=True)
    wait_ready(launch.work_dir, timeout=30)

Nothing here imports the worker itself: a host that can run workers in-process hands providers
that ability as ``ProviderContext.start_worker``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs

from iris.auth import TOKEN_ENV, WORKER_TOKEN_ENV

__all__ = [
    "LABEL_WORKER",
    "InProcessWorker",
    "WorkerLaunch",
    "is_ready",
    "machine_cpus",
    "machine_memory_bytes",
    "ready_marker",
    "wait_ready",
    "write_ready",
]

#: The label on every container a worker starts; its value is the worker id.
LABEL_WORKER = "iris.worker"
# The worker attribute saying how its runtime holds a task to its memory limit (the runtime's
# optional ``memory_enforcement``: cgroup-v1, cgroup-v2, sampled, ...).
ATTRIBUTE_MEMORY_LIMITS = "memory-limits"
#: The module a worker process runs: ``python -m iris.cluster.worker.main ...``.
WORKER_MODULE = "iris.cluster.worker.main"
_READY_FILE = "worker.ready"


def machine_cpus() -> int:
    """CPUs this process may use: a worker's default capacity."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_memory_bytes() -> int:
    """This machine's physical memory: a worker's default capacity."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# --- readiness ------------------------------------------------------------------------------


def ready_marker(work_dir: Path | str) -> Path:
    """The file a worker process writes (JSON ``{"pid", "worker_id"}``) once it runs, and
    removes when it stops. A provider that checks it remotely (over SSH) reads this path."""
    return Path(work_dir) / _READY_FILE


def write_ready(work_dir: Path | str, worker_id: str, pid: int | None = None) -> None:
    """Write the ready marker atomically (the worker process does this; providers only read it)."""
    path = ready_marker(work_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid() if pid is None else pid, "worker_id": worker_id}))
    os.replace(tmp, path)


def is_ready(work_dir: Path | str, pid: int | None = None) -> bool:
    """True if the worker of ``work_dir`` has written its ready marker (by process ``pid``, if
    given, so a marker left by an earlier process does not count)."""
    try:
        marker = json.loads(ready_marker(work_dir).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and (pid is None or marker.get("pid") == pid)


def wait_ready(work_dir: Path | str, timeout: float, pid: int | None = None, poll_seconds: float = 0.02) -> bool:
    """Wait up to ``timeout`` seconds for :func:`is_ready`; return whether it became ready."""
    deadline = time.monotonic() + timeout
    while not is_ready(work_dir, pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_seconds)
    return True


# --- launching ------------------------------------------------------------------------------


class InProcessWorker(Protocol):
    """A worker running inside this process, as :data:`StartInProcess` returns."""

    @property
    def worker_id(self) -> str: ...

    def stop(self, kill_attempts: bool = True) -> None:
        """Stop talking to the controller; with ``kill_attempts``, kill what it runs."""


#: ``start(launch, runtime=..., bundle_store_for=...) -> InProcessWorker``: runs a worker inside
#: this process (threads) over an already built ContainerRuntime; ``bundle_store_for(url_prefix)``
#: returns the BundleStore for a prefix. The host hands it to providers as
#: ``ProviderContext.start_worker`` (the seams never import the worker itself).
StartInProcess = Callable[..., InProcessWorker]


def _float_arg(value: float) -> str:
    return repr(float(value))


@attrs.frozen
class WorkerLaunch:
    """One worker to start.

    :ivar worker_id: unique in the cluster; no ``/``.
    :ivar controller_address: the controller URL as reachable from the worker's machine.
    :ivar work_dir: the worker's directory on its machine (attempts, bundle cache, ready marker).
    :ivar slice_id: the slice the worker belongs to.
    :ivar cpu: capacity advertised to the scheduler; 0 means the machine's CPUs.
    :ivar memory_bytes: capacity; 0 means the machine's memory.
    :ivar attributes: what constraints match against (zone, device, ...).
    :ivar runtime: the ContainerRuntime plugin name the worker runs tasks with.
    :ivar runtime_root: the runtime's files; default ``work_dir/runtime``. Workers sharing it
        (and the provider) see each other's containers, told apart by ``LABEL_WORKER``.
    :ivar wait_seconds: how long one reconcile call may wait for news (long-poll).
    :ivar python: the interpreter that runs the worker process (not the tasks').
    :ivar task_python: the interpreter task environments are built from (empty: the worker's
        ``$IRIS_TASK_PYTHON``, else ``/usr/bin/python3``, else ``python3`` on PATH outside Iris's
        own virtualenv). Container runtimes need the same interpreter at the same path in the image.
    :ivar env_dir: where task environments are cached (None: the worker's ``$IRIS_ENV_DIR``,
        else ``work_dir/envs``); workers of one machine may share it.
    :ivar task_image: the image of tasks whose job names none (runtimes that run images: the
        cluster's ``docker.image``).
    :ivar token: the worker's credential, bound to ``worker_id`` (``ProviderContext.worker_token``
        mints it; empty when the controller runs without auth). It reaches a worker process in
        its environment (``IRIS_WORKER_TOKEN``, see :meth:`env`), never on its command line.
    """

    worker_id: str
    controller_address: str
    work_dir: Path = attrs.field(converter=Path)
    slice_id: str = ""
    cpu: float = 0.0
    memory_bytes: int = 0
    attributes: Mapping[str, str] = attrs.field(factory=dict)
    runtime: str = "process"
    runtime_root: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    wait_seconds: float = 2.0
    python: str = sys.executable
    task_image: str = ""
    task_python: str = ""
    env_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    token: str = attrs.field(default="", repr=False)

    @property
    def capacity(self) -> tuple[float, int]:
        """(cpu, memory bytes) the worker advertises, the machine's where not given."""
        return (self.cpu or float(machine_cpus()), self.memory_bytes or machine_memory_bytes())

    def argv(self) -> list[str]:
        """The command that runs this worker as a process until SIGTERM (which kills its tasks)."""
        argv = [
            self.python, "-m", WORKER_MODULE,
            "--controller", self.controller_address,
            "--worker-id", self.worker_id,
            "--slice-id", self.slice_id,
            "--work-dir", str(self.work_dir),
            "--attributes", json.dumps(dict(self.attributes), sort_keys=True),
            "--runtime", self.runtime,
            "--wait-seconds", _float_arg(self.wait_seconds),
        ]  # fmt: skip
        if self.cpu:
            argv += ["--cpu", _float_arg(self.cpu)]
        if self.memory_bytes:
            argv += ["--memory-bytes", str(int(self.memory_bytes))]
        if self.runtime_root is not None:
            argv += ["--runtime-root", str(self.runtime_root)]
        if self.task_image:
            argv += ["--task-image", self.task_image]
        if self.task_python:
            argv += ["--task-python", self.task_python]
        if self.env_dir is not None:
            argv += ["--env-dir", str(self.env_dir)]
        return argv

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for the worker process: ``base`` (default: this process's) with
        unbuffered output, so its log is complete when it dies, and the worker's credential.
        Whatever token ``base`` holds for someone else (``IRIS_TOKEN``) is left out."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in (TOKEN_ENV, WORKER_TOKEN_ENV)}
        env["PYTHONUNBUFFERED"] = "1"
        if self.token:
            env[WORKER_TOKEN_ENV] = self.token
        return env

    def docker_argv(
        self,
        image: str,
        *,
        docker: str = "docker",
        socket: str = "/var/run/docker.sock",
        env: Mapping[str, str] | None = None,
        read_only: Sequence[str] = (),
        pass_env: Sequence[str] = (),
        detach: bool = True,
        extra_args: Sequence[str] = (),
    ) -> list[str]:
        """``docker run`` of this worker from a worker image (``iris build worker-image``), as on
        a VM: host networking, the engine's ``socket`` mounted at ``/var/run/docker.sock`` (the
        worker's docker runtime starts task containers beside it) and the work directory at the
        same path (task containers mount paths inside it, and task environments are built there);
        ``env`` and the ``read_only`` paths (at the same path) are what the worker needs from the
        machine (e.g. its CA certificates, ``SSL_CERT_FILE``, for uv to reach the package index).
        SIGTERM (``docker stop``) stops it.

        ``pass_env`` names variables the container takes from the ``docker`` command's own
        environment (``-e NAME``: the value stays off the command line, e.g. the worker's
        credential). ``detach=False`` runs it in the foreground and removes it afterwards (``--rm``,
        no name: for one-off commands such as ``--cleanup``, given in ``extra_args``)."""
        work_dir = str(self.work_dir)
        extra: list[str] = []
        for key, value in (env or {}).items():
            extra += ["-e", f"{key}={value}"]
        for key in pass_env:
            extra += ["-e", key]
        for path in read_only:
            extra += ["-v", f"{path}:{path}:ro"]
        how = ["-d", "--name", f"iris-worker-{self.worker_id}"] if detach else ["--rm"]
        return [
            docker, "run", *how, "--network", "host",
            "--label", f"{LABEL_WORKER}={self.worker_id}",
            "-v", f"{socket}:/var/run/docker.sock", "-v", f"{work_dir}:{work_dir}", *extra,
            image, *self.argv()[3:], *extra_args,  # the image's entrypoint is `python3 -m iris.cluster.worker.main`
        ]  # fmt: skip

    def command(self) -> str:
        """:meth:`argv` as one shell command line, for an SSH session or a startup script (with
        the credential as an environment assignment: keep the line out of shared logs)."""
        token = f"{WORKER_TOKEN_ENV}={shlex.quote(self.token)} " if self.token else ""
        return f"PYTHONUNBUFFERED=1 {token}" + shlex.join(self.argv())
