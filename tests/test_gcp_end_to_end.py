"""The gcp provider end to end, as a user runs it (issue 13's "Done when"), against a local fake
Google whose machines really boot.

The ``iris`` command is the one of the user's install (``gcp_user_venv``: the workspace's wheels
pip-installed into a fresh virtualenv as iris-core, iris-gcp, iris-manual and iris-cli, no
iris-local). It talks to the fakes with the real Google clients: the fake Compute API
(``iris_gcp.testing.fake_compute``), the fake TPU API (``fake_tpu``) and the fake GCS
(``fake_gcs``). Every machine the fakes create really boots through one
:class:`~iris_gcp.testing.hosts.ContainerBooter`: a Debian container on its own 127.0.0.N with
an sshd on one port for all, which runs the real startup script, pulls the Iris image from the
local registry and runs the controller or the worker (task containers through the engine
socket). In one pass:

1. ``iris cluster --config gcp-fake.yaml start`` creates the controller VM and returns once its
   controller answers ``/health`` through the SSH tunnel;
2. ``iris --config gcp-fake.yaml run --tpu v5litepod-16`` makes the controller scale up a 4-host
   slice; the 4 tasks' output streams back through the tunnel;
3. the slice is preempted mid-run (the tasks wait on a gate the test holds): the tasks are retried
   on a new slice on the preemption budget, where they wait on the gate again;
4. with that job RUNNING, a second job SUCCEEDED and a third KILLED, the controller VM is deleted
   through the Compute API (lost, with its disk); ``cluster start`` again creates a new VM on the
   controller's reserved internal address, which restores every job from the GCS checkpoint and
   adopts the running slice: the TPU workers (given that address) reconnect with the tokens the
   lost controller minted, the job is still RUNNING with the same attempts, no slice is created;
   the gate opens and the job SUCCEEDS, its output streamed to the ``iris run`` that followed it
   all along, each line once;
5. ``iris cluster stop`` deletes the controller VM, every slice by label and the reserved address:
   nothing is left in the fakes, among the booter's hosts, or among the engine's containers.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("google.cloud.compute_v1", reason="needs google-cloud-compute (an iris-gcp dependency)")
pytest.importorskip("google.cloud.tpu_v2", reason="needs google-cloud-tpu (an iris-gcp dependency)")

from iris.testing import wait_until
from iris.testing.docker_engine import DockerEngine
from iris_gcp.testing.fake_compute import FakeCompute
from iris_gcp.testing.fake_gcs import FakeGcs
from iris_gcp.testing.fake_metadata import FakeMetadataServer
from iris_gcp.testing.fake_tpu import FakeTpuServer
from iris_gcp.testing.gcs_pytest import fake_gcs  # noqa: F401 (fixture)
from iris_gcp.testing.hosts import ContainerBooter
from iris_gcp.testing.hosts_pytest import fake_host_image, iris_image  # noqa: F401 (fixtures)

pytestmark = pytest.mark.docker

PROJECT, ZONE, REGION = "iris-e2e", "europe-west4-a", "europe-west4"
CLUSTER = "e2e"
VM_NAME = f"iris-{CLUSTER}-controller"
ADDRESS_NAME = f"{VM_NAME}-ip"  # the controller's reserved internal address
OUTAGE_SECONDS = 75  # how long the controller VM stays lost before `cluster start` (clients wait up to 120 s)
#: the fake machines' addresses: apart from the container_booter fixture's (.11-.60) and the
#: AddressOnlyBooters of test_controller_vm.py (.120-.230)
ADDRESSES = [f"127.0.0.{n}" for n in range(61, 80)]

# Each task says where it runs, then waits for the gate (an HTTP server of the test on 127.0.0.1:
# task containers run with the host's network) before it ends.
TASK = (
    "import os, time, urllib.request\n"
    "print(f\"task {os.environ['IRIS_TASK_INDEX']} of {os.environ['IRIS_NUM_TASKS']} on {os.environ['IRIS_WORKER_ID']}\", flush=True)\n"
    "while True:\n"
    "    try:\n"
    "        if urllib.request.urlopen(os.environ['GATE'], timeout=5).read() == b'open':\n"
    "            break\n"
    "    except OSError:\n"
    "        pass\n"
    "    time.sleep(0.5)\n"
    "print(f\"task {os.environ['IRIS_TASK_INDEX']} done\", flush=True)\n"
)


class Gate:
    """``GET /`` answers ``closed`` until :meth:`open`, then ``open``."""

    def __init__(self) -> None:
        gate = self
        self.is_open = False

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = b"open" if gate.is_open else b"closed"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _free_port_pair() -> int:
    """A port P with P and P + 1 free on 127.0.0.1 (the controller's gRPC and HTTP ports on its VM)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


_STARTED = re.compile(r"^\[(\d)\] task (\d) of 4 on (\S+)$")  # iris run labels each task's lines "[i] "


def _started_on(lines: list[str]) -> dict[int, list[str]]:
    """Task index -> the workers its "task i of 4 on W" lines came from, in order (checking
    that the label iris run put in front is the task's own index)."""
    found: dict[int, list[str]] = {}
    for line in lines:
        match = _STARTED.match(line.rstrip("\n"))
        if match:
            assert match[1] == match[2], line
            found.setdefault(int(match[1]), []).append(match[3])
    return found


def _attempts(job: dict) -> list[list[tuple[str, str, str]]]:
    """(attempt id, worker, state) of each attempt, per task, from ``job list --json``."""
    return [[(str(a["attempt_id"]), a["worker_id"], a["state"]) for a in t["attempts"]] for t in job["tasks"]]


def _all_containers(engine: DockerEngine) -> set[str]:
    return set(engine.docker("ps", "-aq", "--no-trunc").stdout.decode().split())


@pytest.fixture
def fake_google(
    tmp_path: Path, docker_engine: DockerEngine, fake_host_image: str, fake_gcs: FakeGcs
) -> Iterator[tuple[ContainerBooter, FakeCompute, FakeTpuServer]]:
    """The fake Compute and TPU APIs, both booting their machines through one ContainerBooter
    whose hosts (and so their controller and worker containers) reach the fake GCS."""
    with FakeMetadataServer() as metadata:
        booter = ContainerBooter(
            docker_engine, fake_host_image, metadata=metadata, addresses=ADDRESSES, root=tmp_path / "hosts", ssh=True,
            ssh_port=_free_port_pair(), zone=ZONE, project=PROJECT, container_env={"STORAGE_EMULATOR_HOST": fake_gcs.url},
        )  # fmt: skip
        try:
            with FakeCompute(booter, operation_delay=0.1) as compute, FakeTpuServer(booter, create_delay=0.2, delete_delay=0.2) as tpu:
                yield booter, compute, tpu
        finally:
            booter.close()


def _config(tmp_path: Path, booter: ContainerBooter, compute: FakeCompute, tpu: FakeTpuServer, image: str, task_image: str, bucket: str) -> dict:
    """gcp-fake.yaml (docs/gcp.md shows the same shape)."""
    return {
        "name": CLUSTER,
        "provider": {
            "type": "gcp", "project_id": PROJECT, "zone": ZONE,
            "ssh_user": "root", "ssh_key": str(booter.ssh_user_key()),
            "options": {
                "compute_api_endpoint": compute.endpoint, "tpu_api_endpoint": tpu.address,
                "ssh_port": booter.ssh_port, "ssh_known_hosts": str(tmp_path / "known_hosts"), "connect_timeout": 5,
                "worker_image": image,
            },
        },
        "controller": {
            "state_dir": str(tmp_path / "client-state"),
            "bundle_prefix": f"gs://{bucket}/bundles",
            "checkpoint_url": f"gs://{bucket}/checkpoints",
            "checkpoint_interval_seconds": 1,
            "worker_timeout_seconds": 10,
            "vm": {"enabled": True, "image": image, "port": _free_port_pair()},
        },
        "docker": {"image": task_image},
        "auth": {"enabled": True},
        "autoscaler": {"evaluation_interval_seconds": 1, "backoff_initial_seconds": 1},
        "scale_groups": {
            "tpu": {"accelerator_type": "tpu", "accelerator_variant": "v5litepod-16", "runtime_version": "v2-alpha-tpuv5-lite",
                    "zones": [ZONE], "min_slices": 0, "max_slices": 1, "preemptible": True},
        },
    }  # fmt: skip


@pytest.mark.timeout(1500)
def test_gcp_cluster_start_run_preempt_lose_the_controller_and_stop_from_the_users_install(
    tmp_path: Path,
    gcp_user_venv: Path,
    user_env: dict[str, str],
    docker_engine: DockerEngine,
    docker_base_image: str,
    iris_image: str,
    fake_gcs: FakeGcs,
    fake_google: tuple[ContainerBooter, FakeCompute, FakeTpuServer],
) -> None:
    booter, compute, tpu = fake_google
    before = _all_containers(docker_engine)
    bucket = f"iris-e2e-{os.getpid()}"
    fake_gcs.create_bucket(bucket)
    home = tmp_path / "home"
    home.mkdir()
    config_path = home / "gcp-fake.yaml"
    config_path.write_text(yaml.safe_dump(_config(tmp_path, booter, compute, tpu, iris_image, docker_base_image, bucket), sort_keys=False))
    env = {**user_env, "HOME": str(home), "STORAGE_EMULATOR_HOST": fake_gcs.url}
    env.pop("IRIS_CONTROLLER_ADDRESS", None)
    env.pop("IRIS_TOKEN", None)
    iris = str(gcp_user_venv / "bin" / "iris")
    gate = Gate()

    def run(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([iris, *argv], cwd=home, env=env, capture_output=True, text=True, timeout=timeout)

    def diagnose() -> str:
        return "\n".join(f"--- {h} ({booter.startup_state(h)})\n{booter.console(h)[-3000:]}" for h in booter.hosts())

    host_id = f"{ZONE}/{VM_NAME}"
    job_run: subprocess.Popen | None = None
    try:
        # 1. the controller VM boots (fake Compute -> booter -> startup script -> controller container)
        started = run("cluster", "--config", str(config_path), "start", timeout=900)
        assert started.returncode == 0, started.stderr + diagnose()
        assert f"creating the controller VM {VM_NAME}" in started.stderr
        vm_address = booter.address(host_id)
        assert started.stdout.strip().startswith(f"http://{vm_address}:")
        assert compute.instance(PROJECT, ZONE, VM_NAME)["status"] == "RUNNING"

        # 2. a 4-host slice scales up, its 4 tasks print through the tunnel, held by the gate
        (home / "task.py").write_text(TASK)
        job_run = subprocess.Popen(
            [iris, "--config", str(config_path), "run", "--tpu", "v5litepod-16", "--memory", "64MB", "--job-name", "e2e-train",
             "-e", "GATE", gate.url, "--", "python3", "task.py"],
            cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        out: list[str] = []
        err: list[str] = []
        readers = [threading.Thread(target=lambda p=p, lines=lines: lines.extend(p), daemon=True)  # type: ignore[misc]
                   for p, lines in ((job_run.stdout, out), (job_run.stderr, err))]  # fmt: skip
        for reader in readers:
            reader.start()

        def first_lines() -> bool:
            return sorted(_started_on(list(out))) == [0, 1, 2, 3]

        assert wait_until(lambda: first_lines() or job_run.poll() is not None, timeout=600), (list(out), diagnose())
        assert job_run.poll() is None, ("".join(err), diagnose())
        (node,) = tpu.nodes()
        first_slice = node.name.rsplit("/", 1)[-1]
        assert len(node.network_endpoints) == 4
        first_workers = sorted(workers[0] for workers in _started_on(list(out)).values())
        assert first_workers == [f"{first_slice}-w{i}" for i in range(4)], list(out)  # one task per host

        # 3. preempted mid-run: the slice goes, a new one comes, the tasks run again (held by the gate)
        tpu.preempt(first_slice)
        assert not any(h.startswith(f"{first_slice}/") for h in booter.hosts())

        def second_slice() -> str:
            return next((n.name.rsplit("/", 1)[-1] for n in tpu.nodes() if n.name.rsplit("/", 1)[-1] != first_slice and n.state.name == "READY"), "")

        def rerun_lines() -> bool:
            again = second_slice()
            started = _started_on(list(out))
            return bool(again) and sorted(started) == [0, 1, 2, 3] and all(w[-1].startswith(f"{again}-w") for w in started.values())

        assert wait_until(lambda: rerun_lines() or job_run.poll() is not None, timeout=600), (list(out), diagnose())
        assert job_run.poll() is None, ("".join(err), diagnose())
        slice_two = second_slice()
        assert wait_until(lambda: tpu.node(first_slice) is None, timeout=120)  # the preempted slice was deleted

        def listed() -> dict[str, dict]:
            result = run("--config", str(config_path), "job", "list", "--json")
            assert result.returncode == 0, result.stderr
            return {j["name"].rsplit("/", 1)[-1]: j for j in json.loads(result.stdout)}

        def train_running() -> bool:
            job = listed()["e2e-train"]
            return job["state"] == "RUNNING" and all(t["attempts"] and t["attempts"][-1]["state"] == "RUNNING" for t in job["tasks"])

        assert wait_until(train_running, timeout=120), listed()
        for task in listed()["e2e-train"]["tasks"]:  # an attempt ended by the preemption, then one running on the new slice
            first, last = task["attempts"]
            assert first["worker_id"].startswith(f"{first_slice}-w") and first["state"] != "SUCCEEDED", task
            assert last["worker_id"].startswith(f"{slice_two}-w") and last["state"] == "RUNNING", task

        # a second job that succeeds, and a third, killed: the restore must bring back every state
        done_run = run("--config", str(config_path), "run", "--memory", "64MB", "--job-name", "e2e-done",
                       "--", "python3", "-c", "print('e2e-done says hi')")  # fmt: skip
        assert done_run.returncode == 0, done_run.stderr + diagnose()
        submitted = run("--config", str(config_path), "run", "--no-wait", "--memory", "64MB", "--job-name", "e2e-killed",
                        "--", "python3", "-c", "import time; time.sleep(600)")  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        killed_id = submitted.stdout.strip().splitlines()[-1]
        killed = run("--config", str(config_path), "job", "kill", killed_id)
        assert killed.returncode == 0, killed.stderr
        jobs = listed()
        assert {name: j["state"] for name, j in jobs.items()} == {"e2e-train": "RUNNING", "e2e-done": "SUCCEEDED", "e2e-killed": "KILLED"}, jobs
        before_loss = _attempts(jobs["e2e-train"])
        creates = tpu.calls["CreateNode"]

        # 4. the controller VM is lost (deleted with its disk through the API) while the job runs
        # the controller checkpoints within a second of a change (checkpoint_interval_seconds: 1) and
        # not while nothing changes: once LATEST has stayed the same for 3 s, it holds the state above
        assert "checkpoints/LATEST" in fake_gcs.object_names(bucket), fake_gcs.object_names(bucket)
        seen: list[tuple[int, float]] = []

        def settled() -> bool:
            generation = fake_gcs.generation(bucket, "checkpoints/LATEST")
            if not seen or seen[-1][0] != generation:
                seen.append((generation, time.monotonic()))
            # settled; or (state that changes all the time) two checkpoints begun after the jobs above
            return time.monotonic() - seen[-1][1] >= 3.0 or len(seen) >= 3

        assert wait_until(settled, timeout=60), seen
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import compute_v1

        instances = compute_v1.InstancesClient(credentials=AnonymousCredentials(), client_options={"api_endpoint": compute.endpoint})
        instances.delete(project=PROJECT, zone=ZONE, instance=VM_NAME)
        lost_at = time.monotonic()
        assert wait_until(lambda: compute.instance(PROJECT, ZONE, VM_NAME) is None and host_id not in booter.hosts(), timeout=60)
        gone = run("--config", str(config_path), "job", "list")
        assert gone.returncode == 2 and "no controller of this cluster is running" in gone.stderr, gone.stderr
        assert len(gone.stderr.strip().splitlines()) == 1, gone.stderr  # one line, no traceback
        assert compute.address(PROJECT, REGION, ADDRESS_NAME)["status"] == "RESERVED"  # kept: the workers know it
        # the controller stays away for over a minute (a real VM takes that long to come back): the
        # slice's workers keep their task containers running all along, none started again
        slice_hosts = [f"{slice_two}/w-{i}" for i in range(4)]
        running_tasks = {h: booter.containers(h) for h in slice_hosts}
        assert all(len(c) >= 2 for c in running_tasks.values()), running_tasks  # the worker's and its task's
        while time.monotonic() - lost_at < OUTAGE_SECONDS:
            assert {h: booter.containers(h) for h in slice_hosts} == running_tasks
            assert job_run.poll() is None, ("iris run gave up while the controller was away", "".join(err))
            time.sleep(5)

        # a new VM: on the same address (where the workers look), restored from the GCS checkpoint
        again = run("cluster", "--config", str(config_path), "start", timeout=900)
        assert again.returncode == 0, again.stderr + diagnose()
        assert booter.address(host_id) == vm_address and again.stdout.strip() == started.stdout.strip()
        assert f"forgot the SSH host key recorded for {vm_address}" in again.stderr, again.stderr  # a new machine there
        assert job_run.poll() is None, ("iris run gave up while the controller was away", "".join(err))
        print(f"the controller was away for {time.monotonic() - lost_at:.0f}s")
        jobs = listed()

        def controller_log() -> str:
            logs = docker_engine.docker("logs", "--tail", "200", f"iris-controller-{booter.instance(host_id)}", check=False)
            return logs.stdout.decode(errors="replace") + logs.stderr.decode(errors="replace")

        states = {name: j["state"] for name, j in jobs.items()}
        if states != {"e2e-train": "RUNNING", "e2e-done": "SUCCEEDED", "e2e-killed": "KILLED"}:
            pytest.fail(f"after the restore: {states}\n{json.dumps(jobs['e2e-train']['tasks'], indent=1)}\n--- the controller:\n{controller_log()}")
        text = run("--config", str(config_path), "job", "list")
        assert "e2e-done" in text.stdout and "SUCCEEDED" in text.stdout, text.stdout + text.stderr
        assert "e2e-killed" in text.stdout and "KILLED" in text.stdout, text.stdout + text.stderr
        done_logs = run("--config", str(config_path), "job", "logs", jobs["e2e-done"]["job_id"])
        assert done_logs.stdout.splitlines() == ["e2e-done says hi"], done_logs.stdout + done_logs.stderr
        # adopted: the same slice (none created), its 4 workers back (with the tokens the lost
        # controller minted), the same attempts still RUNNING (none new, nothing ran again)
        assert tpu.calls["CreateNode"] == creates and [n.name.rsplit("/", 1)[-1] for n in tpu.nodes()] == [slice_two]
        assert _attempts(jobs["e2e-train"]) == before_loss, (jobs["e2e-train"], before_loss)
        gate.open()
        job_run.wait(timeout=300)
        for reader in readers:
            reader.join(30)
        if job_run.returncode != 0:
            pytest.fail(f"iris run exited {job_run.returncode}\n--- its stdout:\n{''.join(out)}--- its stderr:\n{''.join(err)}"
                        f"--- the controller:\n{controller_log()}\n{diagnose()}")  # fmt: skip
        assert sorted(line.strip() for line in out if line.endswith("done\n")) == [f"[{i}] task {i} done" for i in range(4)], list(out)
        # each attempt printed its first line once: two per task (the preempted one, the adopted one)
        assert {i: [w.rsplit("-w", 1)[0] for w in ws] for i, ws in _started_on(list(out)).items()} == {i: [first_slice, slice_two] for i in range(4)}, list(out)
        assert len(out) == len(set(out)) == 12, list(out)  # every line once, none lost or repeated across the outage
        jobs = listed()
        final = _attempts(jobs["e2e-train"])
        assert jobs["e2e-train"]["state"] == "SUCCEEDED", jobs["e2e-train"]
        assert [[a[:2] for a in task] for task in final] == [[a[:2] for a in task] for task in before_loss]  # the same attempts ended
        assert all(task[-1][2] == "SUCCEEDED" for task in final), final
        logs = run("--config", str(config_path), "job", "logs", jobs["e2e-train"]["job_id"])
        assert logs.returncode == 0, logs.stderr
        lines = logs.stdout.splitlines()
        assert len(lines) == len(set(lines)) == 12, lines  # per task: two start lines and "done", each once
        assert sorted(_started_on(lines)) == [0, 1, 2, 3] and all(len(ws) == 2 for ws in _started_on(lines).values()), lines

        # 4b. the user edits the config (the scale group may grow to 2 slices): `status` refuses
        # it in one line, since the VM runs the old one; `restart --force` makes it the VM's
        # (setMetadata), resets the VM (its disk and address kept), and the controller comes back on
        # its disk's state, serving the edited config
        edited = yaml.safe_load(config_path.read_text())
        edited["scale_groups"]["tpu"]["max_slices"] = 2
        config_path.write_text(yaml.safe_dump(edited, sort_keys=False))
        refused = run("cluster", "--config", str(config_path), "status")
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert f"`iris cluster --config {config_path} restart --force`" in refused.stderr, refused.stderr
        forced = run("cluster", "--config", str(config_path), "restart", "--force", timeout=900)
        assert forced.returncode == 0, forced.stderr + diagnose()
        assert forced.stdout.strip() == started.stdout.strip() and booter.address(host_id) == vm_address
        served = yaml.safe_load((booter.directory(host_id) / "etc" / "config.yaml").read_text())
        assert served["scale_groups"]["tpu"]["max_slices"] == 2, served  # what the startup script wrote at the new boot
        assert {name: j["state"] for name, j in listed().items()} == {"e2e-train": "SUCCEEDED", "e2e-done": "SUCCEEDED", "e2e-killed": "KILLED"}
        status = run("cluster", "--config", str(config_path), "status")
        assert status.returncode == 0 and "(min 0, max 2)" in status.stdout, status.stdout + status.stderr

        # 5. stop: the controller VM and every slice by label; nothing left anywhere
        stopped = run("cluster", "--config", str(config_path), "stop", timeout=300)
        assert stopped.returncode == 0, stopped.stderr
        assert compute.instance(PROJECT, ZONE, VM_NAME) is None
        assert compute.address(PROJECT, REGION, ADDRESS_NAME) is None  # released once the slices were gone
        assert wait_until(lambda: tpu.nodes() == [], timeout=60), [n.name for n in tpu.nodes()]
        assert wait_until(lambda: booter.hosts() == [], timeout=60), booter.hosts()
        assert wait_until(lambda: _all_containers(docker_engine) <= before, timeout=60), _all_containers(docker_engine) - before
    finally:
        if job_run is not None and job_run.poll() is None:  # a failed test: the run we started ends with it
            job_run.kill()
            job_run.wait(30)
        gate.open()
        gate.close()
        fake_gcs.delete_bucket(bucket)
