"""The user's path: wheels built from this workspace, installed with pip into a fresh virtualenv,
as a user of a cloud provider installs them (``pip install iris-core iris-gcp iris-cli``): no
workspace, no editable installs, and no iris-local unless it is asked for.

The fixtures (``workspace_wheels``, ``gcp_user_venv``, one per session) are in ``conftest.py``,
shared with the end-to-end test of the gcp provider (``test_gcp_end_to_end.py``).

The wheels are given to pip as files: PyPI holds an unrelated ``iris-core`` 0.1, which a bare
``pip install iris-core==0.1.0`` could pick instead of this workspace's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from iris.testing.processes import cli_import_probe


def run(venv: Path, *argv: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_user_install_has_the_gcp_provider_and_not_the_local_one(gcp_user_venv: Path, user_env: dict[str, str], tmp_path: Path) -> None:
    listing = run(gcp_user_venv, "iris", "plugins", cwd=tmp_path, env=user_env)
    assert listing.returncode == 0, listing.stderr
    names = {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}
    assert {"builtin", "gcp", "manual"} <= names
    assert "local" not in names
    installed = run(
        gcp_user_venv, "python", "-c",
        "import importlib.metadata as m, json; print(json.dumps(sorted(d.metadata['Name'] for d in m.distributions())))",
        cwd=tmp_path, env=user_env,
    )  # fmt: skip
    distributions = set(json.loads(installed.stdout))
    assert {"iris-core", "iris-gcp", "iris-cli", "google-cloud-tpu", "google-cloud-compute"} <= distributions
    assert "iris-local" not in distributions and "iris-workspace" not in distributions
    # the installed packages are the wheels' files, not this checkout's sources
    where = run(gcp_user_venv, "python", "-c", "import iris, iris_gcp; print(iris.__file__); print(iris_gcp.__file__)", cwd=tmp_path, env=user_env)
    assert all(str(gcp_user_venv) in line for line in where.stdout.split()), where.stdout


def test_user_install_without_iris_local_says_how_to_get_the_local_provider(gcp_user_venv: Path, user_env: dict[str, str], tmp_path: Path) -> None:
    result = run(gcp_user_venv, "iris", "run", "--provider", "local", "--", "true", cwd=tmp_path, env=user_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "iris: error: unknown provider 'local'; choose one of: gcp, manual; install the iris-local distribution (pip install iris-local)"
    ]


def test_user_install_help_imports_no_google_or_docker_library(gcp_user_venv: Path, user_env: dict[str, str], tmp_path: Path) -> None:
    probe = cli_import_probe(["--help"], heavy=("google", "docker", "paramiko"))
    result = run(gcp_user_venv, "python", "-c", probe, cwd=tmp_path, env=user_env)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


def test_user_install_run_provider_local_imports_no_google_or_docker_library(
    gcp_user_venv: Path, user_env: dict[str, str], tmp_path: Path
) -> None:
    """The local path in the user's install (which has iris-gcp, not iris-local) ends with its
    one-line error without importing a Google Cloud, Docker or SSH library on the way
    (``google.protobuf`` is Iris's own wire format, a dependency of iris-core)."""
    probe = cli_import_probe(["run", "--provider", "local", "--", "true"])
    result = run(gcp_user_venv, "python", "-c", probe, cwd=tmp_path, env=user_env)
    assert result.returncode == 0, result.stderr
    assert "EXIT 2" in result.stdout and "HEAVY []" in result.stdout, result.stdout + result.stderr
