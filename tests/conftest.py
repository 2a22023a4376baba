"""Shared helpers for the cross-distribution tests, and the user's install (``gcp_user_venv``:
the workspace's wheels pip-installed into a fresh virtualenv, once per session) that
``test_user_install.py`` and ``test_gcp_end_to_end.py`` both use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

IRIS = str(Path(sys.executable).parent / "iris")


def run_iris(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY")}
    full_env.update(env or {})
    return subprocess.run([IRIS, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def iris() -> object:
    """``iris(*args, cwd=...)`` runs the iris command and returns the CompletedProcess."""
    return run_iris


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


IRIS_CORE = Path(__file__).resolve().parents[1] / "iris-core"


def declare_iris(workspace: Path) -> Path:
    """Make ``workspace`` a project that depends on iris-core (this checkout's, editable), as a
    workspace whose tasks import iris must be: a task runs with what its workspace declares."""
    (workspace / "pyproject.toml").write_text(
        "[project]\n"
        'name = "iris-test-tasks"\n'
        'version = "0"\n'
        'requires-python = ">=3.11"\n'
        'dependencies = ["iris-core"]\n\n'
        "[tool.uv.sources]\n"
        f'iris-core = {{ path = "{IRIS_CORE}", editable = true }}\n'
    )
    return workspace


@pytest.fixture
def iris_workspace(workspace: Path) -> Path:
    """A workspace whose tasks can import iris (see :func:`declare_iris`)."""
    return declare_iris(workspace)


# --- the user's install: wheels in a fresh virtualenv -----------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _uv() -> str:
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("uv is not installed (scripts/dev installs it)")
    return uv


@pytest.fixture(scope="session")
def workspace_wheels() -> Iterator[Path]:
    """Every distribution of this workspace built as a wheel (``uv build --all-packages``)."""
    out = Path(tempfile.mkdtemp(prefix="iris-wheels-"))
    try:
        subprocess.run(
            [_uv(), "build", "--all-packages", "--wheel", "--project", str(ROOT), "--out-dir", str(out), "--quiet"],
            check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def wheel(wheels: Path, distribution: str) -> str:
    (found,) = wheels.glob(f"{distribution.replace('-', '_')}-*.whl")
    return str(found)


@pytest.fixture(scope="session")
def gcp_user_venv(workspace_wheels: Path) -> Iterator[Path]:
    """A fresh virtualenv with ``iris-core iris-gcp iris-cli`` (and what they depend on) installed
    by pip from the built wheels and the package index."""
    venv = Path(tempfile.mkdtemp(prefix="iris-user-venv-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
        wheels = [wheel(workspace_wheels, d) for d in ("iris-core", "iris-gcp", "iris-manual", "iris-cli")]
        result = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wheels],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"pip install of the wheels failed:\n{result.stderr[-3000:]}")
        yield venv
    finally:
        shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture(scope="session")
def user_env() -> dict[str, str]:
    """This process's environment without the workspace's virtualenv on PATH (a user's shell)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir)
    return env
