"""An attempt's directories on the worker, reused when the runtime proves the attempt's processes
are gone (see ``Worker._recycle_directory`` and ``ProcessRuntime._recycle``): a later attempt
finds nothing of an earlier one, and its log holds its own lines only.

A real controller and a real worker (the local provider, in process), real task processes."""

from __future__ import annotations

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.config import parse_config

SMALL = ResourceSpec(cpu=0.1, memory="64MB")
# one worker, so every attempt runs where the earlier ones ran
ONE_WORKER = {
    "provider": {"type": "local"},
    "scale_groups": {"pool": {"min_slices": 1, "max_slices": 1, "vms_per_slice": 1, "cpu": 1, "memory": "2GB"}},
}


def test_attempt_after_others_finds_nothing_of_theirs_in_its_directories() -> None:
    litter = 'echo out; echo err >&2; touch left; mkdir d; touch "$TMPDIR/t"; mkdir "$TMPDIR/d"'
    look = 'ls -A; echo tmp:; ls -A "$TMPDIR"; ls -A "$TMPDIR/.." >&2'
    with IrisClient.local(parse_config(ONE_WORKER)) as client:
        for i in range(4):
            job = client.submit(Entrypoint.from_command("sh", "-c", litter), f"litter-{i}", SMALL)
            assert job.wait(timeout=60).state is JobState.SUCCEEDED
        job = client.submit(Entrypoint.from_command("sh", "-c", look), "look", SMALL)
        assert job.wait(timeout=60).state is JobState.SUCCEEDED
        lines = list(job.logs(environment=True))
    out = [line.data for line in lines if line.stream == "stdout"]
    err = sorted(line.data for line in lines if line.stream == "stderr")
    env = [line.data for line in lines if line.is_environment]
    assert out == ["environment.log", "tmp:"]  # the attempt's directory (its cwd) and an empty TMPDIR
    # the runtime's directory of this container: its own files only (which of the optional ones
    # exist yet depends on when the worker last read the log while the task ran)
    assert {"meta.json", "stderr", "stdout", "tmp"} <= set(err) <= {"exit_code", "log.lock", "meta.json", "output.log", "stderr", "stdout", "tmp"}, err
    assert len(env) == 1 and "environment" in env[0]  # its own line about its environment, not an earlier one's
