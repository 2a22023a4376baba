"""Workspace bundles: a deterministic zip of the workspace, named by its sha256.

Created on the client (``create_bundle``), unpacked on the worker (``extract_bundle``) with
every path checked to stay inside the destination, only files, directories and links that stay
inside, no setuid bits, and at most :class:`~iris.job.records.BundleLimits` bytes and entries.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import posixpath
import stat
import subprocess
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import attrs

from iris.errors import BundleError
from iris.job.records import BundleLimits
from iris.job.types import format_memory

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
BAD_ZIP_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, IndexError
)  # fmt: skip
MAX_LINK_TARGET = 4096
_REFUSED_KINDS = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def _show(name: str, limit: int = 200) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "...")


@attrs.frozen
class _Entry:
    info: zipfile.ZipInfo
    path: PurePosixPath  # relative to the destination, normalized
    kind: str  # "file", "dir" or "link"
    mode: int  # what a file gets: 0o755 if the user's file was executable, else 0o644


def _entries(zf: zipfile.ZipFile, limits: BundleLimits | None) -> list[_Entry]:
    """Every entry, checked before anything is written: a relative path that stays inside the
    destination, a file, directory or symbolic link (never a device, FIFO or socket), no setuid,
    setgid or sticky bit, no name twice, no file that is also a directory, and (with ``limits``)
    no more entries or declared bytes than allowed."""
    infos = zf.infolist()
    if limits is not None and len(infos) > limits.max_files:
        raise BundleError(
            f"the bundle holds {len(infos)} entries, over the limit of {limits.max_files}; "
            "raise bundle.max_files in the cluster config to allow more"
        )
    entries: list[_Entry] = []
    leaves: set[PurePosixPath] = set()
    parents: set[PurePosixPath] = set()
    declared = 0
    for info in infos:
        name = info.filename
        if not name:  # zipfile itself fails on it (ZipInfo.is_dir)
            raise BundleError("an entry has an empty name")
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or "\0" in name:
            raise BundleError(f"entry {_show(name)} escapes the task directory")
        st = info.external_attr >> 16 if info.create_system == 3 else 0
        kind_bits = stat.S_IFMT(st)
        if kind_bits in _REFUSED_KINDS:
            raise BundleError(f"entry {_show(name)} is {_REFUSED_KINDS[kind_bits]}; a bundle holds only files, directories and symbolic links")
        if st & 0o7000:
            raise BundleError(f"entry {_show(name)} has mode {st & 0o7777:#o}; setuid, setgid and sticky bits are refused")
        if kind_bits == stat.S_IFLNK:
            kind = "link"
            if info.file_size > MAX_LINK_TARGET:
                raise BundleError(f"entry {_show(name)} is a symbolic link with a {info.file_size}-byte target; at most {MAX_LINK_TARGET}")
        elif info.is_dir() or kind_bits == stat.S_IFDIR:
            kind = "dir"
        elif kind_bits in (0, stat.S_IFREG):
            kind = "file"
        else:
            raise BundleError(f"entry {_show(name)} has an unknown file type ({kind_bits:#o})")
        if not pure.parts:  # "./": the destination itself
            continue
        if kind == "dir":
            parents.add(pure)
        else:
            if pure in leaves:
                raise BundleError(f"entry {_show(name)} appears twice in the bundle")
            leaves.add(pure)
            declared += info.file_size
        parents.update(pure.parents)
        entries.append(_Entry(info, pure, kind, 0o755 if st & 0o100 else 0o644))
    clash = leaves & parents
    if clash:
        raise BundleError(f"entry {_show(str(min(clash)))} is both a file (or link) and a directory")
    if limits is not None and declared > limits.max_unpacked_bytes:
        raise BundleError(_size_message(declared, limits))
    return entries


def _size_message(size: int, limits: BundleLimits, *, partial: bool = False) -> str:
    """``partial``: ``size`` is what was written when the limit was crossed, not the whole."""
    return (
        f"the bundle unpacks to {'more than ' if partial else ''}{format_memory(size)}, over the limit of "
        f"{format_memory(limits.max_unpacked_bytes)}; raise bundle.max_unpacked_size in the cluster config to allow more"
    )


def _link_target(zf: zipfile.ZipFile, entry: _Entry) -> str:
    """The target a link entry names, refused if it is absolute or leads out of the destination
    (as written: a final check after unpacking follows the links themselves)."""
    target = zf.read(entry.info).decode("utf-8", "surrogateescape")
    name = _show(entry.info.filename)
    if not target or "\0" in target:
        raise BundleError(f"entry {name} is a symbolic link with an empty or invalid target")
    if target.startswith("/"):
        raise BundleError(f"entry {name} is a symbolic link to the absolute path {_show(target)}; links must stay inside the task directory")
    if posixpath.normpath(posixpath.join(str(entry.path.parent), target)).split("/")[0] == "..":
        raise BundleError(f"entry {name} is a symbolic link to {_show(target)}, outside the task directory")
    return target


def bundle_problem(source: Path | BinaryIO, limits: BundleLimits | None = None) -> str | None:
    """Why a bundle (a path or a readable binary file) could never be unpacked: not a zip, or an
    entry :func:`extract_bundle` refuses (checked as written, without unpacking). None if it is fine."""
    try:
        with zipfile.ZipFile(source) as zf:
            for entry in _entries(zf, limits):
                if entry.kind == "link":
                    _link_target(zf, entry)
    except BundleError as exc:
        return str(exc)
    except BAD_ZIP_ERRORS as exc:
        return str(exc) or type(exc).__name__
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def extract_bundle(source: Path | BinaryIO, dest: Path, limits: BundleLimits = BundleLimits()) -> None:
    """Unpack a bundle into ``dest`` and nowhere else.

    Every entry is checked first (:func:`_entries`); then files and directories are written
    (never through a link: links are made last), counting the bytes really written against
    ``limits``; then each link is made and followed, and refused if it leads out of ``dest``.
    A file's mode is 0755 if the user's file was executable, else 0644. Raises BundleError."""
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    root = str(dest)
    made_dirs: set[Path] = {dest}

    def make_dir(path: Path) -> None:
        if path in made_dirs:
            return
        path.mkdir(parents=True, exist_ok=True)
        if not _inside(os.path.realpath(path), root):
            raise BundleError(f"directory {_show(str(path.relative_to(dest)))} leads outside the task directory")
        made_dirs.add(path)

    with zipfile.ZipFile(source) as zf:
        entries = _entries(zf, limits)
        written = 0
        links: list[tuple[_Entry, Path, str]] = []
        for entry in entries:
            target = dest.joinpath(*entry.path.parts)
            if entry.kind == "dir":
                make_dir(target)
                continue
            make_dir(target.parent)
            if entry.kind == "link":
                links.append((entry, target, _link_target(zf, entry)))
                continue
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out, zf.open(entry.info) as src:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > limits.max_unpacked_bytes:
                        raise BundleError(_size_message(written, limits, partial=True))
                    out.write(chunk)
                os.fchmod(out.fileno(), entry.mode)
        made: list[Path] = []
        try:
            for entry, target, link in links:
                os.symlink(link, target)
                made.append(target)
            for entry, target, link in links:
                if not _inside(os.path.realpath(target), root):
                    raise BundleError(
                        f"entry {_show(entry.info.filename)} is a symbolic link to {_show(link)}, which leads outside the task directory"
                    )
        except BaseException:
            for path in made:
                path.unlink(missing_ok=True)
            raise


def split_bundle_url(url: str) -> tuple[str, str]:
    """``<prefix>/<bundle_id>.zip`` -> (prefix, bundle_id)."""
    prefix, _, name = url.rpartition("/")
    if not prefix or not name.endswith(".zip"):
        raise BundleError(f"bundle URL {url!r} is not of the form <prefix>/<sha256>.zip")
    return prefix, name.removesuffix(".zip")
