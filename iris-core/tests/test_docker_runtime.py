"""The docker runtime against a real engine: the ContainerRuntime contract, and what only a
container does (limits, labels, image errors, separate streams)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.plugin.protocols import ContainerSpec, TaskStartError
from iris.runtime.output_log import parse_record
from iris.runtime.docker import (
    ENTRYPOINT,
    LABEL_MANAGED,
    DockerRuntime,
    DockerRuntimeError,
    container_name,
    create_kwargs,
    pids_limit,
    tpu_access_from_env,
)
from iris.testing.contracts import ContainerRuntimeContract
from iris.testing.polling import wait_until
from iris.testing.docker_engine import DockerEngine



def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs on this machine and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.docker
class TestDockerRuntimeContract(ContainerRuntimeContract):
    python = "python3"
    # The engine sets HOSTNAME, and HOME when the spec has none; the sh entrypoint exports PWD.
    allowed_extra_env = frozenset({"HOSTNAME", "HOME", "PWD"})

    @pytest.fixture
    def runtime_factory(self, tmp_path: Path, docker_engine: DockerEngine, docker_base_image: str) -> Any:
        return lambda: DockerRuntime(tmp_path / "runtime", base_url=docker_engine.url, default_image=docker_base_image)

    # The contract's pid checks read a pid the task prints, which in a container is one of its
    # own namespace: each is overridden below to use the pid this machine sees (the engine's
    # ``top`` lists host pids).
    shares_pid_namespace = False

    @staticmethod
    def host_pid(runtime: Any, handle: Any, command: str) -> int:
        top = runtime.api.top(handle.name, ps_args="-eo pid,args")
        pids = [int(row[0]) for row in top["Processes"] if row[1] == command]
        assert len(pids) == 1 and _pid_alive(pids[0]), top
        return pids[0]

    def test_kill_also_ends_child_processes(self, runtime: Any, tmp_path: Path) -> None:
        handle = self.start(runtime, ["sh", "-c", "sleep 61 & echo child=$!; wait"], tmp_path)
        self.wait_for_output(handle, b"child=")
        pid = self.host_pid(runtime, handle, "sleep 61")
        handle.kill(grace_seconds=5.0)
        self.wait_ended(handle)
        assert wait_until(lambda: not _pid_alive(pid), self.timeout), f"child process {pid} outlived the kill"

    def test_kill_ends_processes_that_left_the_task_with_setsid(self, runtime: Any, tmp_path: Path) -> None:
        handle = self.start(runtime, ["sh", "-c", self.ESCAPE + " sleep 60"], tmp_path)
        self.wait_for_output(handle, b"escaped=")
        pid = self.host_pid(runtime, handle, "sleep 900")
        handle.kill(grace_seconds=2.0)
        self.wait_ended(handle)
        assert wait_until(lambda: not _pid_alive(pid), self.timeout), f"process {pid} (setsid) outlived the kill"

    def test_removing_an_ended_container_ends_what_it_left_running(self, runtime: Any, tmp_path: Path) -> None:
        """Stricter than the contract asks: the container ends when its task does, and its pid
        namespace with it, so nothing the task left is running even before ``remove``."""
        handle = self.start(runtime, ["sh", "-c", self.DOUBLE_FORK + "sleep 2; exit 0"], tmp_path)
        self.wait_for_output(handle, b"escaped=")
        pid = self.host_pid(runtime, handle, "sleep 900")
        assert self.wait_ended(handle).exit_code == 0
        handle.remove()
        assert wait_until(lambda: not _pid_alive(pid), self.timeout), f"process {pid} outlived its container"


# --- what is sent to the engine (no engine needed) ------------------------------------------


def _spec(**fields: Any) -> ContainerSpec:
    base: dict[str, Any] = {"container_id": "w1.job_0.0", "argv": ["python3", "-c", "pass"], "cwd": Path("/work/a/app")}
    return ContainerSpec(**{**base, **fields})


def _kwargs(spec: ContainerSpec, host_cpus: int = 8) -> dict[str, Any]:
    return create_kwargs(spec, image="img:1", uid=1000, gid=100, host_cpus=host_cpus)


def test_create_kwargs_cpu_task_gets_limits_labels_mounts_and_host_network() -> None:
    spec = _spec(
        cpu=1.5,
        memory_bytes=256 << 20,
        env={"A": "1", "IRIS_PORT_HTTP": "30001"},
        labels={"iris.worker": "w1", "iris.task": "/job/0"},
        mounts=[Path("/venvs/t"), Path("/work/a/app")],
        writable_mounts=[Path("/work/a")],
    )
    kw = _kwargs(spec)
    host = kw["host_config"]
    assert kw["image"] == "img:1"
    assert kw["entrypoint"] == ENTRYPOINT and kw["command"] == ["python3", "-c", "pass"]
    assert kw["working_dir"] == "/work/a/app"
    assert kw["environment"] == {"A": "1", "IRIS_PORT_HTTP": "30001"}
    assert kw["user"] == "1000:100"
    assert kw["labels"] == {"iris.worker": "w1", "iris.task": "/job/0", LABEL_MANAGED: "true", "iris.container": "w1.job_0.0"}
    assert kw["name"] == "w1.job_0.0"
    # cwd and writable paths read-write, every other mount read-only, each at its own path (once)
    assert host["binds"] == {
        "/work/a/app": {"bind": "/work/a/app", "mode": "rw"},
        "/work/a": {"bind": "/work/a", "mode": "rw"},
        "/venvs/t": {"bind": "/venvs/t", "mode": "ro"},
    }
    assert host["network_mode"] == "host"
    assert host["init"] is True
    assert host["nano_cpus"] == 1_500_000_000
    assert host["mem_limit"] == host["memswap_limit"] == 256 << 20
    assert host["pids_limit"] == pids_limit(1.5) == 2 * 1024
    assert "device_requests" not in host and not host.get("privileged")


def test_create_kwargs_without_limits_sends_none_and_cpu_is_capped_at_the_engine_cpus() -> None:
    assert "mem_limit" not in _kwargs(_spec())["host_config"]
    assert "nano_cpus" not in _kwargs(_spec(cpu=0))["host_config"]
    assert _kwargs(_spec(cpu=16), host_cpus=2)["host_config"]["nano_cpus"] == 2_000_000_000


def test_create_kwargs_gpu_task_gets_a_device_request_for_its_count() -> None:
    host = _kwargs(_spec(device_kind="gpu", device_variant="H100", device_count=4))["host_config"]
    assert host["device_requests"] == [{"Driver": "", "Count": 4, "Capabilities": [["gpu"]]}]
    assert not host.get("privileged")
    every = _kwargs(_spec(device_kind="gpu", device_count=0))["host_config"]
    assert every["device_requests"][0]["Count"] == -1  # as `docker run --gpus all`


def test_create_kwargs_tpu_task_gets_what_a_tpu_vm_container_needs() -> None:
    host = _kwargs(_spec(device_kind="tpu", device_variant="v5litepod-8", device_count=8))["host_config"]
    assert host["privileged"] is True  # /dev/accel* (v2-v4) and /dev/vfio (v5+)
    assert host["network_mode"] == "host"
    assert host["ulimits"] == [{"Name": "memlock", "Soft": -1, "Hard": -1}]
    assert "device_requests" not in host


def test_create_kwargs_tpu_task_on_a_machine_without_tpu_chips_is_a_plain_container() -> None:
    spec = _spec(device_kind="tpu", device_variant="v5litepod-16", device_count=4)
    host = create_kwargs(spec, image="img:1", uid=0, gid=0, host_cpus=2, tpu_access="none")["host_config"]
    assert "privileged" not in host and "ulimits" not in host
    assert host["network_mode"] == "host"  # as every task


@pytest.mark.parametrize(("value", "expected"), [(None, "privileged"), ("", "privileged"), ("privileged", "privileged"), ("none", "none")])
def test_tpu_access_from_env_reads_privileged_or_none(value: str | None, expected: str) -> None:
    assert tpu_access_from_env({} if value is None else {"IRIS_DOCKER_TPU_ACCESS": value}) == expected


def test_tpu_access_from_env_bad_value_is_one_line_naming_it() -> None:
    with pytest.raises(DockerRuntimeError) as caught:
        tpu_access_from_env({"IRIS_DOCKER_TPU_ACCESS": "all"})
    assert str(caught.value) == "IRIS_DOCKER_TPU_ACCESS='all': accepted: privileged, none"


def test_create_kwargs_host_config_is_accepted_by_the_docker_sdk() -> None:
    import docker

    for spec in (_spec(memory_bytes=64 << 20, cpu=1), _spec(device_kind="gpu", device_count=2), _spec(device_kind="tpu")):
        host = docker.types.HostConfig(version="1.41", **_kwargs(spec)["host_config"])
        assert host["NetworkMode"] == "host"
    assert docker.types.HostConfig(version="1.41", **_kwargs(_spec(device_kind="gpu", device_count=2))["host_config"])[
        "DeviceRequests"
    ] == [{"Driver": "", "Count": 2, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"argv": []}, "empty command"),
        ({"env": {"A=B": "x"}}, "'A=B' is not valid"),
        ({"device_kind": "fpga"}, "device kind 'fpga' is not supported by the docker runtime; accepted: cpu, gpu, tpu"),
    ],
)
def test_create_kwargs_bad_spec_raises_task_start_error_naming_it(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskStartError, match=re.escape(message)):
        _kwargs(_spec(**fields))


def test_container_name_keeps_valid_ids_and_makes_others_valid_and_distinct() -> None:
    assert container_name("w1.job_0.0") == "w1.job_0.0"
    a, b = container_name("/job/a b"), container_name("/job/a_b")
    assert a != b and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", a)


# --- only a container does this (real engine) -----------------------------------------------


@pytest.fixture
def docker_runtime(tmp_path: Path, docker_engine: DockerEngine, docker_base_image: str) -> Iterator[DockerRuntime]:
    runtime = DockerRuntime(tmp_path / "runtime", base_url=docker_engine.url, default_image=docker_base_image)
    yield runtime
    for handle in runtime.list_containers({"iris-test": tmp_path.name}):
        handle.kill(grace_seconds=0)
        handle.remove()
    runtime.close()


def _run(runtime: DockerRuntime, tmp_path: Path, argv: list[str], env_extra: dict[str, str] | None = None, **fields: Any) -> Any:
    spec = ContainerSpec(
        container_id=f"t-{uuid.uuid4().hex[:10]}",
        argv=argv,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **(env_extra or {})},
        labels={"iris-test": tmp_path.name},
        **fields,
    )
    return runtime.start(spec)


def _lines(handle: Any) -> list[tuple[str, str]]:
    """``(stream, text)`` of each record of the handle's log."""
    records = handle.read_logs(0, 1 << 20).split(b"\n")[:-1]
    return [(stream, content.decode()) for stream, content, _ in map(parse_record, records)]


