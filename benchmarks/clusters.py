"""The clusters the benchmarks run against."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iris.client import IrisClient
from iris.testing.processes import ControllerProcess

CLUSTER_KINDS = ("in-process", "processes")


@contextmanager
def cluster(kind: str) -> Iterator[IrisClient]:
    """``in-process``: ``IrisClient.local()``, everything in this process. ``processes``: the shape
    of ``iris cluster start --local`` plus a client: the controller process
    (``python -m iris.cluster.controller.main serve``), one worker process of 1 cpu per core of
    this machine, and this process as the client."""
    if kind == "in-process":
        with IrisClient.local() as client:
            yield client
        return
    root = Path(tempfile.mkdtemp(prefix="iris-bench-throughput-"))
    cpus = len(os.sched_getaffinity(0))
    controller = ControllerProcess(root, workers=cpus, cpu=1.0, memory="4GB")
    try:
        client = IrisClient.remote(controller.start())
        try:
            yield client
        finally:
            client.close()
    finally:
        controller.stop()
        controller.delete_slices()
        shutil.rmtree(root, ignore_errors=True)
