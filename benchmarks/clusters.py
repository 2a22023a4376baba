"""The clusters the benchmarks run against."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iris.client import IrisClient
from iris.config import parse_config
from iris.testing.processes import ControllerProcess

CLUSTER_KINDS = ("in-process", "processes")
AUTH_CHOICES = ("default", "on", "off")


def process_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` so far: its own (user + system) and its reaped children's
    (a worker's `sh` wrappers and tasks). 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def cluster_cpu(client: IrisClient) -> dict[str, float]:
    """CPU seconds so far of each process of a ``processes`` cluster, by role (``controller``,
    ``workers``: summed, with their tasks); empty for an in-process cluster."""
    pids = getattr(client, "bench_processes", None)
    if pids is None:
        return {}
    by_name = pids()
    return {
        "controller": process_cpu(by_name.pop("controller")),
        "workers": sum(process_cpu(pid) for pid in by_name.values()),
    }


def add_auth_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--auth", choices=AUTH_CHOICES, default="default",
        help="token checks on every RPC: default = as the cluster kind starts (in-process off, processes on)",
    )


@contextmanager
def cluster(kind: str, auth: str = "default") -> Iterator[IrisClient]:
    """``in-process``: ``IrisClient.local()``, everything in this process. ``processes``: the shape
    of ``iris cluster start --local`` plus a client: the controller process
    (``python -m iris.cluster.controller.main serve``), one worker process of 1 cpu per core of
    this machine, and this process as the client. ``auth`` on/off overrides the kind's default;
    with auth on the client presents the owner's token and workers and tasks their own."""
    enabled = None if auth == "default" else auth == "on"
    if kind == "in-process":
        config = parse_config({} if enabled is None else {"auth": {"enabled": enabled}})
        with IrisClient.local(config) as client:
            yield client
        return
    root = Path(tempfile.mkdtemp(prefix="iris-bench-throughput-"))
    cpus = len(os.sched_getaffinity(0))
    controller = ControllerProcess(root, workers=cpus, cpu=1.0, memory="4GB", auth=enabled)
    try:
        url = controller.start()
        client = IrisClient.remote(url, token=controller.token or None)
        client.bench_processes = lambda: {"controller": controller.proc.pid, **controller.worker_pids()}  # type: ignore[attr-defined]
        try:
            yield client
        finally:
            client.close()
    finally:
        controller.stop()
        controller.delete_slices()
        shutil.rmtree(root, ignore_errors=True)
