"""``iris job``: list, inspect, follow and kill the jobs of a running controller.

Exit status: 0 on success; 1 when the controller cannot be reached; 2 for bad input, including
a job id the controller does not know (for ``kill``, after the other jobs were killed).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click

from iris_cli.attempts import AttemptMarks
from iris_cli.log_lines import print_log_line
from iris_cli.options import cluster_options, resolve

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ENTRYPOINT_WIDTH = 60


@click.group(
    "job",
    context_settings={"help_option_names": ["-h", "--help"]},
    short_help="List, inspect, follow and kill jobs.",
)
@cluster_options
@click.pass_context
def job_group(ctx: click.Context, config: str | None, provider: str | None, controller_url: str | None) -> None:
    """List, inspect, follow and kill the jobs of a running controller.

    \b
    The controller is the first of:
      --controller-url URL
      $IRIS_CONTROLLER_ADDRESS (set inside Iris tasks)
      --config PATH with controller.host and controller.port set

    \b
    Examples:
      iris job list --controller-url http://127.0.0.1:10000 --state running
      iris job logs -f train
      iris job kill /alice/train
    """
    ctx.ensure_object(dict)
    for name, value in (("config", config), ("provider", provider), ("controller_url", controller_url)):
        if value is not None:
            ctx.obj[name] = value


def _controller_target(ctx: click.Context, config: str | None, controller_url: str | None) -> tuple[str, Any]:
    """The controller to talk to: the flag, else the task environment, else the cluster the config
    started (``iris cluster --config C start [--local]``), else the config's fixed address. With
    the config (second item) when the address is the config's, reached through its tunnel."""
    from iris.client.client import CONTROLLER_ENV

    url = resolve(ctx, "controller_url", controller_url) or os.environ.get(CONTROLLER_ENV, "")
    if url:
        return url, None
    path = resolve(ctx, "config", config)
    if path:
        from iris.cluster.lifecycle import running_controller
        from iris.cluster.manager import make_local_config
        from iris.config import load_config

        loaded = load_config(path)
        # the cluster `iris cluster --config C start [--local]` started, as `iris --config C run` finds it
        for candidate in (make_local_config(loaded, process_workers=True), loaded):  # the local one first: no API call
            info = running_controller(candidate)
            if info is not None:
                ctx.meta["iris_owner_token"] = info.token  # used if no other token is given
                if info.remote:  # a controller VM: through the config's tunnel, to the address it reports
                    ctx.meta["iris_tunnel_host"] = info.tunnel_host
                    return info.url, candidate
                return info.url, None
        controller = loaded.controller
        if controller.vm.enabled:  # placed on the provider's machine, found by label: there is no fixed address
            raise click.UsageError(
                f"{path}: no controller of this cluster is running where the config places it (controller.vm); start one with "
                f"iris cluster --config {path} start, or pass --controller-url URL"
            )
        if not controller.port:
            raise click.UsageError(
                f"{path}: no controller of this cluster is running (start one with iris cluster --config {path} start), "
                "and controller.port is 0, so there is no fixed address to try; or pass --controller-url URL"
            )
        return f"http://{controller.host}:{controller.port}", loaded
    raise click.UsageError(
        "no controller given; pass --controller-url URL (or a --config with controller.host and controller.port). "
        "A local cluster from `iris run --provider local` lives only as long as that command"
    )


@contextmanager
def _connect(ctx: click.Context, config: str | None, controller_url: str | None) -> Iterator[Any]:
    """An IrisClient for the controller (through the config's tunnel when its address is the
    config's); an unreachable controller ends the command with one line, exit 1."""
    from iris.client import IrisClient
    from iris.client.client import ControllerUnavailable

    from iris.auth import find_token

    url, loaded = _controller_target(ctx, config, controller_url)
    token = find_token(url, fallback=ctx.meta.get("iris_owner_token", "")) or None  # the controller's URL, not a tunnel's
    with ExitStack() as stack:
        if loaded is not None:
            from iris.cluster.lifecycle import reach_controller

            url = stack.enter_context(reach_controller(loaded, url, via=ctx.meta.get("iris_tunnel_host", "")))
        client = IrisClient.remote(url, token=token)
        try:
            yield client
        except ControllerUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            client.close()


