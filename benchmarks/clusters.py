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
        try:
            yield client
        finally:
            client.close()
    finally:
        controller.stop()
        controller.delete_slices()
        shutil.rmtree(root, ignore_errors=True)
