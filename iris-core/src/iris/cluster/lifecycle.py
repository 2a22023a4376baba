"""Long-lived clusters for ``iris cluster start|stop|restart|status``.

``start`` runs the controller as a background process (``python -m iris.cluster.controller.main
serve``) that outlives the command, with its state, log, pid and URL in the state directory.
``stop`` stops it and then deletes every slice the provider reports under this cluster's label,
whether or not the controller's state still knows about them. ``status`` compares the two.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from iris.auth import OWNER_TOKEN_FILE, read_token_file, write_private
from iris.cluster.scale_groups import scale_group_zones
from iris.cluster.worker.worker import start_in_process
from iris.config import ClusterConfig, config_to_dict
from iris.errors import IrisError
from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry, get_registry
from iris.job.types import JobState
from iris.procfs import pid_alive

logger = logging.getLogger(__name__)


def state_dir_for(config: ClusterConfig) -> Path:
    return Path(config.controller.state_dir or Path.home() / ".iris" / config.name).expanduser()


def cluster_labels(config: ClusterConfig) -> dict[str, str]:
    return {f"{config.label_prefix}.cluster": config.name}


@attrs.frozen
class ControllerProcessInfo:
    pid: int
    url: str
    state_dir: Path
    http_url: str = ""  # the dashboard and /health ("" = the controller serves no HTTP)

    @property
    def token(self) -> str:
        """The admin token the controller wrote for the user who started it ('' if none: auth
        is off, or this user cannot read it)."""
        return read_token_file(self.state_dir / OWNER_TOKEN_FILE)


def _identity(config_dict: dict) -> dict:
    """What makes two configs the same cluster: everything but where its state and port went."""
    controller = {k: v for k, v in config_dict.get("controller", {}).items() if k not in ("port", "http_port", "state_dir")}
    return {**config_dict, "controller": controller}


def running_controller(config: ClusterConfig) -> ControllerProcessInfo | None:
    """The controller process started for this config, if it is alive.

    Raises IrisError if the controller running in this config's state directory was started
    from a different config (two configs with the same ``name``): it is not this cluster, and
    nothing should run on it or stop it by accident."""
    import yaml

    state_dir = state_dir_for(config)
    try:
        pid = int((state_dir / "controller.pid").read_text())
        url = (state_dir / "controller.url").read_text().strip()
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        started_from = yaml.safe_load((state_dir / "cluster.yaml").read_text())
    except (OSError, yaml.YAMLError):
        started_from = None
    if isinstance(started_from, dict) and _identity(started_from) != _identity(config_to_dict(config)):
        raise IrisError(
            f"the controller running in {state_dir} (pid {pid}, {url}) belongs to another config named "
            f"{config.name!r} (its config: {state_dir / 'cluster.yaml'}); give this config its own name: "
            "(or stop that cluster with its own config)"
        )
    return ControllerProcessInfo(pid, url, state_dir, _http_url(state_dir))


def _http_url(state_dir: Path) -> str:
    try:
        return (state_dir / "controller.http_url").read_text().strip()
    except OSError:
        return ""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_cluster(config: ClusterConfig, *, fresh: bool = False, timeout: float = 60.0) -> ControllerProcessInfo:
    """Start the controller process for ``config`` (if not already running) and wait for its URL."""
    import yaml

    existing = running_controller(config)
    if existing is not None:
        return existing
    open_vm_manager(config).close()  # an unknown or unusable provider fails here, before any process starts
    state_dir = state_dir_for(config)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    port_file = state_dir / "controller.port"
    port = config.controller.port
    if port == 0:  # keep one port across restarts: workers reconnect to the address they know
        port = int(port_file.read_text()) if port_file.exists() else _free_port(config.controller.host)
    port_file.write_text(str(port))
    http_port_file = state_dir / "controller.http_port"
    http_port = config.controller.http_port
    if http_port == 0:  # the dashboard keeps its address across restarts too
        http_port = int(http_port_file.read_text()) if http_port_file.exists() else _free_port(config.controller.host)
    if http_port > 0:
        http_port_file.write_text(str(http_port))
    config = attrs.evolve(
        config, controller=attrs.evolve(config.controller, port=port, http_port=http_port, state_dir=str(state_dir))
    )
    config_path = state_dir / "cluster.yaml"
    write_private(config_path, yaml.safe_dump(config_to_dict(config), sort_keys=False))  # may hold auth.tokens
    url_file = state_dir / "controller.url"
    url_file.unlink(missing_ok=True)
    (state_dir / "controller.http_url").unlink(missing_ok=True)
    log = os.fdopen(os.open(state_dir / "controller.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    os.chmod(state_dir / "controller.log", 0o600)
    command = [sys.executable, "-m", "iris.cluster.controller.main", "serve", "--config", str(config_path)]
    if fresh:
        command.append("--fresh")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    (state_dir / "controller.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if url_file.exists():
            return ControllerProcessInfo(proc.pid, url_file.read_text().strip(), state_dir, _http_url(state_dir))
        if proc.poll() is not None:
            tail = (state_dir / "controller.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise IrisError(f"the controller exited with code {proc.returncode} while starting: {' | '.join(tail)}")
        time.sleep(0.05)
    proc.terminate()
    raise IrisError(f"the controller did not start within {timeout:.0f}s; see {state_dir / 'controller.log'}")


def stop_controller(config: ClusterConfig, timeout: float = 30.0) -> bool:
    """SIGTERM the controller process (its slices keep running); True if one was running."""
    info = running_controller(config)
    if info is None:
        return False
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
    return True


def served(config: ClusterConfig) -> ClusterConfig:
    """The config as a long-lived controller runs it: with the local provider, each worker is a
    process of its own unless ``worker_mode`` says otherwise, so workers and their tasks outlive a
    restart of the controller (in-process workers are for ``iris run --provider local``)."""
    if config.provider.type == "local" and "worker_mode" not in config.provider.options:
        provider = attrs.evolve(config.provider, options={**config.provider.options, "worker_mode": "process"})
        config = attrs.evolve(config, provider=provider)
    return config


def open_vm_manager(config: ClusterConfig, registry: PluginRegistry | None = None, address: str = "") -> Any:
    """The provider's VmManager for this long-lived cluster's config, as its controller builds it."""
    config = served(config)
    registry = registry or get_registry()
    provider = registry.vm_manager(config.provider.type)
    options = {
        "runtime": config.worker.runtime or provider.default_runtime,
        "docker_image": config.docker.image,
        "scale_group_zones": scale_group_zones(config),
        **attrs.asdict(config.provider),
    }
    context = ProviderContext(
        controller_address=address,
        state_dir=state_dir_for(config),
        label_prefix=config.label_prefix,
        options=options,
        registry=registry,
        start_worker=start_in_process,
    )
    return provider.factory(context)


STOPPED_REASON = "killed: the cluster was stopped (iris cluster stop)"


def kill_unfinished_jobs(url: str, reason: str = STOPPED_REASON, token: str | None = None) -> list[str]:
    """Kill every job that has not ended (with its children), recording ``reason``: stopping a
    cluster ends its work on the record, so the next start shows it KILLED and does not re-run
    it. Returns the ids of the jobs killed."""
    from iris.client import IrisClient
    from iris.client.client import Job

    killed = []
    with IrisClient.remote(url, token=token) as client:
        unfinished = client.list_jobs(states=[JobState.PENDING, JobState.RUNNING])
        ids = {j.job_id for j in unfinished}
        for status in unfinished:
            if status.parent_job_id in ids:
                continue  # killed with its parent
            Job(client, status.job_id).kill(reason=reason)
            killed.append(status.job_id)
    return killed


def stop_cluster(config: ClusterConfig) -> tuple[bool, list[str]]:
    """Kill the jobs still running (recording why), stop the controller, then delete every
    slice labelled with this cluster. Returns (whether a controller was running, the slice ids
    deleted)."""
    info = running_controller(config)
    if info is not None:
        try:
            kill_unfinished_jobs(info.url, token=info.token or None)
        except IrisError as exc:  # an unresponsive controller: stop it anyway
            logger.warning("could not kill the unfinished jobs before stopping: %s", exc)
    was_running = stop_controller(config)
    manager = open_vm_manager(config)
    deleted = []
    try:
        for info in manager.list_slices(cluster_labels(config)):
            manager.delete_slice(info.slice_id)
            deleted.append(info.slice_id)
    finally:
        manager.close()
    for name in ("controller.pid", "controller.url", "controller.http_url"):
        (state_dir_for(config) / name).unlink(missing_ok=True)
    return was_running, deleted


@contextmanager
def reach_controller(config: ClusterConfig, url: str) -> Iterator[str]:
    """A URL for the controller at ``url`` that works from this machine: ``url`` itself, or a
    local end of the tunnel the config names (``controller.tunnel``, else the provider's default),
    open until the block ends. A tunnel that cannot open raises a PluginError naming why."""
    registry = get_registry()
    name = config.controller.tunnel or registry.vm_manager(config.provider.type).default_tunnel
    if name == "direct":
        yield url
        return
    tunnel = registry.tunnel(name).factory(attrs.asdict(config.provider))
    with tunnel.connect(url) as local:
        yield local
