"""The ``local`` entry point registers one implementation per seam, found through the registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from iris.errors import BundleError
from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry
from iris_local.bundle_store import FileBundleStore
from iris_local.process_runtime import ProcessRuntime
from iris_local.tunnel import DirectTunnel
from iris_local.vm_manager import LocalVmManager


@pytest.fixture
def registry() -> PluginRegistry:
    return PluginRegistry(allow=["local"])


def test_local_plugin_registers_one_implementation_per_seam(registry: PluginRegistry) -> None:
    assert registry.names("vm_manager") == {"local": "iris-local"}
    assert registry.names("container_runtime") == {"process": "iris-local"}
    assert registry.names("bundle_store") == {"file": "iris-local"}
    assert registry.names("tunnel") == {"direct": "iris-local"}


def test_local_provider_record_names_its_defaults_and_builds_a_manager(
    registry: PluginRegistry, tmp_path: Path
) -> None:
    record = registry.vm_manager("local")
    assert (record.default_runtime, record.default_bundle_scheme, record.default_tunnel) == (
        "process",
        "file",
        "direct",
    )
    manager = record.factory(
        ProviderContext(controller_address="http://127.0.0.1:1", state_dir=tmp_path, registry=registry)
    )
    assert isinstance(manager, LocalVmManager)
    manager.close()


def test_local_factories_build_the_local_implementations(registry: PluginRegistry, tmp_path: Path) -> None:
    runtime = registry.container_runtime("process").factory(tmp_path)
    assert isinstance(runtime, ProcessRuntime)
    runtime.close()
    assert isinstance(registry.tunnel("direct").factory({}), DirectTunnel)


def test_open_bundle_store_file_url_stores_under_that_directory(registry: PluginRegistry, tmp_path: Path) -> None:
    store = registry.open_bundle_store(f"file://{tmp_path}/with%20space")
    assert isinstance(store, FileBundleStore)
    bundle_id = "0" * 64
    assert store.url_for(bundle_id) == f"file://{tmp_path}/with%20space/{bundle_id}.zip"
    assert (tmp_path / "with space").is_dir()


def test_file_bundle_store_plain_path_prefix_is_accepted(tmp_path: Path) -> None:
    store = FileBundleStore(str(tmp_path / "plain"))
    data = b"bundle"
    bundle_id = hashlib.sha256(data).hexdigest()
    store.put(bundle_id, data)
    assert (tmp_path / "plain" / f"{bundle_id}.zip").read_bytes() == data


def test_file_bundle_store_other_scheme_raises_naming_the_url() -> None:
    with pytest.raises(BundleError, match="'gs://bucket/x' is not a file:// URL"):
        FileBundleStore("gs://bucket/x")


@pytest.mark.parametrize(
    ("address", "url"), [("127.0.0.1:10000", "http://127.0.0.1:10000"), ("http://h:1", "http://h:1")]
)
def test_direct_tunnel_yields_the_address_as_url(address: str, url: str) -> None:
    with DirectTunnel().connect(address) as got:
        assert got == url
