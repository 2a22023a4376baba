"""VmManager ``manual``: slices of hosts you already have, bootstrapped over SSH.

The config lists the hosts (``provider.hosts``: ``[user@]address[:port]``); each host is one VM,
and a slice of N VMs takes N hosts no slice of this cluster holds. Creating a slice starts an
Iris worker on each of its hosts over SSH, as a process in its own session
(``python -m iris.cluster.worker.main``, the interpreter from ``provider.options.python``), then
waits until every one runs (its ready marker). Deleting stops them (SIGTERM: a worker kills its
tasks; SIGKILL after a grace period, then what a killed worker left is removed) and removes what
was started.

Nothing is kept on this side: each VM's record (``vm.json``: slice, labels, the worker's pid and
start time) lives on its host under ``provider.options.remote_dir`` (default
``~/.iris/manual/<label prefix>/{host}``; ``{host}`` becomes the host's address and port, so hosts
sharing a home directory keep apart), and ``list_slices`` reads them from every host. So a
restarted controller, or ``iris cluster stop`` from another process, finds and adopts or deletes
every slice, and none leaks. A host that cannot be reached or authenticated is reported with the
host, the user and the SSH error; one that stops answering while its workers run (a machine that
died) keeps the records this manager last read from it, so its slices are reported FAILED naming
the host rather than vanishing, and deleting them forgets them. :meth:`ManualVmManager.check`
(called by ``iris cluster start``) reaches every host before a controller starts.

Provider settings: ``hosts``, ``ssh_user`` (default: your user), ``ssh_key`` (default: the SSH
agent and ``~/.ssh`` keys); ``options``: ``python`` (default ``python3``: must import
``iris.cluster.worker.main``, i.e. have ``iris-core`` and ``iris-local`` installed),
``remote_dir``, ``ssh_known_hosts`` (default ``~/.ssh/known_hosts``), ``env`` (variables for the
worker processes on top of the SSH session's: proxies, certificate bundles, caches),
``ready_timeout`` (seconds, default 60), ``stop_grace`` (seconds, default 20), ``install``
(``true`` or a directory of wheels: a host whose Python lacks Iris gets it in a virtualenv,
:mod:`iris_manual.install`).
"""

from __future__ import annotations

import getpass
import json
import logging
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import paramiko

from iris.errors import ConfigError, PluginError
from iris.plugin.protocols import QuotaExceeded, SliceInfo, SliceRequest, SliceState, VmInfo
from iris.plugin.records import ProviderContext
from iris.plugin.worker_host import WorkerLaunch, ready_marker
from iris_manual import ssh
from iris_manual.host_agent import PRELUDE

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2

