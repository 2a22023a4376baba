"""The plugin registry: lazy loading, name ownership, clear errors, broken plugins isolated.

Plugins here are real modules written to a temporary directory on sys.path and described by
InstalledPlugin records, exactly as entry points would describe them.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iris.errors import PluginError
from iris.plugin import hookimpl
from iris.plugin.records import TunnelPlugin, VmManagerPlugin
from iris.plugin.registry import InstalledPlugin, PluginRegistry, get_registry, installed_plugins, reset_registry

HEADER = "from iris.plugin import hookimpl, VmManagerPlugin, ContainerRuntimePlugin, BundleStorePlugin, TunnelPlugin\n"

MakePlugin = Callable[..., InstalledPlugin]


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakePlugin]:
    """Write a plugin module and return its InstalledPlugin (entry point) record."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    modules: list[str] = []

    def make(name: str, body: str, distribution: str | None = None, version: str = "1.0") -> InstalledPlugin:
        module = f"iris_test_plugin_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        (directory / f"{module}.py").write_text(HEADER + textwrap.dedent(body))
        importlib.invalidate_caches()
        modules.append(module)
        return InstalledPlugin(name, module, distribution or f"iris-provider-{name}", version)

    yield make
    for module in modules:
        sys.modules.pop(module, None)


def provider(name: str) -> str:
    return f"""
    @hookimpl
    def iris_register_vm_managers(register):
        register(VmManagerPlugin(name={name!r}, factory=lambda context: ("manager", {name!r}, context)))
    """


def runtime(name: str) -> str:
    return f"""
    @hookimpl
    def iris_register_container_runtimes(register):
        register(ContainerRuntimePlugin(name={name!r}, factory=lambda root: ("runtime", root)))
    """


def test_registry_vm_manager_known_name_returns_its_record(make_plugin: MakePlugin) -> None:
    registry = PluginRegistry(plugins=[make_plugin("alpha", provider("alpha"))])
    record = registry.vm_manager("alpha")
    assert isinstance(record, VmManagerPlugin)
    assert record.name == "alpha"
    assert record.factory("ctx") == ("manager", "alpha", "ctx")
    assert record.default_runtime == "process"


def test_registry_unknown_provider_error_lists_choices(make_plugin: MakePlugin) -> None:
    registry = PluginRegistry(plugins=[make_plugin("beta", provider("beta")), make_plugin("alpha", provider("alpha"))])
    with pytest.raises(PluginError, match=r"^unknown provider 'gamma'; choose one of: alpha, beta$"):
        registry.vm_manager("gamma")


@pytest.mark.parametrize(
    ("name", "distribution"), [("gcp", "iris-gcp"), ("manual", "iris-manual"), ("local", "iris-local")]
)
def test_registry_unknown_first_party_provider_names_its_distribution(
    make_plugin: MakePlugin, name: str, distribution: str
) -> None:
    registry = PluginRegistry(plugins=[make_plugin("alpha", provider("alpha"))])
    with pytest.raises(PluginError) as excinfo:
        registry.vm_manager(name)
    message = str(excinfo.value)
    assert f"unknown provider {name!r}" in message
    assert "choose one of: alpha" in message
    assert f"install the {distribution} distribution (pip install {distribution})" in message


def test_registry_no_plugins_unknown_name_says_none_installed() -> None:
    with pytest.raises(PluginError, match=r"choose one of: \(none installed\)"):
        PluginRegistry(plugins=[]).tunnel("ssh")


def test_registry_same_entry_point_name_from_two_distributions_raises_naming_both(make_plugin: MakePlugin) -> None:
    one = make_plugin("foo", provider("foo"), distribution="iris-foo-one")
    two = make_plugin("foo", provider("foo"), distribution="iris-foo-two")
    registry = PluginRegistry(plugins=[one, two])
    with pytest.raises(PluginError) as excinfo:
        registry.vm_manager("foo")
    message = str(excinfo.value)
    assert "'foo' is claimed by two distributions" in message
    assert f"iris-foo-one ({one.module})" in message and f"iris-foo-two ({two.module})" in message


def test_registry_same_entry_point_twice_from_one_distribution_loads_once(make_plugin: MakePlugin) -> None:
    plugin = make_plugin("foo", provider("foo"))
    registry = PluginRegistry(plugins=[plugin, plugin])
    assert registry.vm_manager("foo").name == "foo"