def _lookup(client: Any, job_id: str) -> tuple[Any, Any]:
    """The job (under its full id; the controller resolves short names) and its status."""
    from iris.client import Job

    status = Job(client, job_id).status()
    return Job(client, status.job_id), status


# --- formatting -------------------------------------------------------------------------

_MEMORY_LIMITS = {
    "cgroup-v1": "held by the kernel (cgroup v1)",
    "cgroup-v2": "held by the kernel (cgroup v2)",
    "sampled": "sampled (a short spike can pass)",
}


def _time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _task_summary(status: Any) -> str:
    """``3/4 done`` plus the count of every other task state, e.g. ``1/4 done, 2 running, 1 pending``."""
    from iris.cluster.types import TaskState

    counts = {state: 0 for state in TaskState}
    for task in status.tasks:
        counts[task.state] += 1
    done = counts.pop(TaskState.SUCCEEDED)
    others = [f"{n} {state.value.lower()}" for state, n in counts.items() if n]
    return ", ".join([f"{done}/{len(status.tasks)} done", *others])


def _resources(resources: Any) -> str:
    if resources is None:
        return "-"
    from iris.cluster.types import format_memory

    parts = [f"cpu {resources.cpu:g}", f"memory {format_memory(resources.memory)}"]
    if resources.disk:
        parts.append(f"disk {format_memory(resources.disk)}")
    device = resources.device
    if device.kind not in ("", "cpu"):
        parts.append(" ".join(["device", device.kind, device.variant]).strip())
    return ", ".join(parts)


def _status_json(status: Any) -> dict[str, Any]:
    r = status.resources
    return {
        "job_id": status.job_id,
        "name": status.name,
        "state": status.state.value,
        "exit_code": status.exit_code if status.state.is_terminal else None,
        "error": status.error,
        "user": status.user,
        "parent_job_id": status.parent_job_id or None,
        "children": list(status.children),
        "entrypoint": status.entrypoint,
        "submitted_at": status.submitted_at,
        "started_at": status.started_at or None,
        "finished_at": status.finished_at or None,
        "resources": None
        if r is None
        else {
            "cpu": r.cpu,
            "memory_bytes": r.memory,
            "disk_bytes": r.disk,
            "device": {"kind": r.device.kind, "variant": r.device.variant, "count": r.device.count},
        },
        "constraints": [c.describe() for c in status.constraints],
        "coschedule_by": status.coschedule_by or None,
        "env_names": list(status.env_names),
        "tasks": [
            {
                "index": t.index,
                "state": t.state.value,
                "pending_reason": t.pending_reason,
                "exit_code": t.exit_code if t.state.is_terminal else None,
                "error": t.error,
                "attempts": [
                    {
                        "attempt_id": a.attempt_id,
                        "worker_id": a.worker_id,
                        "state": a.state.value,
                        "exit_code": a.exit_code if a.state.is_terminal else None,
                        "error": a.error,
                        "oom": a.oom,
                        "ports": dict(a.ports),
                        "started_at": a.started_at or None,
                        "finished_at": a.finished_at or None,
                    }
                    for a in t.attempts
                ],
            }
            for t in status.tasks
        ],
    }


def _echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2))


# --- option parsing ---------------------------------------------------------------------


