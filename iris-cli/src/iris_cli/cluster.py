"""``iris cluster``: start, stop, restart and inspect a long-lived cluster, and its slices.

    iris cluster --config C start [--local] [--fresh]
    iris cluster --config C stop [--force] | restart [--force] | status [--json]
    iris cluster --config C dashboard [--no-open]
    iris cluster --config C slice list | get SLICE | create --scale-group G | terminate SLICE... | terminate --all
    iris cluster --config C vm status | get VM | logs VM [--tail N]
    iris cluster vm --controller-url URL status | get VM | logs VM [--tail N]
    iris cluster --config C controller start | stop [--force] | restart [--force] | status [--json] | run-local

With ``controller.vm.enabled: true`` (the seeds' ``controller_vm: {gcp: ...}``) and a provider
that can place it (gcp), the controller runs on the provider's VM: ``start`` creates it and waits
for its health check, and every command reaches it through the config's tunnel. ``--local``
always means a controller process on this machine.

A controller started from another config with this ``name`` is refused by every command;
``--force`` on ``stop`` and ``restart`` is how a user who edited their own config applies the
edit (``restart --force``: the controller restarts with the given config, which becomes its
recorded config) or stops the cluster anyway.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from iris_cli.options import resolve


def info_token(info: Any) -> str | None:
    """The token for a cluster found through its config: ``$IRIS_TOKEN``, else ``iris login``'s
    for its URL, else the admin token its controller wrote for the user who started it."""
    from iris.auth import find_token

    return find_token(info.url, fallback=info.token) or None


def _config(ctx: click.Context, local: bool = False) -> Any:
    from iris.cluster.manager import make_local_config
    from iris.config import load_config

    path = resolve(ctx, "config", None)
    if not path:
        raise click.UsageError("iris cluster needs --config PATH (the cluster config YAML)")
    config = load_config(path)
    provider = resolve(ctx, "provider", None)
    if provider:
        config.provider.type = provider
    local = local or (ctx.find_root().obj or {}).get("cluster_local", False)
    return make_local_config(config, process_workers=True) if local else config


def _set_local(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        root = ctx.find_root()
        root.ensure_object(dict)
        root.obj["cluster_local"] = True
    return value


def force_option(action: str) -> Any:
    return click.option(
        "--force", is_flag=True,
        help=f"{action} although the running controller was started from another config of this name "
             "(you edited this one).",
    )


# `--local` is accepted on every command that takes the cluster's config, in any position
local_option = click.option(
    "--local", "_local", is_flag=True, expose_value=False, callback=_set_local,
    help="The cluster was started with --local (provider local on this machine).",
)


@click.group("cluster", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", metavar="PATH", default=None, help="Cluster config YAML.")
@click.option("--local", "local", is_flag=True, help="Run this config's cluster on this machine (provider local).")
@click.pass_context
def cluster_group(ctx: click.Context, config: str | None, local: bool) -> None:
    """Start, stop and inspect a cluster that outlives the command."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if config:
        root.obj["config"] = config
    root.obj["cluster_local"] = root.obj.get("cluster_local", False) or local


@cluster_group.command("start")
@click.option("--local", is_flag=True, help="Run this config's cluster on this machine (provider local).")
@click.option("--fresh", is_flag=True, help="Ignore the controller's saved state (it is moved aside).")
@click.pass_context
def start_command(ctx: click.Context, local: bool, fresh: bool) -> None:
    """Start the controller (and the scale groups' min_slices); print its URL."""
    from iris.cluster.lifecycle import running_controller, start_cluster

    config = _config(ctx, local)
    already = running_controller(config)
    info = start_cluster(config, fresh=fresh)
    word = "already running" if already else "started"
    click.echo(f"iris: controller {word} at {info.url} ({_where(info)})", err=True)
    if info.token:
        path = resolve(ctx, "config", None)
        click.echo(
            f"iris: auth is on; your admin token is in {info.state_dir / 'owner.token'} (other users: "
            f"iris --config {path} token create NAME, then they run iris login)",
            err=True,
        )
    click.echo(info.url)


