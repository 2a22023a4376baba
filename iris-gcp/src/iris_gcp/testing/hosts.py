"""Fake GCP machines that really boot: one container per host on a shared Docker engine.

A TPU VM or a GCE instance, as Iris meets it, is a Debian machine with bash, curl, a Docker
engine and sshd, that runs its ``startup-script`` metadata at boot (logged to its serial
console) and answers the metadata server. The machine image and the sshd setup are generic and
live in :mod:`iris.testing.container_hosts` (``host_image_tar``, ``host_image``,
``setup_sshd``, ``SshEndpoint``; still importable from here).

:class:`ContainerBooter` implements :class:`iris_gcp.testing.boot.Booter` with it. Each booted
host gets:

- its own loopback address ``127.0.0.N`` (from the pool the test passes, or the one its
  ``HostSpec.address`` asks for: an address another host holds is refused with
  :class:`~iris_gcp.testing.boot.AddressInUse`) and ``--network host``: what it serves, it
  binds to that address;
- the engine's socket at ``/var/run/docker.sock`` (the host's "local" engine is the shared test
  engine: containers the startup script starts run beside it, not inside it);
- a directory of this machine mounted at the same path, holding ``IRIS_ROOT`` (``iris/``) and
  ``IRIS_CONFIG_DIR`` (``etc/``), so bind mounts the startup script and the worker ask the engine
  for resolve to the same files;
- ``IRIS_METADATA_URL``: its own prefix on a :class:`~iris_gcp.testing.fake_metadata.FakeMetadataServer`;
- a directory all hosts share (:attr:`ContainerBooter.shared`, as ``IRIS_SHARED_DIRS``), for
  storage a real cluster shares through a bucket or filesystem (a ``file://`` bundle store);
- optionally an sshd on its address (a key generated for the test), for the SSH tunnel.

Its first process fetches ``startup-script`` from the metadata server and runs it with bash, as
GCE's guest agent does, logging to ``console.log`` (:meth:`ContainerBooter.console`), then stays
up. :meth:`ContainerBooter.halt` removes the host's container, every container it started
(labelled ``iris.instance=<name>`` by the startup script, ``iris.worker=<worker id>`` by the
worker's runtime, and anything else mounting the host's directory) and the directory.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs

from iris.plugin.worker_host import LABEL_WORKER
from iris.runtime.docker import TPU_ACCESS_ENV
from iris.testing.container_hosts import (  # moved there; kept importable from here
    DOCKER_CLIENT,
    HOST_INCLUDE,
    SSH_USER,
    SshEndpoint,
    host_image,
    host_image_key,
    host_image_tar,
    setup_sshd,
)

__all__ = [
    "DOCKER_CLIENT", "HOST_INCLUDE", "SSH_USER", "ContainerBooter", "SshEndpoint", "host_image", "host_image_key",
    "host_image_tar", "instance_name",
]  # fmt: skip
from iris.testing.docker_engine import DockerEngine
from iris_gcp import bootstrap
from iris_gcp.testing.boot import AddressPool, AddressUnavailable, HostSpec
from iris_gcp.testing.fake_metadata import FakeMetadataServer

LABEL_HOST = "iris.fake-host"  # the host's own container
LABEL_BOOTER = "iris.fake-booter"
LABEL_INSTANCE = bootstrap.LABEL_INSTANCE  # what the startup script starts

# The first process of every fake machine: sshd when asked, then the startup script from the
# metadata server (as google_metadata_script_runner runs it), logged to the console; then it
# stays up until the container is removed.
_INIT = r"""
exec >>"${IRIS_CONSOLE}" 2>&1
echo "fake-vm: booting ${IRIS_INSTANCE} at ${IRIS_ADDRESS}"
if [ -n "${IRIS_SSHD_CONFIG:-}" ]; then
  mkdir -p /run/sshd
  /usr/sbin/sshd -f "${IRIS_SSHD_CONFIG}" && echo "fake-vm: sshd started"
fi
script=/run/startup-script
for _ in $(seq 1 30); do
  curl -sf -H "Metadata-Flavor: Google" "${IRIS_METADATA_URL}/instance/attributes/startup-script" -o "${script}" && break
  sleep 1
done
if [ -s "${script}" ]; then
  echo "fake-vm: running startup-script"
  bash "${script}"
  echo "fake-vm: startup-script exited with status $?"
else
  echo "fake-vm: no startup-script in metadata"
