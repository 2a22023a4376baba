"""``iris login``, ``iris logout``, ``iris whoami`` and ``iris token create``: the caller's tokens.

    iris login --controller-url URL            # reads the token from stdin or a hidden prompt
    iris token create alice [--role user] [--ttl 30d]   # an admin mints a user's token
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from iris_cli.options import cluster_options


def _url(ctx: click.Context, config: str | None, controller_url: str | None) -> str:
    from iris_cli.job import _controller_target

    return _controller_target(ctx, config, controller_url)[0]


@contextmanager
def _client(ctx: click.Context, config: str | None, controller_url: str | None, token: str | None = None) -> Iterator[tuple[str, Any]]:
    """(the controller's URL, a client of it): reached through the config's tunnel when the
    address is the config's (``controller.tunnel``), as every other command reaches it. Tokens are
    kept and found under the controller's URL, never a tunnel's local end."""
    from iris.auth import find_token
    from iris.client import IrisClient
    from iris_cli.job import _controller_target

    url, loaded = _controller_target(ctx, config, controller_url)
    token = token or find_token(url, fallback=ctx.meta.get("iris_owner_token", "")) or None
    reach = url
    if loaded is not None:
        from iris.cluster.lifecycle import reach_controller

        with reach_controller(loaded, url) as reach, IrisClient.remote(reach, token=token) as client:
            yield url, client
        return
    with IrisClient.remote(reach, token=token) as client:
        yield url, client


def _ttl(ctx: click.Context, param: click.Parameter, value: str | None) -> float:
    if not value or value == "0":
        return 0.0
    from iris_cli.job import _DURATION, _SECONDS

    match = _DURATION.match(value)
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration; use e.g. 12h, 30d or 0 (does not expire)")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


@click.command("login")
@cluster_options
@click.option("--token", "token_text", metavar="TOKEN", default=None, help="The token (default: read from stdin, or asked for).")
@click.pass_context
def login_command(ctx: click.Context, config: str | None, provider: str | None, controller_url: str | None, token_text: str | None) -> None:
    """Check a token with the controller and keep it for that controller in
    ~/.iris/credentials.json (mode 600); later commands and IrisClient.remote use it."""
    from iris.auth import store_token

    if token_text is None:
        token_text = sys.stdin.readline() if not sys.stdin.isatty() else click.prompt("token", hide_input=True)
    token_text = token_text.strip()
    if not token_text:
        raise click.UsageError("no token given; pass --token TOKEN or give it on stdin")
    with _client(ctx, config, controller_url, token_text) as (url, client):
        who = client.whoami()
    if not who.auth_enabled:
        click.echo(f"iris: the controller at {url} runs without auth; nothing to log in to", err=True)
        return
    path = store_token(url, token_text)
    click.echo(f"iris: logged in to {url} as {who.role} {who.name} (token kept in {path})", err=True)


@click.command("logout")
@cluster_options
@click.pass_context
def logout_command(ctx: click.Context, config: str | None, provider: str | None, controller_url: str | None) -> None:
    """Forget the token kept for a controller."""
    from iris.auth import forget_token

    url = _url(ctx, config, controller_url)
    click.echo(f"iris: {'forgot the token for' if forget_token(url) else 'no token kept for'} {url}", err=True)


@click.command("whoami")
@cluster_options
@click.pass_context
def whoami_command(ctx: click.Context, config: str | None, provider: str | None, controller_url: str | None) -> None:
    """Who the controller takes you for (role and name)."""
    with _client(ctx, config, controller_url) as (url, client):
        who = client.whoami()
    if not who.auth_enabled:
        click.echo(f"{url}: auth is off; every caller may do anything")
        return
    click.echo(f"{who.role} {who.name}" + (f" (task of {who.job_id})" if who.job_id else ""))


@click.group("token", context_settings={"help_option_names": ["-h", "--help"]})
def token_group() -> None:
    """Create tokens for users (admins only)."""


@token_group.command("create")
@cluster_options
@click.argument("name")
@click.option("--role", type=click.Choice(["user", "admin"]), default="user", show_default=True)
@click.option("--ttl", callback=_ttl, default=None, metavar="DURATION", help="Expire after e.g. 12h or 30d (default: never).")
@click.pass_context
def token_create(
    ctx: click.Context, name: str, role: str, ttl: float, config: str | None, provider: str | None, controller_url: str | None
) -> None:
    """Mint a token for NAME and print it (hand it to them; they run `iris login`)."""
    with _client(ctx, config, controller_url) as (_, client):
        click.echo(client.create_token(name, role=role, ttl_seconds=ttl))
