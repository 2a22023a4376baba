"""ClusterManager: one lifecycle for every provider (seed 004).

``start()`` returns the controller URL, ``stop()`` cleans up, ``connect()`` yields a URL this
machine can reach (through the provider's Tunnel) and stops on exit.

The controller runs in this process, with the autoscaler driving the provider's VmManager:
it adopts the slices the provider already reports under this cluster's label, keeps each scale
group's ``min_slices`` up, and answers unmet demand. With no scale groups, the local provider
gets one group of one slice the size of this machine.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from iris.cluster.autoscaler import Autoscaler
from iris.cluster.controller.checkpoint import Checkpointer, open_checkpoint_store, restore_if_empty
from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.controller.store import Store, check_database
from iris.cluster.scale_groups import group_attributes as group_attributes, group_vm_count as group_vm_count  # they lived here
from iris.cluster.scale_groups import scale_group_zones, slice_request_for
from iris.cluster.worker.worker import start_in_process
from iris.auth import OWNER_TOKEN_FILE, Authenticator, Principal, Role, TokenSigner, cluster_secret, load_static_tokens
from iris.auth import current_user, read_token_file, write_private
from iris.auth import static_token_entry
from iris.config import ClusterConfig, ScaleGroupConfig, auth_enabled, is_loopback, local_state_dir
from iris.cluster.machines import no_vm_message, vm_logs_unsupported, vm_rows
from iris.errors import ConfigError, IrisError, VmNotFound
from iris.plugin.records import OWNER_FILE, TEMP_STATE_PREFIX, ProviderContext
from iris.plugin.registry import PluginRegistry, get_registry
from iris.procfs import pid_start_time

logger = logging.getLogger(__name__)


def make_local_config(config: ClusterConfig, *, process_workers: bool = False) -> ClusterConfig:
    """The same cluster on this machine: provider ``local``, every scale group's shape kept.

    With ``process_workers`` each worker is its own process, so slices outlive the controller
    (as a long-lived cluster needs). The state directory defaults to ``~/.iris/<name>-local``.
    """
    if config.provider.type == "local" and not process_workers:
        return config
    options = dict(config.provider.options)
    if process_workers:
        options["worker_mode"] = "process"
    provider = attrs.evolve(config.provider, type="local", options=options)
    state_dir = config.controller.state_dir or str(local_state_dir(config.name))
    # bundle_prefix and checkpoint_url are the real cluster's: a copy on this machine must not write there
    controller = attrs.evolve(
        config.controller, host="127.0.0.1", bundle_prefix="", checkpoint_url="", state_dir=state_dir,
        vm=attrs.evolve(config.controller.vm, enabled=False),
    )
    return attrs.evolve(config, provider=provider, controller=controller)


class ClusterManager:
    def __init__(
        self,
        config: ClusterConfig,
        registry: PluginRegistry | None = None,
        *,
        fresh: bool = False,
        serve_http: bool = False,
        event_loop: str = "asyncio",
    ):
        """``fresh`` starts with empty controller state, moving any saved state aside.
        ``serve_http`` also serves the HTTP side (health, API, dashboard) on ``controller.http_port``
        unless that is -1; its URL is then :attr:`http_url`. ``event_loop`` is the RPC server's
        (:class:`~iris.cluster.controller.service.ControllerServer`): ``uvloop`` in the controller
        process, ``asyncio`` in-process."""
        self._config = config
        self._fresh = fresh
        self._event_loop = event_loop
        self._serve_http = serve_http
        self._http: Any = None
        self.http_url = ""
        self._store: Any = None
        self._checkpointer: Checkpointer | None = None
        self._autoscaler: Any = None
        self._autoscale_thread: threading.Thread | None = None
        self._autoscale_stop = threading.Event()
        self._registry = registry or get_registry()
        self._server: Any = None
        self._vm_manager: Any = None
        self._temp_dir: str | None = None
        self._lock_file: Any = None  # holds the state directory's lock while this controller runs
        self.auth: Authenticator | None = None
        self._placed_info: Any = None  # the controller placed on a provider's machine, once started
        #: start() has finished: the server, the provider and the autoscaler are up (``/health`` says so)
        self.started = False
        #: the admin token of the user who started this controller (also in <state_dir>/owner.token)
        self.owner_token = ""

    @property
    def config(self) -> ClusterConfig:
        return self._config

    @property
    def is_local(self) -> bool:
        return self._config.provider.type == "local"

    @property
    def controller(self) -> Any:
        if self._server is None:
            raise IrisError("ClusterManager.start() has not been called")
        return self._server.controller

    @property
    def vm_manager(self) -> Any:
        return self._vm_manager

    @property
    def placed(self) -> bool:
        """Whether the controller runs on a provider's machine (``controller.vm.enabled``), not here."""
        return self._config.controller.vm.enabled

    def start(self) -> str:
        """Start the controller and the initial slices; return the controller URL.

        If anything fails (or is interrupted) on the way, what was started is stopped again.
        With ``controller.vm.enabled`` the controller is placed on the provider's machine (as
        ``iris cluster start`` does) and the URL is its address there."""
        if self.placed:
            from iris.cluster.lifecycle import start_cluster

            self._placed_info = start_cluster(self._config, fresh=self._fresh)
            self.owner_token = self._placed_info.token
            return self._placed_info.url
        provider = self._registry.vm_manager(self._config.provider.type)  # fails early on an unknown provider
        try:
            return self._start(provider)
        except BaseException:
            self.stop()
            raise

    def _start(self, provider: Any) -> str:
        config = self._config
        state_dir = self._state_dir()
        db_path = state_dir / "controller.db"
        if not self._fresh:
            check_database(db_path)  # a corrupt or too-new database is refused before anything is written
        self._lock_state_dir(state_dir)
        if self._fresh and db_path.exists():
            aside = db_path.with_name(f"controller.db.{int(time.time())}.old")
            for suffix in ("", "-wal", "-shm"):
                old = db_path.with_name(db_path.name + suffix)
                if old.exists():
                    old.rename(aside.with_name(aside.name + suffix))
            logger.warning("--fresh: moved the saved state aside to %s", aside)
        checkpoints = None
        if config.controller.checkpoint_url:
            checkpoints = open_checkpoint_store(self._registry, config.controller.checkpoint_url)
            if not self._fresh:
                restore_if_empty(checkpoints, state_dir)  # a lost state directory comes back before we serve
        self.auth = self._authenticator(state_dir)
        self._store = Store(db_path)
        if checkpoints is not None:
            self._checkpointer = Checkpointer(checkpoints, state_dir, config.controller.checkpoint_interval_seconds)
            self._checkpointer.start()
        bundle_prefix = config.controller.bundle_prefix or f"file://{state_dir / 'bundles'}"
        bundles = self._registry.open_bundle_store(bundle_prefix)
        controller = Controller(
            store=self._store, worker_timeout=config.controller.worker_timeout_seconds, bundle_limits=config.bundle.limits
        )
        self._server = ControllerServer(
            controller, bundles, host=config.controller.host, port=config.controller.port, auth=self.auth, event_loop=self._event_loop
        )
        address = self._server.start()
        self._record_owner(address)
        if self._serve_http and config.controller.http_port >= 0:
            from iris.cluster.controller.http_server import HttpServer

            self._http = HttpServer(
                controller, host=config.controller.host, port=config.controller.http_port, cluster=self, auth=self.auth
            )  # behind the RPCs' authentication when auth is on
            self.http_url = self._http.start()
        auth = self.auth
        worker_token = None if auth is None else (lambda worker_id: auth.mint(Principal(Role.WORKER, worker_id)))
        options = {
            "runtime": config.worker.runtime or provider.default_runtime,
            "docker_image": config.docker.image,
            "scale_group_zones": scale_group_zones(config),
            "task_python": config.worker.task_python,
            "env_dir": config.worker.env_dir,
            **attrs.asdict(config.provider),
        }
        context = ProviderContext(
            controller_address=address,
            state_dir=state_dir,
            label_prefix=config.label_prefix,
            options=options,
            registry=self._registry,
            start_worker=start_in_process,
            worker_token=worker_token,
        )
        self._vm_manager = provider.factory(context)
        self._start_autoscaler()
        self.started = True
        return address

    def _authenticator(self, state_dir: Path) -> Authenticator | None:
        """The token checker for this controller, or None when auth is off (which a controller
        listening beyond this machine refuses unless ``auth.allow_unauthenticated_remote``)."""
        config = self._config
        host = config.controller.host
        if not auth_enabled(config):
            if not is_loopback(host) and not config.auth.allow_unauthenticated_remote:
                raise ConfigError(
                    f"controller.host: {host!r} is reachable from other machines, and auth is off (auth.enabled: false): "
                    "anyone who reaches it could run jobs as any user and read their secrets. Turn auth on "
                    "(remove auth.enabled: false), listen on 127.0.0.1, or set auth.allow_unauthenticated_remote: true"
                )
            if not is_loopback(host):
                logger.warning("controller on %s without auth (auth.allow_unauthenticated_remote): anyone who reaches it may do anything", host)
            return None
        if not is_loopback(host):
            logger.warning("controller on %s: tokens, job environments and logs travel as plaintext gRPC; use a tunnel or a trusted network", host)
        static = load_static_tokens(config.auth.tokens_file) if config.auth.tokens_file else {}
        for i, entry in enumerate(config.auth.tokens):
            digest, who = static_token_entry(entry.token, entry.role, entry.name, f"auth.tokens[{i}]")
            static[digest] = who
        auth = Authenticator(TokenSigner(cluster_secret(state_dir)), static)
        owner_file = state_dir / OWNER_TOKEN_FILE
        token = read_token_file(owner_file)
        who = auth.authenticate(token) if token else None
        if who is None or who.role is not Role.ADMIN:  # none yet, expired, or the secret was rotated
            token = auth.mint(Principal(Role.ADMIN, current_user()), config.auth.owner_token_ttl_seconds)
            write_private(owner_file, token + "\n")
        self.owner_token = token
        return auth

    def _lock_state_dir(self, state_dir: Path) -> None:
        """One controller per state directory: hold an exclusive lock on ``controller.lock`` for
        as long as this controller runs (the kernel drops it when the process dies, however)."""
        lock = open(state_dir / "controller.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            lock.close()
            raise IrisError(
                f"state directory {state_dir} is in use by the controller {owner}; stop that one first "
                "(iris cluster --config C stop), or give this one another state directory"
            ) from None
        self._lock_file = lock
        self._record_owner("")

    def _record_owner(self, address: str) -> None:
        lock = self._lock_file
        if lock is not None:
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()}" + (f" at {address}" if address else ""))
            lock.flush()

    def _state_dir(self) -> Path:
        if self._config.controller.state_dir:
            path = Path(self._config.controller.state_dir).expanduser()
        elif self.is_local:
            self._temp_dir = tempfile.mkdtemp(prefix=TEMP_STATE_PREFIX)
            path = Path(self._temp_dir)
            # who owns it: a later local cluster removes it (and stops what it ran) once this process is gone
            (path / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start_time": pid_start_time(os.getpid())}))
        else:
            path = Path.home() / ".iris" / self._config.name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # job environments, logs, the token secret: this user's only
        return path

    def _groups(self) -> dict[str, ScaleGroupConfig]:
        groups = dict(self._config.scale_groups)
        if not groups and self.is_local:  # no config: one slice the size of this machine
            groups = {"local": ScaleGroupConfig(min_slices=1, max_slices=1)}
        return groups

    def _start_autoscaler(self) -> None:
        groups = self._groups()
        controller = self.controller
        self._autoscaler = Autoscaler(
            groups,
            self._vm_manager,
            cluster_name=self._config.name,
            label_prefix=self._config.label_prefix,
            config=self._config.autoscaler,
            request_for=slice_request_for(self._config),
            on_delete=controller.lose_slice,
        )
        if groups:  # a task no worker and no group could ever take ends UNSCHEDULABLE at once
            controller.set_capacity(self._autoscaler.feasibility)
        adopted = self._autoscaler.adopt()
        if adopted:
            logger.info("adopted %d slice(s) the provider reports for cluster %s", len(adopted), self._config.name)
        self._autoscale_once()  # min_slices and queued demand are requested now, not a cycle later
        self._autoscaler.settle(timeout=self._config.autoscaler.boot_timeout_seconds)
        self._autoscale_stop.clear()
        self._autoscale_thread = threading.Thread(target=self._autoscale_loop, name="iris-autoscaler", daemon=True)
        self._autoscale_thread.start()
        self._server.servicer.cluster = self

    def _autoscale_once(self) -> None:
        """One autoscaler cycle: the scheduler's typed demand in, slice requests and deletions out,
        and each waiting job told what is being done for it."""
        controller = self.controller
        demand = controller.unmet_demand()
        self._autoscaler.run_once(demand, controller.busy_slices())
        if demand:
            controller.annotate_pending({d.key: self._autoscaler.route(d)[1] for d in demand})

    def _autoscale_loop(self) -> None:
        interval = self._config.autoscaler.evaluation_interval_seconds
        while not self._autoscale_stop.wait(interval):
            try:
                self._autoscale_once()
            except Exception:
                logger.exception("autoscaler cycle failed")

    # --- the autoscaler RPCs (iris cluster status / slice create / slice terminate) ----------

    def autoscaler_status(self) -> list[dict[str, Any]]:
        """Each scale group and its slices, as plain dicts (times are unix times; ``demand`` is
        the tasks waiting that this group would serve)."""
        autoscaler = self._autoscaler
        if autoscaler is None:  # not started yet, or stopping
            return []
        groups = self._groups()
        demand: dict[str, int] = {}
        if self._server is not None:
            for d in self.controller.unmet_demand():
                group = autoscaler.route(d)[0]  # per job: a job keeps the group it was routed to
                if group is not None:
                    demand[group] = demand.get(group, 0) + d.tasks
        out = []
        for g in autoscaler.status():
            config = groups.get(g.name)

            def wall(t: float | None, at: float = g.at) -> float:  # the autoscaler's clock -> unix time
                return time.time() - (at - t) if t else 0.0

            out.append(
                {
                    "name": g.name,
                    "state": getattr(g.state, "value", str(g.state)),
                    "detail": getattr(g, "detail", ""),
                    "min_slices": config.min_slices if config else 0,
                    "max_slices": config.max_slices if config else 0,
                    "priority": g.priority,
                    "counts": dict(g.counts),
                    "failures": g.failures,
                    "backoff_until": wall(g.backoff_until),
                    "quota_until": wall(g.quota_until),
                    "last_error": g.last_error,
                    "demand": demand.get(g.name, 0),
                    "slices": [
                        {
                            "slice_id": sl.slice_id,
                            "state": getattr(sl.state, "value", str(sl.state)),
                            "created_at": wall(sl.created_at),
                            "ready_at": wall(sl.ready_at),
                            "adopted": sl.adopted,
                            "idle_since": wall(sl.idle_since),
                            "error": sl.error or "",
                            "vms": getattr(sl, "vms", 0),
                        }
                        for sl in g.slices
                    ],
                }
            )
        return out

    def create_slice(self, scale_group: str) -> str:
        if scale_group not in self._groups():
            raise IrisError(f"unknown scale group {scale_group!r}; choose one of: {', '.join(sorted(self._groups()))}")
        return self._autoscaler.request_slice(scale_group)

    def terminate_slices(self, slice_ids: list[str], *, all_slices: bool = False) -> list[str]:
        return self._autoscaler.terminate(None if all_slices else slice_ids)

    # --- the machines (iris cluster vm ... --controller-url) ------------------------------

    def _need_vm_manager(self) -> Any:
        if self._vm_manager is None:  # not started yet, or stopping
            raise IrisError("the controller's provider is not open (the controller is starting or stopping)")
        return self._vm_manager

    def list_vms(self) -> list[dict[str, Any]]:
        """Every VM of every slice the VmManager reports (:func:`vm_rows`)."""
        return vm_rows(self._need_vm_manager().list_slices({}))

    def vm_logs(self, vm_id: str, tail: int = 100) -> str:
        """The last ``tail`` lines of the worker's log on VM ``vm_id``, through the provider's
        optional ``vm_logs``. VmNotFound for a VM no slice has; an IrisError naming the provider
        when it cannot show logs."""
        manager = self._need_vm_manager()
        if not any(row["vm_id"] == vm_id for row in vm_rows(manager.list_slices({}))):
            raise VmNotFound(no_vm_message(vm_id))
        reader = getattr(manager, "vm_logs", None)
        if reader is None:
            raise IrisError(vm_logs_unsupported(self._config.provider.type))
        return str(reader(vm_id, tail))

    # --- stopping -----------------------------------------------------------------------

    def _stop_autoscaler(self) -> None:
        self._autoscale_stop.set()
        if self._autoscale_thread is not None:
            self._autoscale_thread.join(timeout=10)
            self._autoscale_thread = None
        if self._autoscaler is not None:
            self._autoscaler.shutdown()

    def shutdown(self) -> None:
        """Stop the controller but leave the slices running, for a restart to adopt them."""
        self._stop_autoscaler()
        self._autoscaler = None
        if self._vm_manager is not None:
            self._vm_manager.close()  # a provider whose slices outlive this process keeps them
            self._vm_manager = None
        self.stop()

    def stop(self) -> None:
        """Delete every slice of this cluster, stop the controller, remove temp state."""
        if self.placed:
            if self._placed_info is not None:
                from iris.cluster.lifecycle import stop_cluster

                self._placed_info = None
                stop_cluster(self._config)
            return
        self.started = False
        self._stop_autoscaler()
        if self._vm_manager is not None:
            labels = {f"{self._config.label_prefix}.cluster": self._config.name}
            for info in self._vm_manager.list_slices(labels):
                try:
                    self._vm_manager.delete_slice(info.slice_id)
                except Exception:
                    logger.exception("failed to delete slice %s", info.slice_id)
            self._vm_manager.close()
            self._vm_manager = None
        self._autoscaler = None
        if self._http is not None:
            self._http.stop()
            self._http = None
            self.http_url = ""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._checkpointer is not None:
            self._checkpointer.stop(final=True)  # after the server: nothing changes the state any more
            self._checkpointer = None
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    @contextmanager
    def connect(self) -> Iterator[str]:
        """Start, yield a URL reachable from here (through the provider's tunnel), stop on exit."""
        address = self.start()
        try:
            if self._placed_info is not None:  # the controller's machine, through the config's tunnel
                from iris.cluster.lifecycle import connect_controller

                with connect_controller(self._config, self._placed_info) as url:
                    yield url
                return
            provider = self._registry.vm_manager(self._config.provider.type)
            tunnel = self._registry.tunnel(provider.default_tunnel).factory(attrs.asdict(self._config.provider))
            with tunnel.connect(address) as url:
                yield url
        finally:
            self.stop()

    def __enter__(self) -> ClusterManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
