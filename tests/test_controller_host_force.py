"""``--force`` through the ControllerHost seam with a third-party host written before it existed:
its ``find()``, ``restart(progress)`` and ``stop(progress)`` take no force/config argument. The
plain commands still work with it; ``stop --force`` and ``restart --force`` fail in one line
naming the host's class, before anything is stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.cluster.lifecycle import restart_controller, stop_cluster, stop_controller
from iris.config import parse_config
from iris.errors import PluginError
from iris.plugin import VmManagerPlugin, hookimpl
from iris.plugin.protocols import ControllerPlacement
from iris.plugin.registry import PluginRegistry, reset_registry


class OldHost:
    """A ControllerHost as a plugin wrote it before ``--force``: no force/config arguments."""

    calls: list[str] = []

    def __init__(self, config: Any):
        self.config = config

    def find(self) -> ControllerPlacement | None:
        OldHost.calls.append("find")
        return None

    def start(self, config: Any, progress: Any) -> ControllerPlacement:
        raise AssertionError("not started in this test")

    def restart(self, progress: Any) -> ControllerPlacement:
        OldHost.calls.append("restart")
        raise AssertionError("not restarted in this test")

    def stop(self, progress: Any) -> bool:
        OldHost.calls.append("stop")
        return False

    def close(self) -> None:
        pass


class OldHostPlugin:
    @hookimpl
    def iris_register_vm_managers(self, register: Any) -> None:
        from iris_local.vm_manager import LocalVmManager

        register(VmManagerPlugin(name="oldhost", factory=LocalVmManager, controller_host=OldHost))


@pytest.fixture
def registry() -> Iterator[PluginRegistry]:
    def build() -> PluginRegistry:
        registry = PluginRegistry()
        registry.register(OldHostPlugin(), name="oldhost-test", distribution="old-host-plugin")
        return registry

    yield reset_registry(build)
    reset_registry()


def test_controller_host_without_force_support_works_plainly_and_refuses_force_naming_itself(
    registry: PluginRegistry, tmp_path: Path
) -> None:
    config = parse_config({"name": "old", "provider": {"type": "oldhost"},
                           "controller": {"state_dir": str(tmp_path / "state"), "vm": {"enabled": True}}})  # fmt: skip
    OldHost.calls.clear()
    assert stop_controller(config) is False and OldHost.calls == ["stop"]  # the plain command works as before
    OldHost.calls.clear()
    for act, method, keyword in ((lambda: stop_controller(config, force=True), "stop", "force"),
                                 (lambda: stop_cluster(config, force=True), "find", "force"),
                                 (lambda: restart_controller(config, force=True), "restart", "config")):  # fmt: skip
        with pytest.raises(PluginError) as caught:
            act()
        message = str(caught.value)
        assert message.startswith(
            f"--force: the controller host of provider 'oldhost' ({__name__}.OldHost) cannot apply it: its {method}() "
            f"takes no {keyword}= argument"
        ), message
        assert "\n" not in message
    assert OldHost.calls == []  # refused before anything was asked of the host
