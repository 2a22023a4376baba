"""Bugs that hid in the controller's seams, each tried end to end on the local provider through
real gRPC: a spec that can never run is refused at launch; requests no worker and no scale group
could ever serve end UNSCHEDULABLE at once; CPU-only work keeps off accelerator hosts."""

from __future__ import annotations

import pytest

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, EnvironmentSpec, JobState, ResourceSpec, tpu_device
from iris.config import parse_config
from iris.testing import wait_until

SMALL = ResourceSpec(cpu=0.1, memory="64MB")
TRUE = Entrypoint.from_command("true")


def two_groups() -> IrisClient:
    """A TPU group (one v5litepod-8 host, 8 cpu), up, and a CPU group (two hosts of 2 cpu), empty."""
    config = parse_config(
        {
            "provider": {"type": "local"},
            "scale_groups": {
                "tpu": {"accelerator_type": "tpu", "accelerator_variant": "v5litepod-8", "min_slices": 1, "max_slices": 1,
                        "cpu": 8, "memory": "8GB"},
                "cpu": {"min_slices": 0, "max_slices": 1, "vms_per_slice": 2, "cpu": 2, "memory": "2GB"},
            },
        }
    )
    return IrisClient.local(config)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (("echo", "a\0b"), {}, "argument 1 'a\\x00b' contains a NUL byte"),
        (("\0",), {}, "argument 0"),
        (("true",), {"KEY": "a\0b"}, "environment variable KEY: the value contains a NUL byte"),
        (("true",), {"1BAD": "x"}, "environment variable name '1BAD' is invalid"),
    ],
)
def test_launch_spec_with_nul_byte_is_refused_at_launch_naming_the_field(argv: tuple[str, ...], env: dict[str, str], message: str) -> None:
    with IrisClient.local() as client:
        with pytest.raises(Exception) as raised:
            client.submit(name="nul", entrypoint=Entrypoint.from_command(*argv), resources=SMALL, environment=EnvironmentSpec(env=env))
        assert message in str(raised.value)
        assert [j.job_id for j in client.list_jobs()] == []  # nothing was queued


@pytest.mark.parametrize(
    ("submit", "why"),
    [
        ({"resources": ResourceSpec(cpu=100000, memory="64MB")}, "a task needs 100000"),
        ({"resources": ResourceSpec(cpu=0.1, memory="100TB")}, "a task needs 100.0TB"),
        ({"resources": ResourceSpec(cpu=0.1, memory="64MB", device=tpu_device("v5litepod-16"))}, "no scale group offers device tpu v5litepod-16"),
        ({"resources": SMALL, "constraints": ["zone=mars"]}, "the job needs zone=mars"),
    ],
)
def test_impossible_request_ends_unschedulable_at_once_with_reason(submit: dict, why: str) -> None:
    with IrisClient.local() as client:
        job = client.submit(name="impossible", entrypoint=TRUE, **submit)
        status = job.wait(timeout=20, raise_on_failure=False)
        assert status.state is JobState.UNSCHEDULABLE, (status.state, status.error)
        assert why in status.error and "no worker or scale group can run it" in status.error


def test_request_a_scale_group_could_serve_waits_instead_of_failing() -> None:
    config = parse_config(
        {
            "provider": {"type": "local"},
            "scale_groups": {
                "cpu": {"min_slices": 1, "max_slices": 1, "cpu": 1, "memory": "1GB"},
                "big": {"min_slices": 0, "max_slices": 0, "cpu": 64, "memory": "64GB"},
                "later": {"min_slices": 0, "max_slices": 1, "cpu": 1, "memory": "1GB", "attributes": {"pool": "later"}},
            },
        }
    )
    with IrisClient.local(config) as client:
        job = client.submit(name="needs-later", entrypoint=TRUE, resources=SMALL, constraints=["pool=later"])
        assert job.wait(timeout=30).state is JobState.SUCCEEDED


def test_cpu_only_tasks_keep_off_the_accelerator_host() -> None:
    with two_groups() as client:
        assert wait_until(lambda: len(client.list_workers()) == 1, timeout=30)
        client.create_slice("cpu")  # the CPU hosts join after the TPU host: first fit alone would pick it
        assert wait_until(lambda: len(client.list_workers()) == 3, timeout=30)
        job = client.submit(name="cpu-work", entrypoint=TRUE, resources=ResourceSpec(cpu=1, memory="64MB"), replicas=4)
        status = job.wait(timeout=30)
        assert status.state is JobState.SUCCEEDED
        workers = {w.worker_id: dict(w.attributes) for w in client.list_workers()}
        used = {a.worker_id for t in status.tasks for a in t.attempts}
        assert used and all(workers[w].get("device", "cpu") == "cpu" for w in used), (used, workers)


def test_second_controller_on_a_state_directory_refuses_naming_the_running_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from iris.testing.processes import ControllerProcess

    first = ControllerProcess(tmp_path, workers=1)
    url = first.start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "iris.cluster.controller.main", "serve", "--state-dir", str(first.state_dir), "--port", "0"],
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().count("\n") == 0 and "Traceback" not in second.stderr
        assert f"state directory {first.state_dir} is in use by the controller pid {first.proc.pid} at {url}" in second.stderr
        assert (first.state_dir / "controller.url").read_text().strip() == url  # the running one's URL stands
        with IrisClient.remote(url, token=first.token) as client:
            assert client.list_jobs() == []  # and it still serves
    finally:
        first.stop()
        first.delete_slices()
