"""Log streaming end to end: a task prints N numbered lines as fast as it can; ``iris job logs -f``
(a separate process) receives them. Checks every line arrives once and in order; reports lines/s
from job submission to the last line printed by ``iris job logs``.

    uv run python benchmarks/log_stream.py [--lines 200000] [--runs 3]

Target: at least 50,000 lines/s end to end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import load_line, machine_line, summary_line, verdict  # noqa: E402

from iris.client import IrisClient  # noqa: E402
from iris.cluster.types import Entrypoint, ResourceSpec  # noqa: E402

TARGET_LINES_PER_SECOND = 50_000


def one_run(client: IrisClient, lines: int, iris: str) -> float:
    code = f"import sys\nw = sys.stdout.write\nfor i in range({lines}): w(f'line {{i}}\\n')\n"
    started = time.perf_counter()
    job = client.submit(
        entrypoint=Entrypoint.from_command(sys.executable, "-c", code), resources=ResourceSpec(cpu=0.5, memory="256MB")
    )
    reader = subprocess.Popen(
        [iris, "job", "logs", "-f", "--controller-url", client.address, job.job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1 << 20,
    )
    expected = 0
    last = started
    assert reader.stdout is not None
    for row in reader.stdout:
        if row != f"line {expected}\n":
            reader.kill()
            raise SystemExit(f"line {expected} wrong or missing: got {row!r}")
        expected += 1
        last = time.perf_counter()
    reader.wait(timeout=60)
    if reader.returncode != 0 or expected != lines:
        raise SystemExit(f"iris job logs exited {reader.returncode} after {expected}/{lines} lines: {reader.stderr.read()}")
    return lines / (last - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    iris = str(Path(sys.executable).parent / "iris")
    print(machine_line())
    print(load_line())
    rates = []
    with IrisClient.local() as client:
        for _ in range(args.runs):
            rates.append(one_run(client, args.lines, iris))
            print(f"  run: {rates[-1]:,.0f} lines/s ({args.lines:,} lines, complete and in order)")
    print(summary_line("lines/s", rates, unit="lines/s", digits=0))
    print(f"target >= {TARGET_LINES_PER_SECOND:,} lines/s: {verdict(statistics.median(rates), TARGET_LINES_PER_SECOND, lower_is_better=False)}")
    print(load_line())


if __name__ == "__main__":
    main()
