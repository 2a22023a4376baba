"""``iris run``: submit a command as a job, stream its logs, exit with its outcome."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from iris_cli.attempts import AttemptMarks
from iris_cli.log_lines import print_log_line
from iris_cli.options import cluster_options, resolve

_ENV_FLAGS = ("-e", "--env_vars", "--env-vars")
_SEP = "\x00"


def fold_env_args(args: list[str]) -> list[str]:
    """Rewrite ``-e KEY [VALUE]`` (one or two words) into one click value ``KEY\\0VALUE``.

    Words after ``-e`` up to the next option or ``--`` belong to it; more than two is an error.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            out.extend(args[i:])
            break
        if token in _ENV_FLAGS:
            j = i + 1
            values = []
            while j < len(args) and args[j] != "--" and not (args[j].startswith("-") and len(args[j]) > 1):
                values.append(args[j])
                j += 1
            if not values:
                raise click.UsageError(f"{token} needs KEY [VALUE], e.g. -e WANDB_MODE offline")
            if len(values) > 2:
                raise click.UsageError(
                    f"{token} takes KEY [VALUE], got {len(values)} values: {' '.join(values)} "
                    "(put the command after --, e.g. iris run -e KEY VALUE -- python train.py)"
                )
            out.extend([token, _SEP.join(values) if len(values) == 2 else values[0] + _SEP])
            i = j
            continue
        out.append(token)
        i += 1
    return out


class RunCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, fold_env_args(list(args)))


def _memory(ctx: click.Context, param: click.Parameter, value: str) -> int:
    from iris.cluster.types import parse_memory
    from iris.errors import ResourceError

    try:
        return parse_memory(value, field="--memory")
    except ResourceError as exc:
        raise click.BadParameter(str(exc).removeprefix("--memory: "), ctx=ctx, param=param) from None


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from iris.cluster.types import parse_memory
    from iris.errors import ResourceError

    try:
        return parse_memory(value, field="--max-bundle-size")
    except ResourceError as exc:
        raise click.BadParameter(str(exc).removeprefix("--max-bundle-size: "), ctx=ctx, param=param) from None


