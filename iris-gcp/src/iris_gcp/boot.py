"""The in-image boot of a GCP machine: ``python3 -m iris_gcp.boot worker``.

The startup script (:mod:`iris_gcp.bootstrap`) runs this in the worker image's container. It
reads what the machine is from the metadata server (``$IRIS_METADATA_URL``, default the real
one): the ``iris-worker`` JSON (slice, scale group, attributes, runtime, capacity, task image,
a credential per worker index), the controller address, and on a TPU host its index
(``agent-worker-number``, 0 on a single-host machine), and execs the Iris worker as worker
``<slice id>-w<index>`` with its credential in ``IRIS_WORKER_TOKEN`` (never on the command
line), its files under ``$IRIS_ROOT/worker`` and tasks in containers of the engine whose socket
is mounted at ``/var/run/docker.sock``.

Bad or missing metadata ends it with one line naming the key, the value and what is accepted
(exit status 2), which the startup script's health check shows on the console.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from iris_gcp import bootstrap

DEFAULT_METADATA_URL = "http://metadata.google.internal/computeMetadata/v1"
DEFAULT_ROOT = "/var/lib/iris"


class BootError(Exception):
    """Metadata this machine cannot boot from; the message is the one line the user sees."""


class Metadata:
    """Reads the machine's metadata server (``Metadata-Flavor: Google``)."""

    def __init__(self, url: str | None = None, timeout: float = 10.0, attempts: int = 5):
        self.url = (url or os.environ.get("IRIS_METADATA_URL") or DEFAULT_METADATA_URL).rstrip("/")
        self.timeout = timeout
        self.attempts = attempts

    def get(self, path: str) -> str | None:
        """The value at ``path`` (e.g. ``instance/name``), or None if the server has none."""
        request = urllib.request.Request(f"{self.url}/{path}", headers={"Metadata-Flavor": "Google"})
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read().decode()
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                last = exc
            except OSError as exc:  # not up yet (a machine's network comes up with it)
                last = exc
            if attempt + 1 < self.attempts:
                import time

                time.sleep(min(0.5 * 2**attempt, 5.0))
        raise BootError(f"the metadata server at {self.url} does not answer {path}: {last}")

    def attribute(self, key: str) -> str | None:
        return self.get(f"instance/attributes/{key}")


def _require(value: str | None, key: str) -> str:
    if not value:
        raise BootError(f"metadata attribute {key} is missing; the provider sets it on every worker machine")
    return value


def _worker_spec(raw: str) -> dict:
    try:
        spec = json.loads(raw)
    except ValueError:
        raise BootError(f"metadata attribute {bootstrap.WORKER} is not JSON: {raw[:80]!r}") from None
    if not isinstance(spec, dict):
        raise BootError(f"metadata attribute {bootstrap.WORKER} is {type(spec).__name__}; accepted: a JSON object")
    for field, kind in (("slice_id", str), ("attributes", dict), ("tokens", dict)):
        if field in spec and not isinstance(spec[field], kind):
            raise BootError(f"metadata attribute {bootstrap.WORKER}: {field} is {spec[field]!r}; accepted: a JSON {kind.__name__}")
    if not spec.get("slice_id"):
        raise BootError(f"metadata attribute {bootstrap.WORKER} has no slice_id")
    return spec


def _index(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 0  # a single-host machine: the TPU service sets agent-worker-number only on slices
    try:
        index = int(raw.strip())
    except ValueError:
        index = -1
    if index < 0:
        raise BootError(f"metadata attribute {bootstrap.WORKER_INDEX} is {raw!r}; accepted: a worker index 0, 1, 2, ...")
    return index


def _number(spec: Mapping, field: str, kind: type) -> float | int:
    value = spec.get(field) or 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BootError(f"metadata attribute {bootstrap.WORKER}: {field} is {value!r}; accepted: a number >= 0")
    return kind(value)


def worker_launch(metadata: Metadata, root: Path | str | None = None, python: str | None = None):  # type: ignore[no-untyped-def]
    """The :class:`~iris.plugin.worker_host.WorkerLaunch` this machine's metadata describes."""
    from iris.plugin.worker_host import WorkerLaunch

    spec = _worker_spec(_require(metadata.attribute(bootstrap.WORKER), bootstrap.WORKER))
    controller = _require(metadata.attribute(bootstrap.CONTROLLER_ADDRESS), bootstrap.CONTROLLER_ADDRESS)
    index = _index(metadata.attribute(bootstrap.WORKER_INDEX))
    tokens = {str(k): str(v) for k, v in (spec.get("tokens") or {}).items()}
    token = tokens.get(str(index), "")
    if tokens and not token:
        raise BootError(
            f"metadata attribute {bootstrap.WORKER} has no token for worker index {index} "
            f"(it has {', '.join(sorted(tokens))}); accepted: one token per host of the slice"
        )
    slice_id = str(spec["slice_id"])
    address = metadata.get("instance/network-interfaces/0/ip") or ""
    attributes = {str(k): str(v) for k, v in (spec.get("attributes") or {}).items()}
    attributes.update({
        "slice": slice_id,
        "vm-index": str(index),
        "tpu-name": slice_id,
        "tpu-worker-id": str(index),
    })  # fmt: skip
    if spec.get("scale_group"):
        attributes["scale-group"] = str(spec["scale_group"])
    if address:
        attributes["hostname"] = address
    root = Path(root or os.environ.get("IRIS_ROOT") or DEFAULT_ROOT)
    return WorkerLaunch(
        worker_id=bootstrap.worker_id(slice_id, index),
        controller_address=controller,
        work_dir=root / "worker",
        slice_id=slice_id,
        cpu=float(_number(spec, "cpu", float)),
        memory_bytes=int(_number(spec, "memory_bytes", int)),
        attributes=attributes,
        runtime=str(spec.get("runtime") or "docker"),
        task_image=str(spec.get("task_image") or ""),
        token=token,
        python=python or sys.executable,
    )


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m iris_gcp.boot", description="boot this machine as its metadata says")
    parser.add_argument("role", choices=["worker"], help="what to run (the controller's container runs it directly)")
    parser.add_argument("--print", action="store_true", help="print the worker's command line instead of running it")
    args = parser.parse_args(argv)
    try:
        launch = worker_launch(Metadata())
    except BootError as exc:
        print(f"iris-boot: error: {exc}", file=sys.stderr, flush=True)
        return 2
    argv_ = launch.argv()
    if args.print:
        print(json.dumps({"argv": argv_, "worker_id": launch.worker_id, "token": bool(launch.token)}))
        return 0
    launch.work_dir.mkdir(parents=True, exist_ok=True)
    print(f"iris-boot: starting worker {launch.worker_id} of slice {launch.slice_id} for {launch.controller_address}", file=sys.stderr, flush=True)
    os.execve(argv_[0], argv_, launch.env())
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
