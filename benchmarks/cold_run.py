"""Cold start: wall time of the ``iris`` command as a fresh process.

Two figures, each the median over ``--runs`` fresh subprocesses of the venv's ``iris`` script:

* ``iris run --provider local -- true``, each run from a new empty temporary directory (so the
  workspace bundle is an empty zip): interpreter start, imports, local cluster up, bundle,
  submit, the task's process, result, cluster down. Target: median at most 1.5 s.
* ``iris --help``: interpreter start plus the CLI's imports. Target: median at most 0.3 s.

``python -c pass`` with the same interpreter is printed too: the floor no command can beat.

Each figure is taken twice, because most of a cold start is importing Python modules and that
cost depends on whether compiled bytecode (``.pyc``) is available:

* ``PYTHONDONTWRITEBYTECODE=1``: no new ``.pyc`` is written, existing ones are used. The
  interpreter's standard library ships compiled; a venv made by ``uv sync`` holds no ``.pyc``
  for its packages or the workspace (uv compiles only when asked), so those are compiled from
  source on every start. What a user sees on a first run, or always where the variable is set
  (some CI and container images). The script prints whether click has a ``.pyc`` beside it.
* ``.pyc cached``: ``PYTHONDONTWRITEBYTECODE`` removed and ``PYTHONPYCACHEPREFIX`` pointed at a
  scratch directory warmed by one untimed run: a user's second and later runs. Neither the
  source tree nor the venv is written to.

    uv run python benchmarks/cold_run.py [--runs 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stats import load_line, machine_line, summary_line, verdict

IRIS = Path(sys.executable).parent / "iris"
RUN_TARGET_S = 1.5
HELP_TARGET_S = 0.3
WIDTH = 36


def time_command(argv: list[str], env: dict[str, str], *, in_empty_dir: bool = False) -> float:
    """Seconds from spawn to exit; fails loudly if the command fails."""
    with tempfile.TemporaryDirectory(prefix="iris-bench-cold-") as empty:
        started = time.perf_counter()
        result = subprocess.run(argv, cwd=empty if in_empty_dir else None, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return elapsed


def measure(label: str, env: dict[str, str], runs: int) -> dict[str, list[float]]:
    commands = {
        "python -c pass (floor)": ([sys.executable, "-c", "pass"], False),
        "iris --help": ([str(IRIS), "--help"], False),
        "iris run --provider local -- true": ([str(IRIS), "run", "--provider", "local", "--", "true"], True),
    }
    for argv, in_empty_dir in commands.values():  # untimed: warms the page cache (and the .pyc prefix)
        time_command(argv, env, in_empty_dir=in_empty_dir)
    times = {name: [time_command(argv, env, in_empty_dir=d) for _ in range(runs)] for name, (argv, d) in commands.items()}
    print(f"\n[{label}]")
    for name, values in times.items():
        print("  " + summary_line(name, values, width=WIDTH))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per command and mode (default 7)")
    args = parser.parse_args()
    if not IRIS.exists():
        raise SystemExit(f"{IRIS} not found; run `uv sync` first")

    import click  # only to say whether the venv's packages have bytecode beside them

    print(machine_line())
    print(f"iris script: {IRIS}")
    print(f"PYTHONDONTWRITEBYTECODE in this environment: {os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}")
    print(f"click has a .pyc in the venv: {'yes' if Path(importlib.util.cache_from_source(click.__file__)).exists() else 'no'}")
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    no_new_pyc = "PYTHONDONTWRITEBYTECODE=1"
    results = {}
    with tempfile.TemporaryDirectory(prefix="iris-bench-pyc-") as pyc:
        results[no_new_pyc] = measure(no_new_pyc, {**base, "PYTHONDONTWRITEBYTECODE": "1"}, args.runs)
        results[".pyc cached"] = measure(".pyc cached", {**base, "PYTHONPYCACHEPREFIX": pyc}, args.runs)

    print("\nverdicts (median):")
    for mode, times in results.items():
        help_median = statistics.median(times["iris --help"])
        run_median = statistics.median(times["iris run --provider local -- true"])
        print(
            f"  {mode:<26} iris --help {help_median:.3f} s (target <= {HELP_TARGET_S} s: {verdict(help_median, HELP_TARGET_S)}); "
            f"iris run {run_median:.3f} s (target <= {RUN_TARGET_S} s: {verdict(run_median, RUN_TARGET_S)})"
        )
    print("(comparison: Ray Jobs, `ray start` to first job done: 6.7 s)")
    print(f"at the end: {load_line()} (includes this benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
