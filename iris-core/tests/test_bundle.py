"""Workspace bundles: deterministic, git-aware, size-limited, and safe to unpack."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from iris.bundle import create_bundle, extract_bundle, list_workspace_files, split_bundle_url
from iris.errors import BundleError

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable on PATH")


def make_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def names(data: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / "names.zip"
    path.write_bytes(data)
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def git(workspace: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=workspace, check=True, capture_output=True)


def test_create_bundle_same_content_gives_same_id(tmp_path: Path) -> None:
    files = {"main.py": "print('hi')\n", "pkg/mod.py": "X = 1\n", "data/blob.bin": os.urandom(2048)}
    first = make_tree(tmp_path / "one", files)
    second = make_tree(tmp_path / "two", files)
    os.utime(second / "main.py", (1_000_000, 1_000_000))  # different timestamps, same bytes
    a, b = create_bundle(first), create_bundle(second)
    assert a.bundle_id == b.bundle_id
    assert a.data == b.data
    assert a.file_count == 3
    assert create_bundle(first).bundle_id == a.bundle_id


def test_create_bundle_changed_content_gives_new_id(tmp_path: Path) -> None:
    workspace = make_tree(tmp_path / "ws", {"main.py": "print(1)\n"})
    before = create_bundle(workspace).bundle_id
    (workspace / "main.py").write_text("print(2)\n")
    assert create_bundle(workspace).bundle_id != before


def test_create_bundle_outside_git_skips_default_excludes(tmp_path: Path) -> None:
    workspace = make_tree(
        tmp_path / "ws",
        {
            "main.py": "",
            "pkg/__init__.py": "",
            "pkg/__pycache__/mod.cpython-311.pyc": b"\0",
            "stray.pyc": b"\0",
            ".venv/lib/site.py": "",
            "node_modules/x/index.js": "",
            "pkg.egg-info/PKG-INFO": "",
            "docs/readme.md": "",
        },
    )
    bundle = create_bundle(workspace)
    assert sorted(names(bundle.data, tmp_path)) == ["docs/readme.md", "main.py", "pkg/__init__.py"]
    assert bundle.file_count == 3


@needs_git
def test_create_bundle_in_git_repo_honours_gitignore(tmp_path: Path) -> None:
    workspace = make_tree(
        tmp_path / "repo",
        {
            ".gitignore": "secret.txt\nbuild/\n",
            "tracked.py": "",
            "untracked.py": "",
            "secret.txt": "password",
            "build/out.bin": b"\0",
            "pkg/__pycache__/x.pyc": b"\0",
        },
    )
    git(workspace, "init", "-q")
    git(workspace, "add", "tracked.py", ".gitignore")
    listed = [p.as_posix() for p in list_workspace_files(workspace)]
    assert listed == [".gitignore", "tracked.py", "untracked.py"]
    assert sorted(names(create_bundle(workspace).data, tmp_path)) == listed


@needs_git
def test_create_bundle_in_git_subdirectory_bundles_only_that_subdirectory(tmp_path: Path) -> None:
    repo = make_tree(tmp_path / "repo", {".gitignore": "*.log\n", "top.py": "", "sub/inner.py": "", "sub/run.log": ""})
    git(repo, "init", "-q")
    assert [p.as_posix() for p in list_workspace_files(repo / "sub")] == ["inner.py"]


def test_create_bundle_over_limit_raises_listing_largest_files(tmp_path: Path) -> None:
    workspace = make_tree(
        tmp_path / "ws",
        {"big.bin": b"b" * 5000, "medium.bin": b"m" * 3000, "small.txt": "s", "code.py": "x = 1\n"},
    )
    with pytest.raises(BundleError) as excinfo:
        create_bundle(workspace, max_bytes=1000)
    message = str(excinfo.value)
    assert "largest: big.bin (5.0KB), medium.bin (3.0KB)" in message
    assert "over the bundle limit of 1.0KB" in message
    assert ".gitignore" in message


def test_create_bundle_not_a_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is not a directory"):
        create_bundle(tmp_path / "missing")


def test_extract_bundle_round_trip_preserves_content_and_executable_bit(tmp_path: Path) -> None:
    workspace = make_tree(tmp_path / "ws", {"run.sh": "#!/bin/sh\necho hi\n", "data/plain.txt": "plain", "empty": ""})
    (workspace / "run.sh").chmod(0o755)
    (workspace / "data/plain.txt").chmod(0o644)
    bundle = create_bundle(workspace)
    archive = tmp_path / f"{bundle.bundle_id}.zip"
    archive.write_bytes(bundle.data)
    dest = tmp_path / "out"
    extract_bundle(archive, dest)
    assert (dest / "run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert (dest / "data/plain.txt").read_text() == "plain"
    assert (dest / "empty").read_bytes() == b""
    assert os.access(dest / "run.sh", os.X_OK)
    assert not os.access(dest / "data/plain.txt", os.X_OK)


@pytest.mark.parametrize("entry", ["../evil", "ok/../../evil", "/tmp/iris-absolute-evil"])
def test_extract_bundle_entry_escaping_destination_is_refused(tmp_path: Path, entry: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", "fine")
        zf.writestr(zipfile.ZipInfo(entry), "evil")
    with zipfile.ZipFile(archive) as zf:
        assert entry in zf.namelist()  # the hostile name is stored as written
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match="escapes the task directory"):
        extract_bundle(archive, dest)
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/iris-absolute-evil").exists()


def test_split_bundle_url_returns_prefix_and_id() -> None:
    assert split_bundle_url("gs://bucket/prefix/abc123.zip") == ("gs://bucket/prefix", "abc123")
    assert split_bundle_url("file:///var/iris/bundles/ff.zip") == ("file:///var/iris/bundles", "ff")


@pytest.mark.parametrize("url", ["abc.zip", "gs://bucket/abc.tar", ""])
def test_split_bundle_url_malformed_raises(url: str) -> None:
    with pytest.raises(BundleError, match="is not of the form"):
        split_bundle_url(url)


def test_create_bundle_skips_a_file_gone_before_it_is_read(tmp_path: Path) -> None:
    """A dangling symlink is listed but cannot be read, like a file removed while bundling (a
    build's or a daemon's churning files): it is left out instead of failing the bundle."""
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "gone").symlink_to(tmp_path / "no-such-file")
    bundle = create_bundle(tmp_path)
    with zipfile.ZipFile(io.BytesIO(bundle.data)) as zf:
        assert zf.namelist() == ["a.txt"]
    assert bundle.file_count == 1
