"""Real processes for recovery tests: a controller run as ``python -m iris.cluster.controller.main
serve`` on a fixed port and state directory, with process-mode local workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry
from iris.testing.polling import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControllerProcess:
    """``python -m iris.cluster.controller.main serve`` on a fixed port and state directory."""

    def __init__(
        self,
        root: Path,
        *,
        workers: int = 2,
        worker_timeout: float = 5.0,
        env: dict[str, str] | None = None,
        autoscaler_interval: float = 2.0,
        cpu: float = 4.0,
        memory: str = "4GB",
        auth: bool | None = None,
    ):
        """``workers`` slices of one worker each (a slice whose worker dies is replaced whole),
        each advertising ``cpu`` and ``memory``. ``auth`` None keeps the default (on); the
        owner's admin token is :attr:`token`."""
        self.root = root
        self.env = {**os.environ, **(env or {})}
        self.state_dir = root / "state"
        self.port = free_port()
        self.config = root / "cluster.yaml"
        self.config.write_text(
            "provider:\n  type: local\n  options: {worker_mode: process}\n"
            f"controller:\n  port: {self.port}\n  state_dir: {self.state_dir}\n  worker_timeout_seconds: {worker_timeout}\n"
            f"autoscaler:\n  evaluation_interval_seconds: {autoscaler_interval}\n"
            f"scale_groups:\n  pool: {{min_slices: {workers}, max_slices: {workers}, vms_per_slice: 1, cpu: {cpu}, memory: {memory}}}\n"
            + ("" if auth is None else f"auth: {{enabled: {str(auth).lower()}}}\n")
        )
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        url_file = self.state_dir / "controller.url"
        url_file.unlink(missing_ok=True)
        log = open(self.root / "controller.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iris.cluster.controller.main", "serve", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.env,
        )
        assert wait_until(lambda: url_file.exists() or self.proc.poll() is not None, timeout=60), self.log()
        assert self.proc.poll() is None, self.log()
        return self.url

    @property
    def token(self) -> str:
        """The admin token the controller wrote for whoever started it (its owner)."""
        from iris.auth import OWNER_TOKEN_FILE, read_token_file

        return read_token_file(self.state_dir / OWNER_TOKEN_FILE)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.root / "controller.log"
        return path.read_text() if path.exists() else ""

    def worker_pids(self) -> dict[str, int]:
        pids = {}
        for record in (self.state_dir / "slices").glob("*.json"):
            for worker in json.loads(record.read_text())["workers"]:
                pids[worker["vm_id"]] = worker["pid"]
        return pids

    def delete_slices(self) -> None:
        """Tear down what the controller left running (its slices), as `iris cluster stop` would."""
        registry = PluginRegistry()
        manager = registry.vm_manager("local").factory(
            ProviderContext(
                controller_address=self.url,
                state_dir=self.state_dir,
                options={"worker_mode": "process"},
                registry=registry,
            )
        )
        for info in manager.list_slices({}):
            manager.delete_slice(info.slice_id)


def kill_strays(marker: str) -> None:
    """Kill any process whose command line mentions this test's directory (orphaned tasks)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


#: Libraries the CLI's help and the local path must not import (``google.protobuf`` is Iris's
#: own wire format, so it is not among them).
HEAVY_LIBRARIES = ("google.cloud", "google.auth", "google.api_core", "docker", "paramiko")


def cli_import_probe(argv: list[str], heavy: tuple[str, ...] = HEAVY_LIBRARIES) -> str:
    """Python source that runs ``iris <argv>`` in its process and prints ``EXIT <code>`` and
    ``HEAVY <the loaded modules under heavy>``: run it with an interpreter (``python -c``) to see
    what a command imports."""
    return (
        "import sys\n"
        "from iris_cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    print('EXIT', exc.code)\n"
        f"print('HEAVY', sorted(m for m in sys.modules if m.startswith({tuple(heavy)!r})))\n"
    )
