"""Image names in Google Artifact Registry, for ``iris build ... --region R``.

``iris-worker:v1`` with region ``us-central1``, project ``my-project`` and repository ``marin``
is ``us-central1-docker.pkg.dev/my-project/marin/iris-worker:v1``. The project comes from the
caller, else ``$CLOUDSDK_CORE_PROJECT`` or ``$GOOGLE_CLOUD_PROJECT``, else ``gcloud config
get-value project`` when ``gcloud`` is on PATH. Nothing here talks to Google: the push itself is
``docker push`` with the user's Docker credentials (``gcloud auth configure-docker HOST``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping

from iris.errors import IrisError

DEFAULT_REPOSITORY = "iris"
PROJECT_ENV_VARS = ("CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT")
MULTI_REGIONS = ("us", "europe", "asia")
GCLOUD_TIMEOUT_SECONDS = 30

_REGION_RE = re.compile(r"^[a-z]+(?:-[a-z]+)+[0-9]+$")
# a project id (6-30 characters), optionally domain-scoped: example.com:my-project
_PROJECT_RE = re.compile(r"^(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REPOSITORY_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# how a registry says no to credentials (the distribution spec's DENIED and UNAUTHORIZED codes,
# as the engine words them, and Docker's own "no basic auth credentials"), and how the Docker
# SDK says a credential helper (docker-credential-gcloud) failed
_DENIED_RE = re.compile(
    r"\b(denied|unauthorized|unauthenticated|authentication required|no basic auth credentials|credentials store error)\b",
    re.IGNORECASE,
)


def region_problem(region: str) -> str | None:
    """Why ``region`` is not an Artifact Registry location, or None if it is one."""
    if _REGION_RE.match(region) or region in MULTI_REGIONS:
        return None
    return (
        f"{region!r} is not a Google Cloud region; expected one like us-central1 or europe-west4 "
        f"(lowercase, ending in a digit), or a multi-region: {', '.join(MULTI_REGIONS)}"
    )


def repository_problem(repository: str) -> str | None:
    """Why ``repository`` is not an Artifact Registry repository id, or None if it is one."""
    if _REPOSITORY_RE.match(repository):
        return None
    return (
        f"{repository!r} is not an Artifact Registry repository name; expected lowercase letters, "
        "digits and hyphens, starting with a letter (at most 63), e.g. iris or marin"
    )


def project_problem(project: str) -> str | None:
    """Why ``project`` is not a Google Cloud project id, or None if it is one."""
    if _PROJECT_RE.match(project):
        return None
    return (
        f"{project!r} is not a Google Cloud project id; expected 6-30 lowercase letters, digits "
        "and hyphens, starting with a letter, e.g. my-project"
    )


def registry_host(region: str) -> str:
    """The Docker registry host of Artifact Registry in ``region``."""
    return f"{region}-docker.pkg.dev"


def _gcloud_project(environ: Mapping[str, str]) -> str | None:
    """``gcloud config get-value project``, or None when gcloud is not on ``environ``'s PATH,
    fails, or has no project set."""
    gcloud = shutil.which("gcloud", path=environ.get("PATH", os.defpath))
    if gcloud is None:
        return None
    try:
        result = subprocess.run(
            [gcloud, "config", "get-value", "project"],
            env=dict(environ),
            capture_output=True,
            text=True,
            timeout=GCLOUD_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = result.stdout.strip().splitlines()[-1].strip() if result.returncode == 0 and result.stdout.strip() else ""
    return value if value and value != "(unset)" else None


def resolve_project(project: str | None, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The project and where it came from: ``project`` (``--project``), else the first of
    :data:`PROJECT_ENV_VARS` set in ``environ`` (default: this process's), else ``gcloud config
    get-value project``. Raises :class:`IrisError` when none names one, or it is malformed."""
    environ = os.environ if environ is None else environ
    found: tuple[str, str] | None = None
    if project:
        found = (project, "--project")
    else:
        for name in PROJECT_ENV_VARS:
            if environ.get(name, "").strip():
                found = (environ[name].strip(), f"${name}")
                break
        else:
            from_gcloud = _gcloud_project(environ)
            if from_gcloud:
                found = (from_gcloud, "gcloud config get-value project")
    if found is None:
        raise IrisError(
            "--region needs a Google Cloud project: pass --project P "
            f"(or set ${PROJECT_ENV_VARS[0]} or ${PROJECT_ENV_VARS[1]}, or `gcloud config set project P`)"
        )
    problem = project_problem(found[0])
    if problem:
        raise IrisError(f"project from {found[1]}: {problem}")
    return found


def artifact_registry_image(
    tag: str,
    region: str,
    project: str | None = None,
    repository: str = DEFAULT_REPOSITORY,
    environ: Mapping[str, str] | None = None,
) -> str:
    """``tag`` (``iris-worker:v1``, naming no registry host) as the Artifact Registry image
    ``REGION-docker.pkg.dev/PROJECT/REPOSITORY/iris-worker:v1``. The project is
    :func:`resolve_project`'s. A ``tag`` that names a registry host already, a bad region,
    project or repository raises :class:`IrisError` naming the value."""
    from iris.job.types import image_registry_host

    problem = region_problem(region) or repository_problem(repository)
    if problem:
        raise IrisError(problem)
    host = image_registry_host(tag)
    if host is not None:
        raise IrisError(
            f"-t {tag} names the registry {host}, and --region {region} names another ({registry_host(region)}); "
            "give -t as NAME[:TAG] with --region, or a full name without it"
        )
    project, _ = resolve_project(project, environ)
    # a domain-scoped project (example.com:my-project) is a path of two parts in the registry
    return f"{registry_host(region)}/{project.replace(':', '/')}/{repository}/{tag}"


def push_denied_hint(host: str | None, error: str) -> str | None:
    """What to do when a push to ``host`` failed with ``error``: for Artifact Registry
    (``*-docker.pkg.dev``) refusing credentials, run ``gcloud auth configure-docker HOST``;
    None otherwise."""
    if host is None or not host.endswith("-docker.pkg.dev") or not _DENIED_RE.search(error):
        return None
    return (
        f"{host} refused the push for credentials: run `gcloud auth configure-docker {host}` "
        "(and check that your account may write to the repository, roles/artifactregistry.writer), then push again"
    )
