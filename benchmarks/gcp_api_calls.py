"""Cloud TPU API calls and time of one autoscaler cycle on the gcp provider (issue 13).

For 1, 10 and 50 slices (v5litepod-16, 4 hosts each) spread over 1 and 2 zones, against the fake
TPU API (``iris_gcp.testing.fake_tpu``, real ``google-cloud-tpu`` client, real gRPC on loopback,
hosts given addresses only): a real :class:`~iris.cluster.autoscaler.Autoscaler` adopts the
slices, one in five of them is put back to CREATING (so the cycle describes it, as it does booting
slices), and ``--runs`` cycles of ``run_once`` are timed with every provider call inline. Between
cycles the manager's clock moves past ``list_max_age_seconds``, so every cycle lists (the worst
case). Reported: API calls per cycle by method, and the median cycle time.

For comparison it also times what describing each slice with its own ``GetNode`` would cost.

    uv run python benchmarks/gcp_api_calls.py [--runs 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.cloud import tpu_v2

from iris.cluster.autoscaler import Autoscaler
from iris.cluster.scale_groups import slice_request_for
from iris.config import parse_config
from iris.plugin.records import ProviderContext
from iris_gcp.testing.boot import AddressOnlyBooter
from iris_gcp.testing.fake_tpu import FakeTpuServer
from iris_gcp.tpu import TpuVmManager, node_id
from stats import load_line, machine_line

PROJECT = "bench-project"
ZONES = ("europe-west4-b", "us-central2-b")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def measure(slices: int, zones: int, runs: int) -> dict[str, object]:
    used = ZONES[:zones]
    per_zone = [slices // zones + (1 if i < slices % zones else 0) for i in range(zones)]
    groups = {
        f"g{i}": {
            "accelerator_type": "tpu",
            "accelerator_variant": "v5litepod-16",
            "min_slices": n,
            "max_slices": max(n, 1),
            "zones": [zone],
        }
        for i, (zone, n) in enumerate(zip(used, per_zone))
        if n
    }
    config = parse_config({"name": "bench", "provider": {"type": "gcp", "project_id": PROJECT, "zone": used[0]}, "scale_groups": groups})
    booter = AddressOnlyBooter(first=2, last=254)
    with FakeTpuServer(booter, create_delay=0.0, delete_delay=0.0, host="127.0.0.1") as fake, tempfile.TemporaryDirectory() as tmp:
        context = ProviderContext(
            controller_address="http://127.0.0.1:10000",
            state_dir=Path(tmp),
            options={
                "project_id": PROJECT,
                "zone": used[0],
                "docker_image": "127.0.0.1:5000/iris-worker:bench",
                "scale_group_zones": list(used),
                "options": {},
            },
        )
        clock = Clock()
        manager = TpuVmManager(context, fake.client(), clock=clock)
        request_for = slice_request_for(config)
        with ThreadPoolExecutor(8) as pool:  # bring the cluster up
            ids = [f"iris-{name}-{k}" for name, g in groups.items() for k in range(g["min_slices"])]
            list(pool.map(lambda s: manager.create_slice(request_for(s.split("-")[1], config.scale_groups[s.split("-")[1]], s)), ids))
        for slice_id in ids[::5]:
            fake.set_state(node_id(slice_id), tpu_v2.Node.State.CREATING)
        autoscaler = Autoscaler(config.scale_groups, manager, request_for=request_for, cluster_name="bench", submit=lambda fn: fn())
        clock.now += 10
        autoscaler.adopt()
        busy = set(ids)
        times, calls = [], []
        for _ in range(runs):
            clock.now += 10
            fake.reset_calls()
            start = time.perf_counter()
            autoscaler.run_once([], busy)
            times.append(time.perf_counter() - start)
            calls.append(dict(fake.calls))
        client = fake.client()
        naive = []
        for _ in range(runs):
            start = time.perf_counter()
            for slice_id in ids:
                zone = next(z for z, n in zip(used, per_zone) for name, g in groups.items() if g["zones"] == [z] and slice_id.startswith(f"iris-{name}-"))
                client.get_node(name=f"projects/{PROJECT}/locations/{zone}/nodes/{node_id(slice_id)}")
            naive.append(time.perf_counter() - start)
        autoscaler.shutdown()
        manager.close()
        client.transport.close()
    return {
        "slices": slices,
        "zones": zones,
        "calls": calls,
        "median_ms": statistics.median(times) * 1000,
        "naive_ms": statistics.median(naive) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(machine_line())
    print("| slices | zones | API calls per cycle | cycle (median) | one GetNode per slice instead |")
    print("| --- | --- | --- | --- | --- |")
    for zones in (1, 2):
        for slices in (1, 10, 50):
            r = measure(slices, zones, args.runs)
            distinct = {tuple(sorted(c.items())) for c in r["calls"]}
            calls = " or ".join(", ".join(f"{n} {m}" for m, n in c) for c in sorted(distinct))
            print(f"| {slices} | {zones} | {calls} | {r['median_ms']:.1f} ms | {slices} GetNode, {r['naive_ms']:.1f} ms |")
    print(load_line())


if __name__ == "__main__":
    main()
