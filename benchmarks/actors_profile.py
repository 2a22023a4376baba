"""Where the CPU of actor calls goes: 8 client threads call an ActorServer in a child process
(as ``benchmarks/actors.py`` does) while py-spy samples both processes, only while a thread
holds the GIL (``--gil``: Python CPU, not waiting); prints each side's top functions by self
and inclusive share of samples.

    uv run python benchmarks/actors_profile.py [--py-spy PATH] [--seconds 8]

py-spy must be installed (``pip install py-spy`` in a scratch venv) and allowed to attach
(ptrace). The figures are recorded in docs/performance.md ("Actors and worker pools").
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from actors import SERVER


def summarize(path: Path, side: str, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    print(f"== {side}: {total} samples holding the GIL")
    for name, n in own.most_common(top):
        print(f"  self {100 * n / total:5.1f}%  {name}")
    for name, n in inclusive.most_common(top + 6):
        print(f"  incl {100 * n / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    from iris.actor import ActorClient, FixedResolver

    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out = Path(tempfile.mkdtemp(prefix="iris-actor-profile-"))
    try:
        client = ActorClient(FixedResolver({"echo": server.stdout.readline().strip()}), "echo")
        stop = time.monotonic() + args.seconds + 3

        def hammer() -> None:
            i = 0
            while time.monotonic() < stop:
                client.ping(i)
                i += 1

        threads = [threading.Thread(target=hammer) for _ in range(args.threads)]
        for t in threads:
            t.start()
        time.sleep(1)
        spies = {
            side: subprocess.Popen(
                [args.py_spy, "record", "--format", "raw", "--gil", "-r", "200", "-d", str(args.seconds), "-o", str(out / side), "-p", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for side, pid in (("client", os.getpid()), ("server", server.pid))
        }
        for spy in spies.values():
            spy.wait()
        for t in threads:
            t.join()
        for side in spies:
            summarize(out / side, side, args.top)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
