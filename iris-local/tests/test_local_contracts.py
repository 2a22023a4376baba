"""The local provider's implementations run every contract suite in iris.testing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.cluster.worker.worker import start_in_process
from iris.cluster.controller.service import ControllerServer
from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry
from iris.testing import contracts
from iris.testing.contracts import BundleStoreContract, ContainerRuntimeContract, TunnelContract, VmManagerContract
from iris_local.bundle_store import FileBundleStore
from iris_local.cgroups import CgroupError, Cgroups
from iris_local.process_runtime import ProcessRuntime
from iris_local.tunnel import DirectTunnel
from iris_local.vm_manager import LocalVmManager


class TestFileBundleStoreContract(BundleStoreContract):
    @pytest.fixture
    def bundle_store(self, tmp_path: Path) -> FileBundleStore:
        return FileBundleStore(f"file://{tmp_path / 'bundles'}")


def _cgroup_modes() -> list[Any]:
    """Every way the process runtime can run here: each cgroup version this machine lets it use,
    and without cgroups; a version it cannot use is skipped saying why."""
    modes = []
    for mode in ("v1", "v2"):
        try:
            Cgroups.detect(mode)
            modes.append(mode)
        except CgroupError as exc:
            modes.append(pytest.param(mode, marks=pytest.mark.skip(reason=str(exc))))
    return [*modes, "off"]


class TestProcessRuntimeContract(ContainerRuntimeContract):
    # The runtime wraps each command in /bin/sh to record its exit status; sh exports PWD. The
    # task's temporary files go in the container's own directory (TMPDIR), removed with it.
    allowed_extra_env = frozenset({"PWD", "TMPDIR"})

    @pytest.fixture(params=_cgroup_modes())
    def runtime_factory(self, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
        if request.param == "off":  # only its process group: what leaves it is not contained
            self.escapes_are_contained = False
        return lambda: ProcessRuntime(tmp_path / "runtime", cgroups=request.param)

    def test_kill_container_handling_sigterm_lets_it_finish_within_grace(self, runtime: Any, tmp_path: Path) -> None:
        super().test_kill_container_handling_sigterm_lets_it_finish_within_grace(runtime, tmp_path)


class TestLocalVmManagerContract(VmManagerContract):
    @pytest.fixture
    def vm_manager(self, tmp_path: Path, local_controller: ControllerServer) -> Iterator[LocalVmManager]:
        context = ProviderContext(
            controller_address=local_controller.address,
            state_dir=tmp_path / "state",
            registry=PluginRegistry(allow=["local"]),
            start_worker=start_in_process,
        )
        manager = LocalVmManager(context)
        yield manager
        manager.close()


class TestDirectTunnelContract(TunnelContract):
    @pytest.fixture
    def tunnel(self) -> DirectTunnel:
        return DirectTunnel({})


def test_local_contract_tests_cover_every_seam_contract() -> None:
    module = sys.modules[__name__]
    subclassed = {
        base
        for obj in vars(module).values()
        if isinstance(obj, type) and obj.__name__.startswith("Test")
        for base in obj.__mro__[1:]
    }
    missing = [name for name, contract in contracts.CONTRACTS.items() if contract not in subclassed]
    assert not missing, f"no local implementation runs the contract for: {missing}"
