"""The process runtime's cost per attempt, alone: start, wait, read the log, remove.

Runs ``--attempts`` attempts of ``true`` (``memory=16MB``, so each gets a cgroup where the
machine allows) one after another through ``ProcessRuntime`` in this process, as a worker's
start, monitor and cleanup threads would, with the directory of each attempt reused as the
worker does. Prints the CPU time per attempt of this process (user and system) and of the task
processes (the ``sh`` wrapper and ``true``), and the wall time: the part of a no-op job's cost
that is the runtime's, without gRPC, the controller or other threads in the way. Three runs by
default; the median is the figure. ``TMPDIR`` picks the filesystem (ext4 in /tmp here).

    uv run python benchmarks/runtime_cycle.py [--attempts 1000] [--runs 3] [--cgroups auto|off]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from iris.plugin.protocols import ContainerSpec
from iris_local.process_runtime import ProcessRuntime
from stats import load_line, machine_line


def one_run(attempts: int, cgroups: str) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="iris-bench-runtime-"))
    runtime = ProcessRuntime(root / "rt", cgroups=cgroups)
    cwd = root / "cwd"
    cwd.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        before, wall = os.times(), time.perf_counter()
        for i in range(attempts):
            spec = ContainerSpec(container_id=f"c{i}", argv=["true"], cwd=cwd, env=env, memory_bytes=16 << 20, labels={"n": str(i)})
            handle = runtime.start(spec)
            status = handle.wait(timeout=30)
            if status.exit_code != 0:
                raise SystemExit(f"attempt {i} ended {status}")
            handle.log_size()
            handle.remove()
        wall = time.perf_counter() - wall
        after = os.times()
    finally:
        runtime.close()
        shutil.rmtree(root, ignore_errors=True)
    per = 1000 / attempts
    return {
        "user": (after.user - before.user) * per,
        "system": (after.system - before.system) * per,
        "tasks": (after.children_user + after.children_system - before.children_user - before.children_system) * per,
        "wall": wall * per,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cgroups", default="auto", choices=("auto", "v1", "v2", "off"))
    args = parser.parse_args()
    print(machine_line())
    print(f"{args.attempts} attempts of `true` per run, cgroups {args.cgroups}, directories under {tempfile.gettempdir()}")
    results = []
    for i in range(args.runs):
        r = one_run(args.attempts, args.cgroups)
        results.append(r)
        print(
            f"run {i + 1}: per attempt {r['user'] + r['system']:.3f} ms CPU in this process "
            f"(user {r['user']:.3f}, system {r['system']:.3f}) + {r['tasks']:.3f} ms task processes; wall {r['wall']:.3f} ms"
        )
    own = statistics.median(r["user"] + r["system"] for r in results)
    tasks = statistics.median(r["tasks"] for r in results)
    wall = statistics.median(r["wall"] for r in results)
    print(f"median per attempt: {own:.3f} ms CPU in this process + {tasks:.3f} ms task processes; wall {wall:.3f} ms")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
