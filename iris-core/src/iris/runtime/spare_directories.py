"""Emptied directories kept for reuse: the worker's attempt directories and the process
runtime's container directories.

Making a directory and its files costs an inode each; on some filesystems (ext4 here) that is
far dearer than reusing an emptied one. An ended attempt's directory is therefore emptied and
kept (at most ``limit`` of them), and the next start renames one into place. Only a caller that
knows nothing of the attempt still runs (its processes, and whatever they left, are gone) may
recycle its directory: a process holding a file there could write into the next attempt's.

Emptying keeps the files named in ``keep_files`` only while they are empty, and the directories
named in ``keep_dirs``, emptied; everything else goes. A file with content is unlinked, not
truncated: on ext4, truncating a file to zero makes the next close of it after a write flush it
to disk (``auto_da_alloc``, the "replace by truncate" heuristic), which costs more CPU than a new
inode, and a wait for the disk. A file made new has no such flag, and one unlinked before it
reaches the disk never costs a write. Writers of kept files open them without ``O_TRUNC`` (they
are empty): a truncate, even of an empty file, sets the same flag.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

__all__ = ["SpareDirectories", "empty_tree", "open_empty"]


def empty_tree(directory: Path | str, keep: bool = False) -> None:
    """Remove ``directory`` and what is in it (with ``keep``, only what is in it); a flat
    directory of files and empty directories (the common case) without the cost of a full
    ``rmtree``. A missing directory is not an error; with ``keep``, an error is raised."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    try:
                        os.rmdir(entry.path)  # an empty one (a tmp/ the task did not use)
                    except OSError:
                        shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        if not keep:
            os.rmdir(directory)
    except FileNotFoundError:
        pass
    except OSError:
        if keep:
            raise
        shutil.rmtree(directory, ignore_errors=True)


class SpareDirectories:
    """Up to ``limit`` emptied directories under ``spare_dir``, taken by :meth:`take` and given
    back by :meth:`recycle`; see the module docstring. Thread-safe."""

    def __init__(
        self, spare_dir: Path, limit: int, keep_files: frozenset[str] = frozenset(), keep_dirs: frozenset[str] = frozenset()
    ):
        self.spare_dir = Path(spare_dir)
        self._limit = limit
        self._keep_files = keep_files
        self._keep_dirs = keep_dirs
        self._lock = threading.Lock()
        self._spares: list[Path] = []
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._spares)

    def recycle(self, directory: Path) -> bool:
        """Empty ``directory`` and keep it for a later :meth:`take`. False (the caller removes
        it) when ``limit`` spares are kept already, after :meth:`close`, or when it cannot be
        emptied or moved."""
        with self._lock:
            if len(self._spares) >= self._limit or self._closed:
                return False
        spare = self.spare_dir / os.path.basename(directory)
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name in self._keep_dirs:
                            empty_tree(entry.path, keep=True)
                        else:
                            shutil.rmtree(entry.path)
                        continue
                    if entry.name in self._keep_files and entry.is_file(follow_symlinks=False):
                        stat = entry.stat(follow_symlinks=False)
                        if stat.st_size == 0 and stat.st_nlink == 1:  # empty, and linked nowhere else
                            continue
                    os.unlink(entry.path)
            self.spare_dir.mkdir(parents=True, exist_ok=True)
            os.rename(directory, spare)
        except OSError:
            return False
        with self._lock:
            if not self._closed:
                self._spares.append(spare)
                return True
        shutil.rmtree(spare, ignore_errors=True)  # closed meanwhile
        return True

    def take(self, directory: Path) -> bool:
        """Rename a spare directory to ``directory`` (which must not exist); False if there is none."""
        while True:
            with self._lock:
                if not self._spares:
                    return False
                spare = self._spares.pop()
            try:
                os.rename(spare, directory)
                return True
            except OSError:
                shutil.rmtree(spare, ignore_errors=True)

    def close(self) -> None:
        """Remove every spare; later recycles are refused."""
        with self._lock:
            self._closed = True
            self._spares.clear()
        shutil.rmtree(self.spare_dir, ignore_errors=True)


def open_empty(path: Path | str) -> int:
    """A write descriptor of ``path``, made if missing, without ``O_TRUNC`` (see the module
    docstring); a file that is not empty is truncated after all."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd
