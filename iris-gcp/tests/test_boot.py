"""``python3 -m iris_gcp.boot worker`` against the fake metadata server: the worker it starts is
the one the metadata describes (id, index, token in the environment, work directory, runtime),
and bad metadata gets one line naming the key and what is accepted. Also the fake metadata
server's own contract (the ``Metadata-Flavor`` header, 404s, recursive JSON, guest attributes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris_gcp import bootstrap
from iris_gcp.boot import Metadata, worker_launch
from iris_gcp.testing.fake_metadata import FakeMetadataServer


@pytest.fixture
def metadata() -> Iterator[FakeMetadataServer]:
    with FakeMetadataServer() as server:
        yield server


def _slice_metadata(**overrides: object) -> dict[str, str]:
    args: dict = dict(
        image="img", controller_address="http://127.0.0.1:10000", slice_id="slice-7", scale_group="v5",
        attributes={"zone": "us-central2-b", "device": "tpu"}, cpu=8.0, memory_bytes=1 << 30, task_image="task:1",
        tokens={0: "tok-0", 1: "tok-1", 2: "tok-2", 3: "tok-3"},
    )  # fmt: skip
    args.update(overrides)
    return bootstrap.worker_metadata(**args)


def _get(url: str, flavor: bool = True) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"} if flavor else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers.get("Metadata-Flavor", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers.get("Metadata-Flavor", "")


def test_fake_metadata_serves_each_host_under_its_prefix_and_needs_the_flavor_header(metadata: FakeMetadataServer) -> None:
    a = metadata.add("host-a", {"k": "va", "startup-script": "#!/bin/bash"}, ip="127.0.0.11", zone="europe-west4-b", project="p1")
    b = metadata.add("host-b", {"k": "vb"}, ip="127.0.0.12")
    assert _get(f"{a}/instance/attributes/k") == (200, "va", "Google")
    assert _get(f"{b}/instance/attributes/k")[1] == "vb"
    assert _get(f"{a}/instance/attributes/k", flavor=False)[0] == 403
    assert _get(f"{a}/instance/attributes/missing")[0] == 404
    assert _get(f"{a}/instance/attributes/")[1] == "k\nstartup-script\n"
    assert json.loads(_get(f"{a}/instance/attributes/?recursive=true")[1]) == {"k": "va", "startup-script": "#!/bin/bash"}
    assert _get(f"{a}/instance/name")[1] == "host-a"
    assert _get(f"{a}/instance/zone")[1].endswith("/zones/europe-west4-b")
    assert _get(f"{a}/project/project-id")[1] == "p1"
    assert _get(f"{a}/instance/network-interfaces/0/ip")[1] == "127.0.0.11"
    assert _get(f"{a}/instance/hostname")[1].startswith("host-a.")
    metadata.set_attribute("host-a", "k", "changed")
    assert _get(f"{a}/instance/attributes/k")[1] == "changed"
    metadata.remove("host-b")
    assert _get(f"{b}/instance/attributes/k")[0] == 404


def test_fake_metadata_keeps_guest_attributes_a_machine_reports(metadata: FakeMetadataServer) -> None:
    url = metadata.add("host-a", {}, ip="127.0.0.11")
    put = urllib.request.Request(f"{url}/instance/guest-attributes/iris/state", data=b"running", method="PUT", headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(put, timeout=10) as response:
        assert response.status == 200
    assert metadata.guest_attributes("host-a") == {"iris/state": "running"}
    assert _get(f"{url}/instance/guest-attributes/iris/state")[1] == "running"


@pytest.mark.parametrize("index", [0, 3])
def test_boot_worker_launch_is_the_worker_the_metadata_describes(metadata: FakeMetadataServer, index: int, tmp_path: Path) -> None:
    url = metadata.add("slice-7-w", {**_slice_metadata(), bootstrap.WORKER_INDEX: str(index)}, ip="127.0.0.21")
    launch = worker_launch(Metadata(url), root=tmp_path)
    assert launch.worker_id == bootstrap.worker_id("slice-7", index) == f"slice-7-w{index}"
    assert launch.token == f"tok-{index}"
    assert launch.controller_address == "http://127.0.0.1:10000"
    assert launch.work_dir == tmp_path / "worker"
    assert (launch.runtime, launch.task_image, launch.cpu, launch.memory_bytes) == ("docker", "task:1", 8.0, 1 << 30)
    assert launch.attributes == {
        "zone": "us-central2-b", "device": "tpu", "slice": "slice-7", "scale-group": "v5", "vm-index": str(index),
        "tpu-name": "slice-7", "tpu-worker-id": str(index), "hostname": "127.0.0.21",
    }  # fmt: skip
    argv = launch.argv()
    assert f"tok-{index}" not in " ".join(argv)
    assert argv[argv.index("--worker-id") + 1] == f"slice-7-w{index}"
    assert launch.env({})["IRIS_WORKER_TOKEN"] == f"tok-{index}"


def test_boot_single_host_machine_without_worker_number_is_index_0(metadata: FakeMetadataServer, tmp_path: Path) -> None:
    url = metadata.add("vm", _slice_metadata(tokens={}), ip="127.0.0.21")
    launch = worker_launch(Metadata(url), root=tmp_path)
    assert launch.worker_id == "slice-7-w0" and launch.token == ""


def _boot(url: str, *args: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "IRIS_METADATA_URL": url, "IRIS_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "iris_gcp.boot", "worker", *args], env=env, capture_output=True, text=True, timeout=60)


def test_boot_module_prints_the_worker_command_without_the_token(metadata: FakeMetadataServer, tmp_path: Path) -> None:
    url = metadata.add("w", {**_slice_metadata(), bootstrap.WORKER_INDEX: "2"}, ip="127.0.0.21")
    result = _boot(url, "--print", root=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["worker_id"] == "slice-7-w2" and printed["token"] is True
    assert printed["argv"][1:3] == ["-m", "iris.cluster.worker.main"]
    assert "tok-2" not in result.stdout


def test_boot_module_execs_the_worker_which_reports_the_controller_it_cannot_reach(metadata: FakeMetadataServer, tmp_path: Path) -> None:
    # the exec is real: the worker process starts (and, with no controller, says so and exits)
    data = _slice_metadata(controller_address="not a url", tokens={})
    url = metadata.add("w", data, ip="127.0.0.21")
    result = _boot(url, root=tmp_path)
    assert "iris-boot: starting worker slice-7-w0 of slice slice-7 for not a url" in result.stderr
    assert result.returncode != 0
    assert (tmp_path / "worker").is_dir()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({bootstrap.WORKER: None}, "metadata attribute iris-worker is missing"),
        ({bootstrap.WORKER: "{not json"}, "metadata attribute iris-worker is not JSON: '{not json'"),
        ({bootstrap.WORKER: "[1]"}, "metadata attribute iris-worker is list; accepted: a JSON object"),
        ({bootstrap.WORKER: json.dumps({"slice_id": "s", "cpu": "lots"})}, "iris-worker: cpu is 'lots'; accepted: a number >= 0"),
        ({bootstrap.CONTROLLER_ADDRESS: None}, "metadata attribute iris-controller-address is missing"),
        ({bootstrap.WORKER_INDEX: "two"}, "metadata attribute agent-worker-number is 'two'; accepted: a worker index 0, 1, 2, ..."),
        ({bootstrap.WORKER_INDEX: "9"}, "has no token for worker index 9 (it has 0, 1, 2, 3)"),
    ],
)
def test_boot_module_bad_metadata_gets_one_line_and_exit_2(metadata: FakeMetadataServer, tmp_path: Path, change: dict, expected: str) -> None:
    data = {**_slice_metadata(), bootstrap.WORKER_INDEX: "0"}
    for key, value in change.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    url = metadata.add("w", data, ip="127.0.0.21")
    result = _boot(url, root=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
