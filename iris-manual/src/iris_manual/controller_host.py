"""The ``manual`` provider's ControllerHost: the controller on a named host, started over SSH.

With ``controller.vm.enabled: true`` and ``provider.options.controller_host: [user@]address[:port]``
(or the seeds' ``controller_vm: {manual: {host: ..., port: ...}}``), ``iris cluster start`` places
the controller on that host as seed 002 does for a VM:

- the cluster config, adapted for running there (:func:`served_config`: it listens on the host's
  address, ``controller.vm.port``, HTTP on the next port; keeps its state in the host's
  directory; reaches the worker hosts with a copy of ``provider.ssh_key``), is written to
  ``config.yaml`` in the controller's directory on the host (``provider.options.controller_dir``,
  default ``~/.iris/manual/<label prefix>/controller-<cluster>``, mode 0700) and passed with
  ``--config``;
- with ``controller.vm.image`` set and a Docker engine the SSH user can use on the host, it runs as
  a container of that image (``iris build controller-image``, or the worker image: it is started
  with ``--entrypoint python3 -m iris.cluster.controller.main``), host networking, the config
  mounted read-only at ``/etc/iris/config.yaml``, the directory at the same path, running as the
  SSH user's uid; otherwise as a process of ``provider.options.python`` (which must import
  ``iris.cluster.controller.main`` and ``iris_manual``), its log ``controller.log`` in the directory.

The core then waits for its ``/health`` (through ``controller.tunnel``: ``ssh`` reaches it through
the controller host's own sshd). What runs is recorded on the host (``controller.json``), never
here: ``find`` reads it over SSH, so any machine with the config finds, restarts and stops it.
``restart`` stops and starts the same process or container (its state is kept); ``stop`` stops it
and removes its directory (state, config, key copy). The record holds the digest of the config
it was started from (:func:`iris.cluster.lifecycle.config_digest`): ``find`` (so ``run``,
``job``, ``status`` and ``stop``), ``start``, ``restart`` and ``stop`` with another config of the
same name refuse in one line (:class:`~iris.errors.OtherConfigError`) instead of using or
removing that cluster's controller. ``--force``: ``find(force=True)`` and ``stop(progress,
force=True)`` do not compare; ``restart(progress, config=C)`` stops what runs and starts it
again as ``start`` would with ``C`` (config.yaml and the key copies written again, the record's
digest ``C``'s, a container made again from ``C``'s image), keeping its ``state`` directory.
"""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import paramiko

from iris.errors import ConfigError, OtherConfigError, PluginError
from iris.plugin.protocols import ControllerPlacement
from iris_manual import ssh
from iris_manual.host_agent import PRELUDE
from iris_manual.vm_manager import Host, parse_host

STOP_GRACE = 20.0

# Runs on the controller host with its Python after the shared PRELUDE (host_agent). Actions on
# one directory DIR:
#   find DIR                -> the record (controller.json) with "alive", or {}
#   start DIR [GRACE]       -> stdin JSON: "files" {name: text} (written 0600), "record", and
#                              "argv" + "env" (a process) or "docker" (the `docker run -d` argv)
#                              + "image" + "docker_env"; starts it, writes controller.json
#   restart DIR GRACE       -> stop what runs (keeping the directory) and start it again
#   stop DIR GRACE          -> stop it, remove the container and the directory
_AGENT = PRELUDE + r'''
def alive(rec):
    if rec.get("container"):
        return docker("inspect", "-f", "{{.State.Running}}", rec["container"], env=rec.get("docker_env")).stdout.strip() == "true"
    return process_alive(rec)

def launch(d, rec):
    env = rec.get("docker_env")
    if rec.get("docker"):
        if docker("image", "inspect", rec["image"], env=env).returncode != 0:
            docker("pull", rec["image"], env=env, check=True)
        docker("rm", "-f", rec["name"], env=env)
        argv = list(rec["docker"][1:])
        argv[argv.index("run") + 1:argv.index("run") + 1] = ["--user", "%d:%d" % (os.getuid(), os.getgid())]
        rec["container"] = docker(*argv, env=env, check=True).stdout.strip()
    else:
        rec["pid"], rec["start_time"] = spawn(rec["argv"], d, "controller.log", rec["env"])
    write_json(os.path.join(d, "controller.json"), rec)

def halt(rec, grace):
    if rec.get("container"):
        docker("stop", "-t", str(max(1, int(grace))), rec["container"], env=rec.get("docker_env"))
    else:
        terminate(rec, grace)

def remove(rec):
    if rec.get("container"):
        docker("rm", "-f", rec["container"], env=rec.get("docker_env"))

action, d = sys.argv[1], os.path.expanduser(sys.argv[2])
rec = read_json(os.path.join(d, "controller.json"))
if action == "find":
    if rec:
        rec["alive"] = alive(rec)
    print(json.dumps(rec))
elif action == "start":
    spec = json.loads(sys.stdin.read())
    os.makedirs(os.path.join(d, "state"), mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    for name, text in spec["files"].items():
        path = os.path.join(d, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    try:
        os.unlink(os.path.join(d, "state", "controller.url"))
    except OSError:
        pass
    if rec:
        halt(rec, float(sys.argv[3]) if len(sys.argv) > 3 else 5.0)
        remove(rec)
    launch(d, spec["record"])
    print(json.dumps(read_json(os.path.join(d, "controller.json"))))
elif action == "restart":
    if not rec:
        sys.stderr.write("no controller recorded in %s\n" % d)
        sys.exit(4)
    halt(rec, float(sys.argv[3]))
    if rec.get("container"):
        if docker("start", rec["container"], env=rec.get("docker_env")).returncode != 0:
            remove(rec)
            launch(d, {k: v for k, v in rec.items() if k != "container"})
    else:
        launch(d, {k: v for k, v in rec.items() if k not in ("pid", "start_time")})
    print(json.dumps(read_json(os.path.join(d, "controller.json"))))
elif action == "stop":
    if rec:
        halt(rec, float(sys.argv[3]))
        remove(rec)
    existed = os.path.isdir(d)
    shutil.rmtree(d, ignore_errors=True)
    print(json.dumps({"existed": bool(rec) or existed}))
'''


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "iris"


