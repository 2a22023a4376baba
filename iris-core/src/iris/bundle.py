"""Workspace bundles: a deterministic zip of the workspace, named by its sha256.

Created on the client (``create_bundle``), unpacked on the worker (``extract_bundle``) with
every path checked to stay inside the destination.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import subprocess
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import attrs

from iris.job.types import format_memory
from iris.errors import BundleError

DEFAULT_MAX_BUNDLE_BYTES = 100 * 1000 * 1000
DEFAULT_EXCLUDES = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "__pycache__",
    "*.pyc",
    "*.pyo",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    "node_modules",
    ".DS_Store",
    ".iris",
    "*.egg-info",
)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@attrs.frozen
class Bundle:
    bundle_id: str
    data: bytes
    file_count: int


def _excluded(rel: PurePosixPath, excludes: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in excludes)


def list_workspace_files(workspace: Path, excludes: tuple[str, ...] = DEFAULT_EXCLUDES) -> list[Path]:
    """Files to ship: ``git ls-files`` (tracked plus untracked, not ignored) in a git work tree,
    else every file not matching ``excludes``. Paths are relative to ``workspace``."""
    workspace = workspace.resolve()
    files: list[Path] | None = None
    if (workspace / ".git").exists() or _inside_git(workspace):
        try:
            out = subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=workspace,
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
            files = [Path(p) for p in out.decode().split("\0") if p]
        except (OSError, subprocess.SubprocessError):
            files = None
    if files is None:
        files = []
        for root, dirs, names in os.walk(workspace):
            rel_root = Path(root).relative_to(workspace)
            dirs[:] = sorted(d for d in dirs if not _excluded(PurePosixPath((rel_root / d).as_posix()), excludes))
            files.extend(rel_root / n for n in names)
    kept = []
    for rel in files:
        if _excluded(PurePosixPath(rel.as_posix()), excludes):
            continue
        full = workspace / rel
        if full.is_file() and not full.is_symlink():
            kept.append(rel)
    return sorted(set(kept))


def _inside_git(path: Path) -> bool:
    return any((p / ".git").exists() for p in path.parents)


# progress(files done, files in all, bytes done), called while a bundle is made
BundleProgress = Callable[[int, int, int], None]


def create_bundle(
    workspace: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
    excludes: tuple[str, ...] = DEFAULT_EXCLUDES,
    progress: BundleProgress | None = None,
    progress_after: float = 1.0,
    progress_every: float = 0.5,
) -> Bundle:
    """Zip the workspace deterministically (sorted names, fixed timestamps), so identical
    content always gives the same id. Refuses, naming the largest files, past ``max_bytes``.
    ``progress`` hears how far it is once it has taken ``progress_after`` seconds, then every
    ``progress_every`` seconds, and once at the end if it heard anything before."""
    workspace = Path(workspace)
    if not workspace.is_dir():
        raise BundleError(f"workspace {workspace} is not a directory")
    files = list_workspace_files(workspace, excludes)
    sizes = []
    total = 0
    for rel in files:
        try:
            size = (workspace / rel).stat().st_size
        except FileNotFoundError:  # removed since it was listed (a build or a daemon's files churn)
            continue
        except OSError as exc:
            raise BundleError(f"cannot read {workspace / rel}: {exc.strerror}; exclude it (.gitignore) or fix its permissions") from None
        sizes.append((size, rel))
        total += size
    if total > max_bytes:
        largest = ", ".join(f"{rel} ({format_memory(size)})" for size, rel in sorted(sizes, reverse=True)[:5])
        raise BundleError(
            f"workspace {workspace} holds {format_memory(total)} in {len(files)} files, over the bundle limit of "
            f"{format_memory(max_bytes)}; largest: {largest}. Exclude them (.gitignore) or raise the limit"
        )
    buffer = io.BytesIO()
    started = time.monotonic()
    next_report = started + progress_after
    reported = False
    done_bytes = 0
    ordered = sorted(sizes, key=lambda s: s[1].as_posix())
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for done, (size, rel) in enumerate(ordered, 1):
            full = workspace / rel
            info = zipfile.ZipInfo(rel.as_posix(), date_time=_ZIP_DATE)
            info.external_attr = (0o755 if os.access(full, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            try:
                content = full.read_bytes()
            except FileNotFoundError:  # removed since it was listed
                continue
            except OSError as exc:
                raise BundleError(f"cannot read {full}: {exc.strerror}; exclude it (.gitignore) or fix its permissions") from None
            zf.writestr(info, content)
            done_bytes += size
            if progress is not None and time.monotonic() >= next_report:
                progress(done, len(ordered), done_bytes)
                reported = True
                next_report = time.monotonic() + progress_every
    if progress is not None and reported:
        progress(len(ordered), len(ordered), done_bytes)
    data = buffer.getvalue()
    return Bundle(hashlib.sha256(data).hexdigest(), data, len(ordered))


# What zipfile and zlib raise on bytes that are not a readable zip.
BAD_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)


def bundle_problem(source: Path | BinaryIO) -> str | None:
    """Why a bundle (a path or a readable binary file) could never be unpacked: not a zip, or an
    entry that names a path outside its directory. None if it is fine."""
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
    except BAD_ZIP_ERRORS as exc:
        return str(exc) or type(exc).__name__
    for name in names:
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or "\0" in name:
            return f"entry {name!r} escapes the task directory"
    return None


def extract_bundle(zip_path: Path, dest: Path) -> None:
    """Unpack a bundle into ``dest``, refusing any entry that would land outside it."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if target != dest and dest not in target.parents:
                raise BundleError(f"bundle entry {info.filename!r} escapes the task directory; refusing to unpack")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode)


def split_bundle_url(url: str) -> tuple[str, str]:
    """``<prefix>/<bundle_id>.zip`` -> (prefix, bundle_id)."""
    prefix, _, name = url.rpartition("/")
    if not prefix or not name.endswith(".zip"):
        raise BundleError(f"bundle URL {url!r} is not of the form <prefix>/<sha256>.zip")
    return prefix, name.removesuffix(".zip")