def _gpu(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from iris.errors import ResourceError
    from iris.job.types import parse_gpu

    try:
        return parse_gpu(value)
    except ResourceError as exc:
        raise click.BadParameter(str(exc).removeprefix("gpu: "), ctx=ctx, param=param) from None


def _task_image(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from iris.job.types import image_reference_problem

    problem = image_reference_problem(value)
    if problem:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def _bundle_progress(done: int, total: int, done_bytes: int) -> None:
    """Shown for a workspace that takes more than a second to bundle."""
    from iris.cluster.types import format_memory

    _status(f"bundling the workspace: {done}/{total} files, {format_memory(done_bytes)}")


@click.command(
    "run",
    cls=RunCommand,
    context_settings={"help_option_names": ["-h", "--help"]},
    short_help="Run a command as a job and stream its logs.",
)
@cluster_options
@click.option(
    "-e",
    "--env_vars",
    "--env-vars",
    "env_vars",
    multiple=True,
    metavar="KEY [VALUE]",
    help="Set an environment variable for the job (repeatable). KEY alone sets it empty.",
)
@click.option("--cpu", type=click.FloatRange(min=0), default=1.0, show_default=True, help="CPUs per task.")
@click.option("--memory", default="2GB", show_default=True, callback=_memory, help="Memory per task, e.g. 2GB, 512MiB.")
@click.option("--tpu", metavar="TYPE", default=None, help="TPU type per task, e.g. v5litepod-16.")
@click.option("--gpu", metavar="TYPE[xN]", default=None, callback=_gpu, help="GPUs per task: H100x8, H100 (one) or 8 (any type).")
@click.option(
    "--task-image", metavar="IMAGE", default=None, callback=_task_image,
    help="Container image the tasks run in, on workers with the docker runtime (default: the config's docker.image).",
)
@click.option("--job-name", metavar="NAME", default=None, help="Job name (default: from the command and the time).")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Number of tasks.")
@click.option("--max-retries", type=click.IntRange(min=0), default=0, show_default=True, help="Retries per task after a failure.")
@click.option("--timeout", type=click.FloatRange(min=0), default=0, show_default=True, help="Job run timeout in seconds (0 = none).")
@click.option("--max-task-failures", type=click.IntRange(min=0), default=0, show_default=True, help="Tasks that may fail for good before the job fails.")
@click.option("--scheduling-timeout", type=click.FloatRange(min=0), default=0, show_default=True, help="Seconds a task may wait for a place before the job is UNSCHEDULABLE (0 = wait forever).")
@click.option("--constraint", "constraints", multiple=True, metavar="EXPR", help="Worker attribute constraint: KEY=V, KEY!=V, KEY>=N, KEY, !KEY, 'KEY in A,B' (repeatable).")
@click.option("--region", default=None, help="Only run on workers in this region.")
@click.option("--zone", default=None, help="Only run on workers in this zone.")
@click.option("--port", "ports", multiple=True, metavar="NAME", help="Allocate a named port per task, passed as IRIS_PORT_<NAME> (repeatable).")
@click.option("--coschedule", metavar="KEY", default=None, help="Start all tasks together on workers sharing attribute KEY (e.g. slice).")
@click.option(
    "--include-children-logs/--no-include-children-logs",
    default=True,
    show_default=True,
    help="Also stream the logs of jobs this job starts.",
)
@click.option(
    "--extra", "extras", multiple=True, metavar="EXTRA",
    help="Optional-dependency extra of the workspace's pyproject.toml to install in the task environment: NAME, or PACKAGE:NAME for a workspace member (repeatable).",
)
@click.option(
    "--pip-package", "pip_packages", multiple=True, metavar="REQUIREMENT",
    help="Python package to install in the task environment on top of the workspace's, e.g. 'numpy>=2' (repeatable).",
)
@click.option("--no-wait", is_flag=True, help="Submit and exit without waiting (needs a cluster that outlives iris).")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path), default=None, help="Directory to bundle (default: the current one).")
@click.option(
    "--max-bundle-size", "max_bundle_size", metavar="SIZE", default=None, callback=_size,
    help="Refuse a workspace bundle larger than this, e.g. 500MB (default: the config's bundle.max_size, else 100MB).",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run_command(ctx: click.Context, **opts: Any) -> None:
    """Run COMMAND (after --) as an Iris job with this workspace; stream its output; exit with its code.

    \b
    Examples:
      iris run --provider local -- python -c "print('hi')"
      iris --config cluster.yaml run --tpu v5litepod-16 -e WANDB_MODE offline -- python train.py

    Exit status: 0 on success, the failing task's exit code (or 1) on failure,
    130 on Ctrl-C (which also kills the job).
    """
    command = list(opts["command"])
    if command and command[0] == "--":
        command = command[1:]
    if not command or not command[0]:
        raise click.UsageError("no command given; put it after --, e.g. iris run -- python train.py")

    from iris.cluster.constraints import Constraint, parse_constraint
    from iris.cluster.types import DeviceSpec, Entrypoint, EnvironmentSpec, ResourceSpec, tpu_device
    from iris_cli.env_vars import load_env_vars

    constraints = [parse_constraint(text) for text in opts["constraints"]]
    for key in ("region", "zone"):
        if opts[key]:
            constraints.append(Constraint(key, values=(opts[key],)))
    if opts["tpu"]:
        from iris.cluster.tpu import tpu_topology

        tpu_topology(opts["tpu"])  # an unknown TPU type fails here, listing the known ones

    from iris.job.types import extra_problem, package_problem

    for flag, values, problem_of in (("--extra", opts["extras"], extra_problem), ("--pip-package", opts["pip_packages"], package_problem)):
        for value in values:
            if problem := problem_of(value):
                raise click.BadParameter(problem, param_hint=flag)
    env = load_env_vars([v.split(_SEP, 1) if v.split(_SEP, 1)[1] else [v.split(_SEP, 1)[0]] for v in opts["env_vars"]])
    resources = ResourceSpec(cpu=opts["cpu"], memory=opts["memory"])
    if opts["tpu"] and opts["gpu"]:
        raise click.UsageError("--tpu and --gpu: give one accelerator kind per job, not both")
    resources.device = tpu_device(opts["tpu"]) if opts["tpu"] else opts["gpu"] or DeviceSpec()
    spec = dict(
        entrypoint=Entrypoint.from_command(command),
        name=opts["job_name"],
        resources=resources,
        environment=EnvironmentSpec(env=env, extras=list(opts["extras"]), pip_packages=list(opts["pip_packages"])),
        replicas=opts["replicas"],
        max_retries=opts["max_retries"],
        timeout=opts["timeout"],
        constraints=constraints,
        coscheduling=opts["coschedule"] or False,
        ports=list(opts["ports"]),
        max_task_failures=opts["max_task_failures"],
        scheduling_timeout=opts["scheduling_timeout"],
        task_image=opts["task_image"] or "",
    )
    follow_children = opts["include_children_logs"]
    workspace = opts["workspace"] or Path.cwd()
    config_path = resolve(ctx, "config", opts["config"])
    provider = resolve(ctx, "provider", opts["provider"])
    controller_url = resolve(ctx, "controller_url", opts["controller_url"])
    verbose = (ctx.find_root().obj or {}).get("verbose", 0)
    _configure_logging(verbose)

    from iris.bundle import DEFAULT_MAX_BUNDLE_BYTES
    from iris.client import IrisClient

    max_bundle = opts["max_bundle_size"]
    if max_bundle is None and config_path:
        from iris.config import load_config

        max_bundle = load_config(config_path).bundle.max_bytes
    bundling = {
        "workspace": workspace,
        "max_bundle_bytes": DEFAULT_MAX_BUNDLE_BYTES if max_bundle is None else max_bundle,
        "bundle_progress": _bundle_progress,
    }
    if controller_url:
        client = IrisClient.remote(controller_url, **bundling)
        sys.exit(_submit_and_follow(client, spec, no_wait=opts["no_wait"], include_children=follow_children))

    from iris.cluster.manager import ClusterManager
    from iris.config import ClusterConfig, load_config
    from iris.plugin.registry import get_registry

    config = load_config(config_path) if config_path else ClusterConfig()
    if provider:
        config.provider.type = provider
    get_registry().vm_manager(config.provider.type)  # an unknown provider fails here, listing the installed ones
    if config_path:
        from iris.cluster.lifecycle import running_controller
        from iris.cluster.manager import make_local_config

        # a cluster started with `iris cluster --config C start [--local]` is used if it runs
        for candidate in (make_local_config(config, process_workers=True), config):  # the local one first: no API call
            info = running_controller(candidate)
            if info is not None:
                _status(f"using the running cluster at {info.url}" + (f" ({info.where})" if info.where else ""))
                from iris.cluster.lifecycle import connect_controller
                from iris_cli.cluster import info_token

                with connect_controller(candidate, info) as url:  # through the tunnel to a controller VM
                    client = IrisClient.remote(url, token=info_token(info), **bundling)
                    code = _submit_and_follow(client, spec, no_wait=opts["no_wait"], include_children=follow_children)
                sys.exit(code)
    if config.provider.type != "local" and config.controller.port and not config.controller.vm.enabled:
        # a cluster elsewhere: the config's fixed address, through its tunnel (controller.tunnel)
        from iris.cluster.lifecycle import reach_controller

        with reach_controller(config, f"http://{config.controller.host}:{config.controller.port}") as url:
            client = IrisClient.remote(url, **bundling)
            code = _submit_and_follow(client, spec, no_wait=opts["no_wait"], include_children=follow_children)
        sys.exit(code)
    if config.provider.type != "local":
        raise click.UsageError(
            f"provider {config.provider.type!r}: no controller of this cluster is running; start one with "
            "iris cluster --config C start (or --local to try it on this machine), or pass --controller-url URL"
        )
    if opts["no_wait"]:
        raise click.UsageError(
            "--no-wait needs a cluster that outlives this command (--controller-url, or iris cluster --config C "
            "start); with --provider local the in-process cluster stops when iris exits"
        )
    manager = ClusterManager(config)
    started = time.monotonic()
    address = manager.start()
    try:
        _status(f"local cluster up at {address} in {time.monotonic() - started:.2f}s")
        client = IrisClient.remote(address, token=manager.owner_token or None, **bundling)
        code = _submit_and_follow(client, spec, no_wait=False, include_children=follow_children)
    finally:
        manager.stop()
    sys.exit(code)


def _configure_logging(verbose: int) -> None:
    import logging

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="iris: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _status(message: str) -> None:
    click.echo(f"iris: {message}", err=True)


def _submit_and_follow(client: Any, spec: dict[str, Any], *, no_wait: bool, include_children: bool) -> int:
    from iris.cluster.types import JobState

    job = client.submit(**spec)
    replicas = len(job.status().tasks)
    _status(f"job {job.job_id} submitted ({replicas} task{'s' if replicas > 1 else ''})")
    if no_wait:
        click.echo(job.job_id)
        return 0

    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: Any) -> None:
        # Ctrl-C and SIGTERM alike: kill the attached job, clean up, exit 128 + the signal
        received.append(signum)
        raise KeyboardInterrupt

    for sig in previous:
        signal.signal(sig, on_signal)
    started = time.monotonic()
    progress = _Progress(job)
    try:
        progress.start()
        prefix = replicas > 1

        marks = AttemptMarks()

        def sink(line: Any) -> None:
            progress.saw_output()
            if line.job_id != job.job_id:  # a child job's line: name the child and its task
                label = f"[{line.job_id.removeprefix(job.job_id + '/')}/{line.task_index}] "
            elif prefix:
                label = f"[{line.task_index}] "
            else:
                label = ""
            mark = marks.mark(line, label)
            if mark:
                click.echo(mark, err=True)
            print_log_line(line, label)

        status = job.wait(stream_logs=True, log_sink=sink, include_children=include_children, raise_on_failure=False, environment=True)
    except KeyboardInterrupt:
        signum = received[0] if received else signal.SIGINT
        _status(f"{signal.Signals(signum).name}: killing job {job.job_id}")
        try:
            job.kill()
        except Exception as exc:  # the controller may already be gone
            _status(f"could not kill {job.job_id}: {exc}")
        return 128 + signum
    finally:
        progress.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    elapsed = time.monotonic() - started
    if status.state is JobState.SUCCEEDED:
        _status(f"job {job.job_id} SUCCEEDED in {elapsed:.2f}s")
    else:
        _status(f"job {job.job_id} {status.state.value} after {elapsed:.2f}s: {status.error or 'no error recorded'}")
    return status.exit_code if status.state is not JobState.SUCCEEDED else 0


class _Progress:
    """While a job shows no output, say every few seconds what it is waiting for."""

    INTERVAL = 5.0

    def __init__(self, job: Any):
        self._job = job
        self._stop = threading.Event()
        self._last_output = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="iris-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def saw_output(self) -> None:
        self._last_output = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last_said = ""
        while not self._stop.wait(self.INTERVAL):
            if time.monotonic() - self._last_output < self.INTERVAL:
                continue
            try:
                status = self._job.status()
            except Exception:
                continue
            if status.state.is_terminal:
                return
            reasons = sorted({t.pending_reason for t in status.tasks if t.pending_reason})
            running = sum(1 for t in status.tasks if t.state.value == "RUNNING")
            said = f"{status.state.value}: {running}/{len(status.tasks)} running" + (f"; pending: {'; '.join(reasons)}" if reasons else "")
            if said != last_said or time.monotonic() - self._last_output > 30:
                _status(said)
                last_said = said
