"""The manual provider against real sshd "hosts" (each on its own loopback address, keys made by
the test), starting real workers that reconcile with a real controller."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.cluster.controller.service import ControllerServer
from iris.errors import ConfigError
from iris.plugin.protocols import QuotaExceeded, SliceInfo, SliceRequest, SliceState
from iris.plugin.records import ProviderContext
from iris.plugin.registry import PluginRegistry
from iris.testing import wait_until
from iris.testing.contracts import VmManagerContract
from iris.testing.sshd import SshdUnavailable, SshServer, ensure_sshd
from iris_manual.ssh import SshError
from iris_manual.vm_manager import ManualVmManager, parse_host

ADDRESSES = ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SshServer]]:
    try:
        ensure_sshd()
    except SshdUnavailable as exc:
        pytest.skip(str(exc))
    servers = [SshServer(tmp_path_factory.mktemp(f"host{i}"), address=a).start() for i, a in enumerate(ADDRESSES)]
    # one key for every host, as a config names one ssh_key
    key = servers[0].key_path
    for server in servers[1:]:
        (server.directory / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    yield servers
    for server in servers:
        server.stop()


def provider_section(hosts: list[SshServer], tmp_path: Path, **options: Any) -> dict[str, Any]:
    return {
        "type": "manual",
        "hosts": [f"{h.address}:{h.port}" for h in hosts],
        "ssh_user": hosts[0].user,
        "ssh_key": str(hosts[0].key_path),
        "options": {"python": sys.executable, "remote_dir": str(tmp_path / "remote" / "{host}"),
                    "ssh_known_hosts": str(tmp_path / "known_hosts"), "stop_grace": 5, **options},
    }  # fmt: skip


def manager_for(hosts: list[SshServer], controller: ControllerServer, tmp_path: Path, **options: Any) -> ManualVmManager:
    context = ProviderContext(
        controller_address=controller.address, state_dir=tmp_path / "state",
        options=provider_section(hosts, tmp_path, **options), registry=PluginRegistry(),
    )  # fmt: skip
    return ManualVmManager(context)


class TestManualVmManagerContract(VmManagerContract):
    vm_count = 1

    @pytest.fixture
    def vm_manager(self, hosts: list[SshServer], controller: ControllerServer, tmp_path: Path) -> Iterator[ManualVmManager]:
        manager = manager_for(hosts, controller, tmp_path)
        yield manager
        manager.close()

    def kill_slice(self, vm_manager: Any, info: SliceInfo) -> None:
        for record in vm_manager._records():  # the worker processes die behind its back
            if record["slice_id"] == info.slice_id:
                os.kill(record["pid"], signal.SIGKILL)


def test_manual_slice_workers_register_with_the_controller_and_delete_leaves_nothing(
    hosts: list[SshServer], controller: ControllerServer, tmp_path: Path
) -> None:
    manager = manager_for(hosts, controller, tmp_path)
    try:
        info = manager.create_slice(SliceRequest(slice_id="s1", scale_group="g", vm_count=2, labels={"k": "v"}))
        assert info.state is SliceState.READY
        assert [vm.address for vm in info.vms] == ADDRESSES[:2]
        registered = lambda: {w.worker_id for w in controller.controller.list_workers() if not w.lost}  # noqa: E731
        assert wait_until(lambda: {"s1-0", "s1-1"} <= registered(), timeout=60)
        pids = [r["pid"] for r in manager._records()]
        # a second manager (a restarted controller) finds the slice from the hosts alone
        again = manager_for(hosts, controller, tmp_path)
        assert [s.slice_id for s in again.list_slices({"k": "v"})] == ["s1"]
        again.delete_slice("s1")
        again.close()
        assert manager.describe_slice("s1") is None
        assert not any(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] not in "ZX" for pid in pids)
        assert list((tmp_path / "remote").glob("*/*")) == []
    finally:
        manager.close()


def test_manual_slice_needing_more_hosts_than_are_free_is_a_quota_hold(
    hosts: list[SshServer], controller: ControllerServer, tmp_path: Path
) -> None:
    manager = manager_for(hosts, controller, tmp_path)
    try:
        with pytest.raises(QuotaExceeded, match=r"needs 5 host\(s\); 4 of 4 are free"):
            manager.create_slice(SliceRequest(slice_id="big", scale_group="g", vm_count=5))
    finally:
        manager.close()


def test_manual_unreachable_host_and_wrong_key_name_the_host(hosts: list[SshServer], controller: ControllerServer, tmp_path: Path) -> None:
    from iris.testing.sshd import keygen

    section = provider_section(hosts[:1], tmp_path)
    section["ssh_key"] = str(keygen(tmp_path / "wrong"))
    manager = ManualVmManager(ProviderContext(controller_address=controller.address, state_dir=tmp_path, options=section))
    with pytest.raises(SshError, match=rf"{hosts[0].user}@{hosts[0].address}:{hosts[0].port}: authentication failed with key"):
        manager.list_slices({})
    manager.close()
    section = provider_section(hosts[:1], tmp_path)
    section["hosts"] = ["127.0.0.29:1"]
    manager = ManualVmManager(ProviderContext(controller_address=controller.address, state_dir=tmp_path, options=section))
    with pytest.raises(SshError, match=r"@127\.0\.0\.29:1: cannot connect"):
        manager.list_slices({})
    manager.close()


def test_manual_host_without_iris_says_what_to_install(hosts: list[SshServer], controller: ControllerServer, tmp_path: Path) -> None:
    manager = manager_for(hosts, controller, tmp_path, python="/usr/bin/python3")
    try:
        with pytest.raises(Exception, match="cannot run an Iris worker .*install iris-core and iris-local") as caught:
            manager.create_slice(SliceRequest(slice_id="s2", scale_group="g"))
        message = str(caught.value)  # one line, naming the host and both ways
        assert message.startswith(f"{hosts[0].user}@{hosts[0].address}:{hosts[0].port}: ") and "\n" not in message
        assert "run workers as containers" in message and "provider.options.worker_image" in message
    finally:
        manager.close()


def one_host_manager(hosts: list[SshServer], controller: ControllerServer, tmp_path: Path, **options: Any) -> ManualVmManager:
    """A manager of the last host alone (the key every host authorizes is the first host's)."""
    section = provider_section(hosts[3:], tmp_path, **options)
    section["ssh_key"] = str(hosts[0].key_path)
    context = ProviderContext(controller_address=controller.address, state_dir=tmp_path / "state", options=section, registry=PluginRegistry())
    return ManualVmManager(context)


def test_manual_install_puts_iris_in_a_venv_on_a_host_whose_python_lacks_it(
    hosts: list[SshServer], controller: ControllerServer, tmp_path: Path
) -> None:
    """provider.options.install: true: the Iris wheels of this workspace (uv build) copied over
    SFTP and installed with the host's /usr/bin/python3 (which has no Iris) into a virtualenv in
    the host's directory; the worker runs from it; a second manager reuses it."""
    index_env = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    manager = one_host_manager(hosts, controller, tmp_path, python="/usr/bin/python3", install=True, env=index_env)
    try:
        info = manager.create_slice(SliceRequest(slice_id="inst", scale_group="g"))
        assert info.state is SliceState.READY, (info, manager.vm_logs("inst-0", 30))
        (record,) = [json.loads(p.read_text()) for p in (tmp_path / "remote").glob("*/inst-0/vm.json")]
        venv_python = record["cleanup"][0]
        assert venv_python.endswith("/.venv/bin/python") and venv_python.startswith(str(tmp_path / "remote"))
        assert wait_until(lambda: "inst-0" in {w.worker_id for w in controller.controller.list_workers() if not w.lost}, timeout=60)
        manager.delete_slice("inst")
        marker = Path(venv_python).parent.parent / "iris-wheels"
        installed_at = marker.stat().st_mtime_ns
        again = one_host_manager(hosts, controller, tmp_path, python="/usr/bin/python3", install=True, env=index_env)
        try:
            assert again.create_slice(SliceRequest(slice_id="inst2", scale_group="g")).state is SliceState.READY
            assert marker.stat().st_mtime_ns == installed_at  # the same wheels: not installed again
        finally:
            again.delete_slice("inst2")
            again.close()
    finally:
        manager.delete_slice("inst")
        manager.close()


def test_manual_install_with_a_directory_without_wheels_names_the_field(hosts: list[SshServer], controller: ControllerServer, tmp_path: Path) -> None:
    manager = one_host_manager(hosts, controller, tmp_path, python="/usr/bin/python3", install=str(tmp_path))
    try:
        with pytest.raises(ConfigError, match=r"provider.options.install: '.*' has no iris_core and iris_local wheels; accepted: true"):
            manager.create_slice(SliceRequest(slice_id="bad", scale_group="g"))
    finally:
        manager.close()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [("10.0.0.1", ("10.0.0.1", 22, "me")), ("ann@h:2222", ("h", 2222, "ann")), ("[::1]:23", ("::1", 23, "me"))],
)
def test_parse_host(entry: str, expected: tuple[str, int, str]) -> None:
    host = parse_host(entry, "me")
    assert (host.address, host.port, host.user) == expected


def test_parse_host_bad_port_names_the_entry() -> None:
    with pytest.raises(ConfigError, match=r"provider.hosts: 'h:99999' has port '99999'"):
        parse_host("h:99999", "me")
