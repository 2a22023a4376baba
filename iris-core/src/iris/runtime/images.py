"""Build Iris's container images without a registry: ``iris build worker-image`` and
``controller-image``.

An image is a base image with Python 3 (one the user names, or Debian bookworm made here by
``debootstrap`` and ``docker import``), plus this workspace's Iris distributions built as wheels
(``uv build``) and their locked dependencies, installed on this side into one directory
(``uv pip install --target``, for the base image's Python version and the engine's CPU) and
copied in: nothing is downloaded inside ``docker build``, whose steps run without a network.

Steps report progress through a callback (a line at a time), and every failure is an
:class:`~iris.errors.IrisError` naming what failed. The build context is a temporary directory,
removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from iris.errors import IrisError

Progress = Callable[[str], None]

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_INCLUDE = ("python3",)
CACHE_DIR = Path(os.environ.get("IRIS_IMAGE_CACHE", Path.home() / ".cache" / "iris-images"))
DEFAULT_BASE = f"iris-base:{DEBIAN_SUITE}-python3"
SITE = "/opt/iris/site"
KINDS = {
    # kind: (what it runs, the image's ENTRYPOINT)
    "worker": ("an Iris worker (python -m iris.cluster.worker.main)", ["python3", "-m", "iris.cluster.worker.main"]),
    "controller": (
        "an Iris controller (python -m iris.cluster.controller.main)",
        ["python3", "-m", "iris.cluster.controller.main"],
    ),
}
WORKSPACE_MEMBERS = ("iris-core", "iris-local", "iris-gcp", "iris-manual", "iris-cli")


def _quiet(_: str) -> None:
    pass


# --- a Debian rootfs, made here ----------------------------------------------------------------


def rootfs_key(include: tuple[str, ...] = BASE_INCLUDE, extra: str = "") -> str:
    """A hash of what goes into a rootfs: the debootstrap spec (its ``include`` packages), and
    ``extra`` (a description of what ``finish`` adds) when given."""
    spec = f"debootstrap --variant=minbase --include={','.join(include)} {DEBIAN_SUITE} {DEBIAN_MIRROR}"
    return hashlib.sha256((f"{spec}\n{extra}" if extra else spec).encode()).hexdigest()[:16]


def debian_rootfs_tar(
    cache_dir: Path = CACHE_DIR,
    progress: Progress = _quiet,
    *,
    include: tuple[str, ...] = BASE_INCLUDE,
    name: str = f"{DEBIAN_SUITE}-python3-",
    finish: Callable[[Path], None] | None = None,
    extra: str = "",
) -> Path:
    """A tarball of Debian bookworm (minbase) with the ``include`` packages (python3 by default),
    by ``debootstrap`` (needs root and Debian's archive), cached under ``cache_dir`` as
    ``<name><key>.tar`` by :func:`rootfs_key` of ``include`` and ``extra``. ``finish(root)``
    changes the tree before it is packed (``extra`` must then describe what it adds, so the key
    changes with it). Concurrent callers are serialized by a lock file."""
    import fcntl

    cache_dir.mkdir(parents=True, exist_ok=True)
    tar = cache_dir / f"{name}{rootfs_key(include, extra)}.tar"
    if tar.exists():
        return tar
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise IrisError("building a base image needs debootstrap (apt-get install debootstrap), or name one with --base")
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tar.exists():
            return tar
        progress(f"building a Debian {DEBIAN_SUITE} root filesystem with {', '.join(include)} (debootstrap, once; cached in {cache_dir})")
        root = Path(tempfile.mkdtemp(prefix="iris-rootfs-", dir=cache_dir))
        try:
            result = subprocess.run(
                [debootstrap, "--variant=minbase", f"--include={','.join(include)}", DEBIAN_SUITE, str(root), DEBIAN_MIRROR],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise IrisError(f"debootstrap failed: {(result.stderr or result.stdout).strip()[-1000:]}")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(root / junk, ignore_errors=True)
            if finish is not None:
                finish(root)
            partial = tar.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True)
            os.replace(partial, tar)
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
    return tar


def import_rootfs(api: Any, tar: Path, name: str) -> str:
    """``docker import`` a rootfs tarball as ``name`` unless the engine has it."""
    if _has_image(api, name):
        return name
    repository, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    with open(tar, "rb") as data:
        api.import_image_from_data(data, repository=repository, tag=tag, changes=['CMD ["/bin/sh"]'])
    if not _has_image(api, name):
        raise IrisError(f"docker import of {tar} did not produce {name}")
    return name


def _has_image(api: Any, name: str) -> bool:
    import docker

    try:
        api.inspect_image(name)
    except docker.errors.ImageNotFound:
        return False
    return True


# --- the workspace's wheels and their dependencies ---------------------------------------------


def find_workspace(start: Path | None = None) -> Path:
    """The Iris source workspace: ``start`` or a directory above it whose ``pyproject.toml``
    declares a uv workspace holding ``iris-core``; without ``start``, above the current directory
    or this installation (an editable install lives in its workspace)."""
    candidates = [Path(start).resolve()] if start else [Path.cwd().resolve(), Path(__file__).resolve()]
    for candidate in candidates:
        for directory in (candidate, *candidate.parents):
            if (directory / "iris-core" / "pyproject.toml").is_file() and (directory / "pyproject.toml").is_file():
                if "[tool.uv.workspace]" in (directory / "pyproject.toml").read_text():
                    return directory
    raise IrisError(
        "iris build needs the Iris source workspace (the directory holding iris-core/ and uv.lock); "
        f"{'--workspace ' + str(start) + ' is not one' if start else 'run it inside a checkout or pass --workspace'}"
    )


def _uv() -> str:
    found = shutil.which("uv") or next(
        (str(p) for p in (Path.home() / ".local" / "bin" / "uv",) if p.is_file()), None
    )
    if found is None:
        raise IrisError("iris build needs uv (pip install uv)")
    return found


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise IrisError(f"{what} failed: {detail[-1] if detail else f'exit status {result.returncode}'}")
    return result.stdout


def prepare_site(workspace: Path, site: Path, python_version: str, platform: str, progress: Progress = _quiet) -> list[str]:
    """Build the workspace's wheels and install them with their locked dependencies into ``site``
    for ``python_version`` on ``platform`` (``uv pip install --target``); return the wheels' names."""
    uv = _uv()
    wheels = site.parent / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    progress(f"building wheels of {', '.join(WORKSPACE_MEMBERS)} (uv build)")
    _run([uv, "build", "--all-packages", "--wheel", "--out-dir", str(wheels), "--quiet"], "uv build", cwd=workspace)
    built = sorted(p for p in wheels.glob("*.whl"))
    requirements = site.parent / "requirements.txt"
    progress("pinning dependencies from uv.lock (uv export)")
    _run(
        [uv, "export", "--frozen", "--no-dev", "--all-packages", "--no-emit-workspace", "--no-hashes", "--quiet", "-o", str(requirements)],
        "uv export",
        cwd=workspace,
    )
    progress(f"installing them for Python {python_version} on {platform} (uv pip install --target)")
    _run(
        [
            uv, "pip", "install", "--quiet", "--no-deps", "--target", str(site),
            "--python-version", python_version, "--python-platform", platform,
            "-r", str(requirements), *map(str, built),
        ],  # fmt: skip
        "uv pip install",
        cwd=workspace,
    )
    return [p.name for p in built]


# --- the image ---------------------------------------------------------------------------------


def dockerfile(base: str, kind: str) -> str:
    entrypoint = KINDS[kind][1]
    return (
        f"FROM {base}\n"
        f"COPY site {SITE}\n"
        "COPY iris /usr/local/bin/iris\n"
        f"ENV PYTHONPATH={SITE} PYTHONUNBUFFERED=1\n"
        f'LABEL org.opencontainers.image.title="iris-{kind}" org.opencontainers.image.description="{KINDS[kind][0]}"\n'
        # fails the build, not the first run, if the base's Python cannot import what was installed
        "RUN python3 -c 'import iris.cluster.worker.main, iris.cluster.controller.main, iris_cli.main, docker, grpc'\n"
        f"ENTRYPOINT {json.dumps(entrypoint)}\n"
    )


def _base_python(api: Any, base: str) -> str:
    """``X.Y`` of the base image's ``python3`` (run once, without a network)."""
    import docker

    try:
        container = api.create_container(
            base, command=["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], entrypoint=[],
            host_config=api.create_host_config(network_mode="none"),
        )  # fmt: skip
    except docker.errors.ImageNotFound:
        raise IrisError(f"base image {base!r} is not on this Docker engine; build or pull it first, or leave out --base") from None
    try:
        try:
            api.start(container["Id"])
        except docker.errors.APIError as exc:
            raise IrisError(f"base image {base!r} has no python3 (Iris needs Python >= 3.11 in it): {exc.explanation}") from None
        code = api.wait(container["Id"], timeout=120)["StatusCode"]
        out = api.logs(container["Id"]).decode(errors="replace").strip()
    finally:
        api.remove_container(container["Id"], force=True)
    if code != 0 or not re.fullmatch(r"3\.\d+", out):
        raise IrisError(f"base image {base!r} has no working python3 (Iris needs Python >= 3.11 in it): {out[-300:]}")
    if tuple(map(int, out.split("."))) < (3, 11):
        raise IrisError(f"base image {base!r} has Python {out}; Iris needs Python >= 3.11")
    return out


def _platform(api: Any) -> str:
    arch = str(api.info().get("Architecture") or "x86_64")
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    return f"{arch}-manylinux_2_28"


@contextmanager
def _context_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="iris-build-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def build_image(
    kind: str,
    tag: str,
    *,
    base: str | None = None,
    push: bool = False,
    workspace: Path | None = None,
    docker_host: str | None = None,
    progress: Progress = _quiet,
) -> str:
    """Build the ``kind`` image (``worker`` or ``controller``) as ``tag``; push it when asked.
    Returns the image id."""
    import docker

    if kind not in KINDS:
        raise IrisError(f"unknown image kind {kind!r}; choose one of: {', '.join(KINDS)}")
    workspace = find_workspace(workspace)
    url = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        api = docker.APIClient(base_url=url, version="auto", timeout=600)
    except docker.errors.DockerException as exc:
        from iris.runtime.docker import unreachable

        raise IrisError(unreachable(url, exc)) from None
    with closing(api):
        if base is None:
            base = import_rootfs(api, debian_rootfs_tar(progress=progress), DEFAULT_BASE)
            progress(f"base image: {base} (Debian {DEBIAN_SUITE}, made here)")
        else:
            progress(f"base image: {base}")
        python_version = _base_python(api, base)
        with _context_dir() as context:
            prepare_site(workspace, context / "site", python_version, _platform(api), progress)
            (context / "iris").write_text('#!/bin/sh\nexec python3 -m iris_cli "$@"\n')
            (context / "iris").chmod(0o755)
            (context / "Dockerfile").write_text(dockerfile(base, kind))
            progress(f"building {tag} (docker build)")
            image_id = _docker_build(api, context, tag, progress)
        if push:
            _docker_push(api, tag, progress)
    return image_id


def _docker_build(api: Any, context: Path, tag: str, progress: Progress) -> str:
    image_id = ""
    for event in api.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none", pull=False, decode=True):
        if "error" in event:
            raise IrisError(f"docker build of {tag} failed: {str(event['error']).strip()}")
        line = str(event.get("stream", "")).strip()
        if line.startswith("Step ") or line.startswith("Successfully"):
            progress(f"  {line}")
        if "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
            image_id = event["aux"]["ID"]
    if not image_id:
        image_id = api.inspect_image(tag)["Id"]
    return image_id


def _docker_push(api: Any, tag: str, progress: Progress) -> None:
    import docker

    from iris.job.types import image_registry_host
    from iris.runtime.artifact_registry import push_denied_hint

    repository, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    host = image_registry_host(repository)
    if host is None:
        progress(f"pushing {tag} to Docker Hub (the tag names no registry host)")
    else:
        progress(f"pushing {tag} to {host}")

    def failed(error: str) -> IrisError:
        hint = push_denied_hint(host, error)
        return IrisError(f"docker push of {tag} failed: {error}{'; ' + hint if hint else ''}")

    seen: set[tuple[str, str]] = set()
    try:
        # the SDK reads the user's Docker credentials (~/.docker/config.json and its helpers)
        events = api.push(repository, tag=version, stream=True, decode=True)
        for event in events:
            if "error" in event:
                raise failed(str(event["error"]).strip())
            status = str(event.get("status", ""))
            key = (str(event.get("id", "")), status)
            if status and status != "Pushing" and key not in seen:
                seen.add(key)
                progress(f"  {event['id'] + ': ' if event.get('id') else ''}{status}")
    except docker.errors.DockerException as exc:  # a credential helper that failed, a refused request
        raise failed(str(exc).strip()) from None