def _parse_states(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[Any]:
    from iris.cluster.types import JobState

    states = []
    for value in values:
        try:
            states.append(JobState[value.strip().upper()])
        except KeyError:
            names = ", ".join(s.name for s in JobState)
            raise click.BadParameter(f"{value!r} is not a job state; choose from {names} (any case)", ctx=ctx, param=param) from None
    return states


def _parse_since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A duration back from now (``30s``, ``5m``, ``2h``, ``1d``) or an ISO time, as unix time."""
    if value is None:
        return None
    match = _DURATION.match(value)
    if match:
        return time.time() - float(match[1]) * _SECONDS[match[2].lower()]
    from datetime import datetime

    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration nor a time; use e.g. 30s, 5m, 2h, 1d, "
            "or an ISO time such as 2025-01-31T14:00:00 (local time unless it has an offset like +00:00)",
            ctx=ctx,
            param=param,
        ) from None
    return when.timestamp()  # a naive time is local time


# --- commands ---------------------------------------------------------------------------


@job_group.command("list", short_help="List jobs.")
@cluster_options
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    callback=_parse_states,
    help="Only jobs in this state (repeatable; any case): pending, running, succeeded, failed, killed, worker_failed, unschedulable.",
)
@click.option("--prefix", default="", metavar="PREFIX", help="Only jobs whose id starts with PREFIX, e.g. /alice/.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a JSON list of jobs.")
@click.pass_context
def list_command(
    ctx: click.Context, states: list[Any], prefix: str, as_json: bool, config: str | None, provider: str | None, controller_url: str | None
) -> None:
    """List jobs, oldest first."""
    with _connect(ctx, config, controller_url) as client:
        jobs = client.list_jobs(states=states, prefix=prefix)
    if as_json:
        _echo_json([_status_json(s) for s in jobs])
        return
    if not jobs:
        click.echo("no jobs")
        return
    rows = [("JOB ID", "STATE", "TASKS", "SUBMITTED", "ENTRYPOINT")]
    rows += [
        (s.job_id, s.state.value, _task_summary(s), _time(s.submitted_at), _truncate(s.entrypoint, _ENTRYPOINT_WIDTH))
        for s in jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]))


@job_group.command("status", short_help="Show a job, its tasks and their attempts.")
@cluster_options
@click.argument("job_id", metavar="JOB")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status_command(
    ctx: click.Context, job_id: str, as_json: bool, config: str | None, provider: str | None, controller_url: str | None
) -> None:
    """Show JOB (a full id like /alice/train, or just train) with its tasks and their attempts."""
    with _connect(ctx, config, controller_url) as client:
        _, status = _lookup(client, job_id)
        from iris.plugin.worker_host import ATTRIBUTE_MEMORY_LIMITS

        limits: dict[str, str] = {}
        if not as_json and any(t.attempts for t in status.tasks):
            # how each attempt's worker holds it to its memory limit (its memory-limits attribute)
            limits = {w.worker_id: w.attributes[ATTRIBUTE_MEMORY_LIMITS] for w in client.list_workers() if ATTRIBUTE_MEMORY_LIMITS in w.attributes}
    if as_json:
        _echo_json(_status_json(status))
        return
    rows = [
        ("job", status.job_id),
        ("state", status.state.value),
        ("error", status.error or "-"),
        ("exit code", str(status.exit_code) if status.state.is_terminal else "-"),
        ("user", status.user or "-"),
        ("parent", status.parent_job_id or "-"),
        ("children", ", ".join(status.children) or "-"),
        ("submitted", _time(status.submitted_at)),
        ("started", _time(status.started_at)),
        ("finished", _time(status.finished_at)),
        ("entrypoint", status.entrypoint),
        ("resources", _resources(status.resources)),
        ("constraints", ", ".join(c.describe() for c in status.constraints) or "-"),
        ("env", ", ".join(status.env_names) + "  (names only)" if status.env_names else "-"),
    ]
    if status.coschedule_by:
        rows.append(("coscheduled", f"by {status.coschedule_by}"))
    width = max(len(key) for key, _ in rows) + 1
    for key, value in rows:
        click.echo(f"{key + ':':<{width}} {value}")
    click.echo("tasks:")
    for task in status.tasks:
        line = f"  {task.index}  {task.state.value}"
        if task.pending_reason:
            line += f"  pending: {task.pending_reason}"
        click.echo(line)
        for a in task.attempts:
            parts = [f"attempt {a.attempt_id}", f"worker {a.worker_id or '-'}", a.state.value]
            if a.state.is_terminal:
                parts.append(f"exit {a.exit_code}")
            if a.oom:
                parts.append("OOM")
            if status.resources is not None and status.resources.memory and a.worker_id in limits:
                parts.append(f"memory limit {_MEMORY_LIMITS.get(limits[a.worker_id], limits[a.worker_id])}")
            if a.ports:
                parts.append("ports " + " ".join(f"{name}={port}" for name, port in sorted(a.ports.items())))
            if a.error:
                parts.append(f"error: {a.error}")
            click.echo("     " + ", ".join(parts))


@job_group.command("logs", short_help="Print or follow a job's logs.")
@cluster_options
@click.argument("job_id", metavar="JOB")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job (and, with --include-children, its children) ends.")
@click.option("--since", metavar="WHEN", callback=_parse_since, help="Only lines from WHEN on: a duration back from now (30s, 5m, 2h, 1d) or an ISO time.")
@click.option("--tail", type=click.IntRange(min=1), default=None, metavar="N", help="Start with the last N lines.")
@click.option("--include-children", is_flag=True, help="Also the lines of the job's child jobs, prefixed [child/task].")
@click.pass_context
def logs_command(
    ctx: click.Context,
    job_id: str,
    follow: bool,
    since: float | None,
    tail: int | None,
    include_children: bool,
    config: str | None,
    provider: str | None,
    controller_url: str | None,
) -> None:
    """Print JOB's log lines; a job with several tasks prefixes each line with [task index].

    What the task wrote to stdout goes to stdout, what it wrote to stderr to stderr, and the
    lines about its environment (marked [iris env]) to stderr."""
    with _connect(ctx, config, controller_url) as client:
        job, status = _lookup(client, job_id)
        several = len(status.tasks) > 1
        root = status.job_id
        # Without --follow, Job.logs stops at the first empty batch, and the controller drops
        # lines older than `since` after it cuts a batch; so filter here and ask for `since` only
        # when following (where an empty batch does not end the stream).
        server_since = (since or 0.0) if follow else 0.0
        lines = job.logs(follow=follow, include_children=include_children, since=server_since, tail=tail or 0, environment=True)
        out = sys.stdout
        marks = AttemptMarks()
        try:
            for line in lines:
                if since is not None and line.timestamp < since:
                    continue
                if line.job_id != root:
                    prefix = f"[{line.job_id[len(root) + 1:]}/{line.task_index}] "
                elif several:
                    prefix = f"[{line.task_index}] "
                else:
                    prefix = ""
                mark = marks.mark(line, prefix)
                if mark:
                    out.flush()
                    click.echo(mark, err=True)
                print_log_line(line, prefix, flush=follow)
            out.flush()
        except BrokenPipeError:
            # the reader went away (e.g. `| head`); stop quietly, without a second error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            raise click.exceptions.Exit(1) from None


@job_group.command("kill", short_help="Kill jobs and their child jobs.")
@cluster_options
@click.argument("job_ids", metavar="JOB...", nargs=-1, required=True)
@click.option("--keep-children", is_flag=True, help="Leave the jobs' child jobs running (by default they are killed too).")
@click.pass_context
def kill_command(
    ctx: click.Context, job_ids: tuple[str, ...], keep_children: bool, config: str | None, provider: str | None, controller_url: str | None
) -> None:
    """Kill each JOB and, unless --keep-children, its child jobs; print each job's resulting state."""
    from iris.client.client import ControllerUnavailable
    from iris.errors import IrisError

    failed = 0
    with _connect(ctx, config, controller_url) as client:
        for job_id in job_ids:
            try:
                job, before = _lookup(client, job_id)
                after = job.kill(keep_children=keep_children)
            except ControllerUnavailable:
                raise
            except IrisError as exc:  # an unknown or ambiguous id: report it, kill the others
                click.echo(f"iris: error: {exc}", err=True)
                failed += 1
                continue
            note = "  (had already ended)" if before.state.is_terminal else ""
            click.echo(f"{after.job_id}  {after.state.value}{note}")
    if failed:
        raise click.exceptions.Exit(2)