def test_registry_same_runtime_name_from_two_plugins_raises_naming_both_distributions(make_plugin: MakePlugin) -> None:
    registry = PluginRegistry(
        plugins=[
            make_plugin("one", runtime("docker"), distribution="iris-docker-one"),
            make_plugin("two", runtime("docker"), distribution="iris-docker-two"),
        ]
    )
    with pytest.raises(PluginError) as excinfo:
        registry.container_runtime("docker")
    message = str(excinfo.value)
    assert "container_runtime 'docker' is registered by both" in message
    assert "iris-docker-one" in message and "iris-docker-two" in message


def test_registry_broken_plugin_is_reported_by_load_all_and_others_still_load(make_plugin: MakePlugin) -> None:
    good = make_plugin("good", provider("good"))
    broken = make_plugin("broken", 'raise RuntimeError("boom at import")\n')
    also_good = make_plugin("zeta", provider("zeta"))
    registry = PluginRegistry(plugins=[broken, good, also_good])
    registry.load_all()
    assert set(registry.broken) == {"broken"}
    assert "RuntimeError: boom at import" in registry.broken["broken"]
    assert registry.names("vm_manager") == {"good": good.distribution, "zeta": also_good.distribution}
    assert registry.vm_manager("good").name == "good"


def test_registry_broken_plugin_requested_by_name_raises_naming_distribution(make_plugin: MakePlugin) -> None:
    broken = make_plugin(
        "broken", 'raise ImportError("needs google-cloud-tpu")\n', distribution="iris-broken", version="2.1"
    )
    registry = PluginRegistry(plugins=[broken, make_plugin("good", provider("good"))])
    with pytest.raises(PluginError) as excinfo:
        registry.vm_manager("broken")
    assert (
        str(excinfo.value)
        == "plugin 'broken' from iris-broken 2.1 failed to import: ImportError: needs google-cloud-tpu"
    )
    assert registry.vm_manager("good").name == "good"


def test_registry_unknown_name_with_broken_plugin_still_lists_working_choices(make_plugin: MakePlugin) -> None:
    registry = PluginRegistry(plugins=[make_plugin("broken", "1 / 0\n"), make_plugin("good", provider("good"))])
    with pytest.raises(PluginError, match=r"choose one of: good$"):
        registry.vm_manager("missing")
    assert "ZeroDivisionError" in registry.broken["broken"]


def test_registry_lookup_by_name_does_not_import_unrelated_plugins(make_plugin: MakePlugin) -> None:
    alpha = make_plugin("alpha", provider("alpha"))
    beta = make_plugin("beta", provider("beta"))
    registry = PluginRegistry(plugins=[alpha, beta])
    assert alpha.module not in sys.modules and beta.module not in sys.modules
    registry.vm_manager("alpha")
    assert alpha.module in sys.modules
    assert beta.module not in sys.modules


def test_registry_creation_imports_nothing(make_plugin: MakePlugin) -> None:
    alpha = make_plugin("alpha", provider("alpha"))
    PluginRegistry(plugins=[alpha]).installed()
    assert alpha.module not in sys.modules


