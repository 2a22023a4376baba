"""Options shared by the group and its subcommands (``iris --config C run`` and ``iris run --config C``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def cluster_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--controller-url",
        metavar="URL",
        default=None,
        help="Talk to a running controller at URL instead of starting one.",
    )(fn)
    fn = click.option(
        "--provider",
        metavar="NAME",
        default=None,
        help="Provider to use (an installed plugin: local, gcp, manual, ...). Overrides the config's provider.type.",
    )(fn)
    fn = click.option(
        "--config",
        metavar="PATH",
        default=None,
        help="Cluster config YAML.",
    )(fn)
    return fn


def resolve(ctx: click.Context, name: str, value: Any) -> Any:
    """A subcommand's own value wins over the one given before the subcommand."""
    if value is not None:
        return value
    parent = ctx.find_root().obj or {}
    return parent.get(name)
