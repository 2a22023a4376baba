"""The manual provider's ControllerHost from a config (no SSH here; tests/test_manual_cluster.py
places controllers on real sshd hosts)."""

from __future__ import annotations

import pytest

from iris.cluster.lifecycle import controller_host
from iris.config import parse_config
from iris.errors import ConfigError
from iris_manual.controller_host import ManualControllerHost


def test_manual_seed_controller_vm_shape_places_the_controller_on_the_named_host() -> None:
    config = parse_config(
        {"provider": {"type": "manual", "hosts": ["h1"], "ssh_user": "ann"},
         "controller_vm": {"image": "reg/iris:1", "manual": {"host": "bob@10.0.0.5:2222", "port": 12000}}}
    )  # fmt: skip
    assert config.controller.vm.enabled and config.controller.vm.port == 12000 and config.controller.vm.image == "reg/iris:1"
    assert config.provider.options["controller_host"] == "bob@10.0.0.5:2222"
    host = controller_host(config)
    assert isinstance(host, ManualControllerHost)
    assert (host.host.user, host.host.address, host.host.port, host.port, host.http_port) == ("bob", "10.0.0.5", 2222, 12000, 12001)
    served, files = host.served_config(config, "/home/bob/ctl")
    assert served.controller.host == "10.0.0.5" and served.controller.state_dir == "/home/bob/ctl/state"
    assert not served.controller.vm.enabled  # it is the placed controller: it does not place itself again
    assert served.provider.options["ssh_known_hosts"] == "/home/bob/ctl/known_hosts" and "known_hosts" in files
    assert served.provider.ssh_user == "ann"


def test_manual_controller_vm_without_a_host_is_one_line_naming_the_field() -> None:
    config = parse_config({"provider": {"type": "manual", "hosts": ["h1"]}, "controller": {"vm": {"enabled": True}}})
    with pytest.raises(ConfigError) as caught:
        controller_host(config)
    assert str(caught.value).startswith("provider.options.controller_host: empty;") and "\n" not in str(caught.value)


def test_manual_controller_host_with_a_bad_port_names_the_field_and_the_value() -> None:
    config = parse_config(
        {"provider": {"type": "manual", "hosts": ["h1"], "options": {"controller_host": "h0:99999"}}, "controller": {"vm": {"enabled": True}}}
    )
    with pytest.raises(ConfigError, match=r"provider.options.controller_host: 'h0:99999' has port '99999'"):
        controller_host(config)