def test_registry_iris_plugins_env_allow_list_blocks_other_plugins(
    make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = make_plugin("alpha", provider("alpha"))
    beta = make_plugin("beta", provider("beta"))
    monkeypatch.setenv("IRIS_PLUGINS", " alpha , ")
    registry = PluginRegistry(plugins=[alpha, beta])
    with pytest.raises(PluginError, match=r"unknown provider 'beta'; choose one of: alpha$"):
        registry.vm_manager("beta")
    assert beta.module not in sys.modules
    assert registry.names("vm_manager") == {"alpha": alpha.distribution}


def test_registry_allow_argument_overrides_env(make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    alpha = make_plugin("alpha", provider("alpha"))
    beta = make_plugin("beta", provider("beta"))
    monkeypatch.setenv("IRIS_PLUGINS", "alpha")
    registry = PluginRegistry(plugins=[alpha, beta], allow=["beta"])
    assert registry.vm_manager("beta").name == "beta"
    assert alpha.module not in sys.modules


def test_registry_register_object_directly_makes_its_records_available() -> None:
    class InlinePlugin:
        @hookimpl
        def iris_register_tunnels(self, register):  # type: ignore[no-untyped-def]
            register(TunnelPlugin(name="inline", factory=lambda options: options))

    registry = PluginRegistry(plugins=[])
    registry.register(InlinePlugin(), name="inline-plugin", distribution="my-app")
    assert registry.tunnel("inline").factory({"a": 1}) == {"a": 1}
    assert registry.names("tunnel") == {"inline": "my-app"}
    with pytest.raises(PluginError, match="'inline-plugin' is already registered by my-app"):
        registry.register(InlinePlugin(), name="inline-plugin")


def test_registry_open_bundle_store_picks_factory_by_url_scheme(make_plugin: MakePlugin) -> None:
    body = """
    @hookimpl
    def iris_register_bundle_stores(register):
        register(BundleStorePlugin(name="mem", factory=lambda url: ("mem", url)))
        register(BundleStorePlugin(name="file", factory=lambda url: ("file", url)))
    """
    registry = PluginRegistry(plugins=[make_plugin("stores", body)])
    assert registry.open_bundle_store("mem://bucket/prefix") == ("mem", "mem://bucket/prefix")
    assert registry.open_bundle_store("/var/iris/bundles") == ("file", "/var/iris/bundles")
    with pytest.raises(PluginError, match="unknown bundle store scheme 'gs'; choose one of: file, mem"):
        registry.open_bundle_store("gs://bucket")


def test_registry_plugin_with_invalid_hookimpl_is_reported_not_fatal(make_plugin: MakePlugin) -> None:
    bad = """
    @hookimpl
    def iris_register_vm_managers(registrar):
        registrar(VmManagerPlugin(name="bad", factory=dict))
    """
    registry = PluginRegistry(plugins=[make_plugin("bad", bad), make_plugin("good", provider("good"))])
    registry.load_all()
    assert "bad" in registry.broken
    assert registry.names("vm_manager") == {"good": "iris-provider-good"}


def test_registry_plugin_whose_hook_raises_does_not_break_other_seams(make_plugin: MakePlugin) -> None:
    raising = """
    @hookimpl
    def iris_register_tunnels(register):
        raise RuntimeError("hook exploded")
    """
    registry = PluginRegistry(plugins=[make_plugin("raising", raising), make_plugin("good", provider("good"))])
    assert registry.names("vm_manager") == {"good": "iris-provider-good"}


# --- hooks are called through pluggy, and hookimpls are validated ------------------------


def test_registry_misspelled_hook_selected_by_name_raises_naming_plugin_and_function(make_plugin: MakePlugin) -> None:
    typo = make_plugin(
        "typo",
        provider("typo")
        + """
    @hookimpl
    def iris_register_tunnel(register):
        register(TunnelPlugin(name="typo-tunnel", factory=dict))
    """,
        distribution="iris-typo",
        version="0.2",
    )
    registry = PluginRegistry(plugins=[typo])
    with pytest.raises(PluginError) as excinfo:
        registry.vm_manager("typo")
    assert str(excinfo.value) == (
        "plugin 'typo' from iris-typo 0.2 is invalid: "
        "iris_register_tunnel is not an Iris hook (did you mean iris_register_tunnels?)"
    )


def test_registry_misspelled_hook_is_reported_by_load_all_and_others_still_load(make_plugin: MakePlugin) -> None:
    typo = make_plugin(
        "typo",
        provider("typo")
        + """
    @hookimpl
    def iris_register_tunnel(register):
        register(TunnelPlugin(name="typo-tunnel", factory=dict))
    """,
    )
    registry = PluginRegistry(plugins=[typo, make_plugin("good", provider("good"))])
    assert registry.names("vm_manager") == {"good": "iris-provider-good"}
    assert "iris_register_tunnel is not an Iris hook" in registry.broken["typo"]
    assert registry.names("tunnel") == {}


def test_registry_unmarked_iris_function_selected_by_name_raises_naming_plugin_and_function(
    make_plugin: MakePlugin,
) -> None:
    unmarked = make_plugin(
        "unmarked",
        provider("unmarked")
        + """
    def iris_register_tunnels(register):
        register(TunnelPlugin(name="unmarked-tunnel", factory=dict))
    """,
        distribution="iris-unmarked",
        version="3.0",
    )
    registry = PluginRegistry(plugins=[unmarked])
    with pytest.raises(PluginError) as excinfo:
        registry.vm_manager("unmarked")
    assert str(excinfo.value) == (
        "plugin 'unmarked' from iris-unmarked 3.0 is invalid: function iris_register_tunnels is not marked "
        "@hookimpl (from iris.plugin import hookimpl)"
    )


def test_registry_unmarked_iris_function_is_reported_by_load_all_and_others_still_load(
    make_plugin: MakePlugin,
) -> None:
    unmarked = make_plugin("unmarked", "def iris_register_vm_managers(register):\n    pass\n")
    registry = PluginRegistry(plugins=[unmarked, make_plugin("good", provider("good"))])
    assert registry.names("vm_manager") == {"good": "iris-provider-good"}
    assert "function iris_register_vm_managers is not marked @hookimpl" in registry.broken["unmarked"]


def test_registry_register_object_with_unmarked_or_misspelled_hooks_raises_naming_both() -> None:
    class Sloppy:
        def iris_register_tunnels(self, register):  # type: ignore[no-untyped-def]
            register(TunnelPlugin(name="sloppy", factory=dict))

        @hookimpl
        def iris_register_vm_manager(self, register):  # type: ignore[no-untyped-def]
            pass

    registry = PluginRegistry(plugins=[])
    with pytest.raises(PluginError) as excinfo:
        registry.register(Sloppy(), name="sloppy", distribution="my-app")
    message = str(excinfo.value)
    assert message.startswith("plugin 'sloppy' from my-app is invalid: ")
    assert "function iris_register_tunnels is not marked @hookimpl" in message
    assert "iris_register_vm_manager is not an Iris hook (did you mean iris_register_vm_managers?)" in message
    assert registry.names("tunnel") == {}
    registry.register(type("Empty", (), {})(), name="sloppy")  # a rejected plugin does not keep its name


def test_registry_hookimpl_taking_subset_of_arguments_is_called(make_plugin: MakePlugin) -> None:
    # The spec offers ``register``; a hookimpl written against a spec with fewer arguments asks
    # for fewer, and pluggy passes only what it asks for. That is what lets hooks grow.
    body = """
    CALLS = []

    @hookimpl
    def iris_register_tunnels():
        CALLS.append("tunnels")
    """
    plugin = make_plugin("subset", provider("subset") + body)
    registry = PluginRegistry(plugins=[plugin])
    assert registry.vm_manager("subset").name == "subset"
    assert registry.names("tunnel") == {}
    assert registry.broken == {}
    assert sys.modules[plugin.module].CALLS == ["tunnels"]


def test_registry_hookimpl_argument_with_default_raises_naming_function(make_plugin: MakePlugin) -> None:
    body = """
    @hookimpl
    def iris_register_tunnels(register=None):
        register(TunnelPlugin(name="defaulted", factory=dict))
    """
    registry = PluginRegistry(plugins=[make_plugin("defaulted", provider("defaulted") + body, distribution="iris-d")])
    with pytest.raises(PluginError) as excinfo:
        registry.vm_manager("defaulted")
    assert str(excinfo.value) == (
        "plugin 'defaulted' from iris-d 1.0 is invalid: iris_register_tunnels gives argument 'register' a "
        "default value; pluggy never passes an argument that has a default, so remove it"
    )


def test_registry_hookimpl_with_specname_is_called_through_pluggy(make_plugin: MakePlugin) -> None:
    body = """
    @hookimpl(specname="iris_register_tunnels")
    def tunnels(register):
        register(TunnelPlugin(name="renamed", factory=dict))
    """
    registry = PluginRegistry(plugins=[make_plugin("renamed", body)])
    assert registry.tunnel("renamed").name == "renamed"


def test_installed_plugins_lists_workspace_providers_with_distribution_and_version() -> None:
    found = {p.name: p for p in installed_plugins()}
    local = found["local"]
    assert (local.module, local.distribution) == ("iris_local.plugin", "iris-local")
    assert local.version[0].isdigit()
    names = [p.name for p in installed_plugins()]
    assert names == sorted(names)


def test_reset_registry_replaces_the_process_wide_registry() -> None:
    original = get_registry()
    replacement = PluginRegistry(plugins=[])
    try:
        assert reset_registry(lambda: replacement) is replacement
        assert get_registry() is replacement
    finally:
        reset_registry(lambda: original)
    assert get_registry() is original