def _where(info: Any) -> str:
    """Where a controller runs, in words: its machine, or its pid and state directory here."""
    if info.remote:
        return f"on {info.where}; clients reach it through the config's tunnel"
    return f"pid {info.pid}, state in {info.state_dir}"


@cluster_group.command("stop")
@click.option("--local", is_flag=True, help="The cluster was started with --local.")
@force_option("Stop it")
@click.pass_context
def stop_command(ctx: click.Context, local: bool, force: bool) -> None:
    """Stop the controller and delete every slice labelled with this cluster (even ones the
    controller's state no longer knows)."""
    from iris.cluster.lifecycle import stop_cluster

    config = _config(ctx, local)
    was_running, deleted = stop_cluster(config, force=force)
    click.echo(f"iris: controller {'stopped' if was_running else 'was not running'}", err=True)
    click.echo(f"iris: deleted {len(deleted)} slice(s){': ' + ', '.join(deleted) if deleted else ''}", err=True)


@cluster_group.command("restart")
@click.option("--local", is_flag=True, help="The cluster was started with --local.")
@force_option("Restart it with this config (which it then runs)")
@click.pass_context
def restart_command(ctx: click.Context, local: bool, force: bool) -> None:
    """Restart the controller; its slices keep running and are adopted again. With --force, it
    restarts with this config although it was started from another of this name: how an edited
    config is applied."""
    from iris.cluster.lifecycle import restart_controller

    config = _config(ctx, local)
    info = restart_controller(config, force=force)
    click.echo(f"iris: controller restarted at {info.url} ({_where(info)}){_applied(force)}", err=True)
    click.echo(info.url)


def _applied(force: bool) -> str:
    return "; it runs this config from now on" if force else ""


def _status(config: Any, controller_only: bool = False) -> dict[str, Any]:
    from iris.cluster.lifecycle import cluster_labels, open_vm_manager, running_controller

    info = running_controller(config)
    out: dict[str, Any] = {"cluster": config.name, "provider": config.provider.type, "controller": None, "slices": []}
    known: set[str] | None = None
    if info is not None:
        from iris.client import IrisClient

        from contextlib import ExitStack

        from iris.cluster.lifecycle import connect_controller

        controller: dict[str, Any] = {"url": info.url, "pid": info.pid, "dashboard": info.http_url, "healthy": False}
        if info.remote:
            controller["where"] = info.where
        stack = ExitStack()
        client = None
        try:
            client = IrisClient.remote(stack.enter_context(connect_controller(config, info)), token=info_token(info))
            workers = client.list_workers()
            controller.update(
                healthy=True,
                workers=sum(1 for w in workers if not w.lost),
                lost_workers=sum(1 for w in workers if w.lost),
                jobs=_job_counts("" if info.remote else info.http_url, client),  # a VM's HTTP side is not reachable from here
            )
            known = {w.slice_id or w.attributes.get("slice", "") for w in workers if not w.lost}
            try:
                autoscaler = client.autoscaler_status()
                controller["scale_groups"] = autoscaler
                known |= {s["slice_id"] for g in autoscaler for s in g["slices"]}
            except Exception as exc:  # an older controller without the RPC
                controller["scale_groups_error"] = str(exc)
        except Exception as exc:
            controller["error"] = str(exc)
        finally:
            if client is not None:
                client.close()
            stack.close()
        out["controller"] = controller
    if controller_only:
        return out
    manager = open_vm_manager(config)
    try:
        for s in manager.list_slices(cluster_labels(config)):
            out["slices"].append(
                {
                    "slice_id": s.slice_id,
                    "scale_group": s.scale_group,
                    "state": s.state.value,
                    "vms": len(s.vms),
                    "error": s.error,
                    "unknown_to_controller": known is not None and s.slice_id not in known,
                }
            )
    finally:
        manager.close()
    return out


def _job_counts(http_url: str, client: Any) -> dict[str, int]:
    """Jobs by state: the controller's cheap counts (``/health`` answers them from
    ``Controller.page_jobs(limit=0)`` without reading any job); every job listed only for a
    controller that serves no HTTP."""
    if http_url:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{http_url}/health", timeout=10) as response:
                counts = json.loads(response.read()).get("jobs")
            if isinstance(counts, dict):
                return {str(k): int(v) for k, v in sorted(counts.items())}
        except (OSError, ValueError):
            pass  # an older controller, or its HTTP side is busy: count through the RPCs
    jobs = client.list_jobs()
    return {state: sum(1 for j in jobs if j.state.value == state) for state in sorted({j.state.value for j in jobs})}


