"""Meta-tests that keep the plugin surface honest (in the spirit of datasette's).

Every hook belongs to a seam with a protocol, a record and a contract suite in iris.testing;
every hook is implemented by the first-party ``local`` plugin unless explicitly excused.
"""

from __future__ import annotations

import importlib
import inspect

import attrs

from iris.plugin import hookspecs, protocols, records
from iris.testing import contracts

# Hooks the local plugin does not implement, with the reason. Empty: it implements them all.
NOT_IMPLEMENTED_BY_LOCAL: dict[str, str] = {}


def hookspec_names() -> set[str]:
    return {
        name
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT_NAME}_spec")
    }


def test_hookspecs_are_exactly_the_seam_hooks() -> None:
    assert hookspec_names() == set(hookspecs.SEAMS.values())


def test_hookspecs_are_prefixed_documented_and_take_register() -> None:
    for name in hookspec_names():
        fn = getattr(hookspecs, name)
        assert name.startswith("iris_register_"), name
        assert list(inspect.signature(fn).parameters) == ["register"], name
        assert fn.__doc__ and ":param register:" in fn.__doc__, name


def test_every_seam_has_a_protocol() -> None:
    assert {seam for seam, _ in protocols.iter_protocols()} == set(hookspecs.SEAMS)


def test_every_seam_has_a_record_with_name_and_factory() -> None:
    record_types = [
        records.VmManagerPlugin,
        records.ContainerRuntimePlugin,
        records.BundleStorePlugin,
        records.TunnelPlugin,
    ]
    assert len(record_types) == len(hookspecs.SEAMS)
    for record_type in record_types:
        fields = [f.name for f in attrs.fields(record_type)]
        assert fields[:2] == ["name", "factory"], record_type


def test_every_seam_has_a_contract_suite_in_iris_testing() -> None:
    assert set(contracts.CONTRACTS) == set(hookspecs.SEAMS)
    for seam, contract in contracts.CONTRACTS.items():
        tests = [name for name in dir(contract) if name.startswith("test_")]
        assert len(tests) >= 3, f"the {seam} contract has only {tests}"
        assert not contract.__name__.startswith("Test"), "a contract base must not be collected by itself"


def test_every_hook_is_implemented_by_the_local_plugin_or_excused() -> None:
    local = importlib.import_module("iris_local.plugin")
    missing = {
        hook for hook in hookspecs.SEAMS.values() if not hasattr(local, hook) and hook not in NOT_IMPLEMENTED_BY_LOCAL
    }
    assert not missing, f"hooks neither implemented by iris_local.plugin nor excused: {sorted(missing)}"
    stale = {hook for hook in NOT_IMPLEMENTED_BY_LOCAL if hasattr(local, hook)}
    assert not stale, f"excused but implemented; drop from NOT_IMPLEMENTED_BY_LOCAL: {sorted(stale)}"
