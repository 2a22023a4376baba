"""Shared fixtures for the local provider's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris_local.bundle_store import FileBundleStore


@pytest.fixture
def local_controller(tmp_path: Path) -> Iterator[ControllerServer]:
    """A real controller (gRPC server and tick thread) on a free port, stopped afterwards."""
    bundles = FileBundleStore(f"file://{tmp_path / 'controller-bundles'}")
    server = ControllerServer(Controller(), bundles, port=0)
    server.start()
    yield server
    server.stop()
