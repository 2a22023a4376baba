"""The user's path: wheels built from this workspace, installed with pip into a fresh virtualenv,
as a user of a cloud provider installs them (``pip install iris-core iris-gcp iris-cli``): no
workspace, no editable installs, and no iris-local unless it is asked for.

The wheels are given to pip as files: PyPI holds an unrelated ``iris-core`` 0.1, which a bare
``pip install iris-core==0.1.0`` could pick instead of this workspace's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def user_env() -> dict[str, str]:
    """This process's environment without the workspace's virtualenv on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir)
    return env


def run(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=120
    )


def test_user_install_has_the_gcp_provider_and_not_the_local_one(gcp_user_venv: Path, tmp_path: Path) -> None:
    listing = run(gcp_user_venv, "iris", "plugins", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    names = {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}
    assert {"builtin", "gcp", "manual"} <= names
    assert "local" not in names
    installed = run(
        gcp_user_venv, "python", "-c",
        "import importlib.metadata as m, json; print(json.dumps(sorted(d.metadata['Name'] for d in m.distributions())))",
        cwd=tmp_path,
    )  # fmt: skip
    distributions = set(json.loads(installed.stdout))
    assert {"iris-core", "iris-gcp", "iris-cli", "google-cloud-tpu", "google-cloud-compute"} <= distributions
    assert "iris-local" not in distributions and "iris-workspace" not in distributions
    # the installed packages are the wheels' files, not this checkout's sources
    where = run(gcp_user_venv, "python", "-c", "import iris, iris_gcp; print(iris.__file__); print(iris_gcp.__file__)", cwd=tmp_path)
    assert all(str(gcp_user_venv) in line for line in where.stdout.split()), where.stdout


def test_user_install_without_iris_local_says_how_to_get_the_local_provider(gcp_user_venv: Path, tmp_path: Path) -> None:
    result = run(gcp_user_venv, "iris", "run", "--provider", "local", "--", "true", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "iris: error: unknown provider 'local'; choose one of: gcp, manual; install the iris-local distribution (pip install iris-local)"
    ]


def test_user_install_help_imports_no_google_or_docker_library(gcp_user_venv: Path, tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from iris_cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('google', 'docker', 'paramiko')))\n"
        "print('HEAVY', heavy)\n"
    )
    result = run(gcp_user_venv, "python", "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout
