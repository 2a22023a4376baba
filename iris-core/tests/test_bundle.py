"""Workspace bundles: deterministic, git-aware, size-limited, and safe to unpack."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from iris.bundle import bundle_problem, create_bundle, extract_bundle, list_workspace_files, split_bundle_url
from iris.job.records import BundleLimits
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


# --- hostile bundles: each refused, nothing written outside the destination ---------------------


def entry(name: str, data: bytes = b"x", *, mode: int = stat.S_IFREG | 0o644) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3  # unix: the high 16 bits of external_attr are st_mode
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    return entry(name, target.encode(), mode=stat.S_IFLNK | 0o777)


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def everything_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A directory holding the destination (``sandbox/task``); whatever a hostile bundle writes
    outside ``task`` would show up next to it."""
    (tmp_path / "box" / "task").mkdir(parents=True)
    return tmp_path / "box"


HOSTILE = {
    "parent path": ([entry("ok.txt"), entry("../escaped.txt")], "'../escaped.txt' escapes the task directory"),
    "nested parent path": ([entry("a/../../escaped.txt")], "escapes the task directory"),
    "absolute path": ([entry("/tmp/iris-test-absolute-escape.txt")], "escapes the task directory"),
    "backslash parent path": ([entry("..\\escaped.txt")], "escapes the task directory"),
    "absolute link": ([link("passwd", "/etc/passwd")], "symbolic link to the absolute path '/etc/passwd'"),
    "relative link outside": ([link("up", "../..")], "symbolic link to '../..', outside the task directory"),
    # each link stays inside as written; followed, the second climbs out through the first
    "link chain outside": (
        [link("p/q/d", "../.."), link("p/q/l", "d/../..")],
        "'p/q/l' is a symbolic link to 'd/../..', which leads outside the task directory",
    ),
    "file through a link": ([link("d", "."), entry("d/x.txt")], "'d' is both a file (or link) and a directory"),
    "fifo": ([entry("pipe", b"", mode=stat.S_IFIFO | 0o644)], "'pipe' is a FIFO"),
    "character device": ([entry("null", b"", mode=stat.S_IFCHR | 0o666)], "'null' is a character device"),
    "block device": ([entry("sda", b"", mode=stat.S_IFBLK | 0o660)], "'sda' is a block device"),
    "setuid": ([entry("su", b"#!/bin/sh\n", mode=stat.S_IFREG | 0o4755)], "'su' has mode 0o4755; setuid, setgid and sticky bits are refused"),
    "setgid": ([entry("sg", b"", mode=stat.S_IFREG | 0o2755)], "setuid, setgid and sticky bits are refused"),
    "same name twice": ([entry("a.txt", b"one"), entry("a.txt", b"two")], "'a.txt' appears twice"),
}


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case", list(HOSTILE))
def test_extract_bundle_hostile_entry_is_refused_and_nothing_lands_outside(sandbox: Path, case: str) -> None:
    entries, why = HOSTILE[case]
    archive = write_zip(sandbox.parent / "hostile.zip", entries)
    before = everything_under(sandbox.parent)
    assert bundle_problem(archive) is not None or case == "link chain outside"  # that one needs following
    with pytest.raises(BundleError) as raised:
        extract_bundle(archive, sandbox / "task")
    assert why in str(raised.value)
    outside = {p for p in everything_under(sandbox.parent) - before if not p.startswith("box/task")}
    assert outside == set()
    assert not Path("/tmp/iris-test-absolute-escape.txt").exists()
    # no link made by a refused bundle is left behind
    assert [p for p in (sandbox / "task").rglob("*") if p.is_symlink()] == []


def test_extract_bundle_link_inside_is_a_real_symlink(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "links.zip", [entry("lib/real.py", b"X = 1\n"), link("alias.py", "lib/real.py"), link("lib/self", ".")])
    assert bundle_problem(archive) is None
    dest = tmp_path / "out"
    extract_bundle(archive, dest)
    assert (dest / "alias.py").is_symlink() and os.readlink(dest / "alias.py") == "lib/real.py"
    assert (dest / "alias.py").read_text() == "X = 1\n"
    assert (dest / "lib/self").is_symlink()


def test_extract_bundle_modes_are_0755_or_0644_only(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "modes.zip",
        [entry("exec", mode=stat.S_IFREG | 0o777), entry("plain", mode=stat.S_IFREG | 0o666), entry("bare", mode=0)],
    )
    dest = tmp_path / "out"
    extract_bundle(archive, dest)
    assert {name: stat.S_IMODE((dest / name).stat().st_mode) for name in ("exec", "plain", "bare")} == {
        "exec": 0o755,
        "plain": 0o644,
        "bare": 0o644,
    }


def test_extract_bundle_over_the_size_limit_is_refused_before_writing(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "bomb.zip", [entry("zeros.bin", bytes(4_000_000))])
    assert archive.stat().st_size < 100_000  # a small zip that expands a lot
    dest = tmp_path / "out"
    with pytest.raises(BundleError) as raised:
        extract_bundle(archive, dest, BundleLimits(max_unpacked_bytes=1_000_000))
    assert str(raised.value) == (
        "the bundle unpacks to 4.0MB, over the limit of 1.0MB; raise bundle.max_unpacked_size in the cluster config to allow more"
    )
    assert everything_under(dest) == set()
    assert "bundle.max_unpacked_size" in (bundle_problem(archive, BundleLimits(max_unpacked_bytes=1_000_000)) or "")


def test_extract_bundle_lying_sizes_are_caught_while_writing(tmp_path: Path) -> None:
    """An entry whose header understates its size cannot unpack past it."""
    archive = write_zip(tmp_path / "liar.zip", [entry("big.bin", bytes(3_000_000))])
    raw = bytearray(archive.read_bytes())
    for marker in (b"PK\x03\x04", b"PK\x01\x02"):  # declared uncompressed size in both headers
        at = raw.index(marker)
        offset = at + (22 if marker == b"PK\x03\x04" else 24)
        raw[offset : offset + 4] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    dest = tmp_path / "out"
    with pytest.raises((BundleError, zipfile.BadZipFile)):
        extract_bundle(archive, dest, BundleLimits(max_unpacked_bytes=1_000_000))
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 1_000_000


def test_extract_bundle_over_the_file_count_limit_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "many.zip", [entry(f"f{i}.txt") for i in range(20)])
    with pytest.raises(BundleError) as raised:
        extract_bundle(archive, tmp_path / "out", BundleLimits(max_files=10))
    assert str(raised.value) == (
        "the bundle holds 20 entries, over the limit of 10; raise bundle.max_files in the cluster config to allow more"
    )
    assert everything_under(tmp_path / "out") == set()