@cluster_group.command("status")
@click.option("--local", is_flag=True, help="The cluster was started with --local.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status_command(ctx: click.Context, local: bool, as_json: bool) -> None:
    """The controller's health, the scale groups, and every slice the provider reports; slices
    the controller does not know about are flagged."""
    status = _status(_config(ctx, local))
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    controller = status["controller"]
    if controller is None:
        click.echo(f"controller: not running (cluster {status['cluster']}, provider {status['provider']})")
    else:
        health = "healthy" if controller.get("healthy") else f"unhealthy: {controller.get('error', '')}"
        where = f"on {controller['where']}" if controller.get("where") else f"pid {controller['pid']}"
        click.echo(f"controller: {controller['url']} {where} {health}")
        if controller.get("dashboard"):
            click.echo(f"dashboard: {controller['dashboard']}")
        if controller.get("healthy"):
            jobs = ", ".join(f"{n} {s}" for s, n in controller["jobs"].items()) or "none"
            lost = f" ({controller['lost_workers']} lost)" if controller.get("lost_workers") else ""
            click.echo(f"workers: {controller['workers']}{lost}   jobs: {jobs}")
        for group in controller.get("scale_groups", []):
            bounds = f" (min {group['min_slices']}, max {group['max_slices']})" if "max_slices" in group else ""
            click.echo(f"group {group['name']}: {group['state']}  slices {len(group['slices'])}{bounds}  {group.get('detail', '')}".rstrip())
    if not status["slices"]:
        click.echo("slices: none")
    for s in status["slices"]:
        flag = "  NOT IN CONTROLLER STATE" if s["unknown_to_controller"] else ""
        error = f"  ({s['error']})" if s["error"] else ""
        click.echo(f"slice {s['slice_id']}  group {s['scale_group']}  {s['state']}  {s['vms']} vm(s){error}{flag}")


@cluster_group.command("dashboard")
@click.option("--local", is_flag=True, help="The cluster was started with --local.")
@click.option("--no-open", is_flag=True, help="Only print the URL; do not open a browser.")
@click.option(
    "--login-link", is_flag=True,
    help="Print a one-time login link (valid for 2 minutes, usable once) instead of opening it; for a browser elsewhere.",
)
@click.pass_context
def dashboard_command(ctx: click.Context, local: bool, no_open: bool, login_link: bool) -> None:
    """Print the dashboard's URL and open it in a browser, through the config's tunnel
    (controller.tunnel, else the provider's); a tunnel other than direct stays open until Ctrl-C.

    With auth on, the browser opens a one-time login link: the controller exchanges it for a
    session cookie and forgets it, so no token lands in a URL the browser keeps."""
    from iris.cluster.lifecycle import running_controller

    config = _config(ctx, local)
    info = running_controller(config)
    if info is None:
        raise click.ClickException("the cluster's controller is not running; start it with iris cluster --config C start")
    if not info.http_url:
        raise click.ClickException(
            f"the controller at {info.url} serves no dashboard (controller.http_port is -1, or it predates the dashboard); "
            "set controller.http_port to 0 or a port and restart it (iris cluster --config C restart)"
        )
    from iris.cluster.lifecycle import reach_controller

    direct = (config.controller.tunnel or _default_tunnel(config)) == "direct"
    with reach_controller(config, info.http_url, via=info.tunnel_host) as url:  # the same tunnel the CLI's RPCs use
        open_url = url
        if login_link or not no_open:
            ticket = _login_ticket(url, info_token(info))
            open_url = f"{url}/login?ticket={ticket}" if ticket else url
        if login_link:
            click.echo(open_url)
            if open_url == url:
                click.echo("iris: this controller runs without auth; the dashboard needs no login", err=True)
        else:
            click.echo(url)
        if not no_open and not login_link:
            import webbrowser

            if open_url != url:
                click.echo("iris: opening a one-time login link in your browser", err=True)
            if not webbrowser.open(open_url):
                click.echo(
                    "iris: no browser found here; open the URL above yourself and log in with a token "
                    "(or use --login-link for a one-time link)",
                    err=True,
                )
        if not direct:
            click.echo("iris: the tunnel stays open until Ctrl-C", err=True)
            try:
                import threading

                threading.Event().wait()
            except KeyboardInterrupt:
                pass


def _login_ticket(url: str, token: str | None) -> str:
    """A one-time login ticket from the dashboard at ``url`` for whoever ``token`` names; '' when
    the controller runs without auth (or predates the login link: the login form remains)."""
    if not token:
        return ""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{url}/api/login-ticket", data=b"{}", method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.loads(response.read()).get("ticket", ""))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return ""
        try:
            detail = json.loads(exc.read()).get("error", "")
        except ValueError:
            detail = ""
        raise click.ClickException(f"the dashboard at {url} refused the login link: {detail or exc.code}") from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"the dashboard at {url} did not answer: {exc}") from None