def http_port_for(config: Any) -> int:
    """The controller's HTTP port on its host: ``controller.http_port`` if set, else the gRPC port + 1."""
    http = config.controller.http_port
    return http if http > 0 else config.controller.vm.port + 1


class ManualControllerHost:
    """The manual ControllerHost for one cluster config (``VmManagerPlugin.controller_host``)."""

    def __init__(self, config: Any):
        provider = config.provider
        options = dict(provider.options or {})
        self.config = config
        self.options = options
        entry = str(options.get("controller_host") or "")
        if not entry:
            raise ConfigError(
                "provider.options.controller_host: empty; controller.vm.enabled places the controller on a host of yours "
                "over SSH: name it as [user@]address[:port] (or set controller.vm.enabled: false to run it on this machine)"
            )
        try:
            self.host: Host = parse_host(entry, str(provider.ssh_user or getpass.getuser()))
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("provider.hosts", "provider.options.controller_host", 1)) from None
        self.bind = str(options.get("controller_listen") or self.host.address)
        self.key = str(Path(provider.ssh_key).expanduser()) if provider.ssh_key else None
        self.known_hosts = Path(str(options.get("ssh_known_hosts") or "~/.ssh/known_hosts")).expanduser()
        self.python = str(options.get("python") or "python3")
        self.directory = str(options.get("controller_dir") or f"~/.iris/manual/{_label(config.label_prefix)}/controller-{_label(config.name)}")
        env = options.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ConfigError(f"provider.options.env: {env!r} is not a mapping of variable names to strings")
        self.env = dict(env)
        self.port = config.controller.vm.port
        self.http_port = http_port_for(config)
        self._client: paramiko.SSHClient | None = None
        self._home = ""

    # --- SSH ----------------------------------------------------------------------------------

    def _ssh(self) -> paramiko.SSHClient:
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            if self._client is not None:
                self._client.close()
            self._client = ssh.connect(self.host.address, self.host.port, self.host.user, self.key, self.known_hosts)
        return self._client

    def _run(self, argv: list[str], *, stdin: bytes = b"", timeout: float = 120.0) -> tuple[int, str, str]:
        return ssh.run(self._ssh(), argv, self.host.where, stdin=stdin, timeout=timeout)

    def _agent(self, *args: str, stdin: bytes = b"", timeout: float = 300.0) -> dict[str, Any]:
        status, out, err = self._run([self.python, "-c", _AGENT, *args], stdin=stdin, timeout=timeout)
        if status != 0:
            last = (err.strip().splitlines() or ["(no output)"])[-1]
            if status == 127 or "not found" in last:
                raise PluginError(
                    f"{self.host.where}: {self.python} is not there ({last}); the controller host needs a Python 3 "
                    "(provider.options.python) for the provider's agent"
                )
            raise PluginError(f"{self.host.where}: the controller's {args[0]} failed ({status}): {last}")
        return json.loads(out or "{}")

    def _absolute_dir(self) -> str:
        if not self.directory.startswith("~"):
            return self.directory
        if not self._home:
            status, out, err = self._run(["sh", "-c", "echo $HOME"])
            if status != 0 or not out.strip():
                raise ssh.SshError(f"{self.host.where}: cannot find the home directory: {err.strip()}")
            self._home = out.strip()
        return self._home + self.directory[1:]

    # --- what runs ----------------------------------------------------------------------------

    def _placement(self, record: dict[str, Any]) -> ControllerPlacement:
        directory = self._absolute_dir()
        how = f"container {str(record['container'])[:12]}" if record.get("container") else f"pid {record.get('pid')}"
        logs = (
            f"ssh -p {self.host.port} {self.host.user}@{self.host.address} docker logs {record.get('name', 'iris-controller')}"
            if record.get("container")
            else f"ssh -p {self.host.port} {self.host.user}@{self.host.address} tail {directory}/controller.log"
        )
        return ControllerPlacement(
            url=f"http://{record['address']}:{record['port']}",
            http_url=f"http://{record['address']}:{record['http_port']}",
            where=f"host {self.host.where} ({how})",
            state="RUNNING" if record.get("alive", True) else "EXITED",
            logs_hint=f"the controller's log: {logs}",
        )

    def _check_same_config(self, record: dict[str, Any]) -> None:
        """Refuse a controller started on the host from another config with this name (its
        digest, :func:`iris.cluster.lifecycle.config_digest`, is in the record)."""
        from iris.cluster.lifecycle import config_digest, edited_config_hint

        theirs = str(record.get("config_digest") or "")
        ours = config_digest(self.config)
        if not theirs or theirs == ours:
            return
        raise OtherConfigError(
            f"name: {self.config.name!r}: the controller on {self.host.where} ({self._absolute_dir()}) runs another config "
            f"with this name (config digest {theirs[:12]}; see it with ssh -p {self.host.port} {self.host.user}@{self.host.address} "
            f"cat {self._absolute_dir()}/config.yaml), not this one (digest {ours[:12]}); give this config its own name, or stop "
            f"that cluster with its own config (iris cluster --config THAT.yaml stop) and start this one; {edited_config_hint()}"
        )  # fmt: skip

    def find(self, *, force: bool = False) -> ControllerPlacement | None:
        record = self._agent("find", self.directory)
        if not record or not record.get("alive"):
            return None
        if not force:
            self._check_same_config(record)  # run, job, status and stop go through here
        return self._placement(record)

    def _docker_usable(self) -> tuple[bool, str]:
        argv = ["env", *(f"{k}={v}" for k, v in self.env.items() if k.startswith("DOCKER_")), "docker", "version", "--format", "{{.Server.Version}}"]
        status, _, err = self._run(argv)
        return status == 0, (err.strip().splitlines() or ["(no output)"])[-1]

    def _python_runs_controller(self) -> tuple[bool, str]:
        status, _, err = self._run([self.python, "-c", "import iris.cluster.controller.main, iris_manual"])
        return status == 0, (err.strip().splitlines() or ["(no output)"])[-1]

    def how_to_run(self, progress: Callable[[str], None]) -> str:
        """``docker`` or ``process``: what the host can run the controller with, or a PluginError
        naming the host, what it lacks and both ways to give it."""
        image = self.config.controller.vm.image
        docker_error = "controller.vm.image is not set"
        if image:
            usable, docker_error = self._docker_usable()
            if usable:
                return "docker"
        runs, python_error = self._python_runs_controller()
        if runs:
            if image:
                progress(f"{self.host.where} cannot use Docker ({docker_error}); running the controller as a process of {self.python}")
            return "process"
        raise PluginError(
            f"{self.host.where}: cannot run the controller there: no usable Docker ({docker_error}) and {self.python} "
            f"lacks Iris ({python_error}); either install Docker on the host (usable by {self.host.user}) and set "
            f"controller.vm.image (iris build controller-image), or install iris-core and iris-manual for {self.python} "
            "(provider.options.python)"
        )

    def served_config(self, config: Any, directory: str) -> tuple[Any, dict[str, str]]:
        """The config as the controller runs it on the host, and the files written beside it."""
        files: dict[str, str] = {}
        provider = config.provider
        options = dict(provider.options)
        if provider.ssh_key:  # the controller reaches the worker hosts with the same key
            key = Path(provider.ssh_key).expanduser()
            try:
                files["ssh_key"] = key.read_text()
            except OSError as exc:
                raise ConfigError(f"provider.ssh_key: {provider.ssh_key!r} cannot be read ({exc.strerror})") from None
        known = self.known_hosts.read_text() if self.known_hosts.is_file() else ""
        files["known_hosts"] = known
        options["ssh_known_hosts"] = f"{directory}/known_hosts"
        provider = attrs.evolve(
            provider, options=options, ssh_key=f"{directory}/ssh_key" if provider.ssh_key else "",
            ssh_user=provider.ssh_user or self.host.user,
        )  # fmt: skip
        controller = attrs.evolve(
            config.controller, host=self.bind, port=self.port, http_port=self.http_port, state_dir=f"{directory}/state",
            vm=attrs.evolve(config.controller.vm, enabled=False),
        )  # fmt: skip
        return attrs.evolve(config, provider=provider, controller=controller), files

    def start(self, config: Any, progress: Callable[[str], None]) -> ControllerPlacement:
        record = self._agent("find", self.directory)
        if record:  # alive or not: its directory holds that config's state
            self._check_same_config(record)
        if record and record.get("alive"):
            return self._placement(record)
        return self._launch(config, progress)

    def _launch(self, config: Any, progress: Callable[[str], None]) -> ControllerPlacement:
        """Write ``config`` (as served there) and its files on the host, stop what the record
        says runs, and start the controller from ``config``; its ``state`` directory is kept."""
        import yaml

        from iris.cluster.lifecycle import config_digest
        from iris.config import config_to_dict

        directory = self._absolute_dir()
        how = self.how_to_run(progress)
        served, files = self.served_config(config, directory)
        files["config.yaml"] = yaml.safe_dump(config_to_dict(served), sort_keys=False)
        record = {"address": self.host.address if self.bind in ("0.0.0.0", "::") else self.bind, "port": self.port,
                  "http_port": self.http_port, "config_digest": config_digest(config)}  # fmt: skip
        serve = ["-m", "iris.cluster.controller.main", "serve"]
        if how == "docker":
            image = config.controller.vm.image
            name = f"iris-controller-{_label(config.label_prefix)}-{_label(config.name)}"
            mounts = ["-v", f"{directory}:{directory}", "-v", f"{directory}/config.yaml:/etc/iris/config.yaml:ro"]
            bundles = config.controller.bundle_prefix
            if bundles.startswith("file://") and not bundles[len("file://"):].startswith(directory):
                path = bundles[len("file://"):]
                mounts += ["-v", f"{path}:{path}"]  # the controller writes the bundles workers read
            env = [arg for k, v in {**self.env, "HOME": directory}.items() if not k.startswith("DOCKER_") for arg in ("-e", f"{k}={v}")]
            record.update(
                name=name, image=image, docker_env={k: v for k, v in self.env.items() if k.startswith("DOCKER_")},
                docker=["docker", "run", "-d", "--name", name, "--network", "host",
                        "--label", f"{config.label_prefix}.controller={config.name}", *mounts, *env,
                        "--entrypoint", "python3", image, *serve, "--config", "/etc/iris/config.yaml"],
            )  # fmt: skip
            progress(f"starting the controller on {self.host.where} as a container of {image}")
        else:
            record.update(argv=[self.python, *serve, "--config", f"{directory}/config.yaml"], env=self.env)
            progress(f"starting the controller on {self.host.where} as a process of {self.python}")
        spec = {"files": files, "record": record}
        # what runs (a dead controller's record, or the one restart --force replaces) stops as a restart stops it
        placed = self._agent("start", self.directory, str(STOP_GRACE), stdin=json.dumps(spec).encode(), timeout=900 + STOP_GRACE)
        return self._placement(placed)

    def restart(self, progress: Callable[[str], None], *, config: Any = None) -> ControllerPlacement:
        """Stop and start the controller, keeping its state. With ``config`` (``restart
        --force``): start it from ``config``, whatever config it was started from
        (:meth:`_launch`), which the record holds from then on."""
        record = self._agent("find", self.directory)
        if not record:
            raise PluginError(
                f"cannot restart the controller: none is recorded on {self.host.where} in {self.directory}; "
                "start it with iris cluster --config C start"
            )
        if config is not None:
            progress(f"restarting the controller on {self.host.where} with this config (its state is kept)")
            return self._launch(config, progress)
        self._check_same_config(record)
        progress(f"restarting the controller on {self.host.where} (its state is kept)")
        return self._placement(self._agent("restart", self.directory, str(STOP_GRACE)))

    def stop(self, progress: Callable[[str], None], *, force: bool = False) -> bool:
        record = self._agent("find", self.directory)
        if record:
            if not force:
                self._check_same_config(record)
            progress(f"stopping the controller on {self.host.where} and removing {self.directory}")
        return bool(self._agent("stop", self.directory, str(STOP_GRACE), timeout=STOP_GRACE + 120).get("existed"))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
