"""Run the controller as a long-lived process.

    python -m iris.cluster.controller.main serve [--config C] [--host H] [--port P] [--state-dir D] [--fresh]

State lives in SQLite under the state directory (``controller.db``); a controller restarted on
the same directory resumes every job it had accepted. SIGTERM or SIGINT stops the controller and
leaves the slices running, so a restart adopts them. The URL is printed and written to
``<state-dir>/controller.url``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def serve(args: argparse.Namespace) -> int:
    import attrs

    from iris.config import ClusterConfig, load_config

    config = load_config(args.config) if args.config else ClusterConfig()
    controller = config.controller
    if args.host:
        controller = attrs.evolve(controller, host=args.host)
    if args.port is not None:
        controller = attrs.evolve(controller, port=args.port)
    state_dir = Path(args.state_dir or controller.state_dir or Path.home() / ".iris" / config.name).expanduser()
    controller = attrs.evolve(controller, state_dir=str(state_dir))
    config = attrs.evolve(config, controller=controller)
    from iris.cluster.lifecycle import served

    return run_forever(served(config), fresh=args.fresh)


def run_forever(config: Any, *, fresh: bool = False) -> int:
    """Run the controller for ``config`` until SIGTERM/SIGINT; leave the slices running."""
    from iris.cluster.lifecycle import state_dir_for
    from iris.cluster.manager import ClusterManager

    state_dir = state_dir_for(config)
    manager = ClusterManager(config, fresh=fresh, serve_http=True, event_loop="uvloop")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    url = manager.start()
    if manager.http_url:  # before controller.url, which readers wait for
        _write_whole(state_dir / "controller.http_url", manager.http_url)
    else:
        (state_dir / "controller.http_url").unlink(missing_ok=True)
    _write_whole(state_dir / "controller.url", url)
    dashboard = f"; dashboard at {manager.http_url}" if manager.http_url else ""
    print(f"iris controller serving at {url} (state in {state_dir}){dashboard}", flush=True)
    stop.wait()
    print("iris controller stopping; slices keep running", flush=True)
    manager.shutdown()
    return 0


def _write_whole(path: Path, text: str) -> None:
    """Written whole or not at all: readers never see it half-written."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iris.cluster.controller.main")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the controller until SIGTERM")
    p.add_argument("--config", help="cluster config YAML")
    p.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: the config's; 0 = any)")
    p.add_argument("--state-dir", help="where controller.db lives (default: the config's, or ~/.iris/<name>)")
    p.add_argument("--fresh", action="store_true", help="start with empty state, moving saved state aside")
    p.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="iris-controller: %(levelname)s %(name)s: %(message)s")
    from iris.errors import IrisError

    try:
        return serve(args)
    except IrisError as exc:
        print(f"iris-controller: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
