"""The startup script of both roles is valid bash that shellcheck accepts, and it does what a
machine's metadata says: run against a fake metadata server and a stand-in ``docker`` command
(a script on PATH that records its arguments), it pulls the image and starts the container the
role needs, with the config, the engine socket and the labels the fake machines rely on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from iris_gcp import bootstrap
from iris_gcp.testing.fake_metadata import FakeMetadataServer


def _shellcheck() -> str:
    """shellcheck, installed with apt-get when missing (as the docker fixtures install docker.io)."""
    found = shutil.which("shellcheck")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("needs shellcheck (Debian package shellcheck); not root, so apt-get cannot install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "shellcheck"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"needs shellcheck; apt-get install shellcheck failed: {result.stderr.strip()[-300:]}")
    return shutil.which("shellcheck") or pytest.skip("shellcheck is still missing after apt-get install")


def _metadata(role: str) -> dict[str, str]:
    if role == "worker":
        return bootstrap.worker_metadata(
            image="127.0.0.1:5000/iris-worker:1", controller_address="http://10.0.0.2:10000", slice_id="s-1",
            scale_group="v5", attributes={"zone": "z"}, tokens={0: "t0", 1: "t1"},
        )  # fmt: skip
    return bootstrap.controller_metadata(image="127.0.0.1:5000/iris-worker:1", config_yaml="name: it's: a 'config'\n", port=10123)


@pytest.mark.parametrize("role", bootstrap.ROLES)
def test_startup_script_of_each_role_passes_bash_n_and_shellcheck(role: str, tmp_path: Path) -> None:
    script = tmp_path / "startup.sh"
    script.write_text(_metadata(role)[bootstrap.STARTUP_SCRIPT])
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0
    result = subprocess.run([_shellcheck(), "--shell=bash", "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# A stand-in engine: records each docker invocation as one JSON line; `docker inspect` says the
# container runs; `docker run` of a role makes what that role writes once it is up.
_FAKE_DOCKER = r"""#!/bin/bash
printf '%s\n' "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")" >> "${DOCKER_CALLS}"
case "$1" in
  pull) [ -e "${DOCKER_FAIL_PULLS}" ] && [ "$(cat "${DOCKER_FAIL_PULLS}")" -gt 0 ] && { echo $(( $(cat "${DOCKER_FAIL_PULLS}") - 1 )) > "${DOCKER_FAIL_PULLS}"; exit 1; }; exit 0 ;;
  inspect) echo true ;;
  image) exit 1 ;;  # no local copy of any image
  run)
    mkdir -p "${IRIS_ROOT}/worker" "${IRIS_ROOT}/controller"
    touch "${IRIS_ROOT}/worker/worker.ready" "${IRIS_ROOT}/controller/controller.url"
    echo container-id ;;
