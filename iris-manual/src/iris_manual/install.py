"""``provider.options.install``: put Iris on a host that has Python but not Iris.

``install: true`` builds the wheels of the Iris this process runs from (its uv workspace, with
``uv build``); ``install: DIR`` takes them from a directory (``uv build --all-packages -o DIR``
in a checkout, or wheels downloaded with pip). The ``iris-core`` and ``iris-local`` wheels are
copied to the host over SSH and installed with pip into a virtualenv of the host's Python,
``<remote_dir>/.venv`` (dependencies from the host's package index, with ``provider.options.env``:
``PIP_INDEX_URL``, proxies, certificates). The virtualenv is kept for the next workers (and
reinstalled when the wheels change); remove it by hand to reclaim the space.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import paramiko

from iris.errors import ConfigError, PluginError
from iris_manual import ssh

WORKER_DISTRIBUTIONS = ("iris_core", "iris_local")  # what a worker process imports
VENV = ".venv"
_lock = threading.Lock()
_built: dict[str, list[Path]] = {}


def workspace_root() -> Path | None:
    """The uv workspace the running ``iris`` package comes from, or None (installed from wheels)."""
    import iris

    candidate = Path(iris.__file__).resolve().parents[3]  # <root>/iris-core/src/iris/__init__.py
    pyproject = candidate / "pyproject.toml"
    try:
        return candidate if "[tool.uv.workspace]" in pyproject.read_text() else None
    except OSError:
        return None


def wheels(setting: object, build_dir: Path) -> list[Path]:
    """The worker's wheels for ``provider.options.install`` (built once per process for ``true``)."""
    if isinstance(setting, str) and setting not in ("true", "yes"):
        directory = Path(setting).expanduser()
        found = sorted(p for p in directory.glob("*.whl") if p.name.split("-")[0] in WORKER_DISTRIBUTIONS)
        if {p.name.split("-")[0] for p in found} != set(WORKER_DISTRIBUTIONS):
            raise ConfigError(
                f"provider.options.install: {setting!r} has no iris_core and iris_local wheels; accepted: true (build them "
                "from the workspace Iris runs from) or a directory of wheels (uv build --all-packages -o DIR)"
            )
        return found
    root = workspace_root()
    if root is None:
        raise ConfigError(
            "provider.options.install: true builds Iris from the uv workspace it runs from, but this Iris is installed from "
            "wheels; set install to a directory holding the iris_core and iris_local wheels"
        )
    with _lock:
        if str(root) in _built:
            return _built[str(root)]
        uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
        if not Path(uv).exists():
            raise PluginError("provider.options.install: true needs uv to build the Iris wheels (pip install uv)")
        build_dir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="wheels-", dir=build_dir))
        for package in ("iris-core", "iris-local"):
            done = subprocess.run([uv, "build", "--wheel", "--package", package, "-o", str(out)], cwd=root, capture_output=True, text=True)
            if done.returncode != 0:
                raise PluginError(f"provider.options.install: uv build of {package} in {root} failed: {done.stderr.strip()[-500:]}")
        found = sorted(p for p in out.glob("*.whl") if p.name.split("-")[0] in WORKER_DISTRIBUTIONS)
        _built[str(root)] = found
        return found


def venv_python(root: str) -> str:
    return f"{root}/{VENV}/bin/python"


def install(client: paramiko.SSHClient, where: str, *, python: str, root: str, wheel_files: list[Path], env: dict[str, str]) -> str:
    """Install ``wheel_files`` into ``<root>/.venv`` on the host (unless the same wheels are there);
    return the virtualenv's python."""
    digest = hashlib.sha256(b"".join(hashlib.sha256(p.read_bytes()).digest() for p in wheel_files)).hexdigest()[:16]
    venv = f"{root}/{VENV}"
    status, out, _ = ssh.run(client, ["cat", f"{venv}/iris-wheels"], where)
    if status == 0 and out.strip() == digest:
        return venv_python(root)
    status, _, err = ssh.run(client, ["mkdir", "-p", f"{venv}-wheels"], where)
    if status != 0:
        raise ssh.SshError(f"{where}: cannot make {venv}-wheels: {err.strip()}")
    for wheel in wheel_files:  # over the exec channel: needs no SFTP subsystem on the host
        status, _, err = ssh.run(client, ["sh", "-c", f"cat > {_quote(f'{venv}-wheels/{wheel.name}')}"], where, stdin=wheel.read_bytes())
        if status != 0:
            raise ssh.SshError(f"{where}: copying {wheel.name} to {venv}-wheels failed: {err.strip()}")
    names = " ".join(_quote(f"{venv}-wheels/{w.name}") for w in wheel_files)
    v = _quote(venv)
    script = (
        f"set -e; {_quote(python)} -m venv {v}; {v}/bin/python -m pip install --quiet --disable-pip-version-check {names}; "
        f"echo {digest} > {v}/iris-wheels; rm -rf {_quote(venv + '-wheels')}"
    )
    exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
    status, _, err = ssh.run(client, ["sh", "-c", f"{'export ' + exports + '; ' if exports else ''}{script}"], where, timeout=900)
    if status != 0:
        last = (err.strip().splitlines() or ["(no output)"])[-1]
        raise PluginError(
            f"{where}: installing Iris into {venv} with {python} failed ({last}); the host's Python needs venv and pip "
            "(Debian: python3-venv) and its package index (provider.options.env: PIP_INDEX_URL, proxies)"
        )
    return venv_python(root)


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)
