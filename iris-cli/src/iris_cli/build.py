"""``iris build``: Iris's container images, from this workspace, without a registry.

``iris build worker-image -t NAME [--push] [--base IMAGE]`` and ``controller-image``: a base
image with Python 3 (``--base``, or Debian bookworm made here with debootstrap) plus this
workspace's Iris distributions (``uv build``) and their locked dependencies, prepared on this
side and copied in. ``--push`` pushes to the tag's registry. ``--region R`` (with ``--project``,
``--repository``) names it for Google Artifact Registry instead. The engine is ``DOCKER_HOST``
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


def _gcp_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Checks --region, --project and --repository (each one line naming the value)."""
    if value is None:
        return None
    from iris.runtime import artifact_registry

    check = {"region": artifact_registry.region_problem, "project": artifact_registry.project_problem}.get(
        str(param.name), artifact_registry.repository_problem
    )
    problem = check(value)
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
            click.option("--region", metavar="REGION", default=None, callback=_gcp_name, help="Name the image for Google Artifact Registry in REGION (e.g. us-central1): -t NAME[:TAG] becomes REGION-docker.pkg.dev/PROJECT/REPOSITORY/NAME[:TAG]."),
            click.option("--project", metavar="PROJECT", default=None, callback=_gcp_name, help="With --region: the Google Cloud project (default: $CLOUDSDK_CORE_PROJECT, $GOOGLE_CLOUD_PROJECT, else `gcloud config get-value project`)."),
            click.option("--repository", metavar="NAME", default=None, callback=_gcp_name, help="With --region: the Artifact Registry repository (default: iris; the seeds' clusters used marin)."),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _image_name(tag: str, region: str | None, project: str | None, repository: str | None) -> str:
    """The name the image is built as: ``tag``, or with ``--region`` its Artifact Registry name."""
    if region is None:
        if project is not None or repository is not None:
            option = "--project" if project is not None else "--repository"
            raise click.UsageError(f"{option} names an Artifact Registry repository and needs --region (e.g. --region us-central1)")
        return tag
    from iris.runtime.artifact_registry import DEFAULT_REPOSITORY, artifact_registry_image

    return artifact_registry_image(tag, region, project, repository or DEFAULT_REPOSITORY)


def _build(kind: str, tag: str, push: bool, base: str | None, workspace: Path | None, region: str | None, project: str | None, repository: str | None) -> None:
    from iris.runtime.images import build_image

    def progress(line: str) -> None:
        click.echo(f"iris build: {line}", err=True)

    name = _image_name(tag, region, project, repository)
    if name != tag:
        progress(f"image name: {name} (Artifact Registry, from -t {tag} and --region {region})")
    image_id = build_image(kind, name, base=base, push=push, workspace=workspace, progress=progress)
    if name != tag:
        field = "controller.vm.image" if kind == "controller" else "provider.options.worker_image (or docker.image)"
        progress(f"{'pushed' if push else 'built'} {name}: put it in {field} of the cluster config")
    click.echo(f"{name} {image_id}")


@click.group("build", context_settings={"help_option_names": ["-h", "--help"]})
def build_group() -> None:
    """Build Iris's container images from this workspace (worker, controller)."""


@build_group.command("worker-image")
@_image_options("worker")
def worker_image(tag: str, push: bool, base: str | None, workspace: Path | None, region: str | None, project: str | None, repository: str | None) -> None:
    """An image whose entrypoint runs an Iris worker (python -m iris.cluster.worker.main ARGS).

    \b
    Example:
      iris build worker-image -t 127.0.0.1:5000/iris-worker:1 --push
      iris build worker-image -t iris-worker:v1 --push --region us-central1 --project my-project
    """
    _build("worker", tag, push, base, workspace, region, project, repository)


@build_group.command("controller-image")
@_image_options("controller")
def controller_image(tag: str, push: bool, base: str | None, workspace: Path | None, region: str | None, project: str | None, repository: str | None) -> None:
    """An image whose entrypoint runs an Iris controller (python -m iris.cluster.controller.main ARGS)."""
    _build("controller", tag, push, base, workspace, region, project, repository)
