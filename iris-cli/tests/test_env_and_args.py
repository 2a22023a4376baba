"""Unit tests of iris run's argument folding and env-var merging (seed 000's rules)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from iris.errors import ConfigError
from iris_cli.env_vars import EnvVarError, load_env_vars
from iris_cli.run import fold_env_args


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-e", "K", "V", "--", "x"], ["-e", "K\x00V", "--", "x"]),
        (["-e", "K", "--cpu", "2"], ["-e", "K\x00", "--cpu", "2"]),
        (["--env_vars", "A", "1", "-e", "B"], ["--env_vars", "A\x001", "-e", "B\x00"]),
        (["--", "-e", "A", "B", "C"], ["--", "-e", "A", "B", "C"]),
        (["-e", "K", "-1"], ["-e", "K\x00", "-1"]),
    ],
)
def test_fold_env_args_groups_one_or_two_words(args: list[str], expected: list[str]) -> None:
    assert fold_env_args(args) == expected


def test_fold_env_args_three_values_is_usage_error() -> None:
    with pytest.raises(click.UsageError, match="got 3 values: A B C"):
        fold_env_args(["-e", "A", "B", "C", "--", "true"])


def test_fold_env_args_missing_key_is_usage_error() -> None:
    with pytest.raises(click.UsageError, match="needs KEY"):
        fold_env_args(["-e", "--", "true"])


def test_load_env_vars_order_file_then_shell_tokens_then_flags(tmp_path: Path) -> None:
    (tmp_path / ".iris.yaml").write_text("env:\n  A: file\n  B: file\n  NONE:\n")
    env = load_env_vars(
        [["B", "flag"], ["C"]],
        directory=tmp_path,
        environ={"HF_TOKEN": "hf", "WANDB_API_KEY": "wb", "OTHER": "not forwarded"},
    )
    assert env == {"A": "file", "B": "flag", "NONE": "", "HF_TOKEN": "hf", "WANDB_API_KEY": "wb", "C": ""}


def test_load_env_vars_file_token_beats_shell_token(tmp_path: Path) -> None:
    (tmp_path / ".iris.yaml").write_text("env:\n  HF_TOKEN: from-file\n")
    assert load_env_vars(None, directory=tmp_path, environ={"HF_TOKEN": "shell"}) == {"HF_TOKEN": "from-file"}


def test_load_env_vars_reads_marin_yaml_when_no_iris_yaml(tmp_path: Path) -> None:
    (tmp_path / ".marin.yaml").write_text("env:\n  FROM: marin\n")
    assert load_env_vars(None, directory=tmp_path, environ={}) == {"FROM": "marin"}


def test_load_env_vars_rejects_key_with_equals(tmp_path: Path) -> None:
    with pytest.raises(EnvVarError, match="'A=B' is invalid"):
        load_env_vars([["A=B", "x"]], directory=tmp_path, environ={})


@pytest.mark.parametrize("name", ["1BAD", "A-B", "A B", "", "Ä"])
def test_load_env_vars_rejects_names_that_are_not_environment_variable_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(EnvVarError, match="is invalid; use a letter or '_' then letters, digits or '_'"):
        load_env_vars([[name, "x"]], directory=tmp_path, environ={})


def test_load_env_vars_rejects_bad_name_in_project_file_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / ".iris.yaml").write_text("env:\n  9LIVES: x\n")
    with pytest.raises(ConfigError, match=r"\.iris\.yaml: env: environment variable name '9LIVES' is invalid"):
        load_env_vars(None, directory=tmp_path, environ={})


def test_load_env_vars_rejects_non_mapping_env_in_file(tmp_path: Path) -> None:
    (tmp_path / ".iris.yaml").write_text("env: [1, 2]\n")
    with pytest.raises(ConfigError, match="env: expected a mapping"):
        load_env_vars(None, directory=tmp_path, environ={})
