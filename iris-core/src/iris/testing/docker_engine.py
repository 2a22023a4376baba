"""A private Docker engine and a base image for tests, with nothing pulled from the internet.

:class:`DockerEngine` starts ``dockerd`` with its own data root, exec root, socket and pid file
(no default bridge, no iptables: containers use host networking), and stops it again, removing
every file it made. :func:`base_image_tar` builds a Debian bookworm root filesystem with
``python3`` by ``debootstrap`` once and caches it as a tarball under
``~/.cache/iris-images/`` (keyed by a hash of what went into it; ``iris build`` shares it); :meth:`DockerEngine.import_image`
turns it into an image of a fresh engine in a few seconds.

:func:`ensure_installed` installs the Debian packages these need (``docker.io``,
``debootstrap``, ``docker-registry``) with ``apt-get`` when they are missing and this process
is root; :func:`missing_requirements` says why they cannot be had, for a skip message.

:class:`LocalRegistry` runs Debian's ``docker-registry`` on 127.0.0.1 with a temporary storage
directory; the engine pushes to 127.0.0.0/8 registries over plain HTTP without settings.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from iris.runtime.images import debian_rootfs_tar, rootfs_key

logger = logging.getLogger(__name__)

PACKAGES = {"dockerd": "docker.io", "debootstrap": "debootstrap", "docker-registry": "docker-registry"}
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


def _which(program: str) -> str | None:
    return shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def missing_requirements() -> list[str]:
    """The programs (with their Debian package) that are not installed."""
    return [f"{program} (Debian package {package})" for program, package in PACKAGES.items() if not _which(program)]


def ensure_installed() -> str | None:
    """Install what is missing with apt-get; None when everything is there, else why not."""
    missing = [package for program, package in PACKAGES.items() if not _which(program)]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"needs {', '.join(missing_requirements())}; not root, so apt-get cannot install them"
    if not _which("apt-get"):
        return f"needs {', '.join(missing_requirements())}; no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    logger.info("installing %s with apt-get", " ".join(missing))
    result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env, capture_output=True, text=True)
    if result.returncode != 0:  # a stale package index: update once and try again
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return f"apt-get install {' '.join(missing)} failed: {result.stderr.strip()[-500:]}"
    still = missing_requirements()
    return f"still missing after apt-get install: {', '.join(still)}" if still else None


# --- the base image ---------------------------------------------------------------------------


def base_image_key() -> str:
    return rootfs_key()


def base_image_tar() -> Path:
    """A tarball of Debian bookworm (minbase) with python3, built by debootstrap once and cached
    (see :func:`iris.runtime.images.debian_rootfs_tar`)."""
    return debian_rootfs_tar()


# --- the engine -------------------------------------------------------------------------------


class DockerEngine:
    """A ``dockerd`` of our own; ``url`` is its ``unix://`` socket (for ``DOCKER_HOST``)."""

    def __init__(self, base_dir: Path | None = None):
        # short paths: the socket path must fit in a sockaddr_un
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="iris-dockerd-"))
        self.socket_path = self.base_dir / "docker.sock"
        self.url = f"unix://{self.socket_path}"
        self._process: subprocess.Popen | None = None
        self._log = self.base_dir / "dockerd.log"

    def start(self) -> DockerEngine:
        for sub in ("data", "exec"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        argv = [
            _which("dockerd") or "dockerd",
            "--data-root", str(self.base_dir / "data"),
            "--exec-root", str(self.base_dir / "exec"),
            "--pidfile", str(self.base_dir / "dockerd.pid"),
            "-H", self.url,
            "--bridge=none",  # containers use host networking; nothing on private ranges
            "--iptables=false",
            "--ip-masq=false",
            "--storage-driver=overlay2",
            "--log-level=warn",
        ]  # fmt: skip
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self._process.returncode}: {self.log_tail()}")
            if self._ping():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT_SECONDS}s: {self.log_tail()}")

    def _ping(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(str(self.socket_path))
                s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b" 200 " in s.recv(64)
        except OSError:
            return False

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def client(self):  # type: ignore[no-untyped-def]
        import docker

        return docker.DockerClient(base_url=self.url, version="auto", timeout=300)

    def docker(self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run the ``docker`` CLI against this engine."""
        return subprocess.run(
            ["docker", "-H", self.url, *args], input=input, capture_output=True, check=check, timeout=timeout
        )

    def import_image(self, tar: Path, name: str) -> str:
        """``docker import`` a rootfs tarball as ``name`` (skipped if the engine has it)."""
        if self.docker("image", "inspect", name, check=False).returncode == 0:
            return name
        self.docker("import", "--change", 'CMD ["/bin/sh"]', str(tar), name)
        return name

    def remove_everything(self) -> None:
        """Remove every container of this engine (it is ours alone)."""
        ids = self.docker("ps", "-aq", check=False).stdout.decode().split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)

    def stop(self) -> None:
        """Stop the daemon (its containers die with it) and delete its files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                self.remove_everything()
            except Exception:
                logger.exception("removing the test engine's containers failed")
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        _unmount_under(self.base_dir)
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.base_dir)], check=False)


def _unmount_under(directory: Path) -> None:
    """Unmount whatever a dead daemon left mounted under ``directory`` (deepest first)."""
    prefix = str(directory.resolve()) + "/"
    try:
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


# --- a registry -------------------------------------------------------------------------------


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalRegistry:
    """Debian's ``docker-registry`` (distribution v2) on 127.0.0.1 with its own storage."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="iris-registry-"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    def start(self) -> LocalRegistry:
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'storage'}\n"
            f"http:\n  addr: {self.address}\n"
        )
        with open(self.dir / "registry.log", "wb") as log:
            self._process = subprocess.Popen(
                [_which("docker-registry") or "docker-registry", "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.dir / 'registry.log').read_text(errors='replace')[-1000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("docker-registry did not listen in time")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def workspace_key(workspace: Path) -> str:
    """A hash of what an image built from ``workspace`` holds: its members' files (tracked and
    untracked, not ignored, tests left out), the root ``pyproject.toml`` and ``uv.lock``."""
    import hashlib

    from iris.runtime.images import WORKSPACE_MEMBERS

    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z", "--", *WORKSPACE_MEMBERS, "pyproject.toml", "uv.lock"],
        cwd=workspace, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    digest = hashlib.sha256()
    for name in sorted(n for n in listed if n and "/tests/" not in f"/{n}"):
        path = workspace / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cached_worker_image(engine: DockerEngine, base: str) -> str:
    """``iris-worker:<workspace key>`` in ``engine``: loaded from its cached ``docker save``
    tarball, else built on ``base`` and saved there (others older than an hour are deleted: they
    are large, and another session may still be loading a recent one)."""
    import time

    from iris.runtime.images import CACHE_DIR, build_image, find_workspace

    workspace = find_workspace()
    key = workspace_key(workspace)
    local = f"iris-worker:{key}"
    tar = CACHE_DIR / f"iris-worker-{key}.tar"
    if engine.docker("image", "inspect", local, check=False).returncode == 0:
        return local
    if tar.exists():
        engine.docker("load", "-i", str(tar), timeout=600)
        return local
    build_image("worker", local, base=base, workspace=workspace, docker_host=engine.url)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in CACHE_DIR.glob("iris-worker-*.tar"):
        if time.time() - stale.stat().st_mtime > 3600:
            stale.unlink(missing_ok=True)
    partial = tar.with_name(f"{tar.name}.{os.getpid()}.partial")
    engine.docker("save", "-o", str(partial), local, timeout=600)
    os.replace(partial, tar)
    return local
