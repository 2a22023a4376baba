"""A third-party provider, installed as its own distribution, is discovered through its entry point.

The fixture distributions live in tests/fixtures/: iris-provider-foo works, iris-provider-typo
has a misspelled hook and an unmarked one. Each is installed into a temporary target directory
and a fresh interpreter sees it through PYTHONPATH, as a user's environment would after
``pip install iris-provider-foo``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"

PROBE = textwrap.dedent(
    """
    import json, sys
    from iris.plugin.records import ProviderContext
    from iris.plugin.protocols import SliceRequest
    from iris.plugin.registry import PluginRegistry, installed_plugins

    found = [p for p in installed_plugins() if p.name == "foo"]
    imported_by_listing = "iris_provider_foo.plugin" in sys.modules
    registry = PluginRegistry()
    record = registry.vm_manager("foo")
    manager = record.factory(ProviderContext(controller_address="http://127.0.0.1:1", state_dir="."))
    info = manager.create_slice(SliceRequest(slice_id="s1", scale_group="g", vm_count=2))
    tunnel = registry.tunnel(record.default_tunnel).factory({})
    with tunnel.connect("10.0.0.1:10000") as url:
        pass
    print(json.dumps({
        "found": [[p.name, p.module, p.distribution, p.version] for p in found],
        "imported_by_listing": imported_by_listing,
        "record": [record.name, record.default_tunnel, record.description],
        "vms": [vm.vm_id for vm in info.vms],
        "url": url,
        "providers": sorted(registry.names("vm_manager")),
    }))
    """
)


def install(target: Path, fixture: str = "iris-provider-foo") -> None:
    """Install a fixture distribution (no dependencies) into ``target``."""
    source = FIXTURES / fixture
    uv = shutil.which("uv")
    if uv:
        command = [
            uv,
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--python",
            sys.executable,
            "--target",
            str(target),
            str(source),
        ]
    else:
        pytest.importorskip("pip", reason="needs uv on PATH or pip in this environment to install the fixture")
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(source),
        ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"installing {fixture} failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def foo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("foo-site")
    install(site)
    return site


@pytest.fixture(scope="module")
def typo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("typo-site")
    install(site, "iris-provider-typo")
    return site


def run_probe(site: Path, **extra_env: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "IRIS_PLUGINS"}
    env.update(PYTHONPATH=str(site), **extra_env)
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plugin_discovery_installed_distribution_is_found_with_name_and_version(foo_site: Path) -> None:
    out = run_probe(foo_site)
    assert out["found"] == [["foo", "iris_provider_foo.plugin", "iris-provider-foo", "0.3.1"]]
    assert out["imported_by_listing"] is False


def test_plugin_discovery_provider_and_tunnel_resolve_and_work(foo_site: Path) -> None:
    out = run_probe(foo_site)
    assert out["record"] == ["foo", "foo-tunnel", "in-memory slices"]
    assert out["vms"] == ["s1-0", "s1-1"]
    assert out["url"] == "http://10.0.0.1:10000"
    assert {"foo", "local"} <= set(out["providers"])


def test_plugin_discovery_allow_list_still_admits_the_selected_plugin(foo_site: Path) -> None:
    out = run_probe(foo_site, IRIS_PLUGINS="foo")
    assert out["record"][0] == "foo"
    assert out["providers"] == ["foo"]


def test_plugin_discovery_without_install_foo_is_unknown() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "IRIS_PLUGINS")}
    code = (
        "from iris.plugin.registry import PluginRegistry\n"
        "from iris.errors import PluginError\n"
        "try:\n    PluginRegistry().vm_manager('foo')\n"
        "except PluginError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "unknown provider 'foo'; choose one of:" in result.stdout
    assert "local" in result.stdout


TYPO_PROBLEMS = (
    "iris_register_tunnel is not an Iris hook (did you mean iris_register_tunnels?)",
    "function iris_register_container_runtimes is not marked @hookimpl",
)


def test_plugin_discovery_invalid_plugin_leaves_help_and_listing_working(
    typo_site: Path, iris: Callable[..., subprocess.CompletedProcess], tmp_path: Path
) -> None:
    env = {"PYTHONPATH": str(typo_site)}
    help_result = iris("--help", cwd=tmp_path, env=env)
    assert help_result.returncode == 0, help_result.stderr
    listing = iris("plugins", cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "iris-provider-typo 0.1.0  (iris_provider_typo.plugin)" in listing.stdout
    assert "BROKEN" not in listing.stdout


def test_plugin_discovery_invalid_plugin_is_reported_by_plugins_check_naming_its_functions(
    typo_site: Path, iris: Callable[..., subprocess.CompletedProcess], tmp_path: Path
) -> None:
    result = iris("plugins", "--check", cwd=tmp_path, env={"PYTHONPATH": str(typo_site)})
    assert result.returncode == 1, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "BROKEN" not in lines["local"]
    assert "BROKEN: " in lines["typo"]
    for problem in TYPO_PROBLEMS:
        assert problem in lines["typo"]


def test_plugin_discovery_invalid_plugin_selected_fails_naming_it_and_others_still_work(
    typo_site: Path, iris: Callable[..., subprocess.CompletedProcess], tmp_path: Path
) -> None:
    result = iris("run", "--provider", "typo", "--", "true", cwd=tmp_path, env={"PYTHONPATH": str(typo_site)})
    assert result.returncode == 2
    assert result.stderr.startswith("iris: error: plugin 'typo' from iris-provider-typo 0.1.0 is invalid: ")
    for problem in TYPO_PROBLEMS:
        assert problem in result.stderr
    assert "Traceback" not in result.stderr
    code = "from iris.plugin.registry import PluginRegistry\nprint(PluginRegistry().vm_manager('local').name)\n"
    env = {k: v for k, v in os.environ.items() if k != "IRIS_PLUGINS"}
    env["PYTHONPATH"] = str(typo_site)
    local = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert (local.returncode, local.stdout.strip()) == (0, "local"), local.stderr
