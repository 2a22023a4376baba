"""The one helper both the worker and the process runtime reuse ended attempts' directories with."""

from __future__ import annotations

import os
from pathlib import Path

from iris.runtime.spare_directories import SpareDirectories, open_empty


def _litter(directory: Path) -> None:
    directory.mkdir()
    (directory / "stdout").write_bytes(b"")  # kept: empty
    (directory / "exit_code").write_text("0\n")  # named, but has content: made anew
    (directory / "left").write_text("")  # not named: goes
    (directory / "tmp").mkdir()
    (directory / "tmp" / "t").write_text("t")
    (directory / "tmp" / "d").mkdir()
    (directory / "other").mkdir()


def test_spare_directories_recycled_directory_keeps_only_empty_named_files_and_named_directories(tmp_path: Path) -> None:
    spares = SpareDirectories(tmp_path / "spare", 4, keep_files=frozenset({"stdout", "exit_code"}), keep_dirs=frozenset({"tmp"}))
    _litter(tmp_path / "a")
    stdout_inode = os.stat(tmp_path / "a" / "stdout").st_ino
    assert spares.recycle(tmp_path / "a") and not (tmp_path / "a").exists() and len(spares) == 1
    assert spares.take(tmp_path / "b") and len(spares) == 0
    assert sorted(os.listdir(tmp_path / "b")) == ["stdout", "tmp"]
    assert os.listdir(tmp_path / "b" / "tmp") == []
    assert os.stat(tmp_path / "b" / "stdout").st_ino == stdout_inode  # the same file, not a new one
    assert not spares.take(tmp_path / "c") and not (tmp_path / "c").exists()


def test_spare_directories_file_linked_elsewhere_is_let_go_not_emptied(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("")
    spares = SpareDirectories(tmp_path / "spare", 4, keep_files=frozenset({"stdout"}))
    (tmp_path / "a").mkdir()
    os.link(precious, tmp_path / "a" / "stdout")
    assert spares.recycle(tmp_path / "a")
    assert spares.take(tmp_path / "b")
    assert os.listdir(tmp_path / "b") == [] and precious.exists()


def test_spare_directories_over_the_limit_or_closed_refuses_and_close_removes_spares(tmp_path: Path) -> None:
    spares = SpareDirectories(tmp_path / "spare", 1)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    assert spares.recycle(tmp_path / "a")
    assert not spares.recycle(tmp_path / "b") and (tmp_path / "b").exists()  # the caller removes it
    spares.close()
    assert not (tmp_path / "spare").exists()
    assert not spares.recycle(tmp_path / "c") and (tmp_path / "c").exists()
    assert not spares.take(tmp_path / "d")


def test_open_empty_makes_a_missing_file_and_empties_one_with_content(tmp_path: Path) -> None:
    with open(open_empty(tmp_path / "new"), "wb") as f:
        f.write(b"x")
    assert (tmp_path / "new").read_bytes() == b"x"
    with open(open_empty(tmp_path / "new"), "wb") as f:
        f.write(b"y")
    assert (tmp_path / "new").read_bytes() == b"y"