@pytest.mark.docker
def test_docker_container_has_the_limits_and_labels_asked_for(docker_runtime: DockerRuntime, tmp_path: Path) -> None:
    handle = _run(docker_runtime, tmp_path, ["sleep", "30"], cpu=1, memory_bytes=64 << 20)
    info = docker_runtime.api.inspect_container(handle.name)
    host = info["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["PidsLimit"]) == (64 << 20, 64 << 20, 10**9, 1024)
    assert host["NetworkMode"] == "host" and host["Init"] is True
    assert info["Config"]["Labels"][LABEL_MANAGED] == "true"
    assert info["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"


@pytest.mark.docker
def test_docker_mounts_are_read_only_and_cwd_and_writable_paths_writable(docker_runtime: DockerRuntime, tmp_path: Path) -> None:
    shared = tmp_path / "env"
    shared.mkdir()
    (shared / "lib.txt").write_text("from-the-env")
    attempt = tmp_path / "attempt"
    work = attempt / "app"
    work.mkdir(parents=True)
    script = (
        f"cat {shared}/lib.txt; echo; touch {shared}/x 2>/dev/null && echo wrote-env; echo out > result && echo wrote-cwd; "
        f"echo done > {attempt}/result.pkl && echo wrote-attempt"
    )
    handle = _run(docker_runtime, work, ["sh", "-c", script], mounts=[shared], writable_mounts=[attempt])
    assert handle.wait(timeout=60).exit_code == 0
    assert _lines(handle) == [("stdout", "from-the-env"), ("stdout", "wrote-cwd"), ("stdout", "wrote-attempt")]
    assert (attempt / "result.pkl").read_text() == "done\n"
    assert (work / "result").read_text() == "out\n"
    assert (work / "result").stat().st_uid == os.getuid()


@pytest.mark.docker
def test_docker_missing_command_exits_127_saying_not_found(docker_runtime: DockerRuntime, tmp_path: Path) -> None:
    handle = _run(docker_runtime, tmp_path, ["no-such-program", "x"])
    status = handle.wait(timeout=60)
    assert status.exit_code == 127
    assert [data for stream, data in _lines(handle) if "no-such-program: not found" in data and stream == "stderr"], _lines(handle)


@pytest.mark.docker
def test_docker_unknown_image_is_a_task_start_error_naming_it(docker_runtime: DockerRuntime, tmp_path: Path) -> None:
    with pytest.raises(TaskStartError, match=r"task image '127.0.0.1:9/nope:1' is not on this machine's Docker engine"):
        _run(docker_runtime, tmp_path, ["true"], image="127.0.0.1:9/nope:1")


@pytest.mark.docker
def test_docker_memory_below_the_engine_minimum_is_a_task_start_error(docker_runtime: DockerRuntime, tmp_path: Path) -> None:
    with pytest.raises(TaskStartError, match="refused the task's container: .*[Mm]inimum memory limit"):
        _run(docker_runtime, tmp_path, ["true"], memory_bytes=1 << 20)


@pytest.mark.docker
def test_docker_removed_container_is_gone_from_the_engine(docker_runtime: DockerRuntime, tmp_path: Path) -> None:
    handle = _run(docker_runtime, tmp_path, ["sleep", "30"])
    handle.kill(grace_seconds=1)
    handle.remove()
    assert docker_runtime.api.containers(all=True, filters={"name": handle.name}) == []
    assert not (tmp_path / "runtime" / "containers" / handle.container_id).exists()


@pytest.mark.docker
def test_docker_adopting_a_followed_container_copies_each_line_once(
    docker_runtime: DockerRuntime, docker_engine: DockerEngine, docker_base_image: str, tmp_path: Path
) -> None:
    script = "echo first; echo err-first >&2; printf half; while [ ! -e gate ]; do sleep 0.05; done; echo -line; echo second >&2"
    handle = _run(docker_runtime, tmp_path, ["sh", "-c", script])
    assert wait_until(lambda: sorted(_lines(handle)) == [("stderr", "err-first"), ("stdout", "first")], timeout=60)
    # the same runtime hands out the handle it has; another one (a restarted worker) adopts it
    assert docker_runtime.list_containers({"iris-test": tmp_path.name}) == [handle]
    other = DockerRuntime(tmp_path / "runtime", base_url=docker_engine.url, default_image=docker_base_image)
    try:
        (adopted,) = other.list_containers({"iris-test": tmp_path.name})
        assert adopted is not handle and adopted.status().running
        (tmp_path / "gate").touch()
        assert handle.wait(timeout=60).exit_code == 0
        assert adopted.wait(timeout=60).exit_code == 0
        assert handle.read_logs(0, 1000) == adopted.read_logs(0, 1000)
        # each stream's lines once, in order; the line half-written when it was adopted whole
        assert [ln for ln in _lines(handle) if ln[0] == "stdout"] == [("stdout", "first"), ("stdout", "half-line")]
        assert [ln for ln in _lines(handle) if ln[0] == "stderr"] == [("stderr", "err-first"), ("stderr", "second")]
    finally:
        other.close()


@pytest.mark.docker
def test_docker_runtime_lists_only_containers_of_its_own_directory(
    docker_runtime: DockerRuntime, docker_engine: DockerEngine, docker_base_image: str, tmp_path: Path
) -> None:
    mine = _run(docker_runtime, tmp_path, ["sleep", "30"])
    elsewhere = DockerRuntime(tmp_path / "another-cluster", base_url=docker_engine.url, default_image=docker_base_image)
    try:
        theirs = _run(elsewhere, tmp_path, ["sleep", "30"])
        labels = {"iris-test": tmp_path.name}
        assert [h.container_id for h in docker_runtime.list_containers(labels)] == [mine.container_id]
        assert [h.container_id for h in elsewhere.list_containers(labels)] == [theirs.container_id]
        theirs.kill(grace_seconds=0)
        theirs.remove()
    finally:
        elsewhere.close()


@pytest.mark.docker
def test_docker_named_port_is_reachable_on_this_machine(docker_runtime: DockerRuntime, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port, as the worker's allocator picks one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import os, socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['IRIS_PORT_HTTP']))); s.listen(1)\n"
        "print('listening', flush=True)\n"
        "conn, _ = s.accept(); conn.sendall(b'hello over the host network'); conn.close()\n"
    )
    handle = _run(docker_runtime, tmp_path, ["python3", "-c", code], env_extra={"IRIS_PORT_HTTP": str(port)})
    assert wait_until(lambda: ("stdout", "listening") in _lines(handle), timeout=60), handle.read_logs(0, 1000)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        assert conn.recv(100) == b"hello over the host network"
    assert handle.wait(timeout=60).exit_code == 0


def test_worker_with_docker_runtime_and_no_engine_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    argv = [sys.executable, "-m", "iris.cluster.worker.main", "--controller", "http://127.0.0.1:1", "--worker-id", "w"]
    result = subprocess.run([*argv, "--work-dir", str(tmp_path / "w"), "--runtime", "docker"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"iris.cluster.worker.main: error: --runtime docker: cannot reach the Docker engine at unix://{tmp_path}/no-engine.sock "
        "(no socket there); start dockerd or point DOCKER_HOST at a running engine"
    )
