"""Long-lived clusters for ``iris cluster start|stop|restart|status``.

``start`` runs the controller as a background process (``python -m iris.cluster.controller.main
serve``) that outlives the command, with its state, log, pid and URL in the state directory.
When the config says ``controller.vm.enabled`` and the provider offers a ``controller_host``
(``VmManagerPlugin.controller_host``), the controller is placed on the provider's machine
instead: ``start`` asks the host to create it and waits for its health check through the
config's tunnel; it is found again through the provider (by label), never through local files,
and reached through the tunnel (:func:`connect_controller`). ``--local`` (``make_local_config``)
turns ``controller.vm.enabled`` off, so it always means a process here.
``stop`` stops it and then deletes every slice the provider reports under this cluster's label,
whether or not the controller's state still knows about them, then lets the controller host
release what it kept for the slices' sake (its optional ``release(progress)``: e.g. the
controller VM's reserved address). ``status`` compares the two.

Two configs with one ``name`` never share a controller: each records the config its controller
was started from (here ``<state dir>/cluster.yaml``; a placed controller's host records
:func:`config_digest`), and every command with another config refuses
(:class:`~iris.errors.OtherConfigError`). A user who edited their own config applies the edit
with ``restart --force`` (the controller restarts with the given config, which becomes the
recorded one) or stops the cluster with ``stop --force``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
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

from iris.auth import OWNER_TOKEN_FILE, find_token, read_token_file, write_private
from iris.cluster.scale_groups import scale_group_zones
from iris.cluster.worker.worker import start_in_process
from iris.config import ClusterConfig, auth_enabled, config_to_dict, local_state_dir
from iris.errors import IrisError, OtherConfigError, PluginError
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
    #: placed on a provider's machine (pid is 0): reach it with :func:`connect_controller`
    remote: bool = False
    where: str = ""  # the machine, in words ("" = a process on this machine)
    tunnel_host: str = ""  # the address a tunnel connects to ("" = the host of url)

    @property
    def token(self) -> str:
        """The admin token the controller wrote for the user who started it ('' if none: auth
        is off, or this user cannot read it)."""
        return read_token_file(self.state_dir / OWNER_TOKEN_FILE)


def _identity(config_dict: dict) -> dict:
    """What makes two configs the same cluster: everything but where its state and port went."""
    controller = {k: v for k, v in config_dict.get("controller", {}).items() if k not in ("port", "http_port", "state_dir")}
    return {**config_dict, "controller": controller}


def config_digest(config: ClusterConfig) -> str:
    """The sha256 of what makes a config this cluster (:func:`_identity`: all of it but where
    the controller's state and ports are on this machine), without the admin token entry
    :func:`_owner_token` adds for the user who starts a placed controller (so the user's file,
    with or without it, has one digest). Providers that place the controller on a machine record
    it there and refuse a config whose digest differs (another config with this ``name``)."""
    data = _identity(config_to_dict(config))
    owner = read_token_file(state_dir_for(config) / OWNER_TOKEN_FILE)
    if owner:
        added = "sha256:" + hashlib.sha256(owner.encode()).hexdigest()
        auth = dict(data.get("auth") or {})
        auth["tokens"] = [t for t in auth.get("tokens") or [] if not (isinstance(t, dict) and t.get("token") == added)]
        data["auth"] = auth
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def edited_config_hint(config: ClusterConfig | None = None) -> str:
    """The way out that every "another config with this name" refusal ends with: the user who
    edited their own config applies it with ``restart --force`` (``--local`` when ``config`` is
    the ``--local`` copy of a config, :func:`iris.cluster.manager.make_local_config`)."""
    local = ""
    if config is not None and config.provider.type == "local":
        if state_dir_for(config) == local_state_dir(config.name):
            local = " --local"
    return (
        "if this is your cluster and you edited its config, apply the edit with "
        f"`iris cluster --config PATH restart{local} --force` (or stop it with `stop{local} --force`)"
    )


def running_controller(config: ClusterConfig, *, force: bool = False) -> ControllerProcessInfo | None:
    """The controller process started for this config, if it is alive.

    Raises OtherConfigError if the controller running in this config's state directory was
    started from a different config (two configs with the same ``name``, or this one edited
    since): it is not this cluster, and nothing should run on it or stop it by accident.
    ``force`` (``stop --force``, ``restart --force``) finds it all the same."""
    import yaml

    host = controller_host(config)
    if host is not None:
        try:
            placement = _host_method(host, config, "find", "force")(force=True) if force else host.find()
        finally:
            host.close()
        if placement is None or not placement.url:
            return None
        return _remote_info(config, placement)
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
    if not force and isinstance(started_from, dict) and _identity(started_from) != _identity(config_to_dict(config)):
        raise OtherConfigError(
            f"the controller running in {state_dir} (pid {pid}, {url}) belongs to another config named "
            f"{config.name!r} (its config: {state_dir / 'cluster.yaml'}); give this config its own name: "
            f"(or stop that cluster with its own config); {edited_config_hint(config)}"
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

    host = controller_host(config)
    if host is not None:
        try:
            return _start_placed(config, host, fresh=fresh, timeout=max(timeout, PLACED_START_TIMEOUT))
        finally:
            host.close()
    existing = running_controller(config)
    if existing is not None:
        return existing
    manager = open_vm_manager(config)  # an unknown or unusable provider fails here, before any process starts
    try:
        check = getattr(manager, "check", None)  # optional: the provider reaches its machines first
        if check is not None:
            check(_progress)
    finally:
        manager.close()
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


def stop_controller(config: ClusterConfig, timeout: float = 30.0, *, force: bool = False) -> bool:
    """SIGTERM the controller process, or delete the provider's controller machine (its slices
    keep running); True if one was running. ``force``: also when it was started from another
    config of this name (refused otherwise)."""
    host = controller_host(config)
    if host is not None:
        try:
            return _host_method(host, config, "stop", "force")(_progress, force=True) if force else host.stop(_progress)
        finally:
            host.close()
    info = running_controller(config, force=force)
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
    from iris.rpc import controller_pb2, convert
    from iris.rpc.channel import call, controller_stub

    killed = []
    channel, stub = controller_stub(url, find_token(url, token))
    try:
        states = [convert.job_state_to_proto(s) for s in (JobState.PENDING, JobState.RUNNING)]
        unfinished = call(stub.ListJobs, controller_pb2.ListJobsRequest(states=states), url).jobs
        ids = {j.job_id for j in unfinished}
        for job in unfinished:
            if job.parent_job_id in ids:
                continue  # killed with its parent
            call(stub.KillJob, controller_pb2.KillJobRequest(job_id=job.job_id, reason=reason), url)
            killed.append(job.job_id)
    finally:
        channel.close()
    return killed


def stop_cluster(config: ClusterConfig, *, force: bool = False) -> tuple[bool, list[str]]:
    """Kill the jobs still running (recording why), stop the controller, then delete every
    slice labelled with this cluster. Returns (whether a controller was running, the slice ids
    deleted). ``force``: also when the controller was started from another config of this
    name (the user edited theirs; refused otherwise)."""
    info = running_controller(config, force=force)
    if info is not None:
        try:
            with connect_controller(config, info) as url:
                kill_unfinished_jobs(url, token=info.token or None)
        except IrisError as exc:  # an unresponsive controller: stop it anyway
            logger.warning("could not kill the unfinished jobs before stopping: %s", exc)
    was_running = stop_controller(config, force=force)
    manager = open_vm_manager(config)
    deleted = []
    try:
        for info in manager.list_slices(cluster_labels(config)):
            manager.delete_slice(info.slice_id)
            deleted.append(info.slice_id)
    finally:
        manager.close()
    host = controller_host(config)
    if host is not None and hasattr(host, "release"):  # e.g. the controller VM's reserved address, kept for the slices
        try:
            host.release(_progress)
        finally:
            host.close()
    for name in ("controller.pid", "controller.url", "controller.http_url"):
        (state_dir_for(config) / name).unlink(missing_ok=True)
    return was_running, deleted


@contextmanager
def reach_controller(config: ClusterConfig, url: str, via: str = "") -> Iterator[str]:
    """A URL for the controller at ``url`` that works from this machine: ``url`` itself, or a
    local end of the tunnel the config names (``controller.tunnel``, else the provider's default),
    open until the block ends. ``via`` is the address the tunnel connects to when it is not the
    host of ``url`` (a VM's external address; the ``ssh_host`` tunnel option). A tunnel that
    cannot open raises a PluginError naming why."""
    registry = get_registry()
    name = config.controller.tunnel or registry.vm_manager(config.provider.type).default_tunnel
    if name == "direct":
        yield url
        return
    options = attrs.asdict(config.provider)
    if via and not options.get("ssh_host"):
        options["ssh_host"] = via
    tunnel = registry.tunnel(name).factory(options)
    with tunnel.connect(url) as local:
        yield local


# --- a controller placed on a provider's machine (controller.vm.enabled) ----------------------

PLACED_START_TIMEOUT = 900.0  # creating a VM, pulling the image and starting: minutes, not seconds
HEALTH_INTERVAL = 2.0


def _progress(line: str) -> None:
    """Progress of a long wait, on stderr (the CLI prints the URL alone on stdout)."""
    print(f"iris: {line}", file=sys.stderr, flush=True)


def controller_host(config: ClusterConfig, registry: PluginRegistry | None = None) -> Any:
    """The provider's ControllerHost when this config places the controller on the provider's
    machine (``controller.vm.enabled``), else None (a process on this machine)."""
    if not config.controller.vm.enabled:
        return None
    registry = registry or get_registry()
    provider = registry.vm_manager(config.provider.type)
    if provider.controller_host is None:
        raise IrisError(
            f"controller.vm.enabled: true (or the seeds' controller_vm: {{{config.provider.type}: ...}}), but provider "
            f"{config.provider.type!r} cannot place the controller on a VM; set controller.vm.enabled: false to run it on "
            "this machine (or use a provider that can: gcp, manual)"
        )
    return provider.controller_host(config)


def _remote_info(config: ClusterConfig, placement: Any) -> ControllerProcessInfo:
    return ControllerProcessInfo(
        0, placement.url, state_dir_for(config), placement.http_url, remote=True, where=placement.where, tunnel_host=placement.tunnel_host
    )


@contextmanager
def connect_controller(config: ClusterConfig, info: ControllerProcessInfo, *, http: bool = False) -> Iterator[str]:
    """A URL this machine can use for the controller ``info`` describes: its own for a process
    here, else the local end of the config's tunnel to the machine it was placed on. ``http``:
    the HTTP side (dashboard, ``/health``) instead of gRPC."""
    url = info.http_url if http else info.url
    if not info.remote:
        yield url
        return
    with reach_controller(config, url, via=info.tunnel_host) as local:
        yield local


def _owner_token(config: ClusterConfig) -> tuple[ClusterConfig, str]:
    """The config with a static admin token for the user starting the cluster (its sha256 only:
    the config travels in the VM's metadata), and the token, kept in ``<state_dir>/owner.token``
    here (the same file a local controller writes), so this user's commands find it."""
    import secrets

    from iris.auth import current_user
    from iris.config import StaticTokenConfig

    if not auth_enabled(config):
        return config, ""
    state_dir = state_dir_for(config)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = read_token_file(state_dir / OWNER_TOKEN_FILE)
    if not token:
        token = secrets.token_urlsafe(32)
        write_private(state_dir / OWNER_TOKEN_FILE, token + "\n")
    entry = StaticTokenConfig(token="sha256:" + hashlib.sha256(token.encode()).hexdigest(), role="admin", name=current_user())
    auth = attrs.evolve(config.auth, tokens=[*config.auth.tokens, entry])
    return attrs.evolve(config, auth=auth), token


def wait_healthy(config: ClusterConfig, info: ControllerProcessInfo, *, timeout: float, hint: str = "") -> None:
    """Return once the controller answers its health check (``GET /health`` on its HTTP side,
    else a gRPC call), through the config's tunnel; print progress while waiting; raise an
    IrisError naming what to look at if it does not answer within ``timeout``."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last_reported = 0.0
    last_error = ""
    while True:
        try:
            if info.http_url:
                with connect_controller(config, info, http=True) as url:
                    with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10) as response:
                        body = json.loads(response.read() or b"{}")
                if body.get("ok") and body.get("started", True):
                    return
                last_error = "/health: the controller is still starting (its provider and autoscaler)"
            else:
                from iris.rpc import controller_pb2
                from iris.rpc.channel import call, controller_stub

                with connect_controller(config, info) as url:
                    channel, stub = controller_stub(url, find_token(url, info.token or None))
                    try:
                        call(stub.ListWorkers, controller_pb2.ListWorkersRequest(), url, timeout=10)
                    finally:
                        channel.close()
                return
        except Exception as exc:  # not up yet: the VM boots, sshd starts, the image is pulled
            last_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        now = time.monotonic()
        if now >= deadline:
            raise IrisError(
                f"the controller on {info.where or info.url} did not answer its health check within {timeout:.0f}s "
                f"(last: {last_error}); see {hint or 'the machine it runs on'}"
            )
        if now - last_reported >= 15.0:
            _progress(f"waiting for the controller on {info.where} to answer ({now - started:.0f}s; last: {last_error})")
            last_reported = now
        time.sleep(HEALTH_INTERVAL)


def _start_placed(config: ClusterConfig, host: Any, *, fresh: bool, timeout: float) -> ControllerProcessInfo:
    if fresh:
        raise IrisError(
            "--fresh: the controller's state is on its machine; stop the cluster (iris cluster --config C stop), "
            "which deletes the machine and its state, then start it again"
        )
    existing = host.find()
    # the admin token goes into a new machine's config only: an existing one keeps its own
    served_config = config if existing is not None else _owner_token(config)[0]
    placement = host.start(served_config, _progress)  # an existing machine is found (and started if stopped)
    info = _remote_info(config, placement)
    wait_healthy(config, info, timeout=timeout, hint=placement.logs_hint)  # one /health when it is up
    return info


def restart_controller(config: ClusterConfig, *, timeout: float = 60.0, force: bool = False) -> ControllerProcessInfo:
    """Restart the controller, keeping its state and its slices: the process here is stopped and
    started again; a controller machine is restarted by its provider (e.g. a VM reset).

    ``force`` (``iris cluster restart --force``): restart it with ``config`` although it was
    started from another config of this name (the user edited theirs), and record ``config``
    as the one it runs: here ``<state dir>/cluster.yaml`` is written again; a controller
    machine's host gets it as ``restart(progress, config=...)`` (the served config, with this
    user's admin token as ``start`` adds it)."""
    host = controller_host(config)
    if host is None:
        stop_controller(config, force=force)
        return start_cluster(config, timeout=timeout)
    try:
        if force:  # the host applies the config to the machine it has (and says so if it has none)
            placement = _host_method(host, config, "restart", "config")(_progress, config=_owner_token(config)[0])
        elif host.find() is None:
            return _start_placed(config, host, fresh=False, timeout=max(timeout, PLACED_START_TIMEOUT))
        else:
            placement = host.restart(_progress)
    finally:
        host.close()
    info = _remote_info(config, placement)
    wait_healthy(config, info, timeout=max(timeout, PLACED_START_TIMEOUT), hint=placement.logs_hint)
    return info


def _host_method(host: Any, config: ClusterConfig, name: str, keyword: str) -> Any:
    """``host.<name>``, checked to take ``keyword`` (``--force`` on a placed controller: the
    ControllerHost's optional ``find(force=)``, ``stop(progress, force=)`` and
    ``restart(progress, config=)``); a PluginError naming the plugin's host if it does not."""
    method = getattr(host, name)
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call say
        return method
    if any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return method
    cls = type(host)
    raise PluginError(
        f"--force: the controller host of provider {config.provider.type!r} ({cls.__module__}.{cls.__qualname__}) "
        f"cannot apply it: its {name}() takes no {keyword}= argument (the ControllerHost's optional --force support); "
        f"stop that cluster with the config it was started from, or upgrade the plugin"
    )
