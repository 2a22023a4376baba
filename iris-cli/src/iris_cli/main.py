"""The ``iris`` command group.

Only click is imported here; each command imports what it needs when it runs, so
``iris --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from iris_cli.build import build_group
from iris_cli.job import job_group
from iris_cli.options import cluster_options
from iris_cli.cluster import cluster_group
from iris_cli.login import login_command, logout_command, token_group, whoami_command
from iris_cli.run import run_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@cluster_options
@click.option("-v", "--verbose", count=True, help="More log output from Iris itself (-v info, -vv debug).")
@click.version_option(package_name="iris-cli", prog_name="iris")
@click.pass_context
def cli(ctx: click.Context, config: str | None, provider: str | None, controller_url: str | None, verbose: int) -> None:
    """Iris: run commands and Python functions on a cluster, with your workspace, and stream the logs back.

    \b
    Try it on this machine:
      iris run --provider local -- python -c "print('hello from iris')"
    """
    ctx.ensure_object(dict)
    ctx.obj.update(config=config, provider=provider, controller_url=controller_url, verbose=verbose)


cli.add_command(run_command)
cli.add_command(cluster_group)
cli.add_command(job_group)
cli.add_command(build_group)
cli.add_command(login_command)
cli.add_command(logout_command)
cli.add_command(whoami_command)
cli.add_command(token_group)


@cli.command("plugins")
@click.option("--check", is_flag=True, help="Import every plugin and report the ones that fail.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_command(check: bool, as_json: bool) -> None:
    """List installed Iris plugins (entry points in the iris.plugins group) with their versions."""
    from iris.plugin.registry import PluginRegistry, installed_plugins

    found = installed_plugins()
    broken: dict[str, str] = {}
    if check:
        registry = PluginRegistry(plugins=found)
        registry.load_all()
        broken = registry.broken
    if as_json:
        import json

        rows = [
            {"name": p.name, "distribution": p.distribution, "version": p.version, "module": p.module, "error": broken.get(p.name)}
            for p in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo("no Iris plugins installed (install iris-local, iris-gcp or iris-manual)")
        return
    width = max(len(p.name) for p in found)
    for p in found:
        status = f"  BROKEN: {broken[p.name]}" if p.name in broken else ""
        click.echo(f"{p.name:<{width}}  {p.distribution} {p.version}  ({p.module}){status}")
    if broken:
        sys.exit(1)


def _config_argument(args: list[str]) -> str:
    """The last ``--config`` value on the command line (the one in effect; none after ``--``)."""
    found = ""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--config="):
            found = arg.split("=", 1)[1]
    return found


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = cli.main(args=args, prog_name="iris", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        click.echo("iris: aborted", err=True)
        code = 130
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "iris"
        message = exc.format_message()
        if isinstance(exc, click.NoSuchOption) and command.endswith(" run") and "--" not in args:
            # `iris run python -c ...`: the command's own options were read as iris's
            message += " If it belongs to the command, put the command after --: iris run [OPTIONS] -- COMMAND [ARGS]..."
        click.echo(f"{command}: error: {message}", err=True)
        code = 2
    except click.ClickException as exc:
        click.echo(f"iris: error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        from iris.errors import IrisError

        if not isinstance(exc, IrisError):
            raise
        message = str(exc)
        given = _config_argument(args)
        if given and "--config PATH" in message:  # the core's way out names no file: name the user's
            import shlex

            message = message.replace("--config PATH", f"--config {shlex.quote(given)}")
        click.echo(f"iris: error: {message}", err=True)
        from iris.auth import PermissionDenied, Unauthenticated
        from iris.client.client import ControllerUnavailable

        # one table for every command (docs/cli.md): an unreachable controller is 1, bad input 2,
        # a refused credential 3
        code = 1 if isinstance(exc, ControllerUnavailable) else 3 if isinstance(exc, (Unauthenticated, PermissionDenied)) else 2
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