fi
trap 'exit 0' TERM
sleep infinity &
wait
"""


def instance_name(host_id: str) -> str:
    """A GCE-style instance name for a host id (``node/w-0`` becomes ``node-w-0``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", host_id.lower()).strip("-")
    return name or "host"


def _worker_ids(host: HostSpec) -> list[str]:
    """The worker id a worker host runs (from its metadata), for finding its task containers."""
    raw = host.metadata.get(bootstrap.WORKER)
    if not raw:
        return []
    try:
        slice_id = json.loads(raw)["slice_id"]
        index = int(host.metadata.get(bootstrap.WORKER_INDEX) or 0)
    except (ValueError, KeyError, TypeError):
        return []
    return [bootstrap.worker_id(slice_id, index)]


@attrs.define
class _Host:
    spec: HostSpec
    name: str
    address: str
    directory: Path
    container: str
    ssh: SshEndpoint | None


class ContainerBooter:
    """Boots each host as a container of ``image`` (:func:`host_image`) on ``engine``.

    :param addresses: the loopback addresses hosts get, in order (e.g. ``127.0.0.11`` ...).
    :param root: where the hosts' directories are made (a fresh temporary directory if None;
        removed by :meth:`close` if the booter made it).
    :param ssh: whether a host runs sshd (all hosts, or a predicate on the :class:`HostSpec`).
    :param ssh_port: the port every host's sshd listens on (each on its own address); None: a
        free port per host. A fixed port and :meth:`ssh_user_key` let a cluster config name the
        tunnel's port and key before the machine exists, as a real VM's port 22 and key are known.
    :param zone, project: what the metadata server says about the hosts.
    :param container_env: environment the startup script gives the worker or controller container
        (``IRIS_CONTAINER_ENV``: e.g. ``STORAGE_EMULATOR_HOST`` of a fake GCS); no spaces.
        ``IRIS_DOCKER_TPU_ACCESS=none`` is added unless given: the fake hosts have no TPU chips,
        and the test engine can give a task container neither ``--privileged`` nor unlimited
        locked memory (what a TPU VM's containers get), so TPU tasks run as plain containers.
    :param trust_dir: this machine's CA certificates, mounted read-only as the host's own (the
        startup script hands them to the worker, which reaches the package index with them).
    """

    def __init__(
        self,
        engine: DockerEngine,
        image: str,
        *,
        metadata: FakeMetadataServer,
        addresses: Sequence[str],
        root: Path | None = None,
        ssh: bool | Callable[[HostSpec], bool] = False,
        ssh_port: int | None = None,
        zone: str = "us-central2-b",
        project: str = "iris-fake-project",
        trust_dir: str | None = "/etc/ssl/certs",
        container_env: Mapping[str, str] | None = None,
    ):
        self.engine = engine
        self.image = image
        self.metadata = metadata
        self.zone = zone
        self.project = project
        self.trust_dir = trust_dir if trust_dir and Path(trust_dir).is_dir() else None
        self._ssh = ssh
        self._ssh_port = ssh_port
        for key, value in (container_env or {}).items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or any(c.isspace() for c in value):
                raise ValueError(f"container_env {key}={value!r}: accepted: NAME=VALUE with a shell variable name and no whitespace")
        self.container_env = dict(container_env or {})
        self.container_env.setdefault(TPU_ACCESS_ENV, "none")
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="iris-fake-hosts-"))
        self.root.mkdir(parents=True, exist_ok=True)
        #: a directory every host sees at the same path (``IRIS_SHARED_DIRS``), standing in for
        #: storage the machines share: e.g. the controller's ``file://`` bundle store
        self.shared = self.root / "shared"
        self.shared.mkdir(exist_ok=True)
        self.id = uuid.uuid4().hex[:8]
        self._lock = threading.Lock()
        #: the loopback addresses hosts get (the "subnetwork"), with the static reservations
        self.pool = AddressPool(addresses, owner="ContainerBooter")
        self._hosts: dict[str, _Host] = {}
        self._consoles: dict[str, str] = {}  # the last console of halted hosts
        self._user_key: Path | None = None

    # --- the Booter protocol -----------------------------------------------------------------

    def boot(self, host: HostSpec) -> str:
        with self._lock:
            existing = self._hosts.get(host.host_id)
            if existing is not None:
                if host.address and host.address != existing.address:
                    raise AddressUnavailable(f"ContainerBooter: host {host.host_id} already runs on {existing.address}, not {host.address}")
                return existing.address
            address = self.pool.take(host.host_id, host.address)  # AddressInUse: another host holds it
            name = instance_name(host.host_id)
            if any(h.name == name for h in self._hosts.values()):
                name = f"{name}-{uuid.uuid4().hex[:4]}"
            directory = self.root / name
            try:
                record = self._start(host, name, address, directory)
            except BaseException:
                self.pool.give_back(host.host_id)
                self.metadata.remove(name)
                shutil.rmtree(directory, ignore_errors=True)
                raise
            self._hosts[host.host_id] = record
            return address

    def halt(self, host_id: str) -> None:
        with self._lock:
            record = self._hosts.pop(host_id, None)
        if record is None:
            return
        self._consoles[host_id] = self._read_console(record)
        self._remove_containers(record)
        self.metadata.remove(record.name)
        subprocess.run(["rm", "-rf", "--one-file-system", str(record.directory)], check=False)
        self.pool.give_back(host_id)  # a reserved address stays reserved

    def running(self, host_id: str) -> bool:
        with self._lock:
            record = self._hosts.get(host_id)
        if record is None:
            return False
        result = self.engine.docker("inspect", "-f", "{{.State.Running}}", record.container, check=False)
        return result.stdout.decode().strip() == "true"

    def close(self) -> None:
        with self._lock:
            host_ids = list(self._hosts)
        for host_id in host_ids:
            self.halt(host_id)
        # anything a host left behind that halting did not find (it is labelled with our id)
        self._remove(self._containers(f"label={LABEL_BOOTER}={self.id}"))
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.shared)], check=False)
        if self._own_root:
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=False)

    def reserve(self, address: str = "") -> str:
        """Reserve an address of the pool (a static internal address): no host gets it unless
        it asks for it (``HostSpec.address``), and it stays reserved when that host halts."""
        return self.pool.reserve(address)

    def release(self, address: str) -> None:
        self.pool.release(address)

    def reboot(self, host_id: str) -> None:
        """Power-cycle the host (as a GCE reset): what it started dies, its directory (its disk)
        stays, and it boots again, running its startup script again (the console continues)."""
        record = self._record(host_id)
        started = [c for c in self._started_by(record) if c != record.container]
        self.engine.docker("stop", "-t", "5", record.container, check=False, timeout=120)
        self._remove(started)
        result = self.engine.docker("start", record.container, check=False, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"rebooting {host_id}: docker start failed: {result.stderr.decode().strip()}")

    def set_metadata(self, host_id: str, metadata: Mapping[str, str]) -> None:
        """Serve the host's new metadata (the fake Compute's ``instances.setMetadata``): its
        startup script reads it at the next boot (a reset), as on GCE."""
        self.metadata.set_attributes(self._record(host_id).name, metadata)

    # --- what tests look at ------------------------------------------------------------------

    def address(self, host_id: str) -> str:
        return self._record(host_id).address

    def directory(self, host_id: str) -> Path:
        """The host's directory (``iris/`` is its ``IRIS_ROOT``, ``etc/`` its ``/etc/iris``)."""
        return self._record(host_id).directory

    def iris_root(self, host_id: str) -> Path:
        return self._record(host_id).directory / "iris"

    def instance(self, host_id: str) -> str:
        """The host's instance name (what the metadata server and the container labels say)."""
        return self._record(host_id).name

    def console(self, host_id: str) -> str:
        """What the host's boot and startup script wrote, like a serial console's output."""
        with self._lock:
            record = self._hosts.get(host_id)
        if record is None:
            return self._consoles.get(host_id, "")
        return self._read_console(record)

    def startup_state(self, host_id: str) -> str:
        """The state the startup script last reported (``pulling``, ``running``, ``failed: ...``)."""
        try:
            return (self.iris_root(host_id) / bootstrap.STATE_FILE).read_text().strip()
        except (OSError, KeyError):
            return ""

    def containers(self, host_id: str) -> list[str]:
        """Ids of every container the host started (not the host's own)."""
        record = self._record(host_id)
        return sorted(set(self._started_by(record)) - {record.container})

    def ssh(self, host_id: str) -> SshEndpoint:
        record = self._record(host_id)
        if record.ssh is None:
            raise KeyError(f"host {host_id} runs no sshd (ContainerBooter(ssh=...))")
        return record.ssh

    @property
    def ssh_port(self) -> int | None:
        """The port every host's sshd listens on (None: each host has its own; see :meth:`ssh`)."""
        return self._ssh_port

    def ssh_user_key(self) -> Path:
        """The private key every host's sshd accepts (for ``root``), made on first use."""
        from iris.testing.sshd import keygen

        with self._lock:
            if self._user_key is None:
                keys = self.root / "ssh-user"
                keys.mkdir(exist_ok=True)
                self._user_key = keygen(keys / "id_ed25519")
            return self._user_key

    def hosts(self) -> list[str]:
        with self._lock:
            return list(self._hosts)

    # --- internals ---------------------------------------------------------------------------

    def _record(self, host_id: str) -> _Host:
        with self._lock:
            record = self._hosts.get(host_id)
        if record is None:
            raise KeyError(f"no running host {host_id!r}")
        return record

    def _wants_ssh(self, host: HostSpec) -> bool:
        return bool(self._ssh(host)) if callable(self._ssh) else bool(self._ssh)

    def _start(self, host: HostSpec, name: str, address: str, directory: Path) -> _Host:
        (directory / "iris").mkdir(parents=True)
        (directory / "etc").mkdir()
        console = directory / "console.log"
        console.touch()
        self.metadata.add(
            name, host.metadata, ip=address, zone=self.zone, project=self.project, labels=host.labels
        )
        env = {
            "IRIS_METADATA_URL": self.metadata.url(name),
            "IRIS_ROOT": str(directory / "iris"),
            "IRIS_CONFIG_DIR": str(directory / "etc"),
            "IRIS_DOCKER_SOCKET": str(self.engine.socket_path),
            "IRIS_CONSOLE": str(console),
            "IRIS_INSTANCE": name,
            "IRIS_ADDRESS": address,
            "IRIS_SHARED_DIRS": str(self.shared),
        }
        if self.container_env:
            env["IRIS_CONTAINER_ENV"] = " ".join(f"{k}={v}" for k, v in self.container_env.items())
        ssh = None
        if self._wants_ssh(host):
            ssh = self._ssh_setup(directory, address)
            env["IRIS_SSHD_CONFIG"] = str(directory / "ssh" / "sshd_config")
        argv = [
            "run", "-d", "--name", f"iris-fake-host-{name}-{self.id}", "--network", "host",
            "--label", f"{LABEL_HOST}={name}", "--label", f"{LABEL_BOOTER}={self.id}",
            "-v", f"{self.engine.socket_path}:/var/run/docker.sock",
            "-v", f"{directory}:{directory}", "-v", f"{self.shared}:{self.shared}",
        ]  # fmt: skip
        if self.trust_dir:
            argv += ["-v", f"{self.trust_dir}:/etc/ssl/certs:ro"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        argv += [self.image, "bash", "-c", _INIT]
        result = self.engine.docker(*argv, check=False, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"booting {host.host_id}: docker run failed: {result.stderr.decode().strip()}")
        return _Host(host, name, address, directory, result.stdout.decode().strip(), ssh)

    def _ssh_setup(self, directory: Path, address: str) -> SshEndpoint:
        from iris.testing.sshd import keygen

        if self._user_key is None:  # under the booter's lock (boot): made here, as ssh_user_key() does
            keys = self.root / "ssh-user"
            keys.mkdir(exist_ok=True)
            self._user_key = keygen(keys / "id_ed25519")
        return setup_sshd(directory / "ssh", address, self._user_key, port=self._ssh_port)

    def _read_console(self, record: _Host) -> str:
        try:
            return (record.directory / "console.log").read_text(errors="replace")
        except OSError:
            return ""

    def _containers(self, *filters: str) -> list[str]:
        argv = ["ps", "-aq", "--no-trunc"]
        for f in filters:
            argv += ["--filter", f]
        return self.engine.docker(*argv, check=False).stdout.decode().split()

    def _started_by(self, record: _Host) -> list[str]:
        found = [record.container]
        found += self._containers(f"label={LABEL_INSTANCE}={record.name}")
        for worker in _worker_ids(record.spec):
            found += self._containers(f"label={LABEL_WORKER}={worker}")
        # and anything else that mounts the host's directory (what the host's processes started)
        prefix = str(record.directory) + "/"
        others = [c for c in self._containers() if c not in found]
        if others:
            inspect = self.engine.docker("inspect", *others, check=False).stdout.decode() or "[]"
            for container in json.loads(inspect):
                sources = [m.get("Source", "") + "/" for m in container.get("Mounts", [])]
                if any(s.startswith(prefix) for s in sources):
                    found.append(container["Id"])
        return list(dict.fromkeys(found))

    def _remove_containers(self, record: _Host) -> None:
        # the host first, so its startup script starts nothing more; then what it started
        self._remove([record.container])
        self._remove(self._started_by(record))

    def _remove(self, ids: list[str]) -> None:
        if ids:
            self.engine.docker("rm", "-f", "-v", *ids, check=False, timeout=120)
