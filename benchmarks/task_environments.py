"""Task environments: a cold build against a cached one.

Times ``EnvironmentBuilder.prepare`` (what a worker runs for every attempt while it is BUILDING)
for two workspaces: none (a plain virtualenv with cloudpickle) and a locked uv project that
depends on iris-core (path, editable: grpcio, protobuf, attrs, cattrs, pluggy, pyyaml, uv,
cloudpickle from uv's cache). Cold: ``--runs`` builds, each into a fresh environment directory
with uv's cache warm (what a new worker meets for a lock it has not seen; a cold uv cache adds
the downloads). Cached: ``--runs`` x 20 lookups of the built environment, which is what a cached
environment adds to a task's start. Then, for context, submit-to-SUCCEEDED of ``python -c pass``
on an in-process local cluster whose worker has the environment cached (median of ``--runs``).
With ``--cold-uv-cache``, the cold builds also start from an empty uv cache (every wheel
downloaded from PyPI: what a brand-new machine meets). Target: a cached environment adds at most
0.3 s to a task's start.

    uv run python benchmarks/task_environments.py [--runs 5] [--cold-uv-cache]
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from iris.client import IrisClient
from iris.cluster.types import Entrypoint, JobState
from iris.cluster.worker.environment import EnvironmentBuilder, find_uv
from stats import load_line, machine_line, summary_line, verdict

TARGET_CACHED_S = 0.3
IRIS_CORE = Path(__file__).resolve().parents[1] / "iris-core"


def locked_project(root: Path) -> Path:
    ws = root / "project"
    ws.mkdir()
    (ws / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "bench-project"
            version = "0.1"
            requires-python = ">=3.11"
            dependencies = ["iris-core"]

            [tool.uv.sources]
            iris-core = {{ path = "{IRIS_CORE}", editable = true }}
            """
        )
    )
    subprocess.run([find_uv(), "lock", "--quiet"], cwd=ws, check=True, timeout=600)
    return ws


def cold(app: Path | None, runs: int, scratch: Path, cold_uv_cache: bool) -> list[float]:
    times = []
    for i in range(runs):
        uv_cache = scratch / f"uv-cache-{app is None}-{i}" if cold_uv_cache else None
        builder = EnvironmentBuilder(scratch / f"cold-{app is None}-{i}", uv_cache_dir=uv_cache)
        builder.python_id()  # asked once per worker, not per build
        started = time.perf_counter()
        env = builder.prepare(app, [], [], io.BytesIO())
        times.append(time.perf_counter() - started)
        assert not env.cached
        shutil.rmtree(builder.env_dir)
        if uv_cache is not None:
            shutil.rmtree(uv_cache, ignore_errors=True)
    return times


def cached(app: Path | None, runs: int, scratch: Path) -> list[float]:
    builder = EnvironmentBuilder(scratch / f"warm-{app is None}")
    builder.prepare(app, [], [], io.BytesIO())
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        env = builder.prepare(app, [], [], io.BytesIO())
        times.append(time.perf_counter() - started)
        assert env.cached
    return times


def end_to_end(app: Path, runs: int) -> list[float]:
    times = []
    with IrisClient.local(workspace=app) as client:
        for i in range(runs + 1):
            started = time.perf_counter()
            status = client.submit(Entrypoint.from_command("python", "-c", "pass"), name=f"e2e-{i}").wait(timeout=600)
            if status.state is not JobState.SUCCEEDED:
                raise SystemExit(f"job ended {status.state.value}: {status.error}")
            if i:  # the first builds the environment
                times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold builds and end-to-end jobs per case (default 5)")
    parser.add_argument("--cold-uv-cache", action="store_true", help="cold builds start from an empty uv cache (downloads from PyPI)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(machine_line())
    print(f"task python: {EnvironmentBuilder(Path('/nonexistent')).task_python}; uv: {find_uv()}")
    scratch = Path(tempfile.mkdtemp(prefix="iris-bench-envs-"))
    try:
        project = locked_project(scratch)
        for label, app in (("no pyproject (plain)", None), ("locked project (iris-core)", project)):
            kind = "cold build (empty uv cache)" if args.cold_uv_cache else "cold build"
            print(summary_line(f"{kind}, {label}", cold(app, args.runs, scratch, args.cold_uv_cache), width=46))
            hits = cached(app, args.runs * 20, scratch)
            print(summary_line(f"cached lookup, {label}", hits, unit="ms", scale=1000, width=46))
            print(f"  cached adds at most {TARGET_CACHED_S} s: {verdict(statistics.median(hits), TARGET_CACHED_S)}")
        e2e = end_to_end(project, args.runs)
        print(summary_line("submit to SUCCEEDED, `python -c pass`, cached", e2e, unit="ms", scale=1000, width=46))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("at the end: " + load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
