"""Container start overhead: what the ``docker`` runtime adds to each attempt over ``process``.

Starts a private ``dockerd`` (as the tests do: own data root, socket and exec root; installed
with apt-get if missing) and imports the cached Debian bookworm + python3 base image, then, for
each runtime, per run:

* **runtime**: ``--attempts`` attempts of ``true`` through the ContainerRuntime API, one after
  another: ``start()`` until it returns, and until the handle reports the attempt ended
  (``wait()``), then ``remove()`` (timed apart). The docker runtime's attempts get a memory and
  cpu limit, as a worker's do.
* **job**: ``--jobs`` no-op jobs (``true``, cpu 0.5, 64 MB) submitted one after another to an
  in-process local cluster (``IrisClient.local``) whose ``worker.runtime`` is the runtime, each
  waited for: submit to SUCCEEDED as a user sees it (3 warm-up jobs first).

Prints p50 of each per run and the median over ``--runs`` runs, and the docker minus process
difference against the target (at most 0.5 s added per attempt, p50).

    uv run python benchmarks/container_start.py [--runs 3] [--attempts 20] [--jobs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stats import load_line, machine_line, percentile, verdict

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState, ResourceSpec
from iris.config import parse_config
from iris.plugin.protocols import ContainerSpec
from iris.runtime.docker import DockerRuntime
from iris.testing.docker_engine import DockerEngine, base_image_key, base_image_tar, ensure_installed
from iris_local.process_runtime import ProcessRuntime

TARGET_ADDED_S = 0.5
PATH = "/usr/local/bin:/usr/bin:/bin"


def runtime_run(runtime, workdir: Path, attempts: int, limits: bool) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    out: dict[str, list[float]] = {"start": [], "ended": [], "remove": []}
    for i in range(attempts + 2):  # two warm-ups
        spec = ContainerSpec(
            container_id=f"bench-{os.getpid()}-{time.monotonic_ns()}",
            argv=["true"],
            cwd=workdir,
            env={"PATH": PATH},
            cpu=1.0 if limits else 0.0,
            memory_bytes=(256 << 20) if limits else 0,
            labels={"iris-bench": "container-start"},
        )
        began = time.perf_counter()
        handle = runtime.start(spec)
        started = time.perf_counter()
        status = handle.wait(timeout=60)
        ended = time.perf_counter()
        if status.running or status.exit_code != 0:
            raise SystemExit(f"attempt {spec.container_id} did not end with 0: {status} {handle.read_logs(0, 4096)!r}")
        handle.remove()
        removed = time.perf_counter()
        if i >= 2:
            out["start"].append(started - began)
            out["ended"].append(ended - began)
            out["remove"].append(removed - ended)
    return out


def job_run(runtime: str, image: str, jobs: int) -> list[float]:
    config = parse_config({"worker": {"runtime": runtime}, "docker": {"image": image}})
    with tempfile.TemporaryDirectory(prefix="iris-bench-ws-") as workspace, IrisClient.local(config, workspace=Path(workspace)) as client:
        times = []
        for i in range(jobs + 3):
            began = time.perf_counter()
            job = client.submit(name=f"noop-{i}", entrypoint=Entrypoint.from_command("true"), resources=ResourceSpec(cpu=0.5, memory="64MB"))
            status = job.wait(timeout=120, raise_on_failure=False)
            if status.state is not JobState.SUCCEEDED:
                raise SystemExit(f"job {job.job_id} on {runtime}: {status.state} {status.error}")
            if i >= 3:
                times.append(time.perf_counter() - began)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--attempts", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args()
    why = ensure_installed()
    if why:
        raise SystemExit(f"cannot run: {why}")
    print(machine_line())
    engine = DockerEngine().start()
    try:
        image = engine.import_image(base_image_tar(), f"iris-test-base:{base_image_key()}")
        os.environ["DOCKER_HOST"] = engine.url
        figures: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory(prefix="iris-bench-cs-") as tmp:
            work = Path(tmp) / "work"
            work.mkdir()
            for run in range(args.runs):
                for name, runtime in (
                    ("process", ProcessRuntime(Path(tmp) / "process")),
                    ("docker", DockerRuntime(Path(tmp) / "docker", base_url=engine.url, default_image=image)),
                ):
                    measured = runtime_run(runtime, work, args.attempts, limits=name == "docker")
                    runtime.close()
                    for key, values in measured.items():
                        figures.setdefault(f"{name} {key}", []).append(percentile(values, 50))
                    print(
                        f"run {run + 1} {name:<7} attempt p50: start() {percentile(measured['start'], 50) * 1000:6.1f} ms, "
                        f"start to ended {percentile(measured['ended'], 50) * 1000:6.1f} ms, remove() {percentile(measured['remove'], 50) * 1000:6.1f} ms"
                    )
                for name in ("process", "docker"):
                    times = job_run(name, image, args.jobs)
                    figures.setdefault(f"{name} job", []).append(percentile(times, 50))
                    print(f"run {run + 1} {name:<7} job p50: submit to SUCCEEDED {percentile(times, 50) * 1000:6.1f} ms")
        print()
        for key in sorted(figures):
            print(f"{key:<16} median of p50s over {args.runs} runs: {statistics.median(figures[key]) * 1000:7.1f} ms")
        added_attempt = statistics.median(figures["docker ended"]) - statistics.median(figures["process ended"])
        added_job = statistics.median(figures["docker job"]) - statistics.median(figures["process job"])
        print(f"added per attempt (docker - process, start to ended, p50): {added_attempt * 1000:.1f} ms -> {verdict(added_attempt, TARGET_ADDED_S)}")
        print(f"added per job (docker - process, submit to SUCCEEDED, p50): {added_job * 1000:.1f} ms -> {verdict(added_job, TARGET_ADDED_S)}")
        print(load_line())
    finally:
        engine.stop()


if __name__ == "__main__":
    sys.exit(main())