def _default_tunnel(config: Any) -> str:
    from iris.plugin.registry import get_registry

    return get_registry().vm_manager(config.provider.type).default_tunnel


@cluster_group.group("slice")
@local_option
def slice_group() -> None:
    """List, create and terminate slices."""


@slice_group.command("list")
@local_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def slice_list(ctx: click.Context, as_json: bool) -> None:
    """Every slice the provider reports for this cluster."""
    slices = _status(_config(ctx))["slices"]
    if as_json:
        click.echo(json.dumps(slices, indent=2))
        return
    for s in slices:
        flag = "  NOT IN CONTROLLER STATE" if s["unknown_to_controller"] else ""
        click.echo(f"{s['slice_id']}  {s['scale_group']}  {s['state']}  {s['vms']} vm(s){flag}")


@contextmanager
def _controller_client(ctx: click.Context) -> Iterator[Any]:
    """A client of the cluster's running controller (through the tunnel to a controller VM)."""
    from iris.client import IrisClient
    from iris.cluster.lifecycle import connect_controller, running_controller

    config = _config(ctx)
    info = running_controller(config)
    if info is None:
        raise click.UsageError("the cluster's controller is not running; start it with iris cluster --config C start")
    with connect_controller(config, info) as url:
        client = IrisClient.remote(url, token=info_token(info))
        try:
            yield client
        finally:
            client.close()


@slice_group.command("create")
@local_option
@click.option("--scale-group", required=True, metavar="NAME", help="The scale group to add a slice to.")
@click.pass_context
def slice_create(ctx: click.Context, scale_group: str) -> None:
    """Ask the autoscaler for one more slice of a scale group now."""
    with _controller_client(ctx) as client:
        click.echo(client.create_slice(scale_group))


@slice_group.command("terminate")
@local_option
@click.argument("slice_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Terminate every slice of the cluster.")
@click.pass_context
def slice_terminate(ctx: click.Context, slice_ids: tuple[str, ...], all_: bool) -> None:
    """Delete slices (their tasks are retried elsewhere)."""
    if not slice_ids and not all_:
        raise click.UsageError("name the slices to terminate, or pass --all")
    with _controller_client(ctx) as client:
        for slice_id in client.terminate_slices(list(slice_ids), all_slices=all_):
            click.echo(f"terminated {slice_id}")


def _slice_json(info: Any) -> dict[str, Any]:
    return {
        "slice_id": info.slice_id,
        "scale_group": info.scale_group,
        "state": info.state.value,
        "labels": dict(info.labels),
        "error": info.error,
        "vms": [{"vm_id": vm.vm_id, "address": vm.address, "state": vm.state.value, "attributes": dict(vm.attributes)} for vm in info.vms],
    }


def _vm_manager(ctx: click.Context) -> Any:
    from iris.cluster.lifecycle import open_vm_manager

    return open_vm_manager(_config(ctx))


def _not_found(message: str) -> click.ClickException:
    """An id the cluster does not know: exit 2, as for an unknown job (docs/cli.md)."""
    error = click.ClickException(message)
    error.exit_code = 2
    return error


