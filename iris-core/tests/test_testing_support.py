"""iris.testing itself: wait_until, the fakes (which must pass the contracts), and the contract
suites (which must fail implementations that break them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import iris.testing
from iris.plugin.protocols import SliceInfo, SliceRequest, SliceState
from iris.testing import wait_until
from iris.testing.contracts import BundleStoreContract, VmManagerContract
from iris.testing.fakes import InMemoryBundleStore, InMemoryVmManager


class TestInMemoryBundleStoreContract(BundleStoreContract):
    @pytest.fixture
    def bundle_store(self) -> InMemoryBundleStore:
        return InMemoryBundleStore()


class TestInMemoryVmManagerContract(VmManagerContract):
    @pytest.fixture
    def vm_manager(self) -> InMemoryVmManager:
        return InMemoryVmManager()

    def kill_slice(self, vm_manager: InMemoryVmManager, info: SliceInfo) -> None:
        vm_manager.set_state(info.slice_id, SliceState.PREEMPTED, "preempted (injected)")


def test_wait_until_true_at_once_calls_predicate_once() -> None:
    calls = []
    assert wait_until(lambda: calls.append(1) or True, timeout=5)
    assert len(calls) == 1


def test_wait_until_predicate_becoming_true_returns_true() -> None:
    calls = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    assert wait_until(third_time, timeout=30, interval=0.001)
    assert len(calls) == 3


def test_wait_until_never_true_returns_false_after_checking_again() -> None:
    calls = []
    assert not wait_until(lambda: calls.append(1), timeout=0.05, interval=0.01)
    assert len(calls) >= 2


def test_iris_testing_exports_contracts_lazily() -> None:
    assert iris.testing.BundleStoreContract is BundleStoreContract
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        iris.testing.Nope  # noqa: B018


def test_in_memory_vm_manager_set_state_changes_only_that_slice() -> None:
    manager = InMemoryVmManager()
    manager.create_slice(SliceRequest(slice_id="a", scale_group="g"))
    manager.create_slice(SliceRequest(slice_id="b", scale_group="g"))
    manager.set_state("a", SliceState.PREEMPTED, error="spot reclaimed")
    a, b = manager.describe_slice("a"), manager.describe_slice("b")
    assert a is not None and (a.state, a.error) == (SliceState.PREEMPTED, "spot reclaimed")
    assert b is not None and b.state is SliceState.READY
    manager.delete_slice("a")
    manager.delete_slice("a")
    assert manager.deleted == ["a"]


BROKEN_IMPLEMENTATIONS = '''
import contextlib
import hashlib

import attrs
import pytest

from iris.testing.contracts import BundleStoreContract, TunnelContract, VmManagerContract
from iris.testing.fakes import InMemoryBundleStore, InMemoryVmManager


class TrustingBundleStore(InMemoryBundleStore):
    """Stores bytes under whatever id it is given."""

    def put(self, bundle_id, data):
        self._data[bundle_id] = data
        return self.url_for(bundle_id)


class DuplicatingVmManager(InMemoryVmManager):
    """A retried create makes a second slice instead of returning the first."""

    def create_slice(self, request):
        if request.slice_id in self._slices:
            request = attrs.evolve(request, slice_id=request.slice_id + "-dup")
        return super().create_slice(request)


class UndeletableVmManager(InMemoryVmManager):
    def delete_slice(self, slice_id):
        pass


class SchemelessTunnel:
    @contextlib.contextmanager
    def connect(self, address):
        yield address.split("://", 1)[-1]


class TestTrusting(BundleStoreContract):
    @pytest.fixture
    def bundle_store(self):
        return TrustingBundleStore()


class TestDuplicating(VmManagerContract):
    @pytest.fixture
    def vm_manager(self):
        return DuplicatingVmManager()


class TestUndeletable(VmManagerContract):
    settle_timeout = 0.2

    @pytest.fixture
    def vm_manager(self):
        return UndeletableVmManager()


class TestSchemeless(TunnelContract):
    @pytest.fixture
    def tunnel(self):
        return SchemelessTunnel()
'''


def test_contracts_fail_implementations_that_break_them(tmp_path: Path) -> None:
    (tmp_path / "test_broken.py").write_text(textwrap.dedent(BROKEN_IMPLEMENTATIONS))
    report = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", "test_broken.py"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"] = failed
    failures = {name for name, failed in outcomes.items() if failed}
    assert failures == {
        "TestTrusting::test_put_mismatched_id_raises_and_stores_nothing",
        "TestDuplicating::test_create_slice_twice_with_same_id_returns_same_slice_without_duplicate",
        "TestUndeletable::test_delete_slice_removes_it_and_deleting_again_is_not_an_error",
        "TestSchemeless::test_connect_yields_url_with_scheme_and_host",
        "TestSchemeless::test_connect_url_reaches_the_address",
        "TestSchemeless::test_connect_again_after_exit_yields_a_url",
    }
    assert len(outcomes) > len(failures)  # the rest of each suite ran and passed