esac
exit 0
"""


def _run_script(role: str, tmp_path: Path, metadata: FakeMetadataServer, failing_pulls: int = 0) -> tuple[subprocess.CompletedProcess, list[list[str]], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(_FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    (bin_dir / "sleep").write_text("#!/bin/sh\nexit 0\n")  # no waiting between pull attempts
    (bin_dir / "sleep").chmod(0o755)
    calls = tmp_path / "calls"
    fail_pulls = tmp_path / "fail-pulls"
    fail_pulls.write_text(str(failing_pulls))
    root = tmp_path / "root"
    data = _metadata(role)
    url = metadata.add(f"m-{role}", data, ip="127.0.0.42")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "IRIS_METADATA_URL": url, "IRIS_ROOT": str(root),
        "IRIS_CONFIG_DIR": str(tmp_path / "etc"), "IRIS_DOCKER_SOCKET": "/run/engine.sock",
        "DOCKER_CALLS": str(calls), "DOCKER_FAIL_PULLS": str(fail_pulls), "IRIS_PULL_ATTEMPTS": "3",
        "IRIS_SHARED_DIRS": "/srv/shared one:/srv/two", "IRIS_CONTAINER_ENV": "STORAGE_EMULATOR_HOST=http://127.0.0.1:9 A=b",
    }  # fmt: skip
    result = subprocess.run(["bash", "-c", data[bootstrap.STARTUP_SCRIPT]], env=env, capture_output=True, text=True, timeout=60)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result, [json.loads(line) for line in lines], root


@pytest.fixture
def metadata() -> FakeMetadataServer:
    with FakeMetadataServer() as server:
        yield server


def test_startup_script_worker_runs_the_boot_entry_with_the_engine_socket_and_labels(tmp_path: Path, metadata: FakeMetadataServer) -> None:
    result, calls, root = _run_script("worker", tmp_path, metadata)
    assert result.returncode == 0, result.stderr
    assert ["pull", "-q", "127.0.0.1:5000/iris-worker:1"] in calls
    run = next(c for c in calls if c[0] == "run")
    joined = " ".join(run)
    assert "--name iris-worker-m-worker" in joined and "--network host" in joined
    assert "--label iris.instance=m-worker" in joined
    assert "-v /run/engine.sock:/var/run/docker.sock" in joined
    assert f"-v {root}:{root}" in joined and f"IRIS_ROOT={root}" in joined
    assert "--entrypoint python3" in joined
    assert run[-4:] == ["127.0.0.1:5000/iris-worker:1", "-m", "iris_gcp.boot", "worker"]
    assert run[run.index("/srv/shared one:/srv/shared one") - 1] == "-v" and "-v /srv/two:/srv/two" in joined
    assert "-e STORAGE_EMULATOR_HOST=http://127.0.0.1:9 -e A=b" in joined
    assert "t0" not in joined  # tokens stay in metadata; the boot entry reads them
    assert (root / bootstrap.STATE_FILE).read_text().strip() == "running"
    assert metadata.guest_attributes("m-worker") == {"iris/startup-state": "running"}


def test_startup_script_controller_writes_the_config_and_mounts_it_read_only(tmp_path: Path, metadata: FakeMetadataServer) -> None:
    result, calls, root = _run_script("controller", tmp_path, metadata)
    assert result.returncode == 0, result.stderr
    config = tmp_path / "etc" / "config.yaml"
    assert config.read_text() == "name: it's: a 'config'\n"  # byte for byte, quotes and all
    run = next(c for c in calls if c[0] == "run")
    joined = " ".join(run)
    assert f"-v {config}:/etc/iris/config.yaml:ro" in joined
    assert run[run.index("serve") :] == [
        "serve", "--config", "/etc/iris/config.yaml", "--host", "127.0.0.42", "--port", "10123", "--state-dir", f"{root}/controller",
    ]  # fmt: skip
    assert "/var/run/docker.sock" not in joined


def test_startup_script_retries_a_failing_pull(tmp_path: Path, metadata: FakeMetadataServer) -> None:
    result, calls, root = _run_script("worker", tmp_path, metadata, failing_pulls=2)
    assert result.returncode == 0, result.stderr
    assert [c[0] for c in calls].count("pull") == 3
    assert (root / bootstrap.STATE_FILE).read_text().strip() == "running"


def test_startup_script_that_cannot_pull_reports_failure_and_starts_nothing(tmp_path: Path, metadata: FakeMetadataServer) -> None:
    result, calls, root = _run_script("worker", tmp_path, metadata, failing_pulls=5)
    assert result.returncode == 1
    assert [c[0] for c in calls].count("pull") == 3
    assert "run" not in [c[0] for c in calls]
    assert (root / bootstrap.STATE_FILE).read_text().strip() == "failed: could not pull 127.0.0.1:5000/iris-worker:1"
    assert metadata.guest_attributes("m-worker")["iris/startup-state"].startswith("failed: could not pull")


def test_startup_script_without_a_role_fails_with_one_line(tmp_path: Path, metadata: FakeMetadataServer) -> None:
    url = metadata.add("bare", {"iris-image": "x"}, ip="127.0.0.43")
    env = {"PATH": os.environ["PATH"], "IRIS_METADATA_URL": url, "IRIS_ROOT": str(tmp_path / "root")}
    result = subprocess.run(["bash", "-c", bootstrap.startup_script()], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "failed: metadata has no iris-role or iris-image" in result.stderr
    assert (tmp_path / "root" / bootstrap.STATE_FILE).read_text().startswith("failed: ")