@slice_group.command("get")
@local_option
@click.argument("slice_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def slice_get(ctx: click.Context, slice_id: str, as_json: bool) -> None:
    """One slice as the provider reports it: state, labels, and each VM's address and state."""
    manager = _vm_manager(ctx)
    try:
        info = manager.describe_slice(slice_id)
    finally:
        manager.close()
    if info is None:
        raise _not_found(f"no slice {slice_id!r} in this cluster; `iris cluster --config C slice list` lists them")
    data = _slice_json(info)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"slice {data['slice_id']}  group {data['scale_group']}  {data['state']}" + (f"  error: {data['error']}" if data["error"] else ""))
    for vm in data["vms"]:
        click.echo(f"  {vm['vm_id']}  {vm['address'] or '-'}  {vm['state']}")


def _set_controller_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value:
        root = ctx.find_root()
        root.ensure_object(dict)
        root.obj["controller_url"] = value
    return value


# `iris cluster vm --controller-url URL status` and `iris cluster vm status --controller-url URL`
controller_url_option = click.option(
    "--controller-url", "_controller_url", metavar="URL", default=None, expose_value=False, callback=_set_controller_url,
    help="Ask the running controller at URL (no config needed); it wins over --config.",
)


@contextmanager
def _url_client(url: str) -> Iterator[Any]:
    """A client of the controller at ``url`` with the token ``iris job --controller-url`` uses
    ($IRIS_TOKEN, else ``iris login``'s for the URL, else the owner's of a cluster started here)."""
    from iris.auth import find_token
    from iris.client import IrisClient

    client = IrisClient.remote(url, token=find_token(url) or None)
    try:
        yield client
    finally:
        client.close()


def _vm_rows(ctx: click.Context) -> list[dict[str, Any]]:
    """Every VM of the cluster (``iris.cluster.machines.vm_rows``): from the controller at
    --controller-url, else from the provider that --config names, opened here."""
    url = resolve(ctx, "controller_url", None)
    if url:
        with _url_client(url) as client:
            return client.list_vms()
    from iris.cluster.machines import vm_rows

    manager = _vm_manager(ctx)
    try:
        return vm_rows(manager.list_slices({}))
    finally:
        manager.close()


def _find_vm(rows: list[dict[str, Any]], vm_id: str) -> dict[str, Any]:
    from iris.cluster.machines import no_vm_message

    for row in rows:
        if row["vm_id"] == vm_id:
            return row
    raise _not_found(no_vm_message(vm_id))


@cluster_group.group("vm")
@local_option
@controller_url_option
def vm_group() -> None:
    """The machines (VMs, hosts) of the cluster's slices: state, details, worker logs.

    With --config the provider is asked from this machine; with --controller-url URL the running
    controller answers (its own provider), and no config is needed. Given both, the URL wins."""


@vm_group.command("status")
@local_option
@controller_url_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def vm_status(ctx: click.Context, as_json: bool) -> None:
    """Every VM of every slice, with its slice, address and state."""
    vms = [{k: row[k] for k in ("vm_id", "address", "state", "attributes", "slice_id", "scale_group")} for row in _vm_rows(ctx)]
    if as_json:
        click.echo(json.dumps(vms, indent=2))
        return
    if not vms:
        click.echo("no VMs")
    for vm in vms:
        click.echo(f"{vm['vm_id']}  slice {vm['slice_id']}  {vm['address'] or '-'}  {vm['state']}")


@vm_group.command("get")
@local_option
@controller_url_option
@click.argument("vm_id")
@click.pass_context
def vm_get(ctx: click.Context, vm_id: str) -> None:
    """One VM (JSON): its slice, address, state and attributes."""
    row = _find_vm(_vm_rows(ctx), vm_id)
    click.echo(json.dumps({k: row[k] for k in ("vm_id", "slice_id", "scale_group", "address", "state", "attributes")}, indent=2))


