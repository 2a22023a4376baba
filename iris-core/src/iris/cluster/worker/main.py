"""Run one worker as its own process: ``python -m iris.cluster.worker.main --controller URL ...``.

The process builds a :class:`~iris.cluster.worker.worker.Worker` over the named ContainerRuntime
plugin, starts it, writes its ready marker (:func:`iris.plugin.worker_host.ready_marker`: JSON with its
pid) and prints one line, then runs until SIGTERM or SIGINT. Providers build this command with
:class:`iris.plugin.worker_host.WorkerLaunch` rather than by hand.

Stopping gracefully (SIGTERM, SIGINT) stops the worker and kills its attempts: a worker that is
shut down takes its tasks with it. SIGKILL runs nothing, so the attempts' process groups (each
in its own session) keep running as orphans, as tasks outlive a machine's agent when it crashes;
whoever manages the worker finds them by the ``iris.worker=<worker id>`` label on the same
runtime root and kills them (the local provider does so when it deletes the slice).

Bad arguments, including an unknown runtime, print one line and exit 2; a runtime that cannot be
built (the docker runtime's engine is not there) prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from iris.auth import WORKER_TOKEN_ENV
from iris.errors import IrisError, PluginError
from iris.job.types import image_reference_problem
from iris.plugin.worker_host import LABEL_WORKER, machine_cpus, machine_memory_bytes, ready_marker, write_ready

logger = logging.getLogger("iris.cluster.worker.main")  # __name__ is "__main__" under -m

PROG = "iris.cluster.worker.main"
STOP_TIMEOUT_SECONDS = 10.0
KILL_GRACE_SECONDS = 1.0


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _attributes(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a JSON object of strings, got {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise argparse.ArgumentTypeError(f"expected a JSON object of strings, got {text!r}")
    return value


def _worker_id(text: str) -> str:
    if not text or "/" in text or "\0" in text or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid id; it must be non-empty without '/'")
    return text


def _image(text: str) -> str:
    problem = image_reference_problem(text) if text else None
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def take_secret_env(name: str) -> str:
    """Remove ``name`` from this process's environment and return its value: tasks (which get a
    copy of the environment) never see it, and the bytes the kernel shows in
    ``/proc/<pid>/environ`` are overwritten, so a task of the same OS user cannot read it there."""
    value = os.environ.get(name, "")
    if not value:
        return ""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.getenv.restype = ctypes.c_void_p
        address = libc.getenv(name.encode())
        if address:
            ctypes.memset(address, 0, len(value.encode()))
    except (OSError, AttributeError):  # no libc to reach: the value stays in /proc/<pid>/environ
        logger.warning("could not scrub %s from this process's initial environment", name)
    del os.environ[name]
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run one Iris worker until SIGTERM or SIGINT.")
    parser.add_argument("--controller", required=True, help="controller URL, e.g. http://127.0.0.1:10000")
    parser.add_argument("--worker-id", required=True, type=_worker_id)
    parser.add_argument("--slice-id", default="")
    parser.add_argument("--work-dir", required=True, type=Path, help="attempts, bundles and the ready marker")
    parser.add_argument("--cpu", type=_positive(float), default=None, help="capacity; default: this machine's CPUs")
    parser.add_argument(
        "--memory-bytes", type=_positive(int), default=None, help="capacity; default: this machine's memory"
    )
    parser.add_argument("--attributes", type=_attributes, default={}, help="worker attributes as a JSON object")
    parser.add_argument("--runtime", default="process", help="ContainerRuntime plugin name (default: process)")
    parser.add_argument("--runtime-root", type=Path, default=None, help="the runtime's files; default: WORK_DIR/runtime")
    parser.add_argument(
        "--task-image", type=_image, default="", help="image of tasks whose job names none (runtimes that run images)"
    )
    parser.add_argument("--task-python", default="", help="interpreter task environments are built from; default: $IRIS_TASK_PYTHON, else /usr/bin/python3, else python3 on PATH")
    parser.add_argument("--env-dir", type=Path, default=None, help="task environment cache; default: $IRIS_ENV_DIR, else WORK_DIR/envs")
    parser.add_argument("--wait-seconds", type=_non_negative_float, default=2.0, help="reconcile long-poll seconds")
    parser.add_argument(
        "--cleanup", action="store_true",
        help="do not run: kill and remove every container this worker left in its runtime (after it was killed), then exit",
    )  # fmt: skip
    return parser


def _kill_containers(runtime: Any, worker_id: str) -> None:
    """Kill every still-running container of this worker (an attempt that started while the
    worker was stopping escapes ``Worker.stop``)."""
    for handle in runtime.list_containers({LABEL_WORKER: worker_id}):
        try:
            if handle.status().running:
                handle.kill(grace_seconds=KILL_GRACE_SECONDS)
        except Exception:
            logger.exception("failed to kill container %s", handle.container_id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # The C-level handler writes each signal to the pipe, so a signal that arrives before the
    # main thread blocks on it is not lost; the Python handlers only keep the process alive.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)

    from iris.cluster.worker.worker import Worker
    from iris.plugin.registry import get_registry

    registry = get_registry()
    try:
        runtime_plugin = registry.container_runtime(args.runtime)
    except PluginError as exc:
        parser.error(f"--runtime: {exc}")
    work_dir: Path = args.work_dir
    if args.cleanup:
        runtime = runtime_plugin.factory(args.runtime_root or work_dir / "runtime")
        _kill_containers(runtime, args.worker_id)
        for handle in runtime.list_containers({LABEL_WORKER: args.worker_id}):
            try:
                handle.remove()
            except Exception:
                logger.exception("failed to remove container %s", handle.container_id)
        runtime.close()
        return 0
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = take_secret_env(WORKER_TOKEN_ENV)
    ready = ready_marker(work_dir)
    ready.unlink(missing_ok=True)
    try:
        runtime = runtime_plugin.factory(args.runtime_root or work_dir / "runtime")
    except IrisError as exc:  # e.g. the docker runtime's engine cannot be reached
        parser.exit(1, f"{PROG}: error: --runtime {args.runtime}: {exc}\n")
    worker = Worker(
        worker_id=args.worker_id,
        controller_address=args.controller,
        runtime=runtime,
        bundle_store_for=registry.open_bundle_store,
        work_dir=work_dir,
        cpu=args.cpu if args.cpu is not None else float(machine_cpus()),
        memory_bytes=args.memory_bytes if args.memory_bytes is not None else machine_memory_bytes(),
        attributes=args.attributes,
        slice_id=args.slice_id,
        wait_seconds=args.wait_seconds,
        task_image=args.task_image,
        task_python=args.task_python,
        env_dir=args.env_dir,
        token=token,
    )
    worker.start()
    write_ready(work_dir, args.worker_id)
    print(f"iris worker {args.worker_id} running (pid {os.getpid()}), controller {args.controller}", flush=True)

    signum = os.read(wake_r, 1)[0]
    logger.info("worker %s: received %s; stopping and killing its attempts", args.worker_id, signal.Signals(signum).name)
    ready.unlink(missing_ok=True)
    stopper = threading.Thread(target=worker.stop, kwargs={"kill_attempts": True}, name="iris-worker-stop", daemon=True)
    stopper.start()
    stopper.join(STOP_TIMEOUT_SECONDS)
    _kill_containers(runtime, args.worker_id)
    stopper.join(STOP_TIMEOUT_SECONDS)
    runtime.close()
    logger.info("worker %s stopped", args.worker_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
