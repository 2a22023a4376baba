"""Cluster config parsing: valid configs structure, every error names the YAML path and value."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from iris.config import ClusterConfig, config_to_dict, load_config, parse_config
from iris.errors import ConfigError

SEED_CONFIG = """\
name: tpu-cluster
provider:
  type: gcp
  project_id: my-project
  zone: us-central2-b
controller:
  port: 10000
scale_groups:
  tpu_v5e_16:
    accelerator_type: tpu
    accelerator_variant: v5litepod-16
    runtime_version: v2-alpha-tpuv5-lite
    min_slices: 0
    max_slices: 4
    vms_per_slice: 4
    memory: 128GB
    preemptible: true
    zones: [us-central2-b, us-west4-a]
  cpu_small:
    min_slices: 1
    max_slices: 2
    cpu: 4
"""


def write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_config_seed_style_parses_every_field(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_CONFIG))
    assert config.name == "tpu-cluster"
    assert (config.provider.type, config.provider.project_id, config.provider.zone) == (
        "gcp",
        "my-project",
        "us-central2-b",
    )
    assert config.controller.port == 10000
    tpu = config.scale_groups["tpu_v5e_16"]
    assert (tpu.accelerator_type, tpu.accelerator_variant) == ("tpu", "v5litepod-16")
    assert (tpu.min_slices, tpu.max_slices, tpu.vms_per_slice) == (0, 4, 4)
    assert tpu.zones == ["us-central2-b", "us-west4-a"]
    assert tpu.preemptible is True
    assert tpu.memory_bytes == 128 * 1000**3
    cpu = config.scale_groups["cpu_small"]
    assert cpu.cpu == 4.0 and isinstance(cpu.cpu, float)
    assert cpu.accelerator_type == "cpu"


def test_parse_config_empty_document_gives_defaults() -> None:
    assert parse_config(None) == ClusterConfig()
    assert parse_config({}).provider.type == "local"


def test_config_to_dict_round_trips_through_parse_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_CONFIG))
    assert parse_config(config_to_dict(config)) == config


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        # unknown fields list the accepted ones
        (
            {"provider": {"type": "gcp", "projct_id": "x"}},
            ["cluster.yaml: provider:", "projct_id", "accepted:", "project_id", "zone"],
        ),
        ({"bogus": 1}, ["(top level)", "bogus", "accepted:", "scale_groups"]),
        ({"scale_groups": {"tpu": {"min_slice": 1}}}, ["scale_groups.tpu:", "min_slice", "min_slices", "max_slices"]),
        # wrong types name the path, the expected type and the value
        ({"scale_groups": {"tpu": {"min_slices": "two"}}}, ["scale_groups.tpu.min_slices", "expected int", "'two'"]),
        ({"scale_groups": {"tpu": {"cpu": "lots"}}}, ["scale_groups.tpu.cpu", "expected float", "'lots'"]),
        ({"controller": {"port": True}}, ["controller.port", "expected int", "True"]),
        ({"provider": {"type": 3}}, ["provider.type", "expected str", "3"]),
        ({"scale_groups": {"tpu": {"preemptible": "yes"}}}, ["scale_groups.tpu.preemptible", "expected bool", "'yes'"]),
        ({"scale_groups": ["tpu"]}, ["scale_groups", "mapping"]),
        # bad sizes
        ({"scale_groups": {"tpu": {"memory": "2XB"}}}, ["scale_groups.tpu.memory", "'2XB'", "2GB"]),
        ({"scale_groups": {"tpu": {"memory": -5}}}, ["scale_groups.tpu.memory", "-5"]),
        # cross-field rules
        (
            {"scale_groups": {"tpu": {"min_slices": 3, "max_slices": 1}}},
            ["scale_groups.tpu.max_slices", "1", "min_slices (3)"],
        ),
        ({"scale_groups": {"tpu": {"min_slices": -1}}}, ["scale_groups.tpu.min_slices", "-1", "negative"]),
        ({"scale_groups": {"tpu": {"vms_per_slice": 0}}}, ["scale_groups.tpu.vms_per_slice", "0", ">= 1"]),
        ({"controller": {"port": 70000}}, ["controller.port", "70000", "65535"]),
        ({"controller": {"http_port": -2}}, ["controller.http_port", "-2", "-1 (off)"]),
        ({"controller": {"http_port": "8080"}}, ["controller.http_port", "expected int", "'8080'"]),
        ({"provider": {"type": ""}}, ["provider.type", "local, gcp or manual"]),
        ({"docker": {"image": "Iris Worker"}}, ["docker.image", "'Iris Worker'", "not a valid image reference", "NAME[:TAG]"]),
    ],
)
def test_parse_config_invalid_field_error_names_path_and_value(data: dict, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(data, source="cluster.yaml")
    message = str(excinfo.value)
    assert message.startswith("cluster.yaml: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_parse_config_top_level_list_raises_naming_the_type() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping.*list"):
        parse_config(["a", "b"], source="cluster.yaml")


def test_parse_config_several_errors_reports_first_and_count() -> None:
    with pytest.raises(ConfigError, match=r"and \d+ more"):
        parse_config({"scale_groups": {"a": {"min_slices": "x"}, "b": {"max_slices": "y"}}})


def test_parse_config_zones_given_as_string_raises_naming_path() -> None:
    with pytest.raises(ConfigError, match="scale_groups.tpu.zones"):
        parse_config({"scale_groups": {"tpu": {"zones": "us-central2-b"}}})


def test_load_config_missing_file_raises_naming_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: config file not found")):
        load_config(path)


def test_load_config_directory_raises_saying_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_load_config_path_through_a_file_raises_cannot_read(tmp_path: Path) -> None:
    blocker = write(tmp_path, "x", name="not-a-dir")
    with pytest.raises(ConfigError, match=re.escape(f"{blocker / 'cluster.yaml'}: cannot read config file")):
        load_config(blocker / "cluster.yaml")


@pytest.mark.skipif(os.geteuid() == 0, reason="needs a non-root user: root reads files whatever their mode")
def test_load_config_unreadable_file_raises_cannot_read(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_CONFIG)
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: a\nprovider:\n  type: [unclosed\n", 4),
        ("name: a\n  bad: indent\n", 2),
        ("name: a\nprovider:\n\ttype: gcp\n", 3),
    ],
)
def test_load_config_invalid_yaml_raises_with_line_number(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not valid YAML at line {line}, column ")):
        load_config(path)


def test_load_config_invalid_field_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "scale_groups:\n  tpu:\n    max_slices: many\n")
    with pytest.raises(
        ConfigError, match="^" + re.escape(f"{path}: scale_groups.tpu.max_slices: expected int, got 'many'") + "$"
    ):
        load_config(path)


def test_parse_config_bundle_limits_default_and_parse() -> None:
    from iris.job.records import BundleLimits

    assert parse_config({"provider": {"type": "local"}}).bundle.limits == BundleLimits(1000 * 1000 * 1000, 100_000)
    config = parse_config({"provider": {"type": "local"}, "bundle": {"max_unpacked_size": "2GiB", "max_files": 500}})
    assert config.bundle.limits == BundleLimits(max_unpacked_bytes=2 * 1024**3, max_files=500)


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        ({"max_unpacked_size": "lots"}, "cluster.yaml: bundle.max_unpacked_size: expected a size such as 2GB or 512MiB, got 'lots'"),
        ({"max_unpacked_size": 0}, "cluster.yaml: bundle.max_unpacked_size: 0; must be a size above 0, e.g. 100MB"),
        ({"max_files": 0}, "cluster.yaml: bundle.max_files: 0; must be >= 1"),
        ({"max_files": "many"}, "cluster.yaml: bundle.max_files: expected int, got 'many'"),
    ],
)
def test_parse_config_bad_bundle_limit_names_the_field(bundle: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"provider": {"type": "local"}, "bundle": bundle}, "cluster.yaml")
    assert str(raised.value) == message
@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"enabled": "yes"}, "config: auth.enabled: expected true, false or null, got 'yes'"),
        ({"tokens": "abc"}, "config: auth.tokens: expected a list, got 'abc'"),
        ({"tokens": [{"name": "w", "role": "worker", "token": "t" * 32}]}, "config: auth.tokens[0]: role 'worker' is not one of: admin, user"),
        ({"tokens": [{"name": "a", "token": "short"}]}, "config: auth.tokens[0]: the token is 5 characters; use at least 16"),
        ({"tokens": [{"name": "a", "token": "sha256:abc"}]}, "config: auth.tokens[0]: sha256:<hex> must be 64 hex digits"),
        ({"owner_token_ttl_seconds": -1}, "config: auth.owner_token_ttl_seconds: -1; must be >= 0"),
        ({"bogus": 1}, "config: auth: unknown field bogus; accepted: enabled, tokens_file, tokens"),
    ],
)
def test_parse_config_bad_auth_field_error_names_the_field(auth: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"auth": auth})
    assert str(caught.value).startswith(message), str(caught.value)


def test_parse_config_auth_defaults_to_unset_and_accepts_tokens() -> None:
    assert parse_config({}).auth.enabled is None
    config = parse_config({"auth": {"enabled": False, "tokens": [{"name": "ops", "role": "admin", "token": "x" * 32}]}})
    assert config.auth.enabled is False and config.auth.tokens[0].role == "admin"
