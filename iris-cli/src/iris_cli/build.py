"""``iris build``: Iris's container images, from this workspace, without a registry.

``iris build worker-image -t NAME [--push] [--base IMAGE]`` and ``controller-image``: a base
image with Python 3 (``--base``, or Debian bookworm made here with debootstrap) plus this
workspace's Iris distributions (``uv build``) and their locked dependencies, prepared on this
side and copied in. ``--push`` pushes to the tag's registry. The engine is ``DOCKER_HOST``
(default: the local socket).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def _image_tag(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from iris.job.types import image_reference_problem

    problem = image_reference_problem(value)
    if problem:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def _image_options(kind: str) -> Any:
    def decorate(function: Any) -> Any:
        options = [
            click.option("-t", "--tag", required=True, metavar="NAME[:TAG]", callback=_image_tag, help="Name the image, e.g. 127.0.0.1:5000/iris-worker:1."),
            click.option("--push", is_flag=True, help="Push the image to the tag's registry once built."),
            click.option("--base", metavar="IMAGE", default=None, callback=_image_tag, help="Base image with Python >= 3.11 (default: Debian bookworm with python3, made here with debootstrap)."),
            click.option("--workspace", type=click.Path(file_okay=False, path_type=Path), default=None, help="The Iris source workspace (default: the one above the current directory)."),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _build(kind: str, tag: str, push: bool, base: str | None, workspace: Path | None) -> None:
    from iris.runtime.images import build_image

    def progress(line: str) -> None:
        click.echo(f"iris build: {line}", err=True)

    image_id = build_image(kind, tag, base=base, push=push, workspace=workspace, progress=progress)
    click.echo(f"{tag} {image_id}")


@click.group("build", context_settings={"help_option_names": ["-h", "--help"]})
def build_group() -> None:
    """Build Iris's container images from this workspace (worker, controller)."""


@build_group.command("worker-image")
@_image_options("worker")
def worker_image(tag: str, push: bool, base: str | None, workspace: Path | None) -> None:
    """An image whose entrypoint runs an Iris worker (python -m iris.cluster.worker.main ARGS).

    \b
    Example:
      iris build worker-image -t 127.0.0.1:5000/iris-worker:1 --push
    """
    _build("worker", tag, push, base, workspace)


@build_group.command("controller-image")
@_image_options("controller")
def controller_image(tag: str, push: bool, base: str | None, workspace: Path | None) -> None:
    """An image whose entrypoint runs an Iris controller (python -m iris.cluster.controller.main ARGS)."""
    _build("controller", tag, push, base, workspace)