@vm_group.command("logs")
@local_option
@controller_url_option
@click.argument("vm_id")
@click.option("--tail", type=click.IntRange(min=1, max=1_000_000), default=100, show_default=True, metavar="N", help="How many of the last lines.")
@click.pass_context
def vm_logs(ctx: click.Context, vm_id: str, tail: int) -> None:
    """The worker's log on that VM (read from its host). Through --controller-url: admins only,
    since a worker's log shows every user's task lines."""
    url = resolve(ctx, "controller_url", None)
    if url:
        from iris.errors import IrisError, VmNotFound

        with _url_client(url) as client:
            try:
                text = client.vm_logs(vm_id, tail)
            except VmNotFound as exc:
                raise _not_found(str(exc)) from None
            except IrisError as exc:
                if type(exc) is not IrisError:  # unreachable, refused credentials: main's table
                    raise
                raise click.ClickException(str(exc)) from None  # the provider could not (as below)
        click.echo(text, nl=False)
        return
    from iris.cluster.machines import vm_logs_unsupported, vm_rows

    manager = _vm_manager(ctx)
    try:
        _find_vm(vm_rows(manager.list_slices({})), vm_id)
        reader = getattr(manager, "vm_logs", None)
        if reader is None:
            raise click.ClickException(vm_logs_unsupported(_config(ctx).provider.type))
        click.echo(reader(vm_id, tail), nl=False)
    finally:
        manager.close()


@cluster_group.group("controller")
@local_option
def controller_group() -> None:
    """The controller alone (its slices are left as they are): a process here, or the provider's
    controller VM (controller.vm.enabled)."""


@controller_group.command("start")
@local_option
@click.option("--fresh", is_flag=True, help="Ignore the controller's saved state (a process here only).")
@click.pass_context
def controller_start(ctx: click.Context, fresh: bool) -> None:
    """Start the controller (create its VM) and wait until it answers; print its URL."""
    from iris.cluster.lifecycle import running_controller, start_cluster

    config = _config(ctx)
    already = running_controller(config)
    info = start_cluster(config, fresh=fresh)
    click.echo(f"iris: controller {'already running' if already else 'started'} at {info.url} ({_where(info)})", err=True)
    click.echo(info.url)


@controller_group.command("stop")
@local_option
@force_option("Stop it")
@click.pass_context
def controller_stop(ctx: click.Context, force: bool) -> None:
    """Stop the controller (delete its VM); the slices keep running for the next controller to adopt."""
    from iris.cluster.lifecycle import stop_controller

    was_running = stop_controller(_config(ctx), force=force)
    click.echo(f"iris: controller {'stopped' if was_running else 'was not running'}; slices left running", err=True)


@controller_group.command("restart")
@local_option
@force_option("Restart it with this config (which it then runs)")
@click.pass_context
def controller_restart(ctx: click.Context, force: bool) -> None:
    """Restart the controller (reset its VM, keeping its disk and address); its slices are adopted
    again. With --force, with this config although it was started from another of this name."""
    from iris.cluster.lifecycle import restart_controller

    info = restart_controller(_config(ctx), force=force)
    click.echo(f"iris: controller restarted at {info.url} ({_where(info)}){_applied(force)}", err=True)
    click.echo(info.url)


@controller_group.command("status")
@local_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def controller_status(ctx: click.Context, as_json: bool) -> None:
    """Where the controller runs and whether it answers (exit 1 if it is not running or unhealthy)."""
    controller = _status(_config(ctx), controller_only=True)["controller"]
    if as_json:
        click.echo(json.dumps(controller, indent=2))
    elif controller is None:
        click.echo("controller: not running")
    else:
        health = "healthy" if controller.get("healthy") else f"unhealthy: {controller.get('error', '')}"
        where = f"on {controller['where']}" if controller.get("where") else f"pid {controller['pid']}"
        click.echo(f"controller: {controller['url']} {where} {health}")
        if controller.get("healthy"):
            click.echo(f"workers: {controller['workers']}   jobs: {', '.join(f'{n} {s}' for s, n in controller['jobs'].items()) or 'none'}")
    if controller is None or not controller.get("healthy"):
        sys.exit(1)


@controller_group.command("run-local")
@click.option("--fresh", is_flag=True, help="Ignore saved state.")
@click.pass_context
def controller_run_local(ctx: click.Context, fresh: bool) -> None:
    """Run this config's controller in the foreground on this machine (Ctrl-C stops it; slices keep running)."""
    import attrs

    from iris.cluster.controller.main import run_forever

    config = _config(ctx, local=True)
    sys.exit(run_forever(attrs.evolve(config), fresh=fresh))
