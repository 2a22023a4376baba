"""Shared helpers for the cross-distribution tests."""

from __future__ import annotations

import os
import subprocess
import sys
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