# Runs on a host with the host's Python after the shared PRELUDE (host_agent): the manager's
# hands there. A worker runs as a process of its own (record: "pid", "start_time") or as a
# container from the worker image (record: "container", the id; the host's `docker` CLI,
# environment from the SSH session plus the spec's "env"). Actions:
#   list ROOT MARKER              -> JSON list of records, each with "alive" and "ready"
#   start ROOT VM_ID              -> start the worker (stdin JSON: record, env, and "argv" for a
#                                    process or "docker" (the `docker run -d` argv) + "image"),
#                                    write vm.json, print it
#   stop ROOT VM_ID GRACE [CLEANUP_ARGV_JSON] -> stop the worker, clean up, remove its directory
_AGENT = PRELUDE + r'''
def running_containers(recs):
    ids = [r["container"] for r in recs if r.get("container")]
    if not ids:
        return set()
    done = docker("inspect", "-f", "{{.Id}} {{.State.Running}}", *ids, env=recs[0].get("docker_env"))
    return {line.split()[0] for line in done.stdout.splitlines() if line.endswith(" true")}

def alive(rec, running=None):
    if rec.get("container"):
        return rec["container"] in (running_containers([rec]) if running is None else running)
    return process_alive(rec)

def ready(vm_dir, rec, marker):
    seen = read_json(os.path.join(vm_dir, marker))
    if rec.get("container"):  # its pid is the container's; the marker was removed before it started
        return seen.get("worker_id") == rec.get("vm_id")
    return seen.get("pid") == rec.get("pid")

action, root = sys.argv[1], os.path.expanduser(sys.argv[2])
if action == "list":
    recs = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            rec = read_json(os.path.join(root, name, "vm.json"))
            if rec:
                recs.append((os.path.join(root, name), rec))
    running = running_containers([r for _, r in recs])
    for vm_dir, rec in recs:
        rec["alive"] = alive(rec, running)
        rec["ready"] = rec["alive"] and ready(vm_dir, rec, sys.argv[3])
    print(json.dumps([r for _, r in recs]))
elif action == "start":
    vm_dir = os.path.join(root, sys.argv[3])
    spec = json.loads(sys.stdin.read())
    os.makedirs(vm_dir, mode=0o700, exist_ok=True)
    if "docker" in spec:
        env = spec["env"]
        if docker("image", "inspect", spec["image"], env=env).returncode != 0:
            docker("pull", spec["image"], env=env, check=True)
        docker("rm", "-f", "iris-worker-" + sys.argv[3], env=env)  # what a failed earlier start left
        for name in os.listdir(vm_dir):
            if name.startswith("ready"):
                os.unlink(os.path.join(vm_dir, name))
        started = docker(*spec["docker"][1:], env=env, check=True)
        rec = dict(spec["record"], container=started.stdout.strip(), docker_env=spec.get("docker_env", {}))
    else:
        pid, started_at = spawn(spec["argv"], vm_dir, "worker.log", spec["env"])
        rec = dict(spec["record"], pid=pid, start_time=started_at)
    write_json(os.path.join(vm_dir, "vm.json"), rec)
    print(json.dumps(rec))
elif action == "stop":
    vm_dir, grace = os.path.join(root, sys.argv[3]), float(sys.argv[4])
    rec = read_json(os.path.join(vm_dir, "vm.json"))
    killed = False
    cleanup = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
    if rec.get("container"):
        env = rec.get("docker_env")
        if alive(rec):  # SIGTERM: the worker kills its tasks, then exits; SIGKILL after the grace
            docker("stop", "-t", str(max(1, int(grace))), rec["container"], env=env)
            code = docker("inspect", "-f", "{{.State.ExitCode}}", rec["container"], env=env).stdout.strip()
            killed = code == "137"
        if cleanup and os.path.isdir(vm_dir):  # what a killed worker left running (its task containers)
            docker(*cleanup[1:], env=env)
        docker("rm", "-f", rec["container"], env=env)
    else:
        killed = terminate(rec, grace)  # the worker kills its tasks, then exits
        if cleanup and os.path.isdir(vm_dir):  # what a killed worker left running
            subprocess.run(cleanup, cwd=vm_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(vm_dir, ignore_errors=True)
    print(json.dumps({"killed": killed}))
'''


@attrs.frozen
class Host:
    address: str
    port: int = 22
    user: str = ""

    @property
    def where(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


def parse_host(entry: str, default_user: str) -> Host:
    """``[user@]address[:port]`` (``[v6]:port`` for IPv6)."""
    text = entry.strip()
    user, _, rest = text.rpartition("@")
    address, port = rest, 22
    if rest.startswith("["):
        address, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = _port(entry, tail[1:])
    elif rest.count(":") == 1:
        address, port_text = rest.split(":")
        port = _port(entry, port_text)
    if not address:
        raise ConfigError(f"provider.hosts: {entry!r} names no host; use [user@]address[:port]")
    return Host(address=address, port=port, user=user or default_user)


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"provider.hosts: {entry!r} has port {text!r}; use [user@]address[:port] with a port 1-65535")
    return int(text)


