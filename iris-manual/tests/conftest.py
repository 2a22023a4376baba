"""Shared by the manual provider's tests: the controller its workers register with."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris_local.bundle_store import FileBundleStore


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerServer]:
    """A real controller (gRPC server and tick thread) on 127.0.0.1, one per test module: every
    host reaches it there (sshd processes share this machine's network, container hosts use
    host networking)."""
    bundles = FileBundleStore(f"file://{tmp_path_factory.mktemp('bundles')}")
    server = ControllerServer(Controller(), bundles, port=0)
    server.start()
    yield server
    server.stop()
