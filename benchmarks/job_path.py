"""Where one no-op job's time goes: a timeline of its path through client, controller and worker.

Runs ``--jobs`` sequential no-op jobs (``true``, ``cpu=0.1``, ``memory=16MB``) on a local cluster
(``--cluster processes``: a controller process and one worker process per core, as
``iris cluster start --local`` runs them; ``in-process``: ``IrisClient.local()``) with auth off,
``--gap-ms`` apart, and prints, for each step of the path, the median time since the client
called ``submit()``: the controller's ``LaunchJob``, the worker's long-poll answer, the start of
the attempt, the process runtime's ``start()``, the moment the monitor sees the task's exit
descriptor readable, the report and the client's ``wait()`` returning.

How: every process of the cluster (and this one) loads a ``sitecustomize`` from a temporary
directory put first on ``PYTHONPATH`` (this script re-executes itself once to load it too), which
wraps the methods named in ``TRACED`` as their modules are imported and records
``time.monotonic()`` (one clock for all processes) at entry (``>``) and exit (``<``); each process
writes its records to a file that this script reads at the end. A wrapper costs a few
microseconds. A step seen more than once in a job gets ``#2``, ``#3``; worker steps carry the
worker's pid (``@PID``). Steps seen in fewer than a third of the jobs are left out.

    uv run python benchmarks/job_path.py [--jobs 150] [--gap-ms 0] [--cluster processes]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TRACE_DIR_ENV = "IRIS_BENCH_TRACE_DIR"

# module -> (class, method, step name); wrapped when the module is imported, in every process
TRACED = {
    "iris.cluster.controller.service": [
        ("ControllerServicer", "LaunchJob", "ctl.LaunchJob"),
        ("ControllerServicer", "WaitJob", "ctl.WaitJob"),
        ("WorkerServicer", "Reconcile", "ctl.Reconcile"),
    ],
    "iris.cluster.controller.controller": [
        ("Controller", "launch_job", "ctl.launch_job"),
        ("Controller", "exchange", "ctl.exchange"),
        ("Controller", "desired", "ctl.desired"),
    ],
    "iris.cluster.worker.worker": [
        ("Worker", "_apply_response", "wrk.apply_response"),
        ("Worker", "_prepare", "wrk.prepare"),
        ("Worker", "_build_request", "wrk.build_request"),
        ("ExitWatch", "wait", "wrk.exit_poll"),
        ("Worker", "_finish", "wrk.finish"),
    ],
    "iris_local.process_runtime": [("ProcessRuntime", "start", "rt.start")],
}

SITECUSTOMIZE = '''
import os
if os.environ.get(%(env)r):
    import atexit, functools, importlib.abc, importlib.util, inspect, sys, threading, time
    TRACED = %(traced)r
    _records = []

    def mark(step):
        _records.append((time.monotonic(), step))

    def _dump():
        with open(os.path.join(os.environ[%(env)r], "%%d.txt" %% os.getpid()), "w") as f:
            f.writelines("%%.6f %%s\\n" %% r for r in list(_records))

    def _dump_every_second():  # cluster processes may be stopped by a signal: atexit is not enough
        while True:
            time.sleep(1.0)
            _dump()

    atexit.register(_dump)
    threading.Thread(target=_dump_every_second, daemon=True).start()

    def _wrap(owner, attr, step):
        original = getattr(owner, attr)
        if inspect.iscoroutinefunction(original):
            async def wrapper(*args, **kwargs):
                mark(step + ">")
                try:
                    return await original(*args, **kwargs)
                finally:
                    mark(step + "<")
        else:
            def wrapper(*args, **kwargs):
                mark(step + ">")
                try:
                    return original(*args, **kwargs)
                finally:
                    mark(step + "<")
        setattr(owner, attr, functools.wraps(original)(wrapper))

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname not in TRACED:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(fullname)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                for owner, attr, step in TRACED[fullname]:
                    _wrap(getattr(module, owner), attr, step)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())
    sys.modules["iris_bench_trace"] = sys.modules[__name__]
'''


def reexec_traced() -> None:
    """Run this script again with the tracing sitecustomize first on PYTHONPATH (children inherit it)."""
    site = Path(tempfile.mkdtemp(prefix="iris-bench-trace-site-"))
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE % {"env": TRACE_DIR_ENV, "traced": TRACED})
    records = Path(tempfile.mkdtemp(prefix="iris-bench-trace-records-"))
    env = dict(os.environ)
    env[TRACE_DIR_ENV] = str(records)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    import subprocess

    try:
        code = subprocess.call([sys.executable, *sys.argv], env=env)
    finally:
        shutil.rmtree(site, ignore_errors=True)
        shutil.rmtree(records, ignore_errors=True)
    sys.exit(code)


def run_jobs(kind: str, jobs: int, warmup: int, gap_s: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from clusters import cluster
    from iris.cluster.types import Entrypoint, JobState, ResourceSpec

    import iris_bench_trace  # type: ignore[import-not-found]  # the sitecustomize module

    entrypoint = Entrypoint.from_command("true")
    resources = ResourceSpec(cpu=0.1, memory="16MB")
    with cluster(kind, "off") as client:
        for _ in range(warmup):
            client.submit(entrypoint, resources=resources).wait(timeout=60)
        for _ in range(jobs):
            if gap_s:
                time.sleep(gap_s)
            iris_bench_trace.mark("client.submit>")
            job = client.submit(entrypoint, resources=resources)
            iris_bench_trace.mark("client.submit<")
            status = job.wait(timeout=60)
            iris_bench_trace.mark("client.wait<")
            if status.state is not JobState.SUCCEEDED:
                raise SystemExit(f"job {job.job_id} ended {status.state.value}: {status.error}")
        time.sleep(1.5)  # every process writes its records once a second


def timeline(records_dir: Path, client_pid: int) -> list[tuple[str, float, int]]:
    """(step, median ms after submit, jobs it was seen in), in order of the median."""
    records = []
    for path in records_dir.glob("*.txt"):
        pid = int(path.stem)
        for line in path.read_text().splitlines():
            stamp, step = line.split(" ", 1)
            if step.startswith(("wrk.", "rt.")):
                step = f"{step}@{pid}"
            records.append((float(stamp), step, pid))
    records.sort()
    starts = [i for i, (_, step, pid) in enumerate(records) if step == "client.submit>" and pid == client_pid]
    by_step: dict[str, list[float]] = defaultdict(list)
    for n, first in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(records)
        t0 = records[first][0]
        seen: dict[str, float] = {}
        for stamp, step, _ in records[first:end]:
            key, k = step, 1
            while key in seen:
                k += 1
                key = f"{step}#{k}"
            seen[key] = (stamp - t0) * 1000
        for key, ms in seen.items():
            by_step[key].append(ms)
    rows = [(step, statistics.median(v), len(v)) for step, v in by_step.items() if len(v) * 3 >= len(starts)]
    return sorted(rows, key=lambda r: r[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=150, help="timed sequential jobs (default 150)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed jobs first (default 20)")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="pause before each job, ms (default 0: back to back)")
    parser.add_argument("--cluster", choices=("in-process", "processes"), default="processes")
    parser.add_argument("--runs", type=int, default=1, help="accepted for uniformity; one run (the median is per step)")
    args = parser.parse_args()
    if not os.environ.get(TRACE_DIR_ENV):
        reexec_traced()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stats import load_line, machine_line

    print(machine_line())
    print(f"{args.jobs} sequential jobs of `true` (cpu=0.1, memory=16MB), {args.gap_ms:g} ms apart, cluster {args.cluster}, auth off")
    run_jobs(args.cluster, args.jobs, args.warmup, args.gap_ms / 1000)
    print()
    print(f"{'step (> entry, < exit)':<36}{'ms after submit()':>18}{'jobs':>7}")
    for step, ms, n in timeline(Path(os.environ[TRACE_DIR_ENV]), os.getpid()):
        print(f"{step:<36}{ms:>18.2f}{n:>7}")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