class ManualVmManager:
    def __init__(self, context: ProviderContext):
        self._context = context
        section = dict(context.options or {})
        options = dict(section.get("options") or {})
        user = str(section.get("ssh_user") or getpass.getuser())
        hosts = section.get("hosts") or []
        if not hosts:
            raise ConfigError("provider.hosts: the manual provider needs at least one host ([user@]address[:port])")
        self._hosts = [parse_host(str(h), user) for h in hosts]
        if len({(h.address, h.port) for h in self._hosts}) != len(self._hosts):
            raise ConfigError(f"provider.hosts: {hosts!r} lists a host twice")
        self._key = str(Path(str(section["ssh_key"])).expanduser()) if section.get("ssh_key") else None
        self._known_hosts = Path(str(options.get("ssh_known_hosts") or "~/.ssh/known_hosts")).expanduser()
        self._python = str(options.get("python") or "python3")
        install = options.get("install", False)
        if not isinstance(install, (bool, str)):
            raise ConfigError(f"provider.options.install: {install!r}; accepted: true, false, or a directory of Iris wheels")
        self._install: bool | str = install
        self._worker_python: dict[Host, str] = {}  # hosts whose worker runs from the virtualenv install made
        # one directory per host, even where hosts share a home directory (NFS)
        self._remote_dir = str(options.get("remote_dir") or f"~/.iris/manual/{context.label_prefix}/{{host}}")
        self._ready_timeout = float(options.get("ready_timeout", 60.0))
        self._stop_grace = float(options.get("stop_grace", 20.0))
        self._runtime = str(section.get("runtime") or options.get("runtime") or "process")
        self._task_python = str(section.get("task_python") or "")
        self._env_dir = section.get("env_dir") or None
        env = options.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ConfigError(f"provider.options.env: {env!r} is not a mapping of variable names to strings")
        self._env = dict(env)
        self._worker_image = str(options.get("worker_image") or "")
        mounts = options.get("worker_mounts") or []
        if not isinstance(mounts, list) or not all(isinstance(m, str) and m.startswith("/") for m in mounts):
            raise ConfigError(f"provider.options.worker_mounts: {mounts!r} is not a list of absolute paths")
        self._worker_mounts = list(mounts)
        docker_host = self._env.get("DOCKER_HOST", "")
        default_socket = docker_host[len("unix://"):] if docker_host.startswith("unix://") else "/var/run/docker.sock"
        self._docker_socket = str(options.get("docker_socket") or default_socket)
        self._task_image = str(section.get("docker_image") or "")
        self._clients: dict[Host, paramiko.SSHClient] = {}
        self._homes: dict[Host, str] = {}
        self._seen: dict[Host, list[dict[str, Any]]] = {}  # each host's records when it last answered
        self._lock = threading.Lock()  # guards _clients/_homes/_seen
        self._create_lock = threading.Lock()  # one create at a time: hosts are picked from a listing
        self._pool = ThreadPoolExecutor(max_workers=min(16, len(self._hosts)), thread_name_prefix="iris-manual")

    # --- SSH ------------------------------------------------------------------------------

    def _client(self, host: Host) -> paramiko.SSHClient:
        with self._lock:
            client = self._clients.get(host)
            transport = client.get_transport() if client is not None else None
            if transport is not None and transport.is_active():
                return client  # type: ignore[return-value]
            if client is not None:
                client.close()
            client = ssh.connect(host.address, host.port, host.user, self._key, self._known_hosts)
            self._clients[host] = client
            return client

    def _agent(self, host: Host, *args: str, stdin: bytes = b"", timeout: float = 120.0) -> str:
        """Run the agent script on ``host`` and return its stdout; SshError if it fails."""
        argv = [self._python, "-c", _AGENT, *args]
        status, out, err = ssh.run(self._client(host), argv, host.where, stdin=stdin, timeout=timeout)
        if status != 0:
            last = (err.strip().splitlines() or ["(no output)"])[-1]
            raise ssh.SshError(f"{host.where}: {self._python} failed ({status}): {last}")
        return out

    def _docker_env(self) -> dict[str, str]:
        """What the host's ``docker`` CLI needs from ``provider.options.env`` (kept in the VM's
        record, so it holds no credential)."""
        return {k: v for k, v in self._env.items() if k.startswith("DOCKER_")}

    def _check_worker_runs(self, host: Host) -> None:
        if self._worker_image:  # the worker runs from its image: the host needs Docker (and Python for the agent)
            argv = ["env", *(f"{k}={v}" for k, v in self._docker_env().items()), "docker", "version", "--format", "{{.Server.Version}}"]
            status, _, err = ssh.run(self._client(host), argv, host.where)
            if status != 0:
                last = (err.strip().splitlines() or ["(no output)"])[-1]
                raise PluginError(
                    f"{host.where}: Docker is not usable there ({last}); provider.options.worker_image "
                    f"({self._worker_image}) runs each worker as a container: install Docker on the host and let "
                    f"{host.user} use it (the docker group), or leave worker_image out to run workers as processes"
                )
            return
        argv = [self._python, "-c", "import iris.cluster.worker.main, iris_local"]
        status, _, err = ssh.run(self._client(host), argv, host.where)
        if status != 0 and self._install:  # Python without Iris: install it into a virtualenv there
            from iris_manual import install

            wheels = install.wheels(self._install, self._context.state_dir / "manual-wheels")
            python = install.install(self._client(host), host.where, python=self._python, root=self._root(host), wheel_files=wheels, env=self._env)
            status, _, err = ssh.run(self._client(host), [python, *argv[1:]], host.where)
            if status == 0:
                with self._lock:
                    self._worker_python[host] = python
                return
        if status != 0:
            last = (err.strip().splitlines() or ["(no output)"])[-1]
            # the other way: the worker image, if the host has (or gets) Docker
            docker = ["env", *(f"{k}={v}" for k, v in self._docker_env().items()), "docker", "version", "--format", "{{.Server.Version}}"]
            has_docker = ssh.run(self._client(host), docker, host.where)[0] == 0
            raise PluginError(
                f"{host.where}: {self._python} cannot run an Iris worker ({last}); either install iris-core and iris-local "
                "there (pip install iris-core iris-local; or point provider.options.python at an interpreter that has "
                "them, or set provider.options.install: true), or run workers as containers: "
                f"{'the host has Docker' if has_docker else 'install Docker there'}, then set provider.options.worker_image "
                "(iris build worker-image)"
            )

    def _home(self, host: Host) -> str:
        with self._lock:
            if host in self._homes:
                return self._homes[host]
        status, out, err = ssh.run(self._client(host), ["sh", "-c", "echo $HOME"], host.where)
        if status != 0 or not out.strip():
            raise ssh.SshError(f"{host.where}: cannot find the home directory: {err.strip()}")
        with self._lock:
            self._homes[host] = out.strip()
        return out.strip()

    def _root(self, host: Host) -> str:
        root = self._remote_dir.replace("{host}", f"{host.address}-{host.port}")
        return self._home(host) + root[1:] if root.startswith("~") else root

    # --- records --------------------------------------------------------------------------

    def _read_hosts(self) -> tuple[list[dict[str, Any]], list[Host], list[ssh.SshError]]:
        """Every VM record on the hosts that answer (read in parallel), those hosts, and the
        errors of those that do not. A host that does not answer but answered this manager
        before keeps its last records, marked neither alive nor ready and ``unreachable`` with
        the error: its slices are reported FAILED, not forgotten (a machine that died)."""

        def read(host: Host) -> list[dict[str, Any]] | ssh.SshError:
            try:
                records = json.loads(self._agent(host, "list", self._root(host), ready_marker(".").name))
            except ssh.SshError as exc:
                return exc
            for record in records:
                record["host"] = attrs.asdict(host)
            with self._lock:
                self._seen[host] = [dict(r) for r in records]
            return records

        results = list(self._pool.map(read, self._hosts))
        errors = [r for r in results if isinstance(r, ssh.SshError)]
        answered = [h for h, r in zip(self._hosts, results) if not isinstance(r, ssh.SshError)]
        records = [record for r in results if not isinstance(r, ssh.SshError) for record in r]
        with self._lock:
            for host, result in zip(self._hosts, results):
                if isinstance(result, ssh.SshError):
                    records += [dict(r, alive=False, ready=False, unreachable=str(result)) for r in self._seen.get(host, [])]
        return records, answered, errors

    def _records(self, strict: bool = True) -> list[dict[str, Any]]:
        """Every VM record on every host. An unreachable host raises SshError; with
        ``strict=False`` it is logged and left out (a host that is down runs nothing of ours),
        unless no host answers: then the problem is most likely on this side (the key, the
        network) and the first host's error is raised."""
        records, answered, errors = self._read_hosts()
        if errors and (strict or not answered):
            raise errors[0]
        for error in errors:
            logger.warning("manual provider: leaving out a host that does not answer: %s", error)
        return records

    def _slice_info(self, slice_id: str, records: list[dict[str, Any]]) -> SliceInfo:
        vms = []
        for r in sorted(records, key=lambda r: r["index"]):
            state = SliceState.READY if r["ready"] else SliceState.BOOTING if r["alive"] else SliceState.FAILED
            vms.append(VmInfo(vm_id=r["vm_id"], address=r["host"]["address"], state=state, attributes=r.get("attributes", {})))
        first = records[0]
        complete = len(records) == first.get("count", len(records))
        unreachable = [r["unreachable"] for r in records if r.get("unreachable")]
        if unreachable:
            state, error = SliceState.FAILED, f"a host of the slice does not answer: {unreachable[0]}"
        elif any(vm.state is SliceState.FAILED for vm in vms) or not complete:
            state, error = SliceState.FAILED, "a worker of the slice is not running (see its worker.log on the host)"
        elif all(vm.state is SliceState.READY for vm in vms):
            state, error = SliceState.READY, ""
        else:
            state, error = SliceState.BOOTING, ""
        return SliceInfo(slice_id=slice_id, scale_group=first["scale_group"], state=state, labels=first["labels"], vms=tuple(vms), error=error)

    def _by_slice(self, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        slices: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            slices.setdefault(record["slice_id"], []).append(record)
        return slices

    # --- the VmManager protocol -----------------------------------------------------------

    def create_slice(self, request: SliceRequest) -> SliceInfo:
        with self._create_lock:
            records, answered, errors = self._read_hosts()
            if not answered:
                raise errors[0]
            slices = self._by_slice(records)
            if request.slice_id not in slices:
                self._start_slice(request, slices, answered, errors)
        deadline = time.monotonic() + self._ready_timeout
        while True:
            info = self.describe_slice(request.slice_id)
            if info is None or info.state is not SliceState.BOOTING or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        if info is None:
            raise PluginError(f"manual provider: slice {request.slice_id} vanished while it started")
        return info

    def _start_slice(
        self, request: SliceRequest, slices: dict[str, list[dict[str, Any]]], answered: list[Host], errors: list[ssh.SshError]
    ) -> None:
        held = {(r["host"]["address"], r["host"]["port"]) for records in slices.values() for r in records}
        free = [h for h in answered if (h.address, h.port) not in held]
        if len(free) < request.vm_count:
            down = f"; {len(errors)} do not answer ({errors[0]})" if errors else ""
            raise QuotaExceeded(
                f"manual provider: slice {request.slice_id} needs {request.vm_count} host(s); {len(free)} of "
                f"{len(self._hosts)} are free ({', '.join(h.address for h in free) or 'none'}){down}"
            )
        chosen = free[: request.vm_count]
        for host in chosen:
            self._check_worker_runs(host)
        labels = {f"{self._context.label_prefix}.slice": request.slice_id, **request.labels}
        started: list[tuple[Host, str]] = []
        try:
            for index, host in enumerate(chosen):
                vm_id = f"{request.slice_id}-{index}"
                root = self._root(host)
                attributes = {
                    "slice": request.slice_id, "scale-group": request.scale_group, "vm-index": str(index),
                    "hostname": host.address, **request.attributes,
                }  # fmt: skip
                launch = WorkerLaunch(
                    worker_id=vm_id, controller_address=self._context.controller_address,
                    work_dir=f"{root}/{vm_id}", slice_id=request.slice_id, cpu=request.cpu,
                    memory_bytes=request.memory_bytes, attributes=attributes, runtime=self._runtime, python=self._worker_python.get(host, self._python),
                    task_python=self._task_python, env_dir=self._env_dir, task_image=self._task_image,
                    token=self._context.worker_token(vm_id) if self._context.worker_token else "",
                )  # fmt: skip
                record = {
                    "slice_id": request.slice_id, "scale_group": request.scale_group, "labels": labels, "vm_id": vm_id,
                    "index": index, "count": request.vm_count, "attributes": attributes,
                }  # fmt: skip
                # the worker's credential travels in its environment, over the SSH channel's stdin:
                # never on a command line (visible to every user of the host)
                env = {**self._env, **launch.env({})}
                if self._worker_image:
                    # the container takes these from the `docker` command's environment: values stay off its command line
                    passed = sorted(k for k in env if not k.startswith("DOCKER_"))
                    docker_args = dict(socket=self._docker_socket, pass_env=passed, read_only=self._worker_mounts)
                    record["cleanup"] = launch.docker_argv(self._worker_image, detach=False, extra_args=["--cleanup"], **docker_args)
                    spec = {
                        "docker": launch.docker_argv(self._worker_image, **docker_args), "image": self._worker_image,
                        "record": record, "env": env, "docker_env": self._docker_env(),
                    }  # fmt: skip
                else:
                    record["cleanup"] = [*launch.argv(), "--cleanup"]
                    spec = {"argv": launch.argv(), "record": record, "env": env}
                self._agent(host, "start", root, vm_id, stdin=json.dumps(spec).encode(), timeout=600)
                started.append((host, vm_id))
                logger.info("manual provider: started worker %s on %s", vm_id, host.where)
        except BaseException:
            for host, vm_id in started:  # a slice is whole or not at all
                try:
                    self._stop_vm(host, vm_id, grace=1.0)
                except Exception:
                    logger.exception("manual provider: could not stop %s on %s", vm_id, host.where)
            raise

    def list_slices(self, labels: Mapping[str, str]) -> list[SliceInfo]:
        infos = [self._slice_info(sid, records) for sid, records in self._by_slice(self._records(strict=False)).items()]
        return [info for info in infos if all(info.labels.get(k) == v for k, v in labels.items())]

    def describe_slice(self, slice_id: str) -> SliceInfo | None:
        records = self._by_slice(self._records(strict=False)).get(slice_id)
        return self._slice_info(slice_id, records) if records else None

    def delete_slice(self, slice_id: str) -> None:
        records = self._by_slice(self._records(strict=False)).get(slice_id, [])
        futures = [
            (r, self._pool.submit(self._stop_vm, Host(**r["host"]), r["vm_id"], self._stop_grace, r.get("cleanup")))
            for r in records
        ]
        for record, future in futures:
            try:
                future.result()
            except ssh.SshError as exc:
                if not record.get("unreachable"):
                    raise
                # a dead host: nothing of the slice runs there any more; if it comes back with its
                # record, the slice is listed (FAILED) again and deleted then
                host = Host(**record["host"])
                logger.warning("manual provider: forgetting worker %s on %s, which does not answer: %s", record["vm_id"], host.where, exc)
                with self._lock:
                    self._seen[host] = [r for r in self._seen.get(host, []) if r["vm_id"] != record["vm_id"]]

    def _stop_vm(self, host: Host, vm_id: str, grace: float, cleanup: list[str] | None = None) -> None:
        args = ["stop", self._root(host), vm_id, str(grace)]
        if cleanup:
            args.append(json.dumps(cleanup))
        self._agent(host, *args, timeout=grace + 120)

    def check(self, progress: Callable[[str], None]) -> None:
        """Before ``iris cluster start``: reach every host and run the agent there. If no host
        answers, the first one's error is raised (the key or the network is most likely wrong);
        a host that does not answer is reported in one line naming it, and left out."""
        _, answered, errors = self._read_hosts()
        if not answered:
            more = f" (and {len(errors) - 1} other host(s) do not answer)" if len(errors) > 1 else ""
            raise ssh.SshError(f"{errors[0]}{more}")
        for error in errors:
            progress(f"warning: leaving out a host that does not answer: {error}")

    def vm_logs(self, vm_id: str, tail_lines: int = 100) -> str:
        """The last ``tail_lines`` lines of the VM's worker log, read from its host."""
        for record in self._records():
            if record["vm_id"] == vm_id:
                host = Host(**record["host"])
                if record.get("container"):
                    env = [f"{k}={v}" for k, v in (record.get("docker_env") or {}).items()]
                    logs = shlex.join(["env", *env, "docker", "logs", "--tail", str(tail_lines), record["container"]])
                    # `docker logs` replays the container's stderr (the worker's log) on its own stderr
                    status, out, err = ssh.run(self._client(host), ["sh", "-c", f"{logs} 2>&1"], host.where)
                    if status != 0:
                        raise ssh.SshError(f"{host.where}: cannot read the logs of worker container {record['container'][:12]}: {out.strip()}")
                    return out
                log = f"{self._root(host)}/{vm_id}/worker.log"
                status, out, err = ssh.run(self._client(host), ["tail", "-n", str(tail_lines), log], host.where)
                if status != 0:
                    raise ssh.SshError(f"{host.where}: cannot read {log}: {err.strip()}")
                return out
        raise PluginError(f"manual provider: no VM {vm_id!r} on any host; `iris cluster vm status` lists them")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
