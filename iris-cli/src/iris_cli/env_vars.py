"""Environment variables for a job, merged as seed 000 specifies.

Order (later wins): the project file's ``env:`` mapping (``.iris.yaml``, or ``.marin.yaml``
if there is no ``.iris.yaml``), then ``HF_TOKEN`` and ``WANDB_API_KEY`` from this shell,
then ``-e KEY [VALUE]`` flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from iris.errors import ConfigError, IrisError
from iris.job.types import env_name_problem

PROJECT_FILES = (".iris.yaml", ".marin.yaml")
FORWARDED = ("HF_TOKEN", "WANDB_API_KEY")


class EnvVarError(IrisError):
    pass


def _project_env(directory: Path) -> dict[str, str]:
    for name in PROJECT_FILES:
        path = directory / name
        if not path.exists():
            continue
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read project file: {exc}") from None
        env = data.get("env", {}) if isinstance(data, dict) else None
        if env is None:
            env = {}
        if not isinstance(env, dict):
            raise ConfigError(f"{path}: env: expected a mapping of NAME: value, got {type(env).__name__}")
        for key in env:
            problem = env_name_problem(str(key))
            if problem:
                raise ConfigError(f"{path}: env: {problem}")
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    return {}


def load_env_vars(
    flags: Sequence[Sequence[str]] | None,
    *,
    directory: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Merge the project file, forwarded tokens and ``-e`` flags (each ``[KEY]`` or ``[KEY, VALUE]``)."""
    environ = os.environ if environ is None else environ
    env = _project_env(directory or Path.cwd())
    for key in FORWARDED:
        if key not in env and environ.get(key):
            env[key] = environ[key]
    for item in flags or ():
        if not item or len(item) > 2:
            raise EnvVarError(f"-e takes KEY [VALUE], got {len(item)} values: {' '.join(item)}")
        key = item[0]
        problem = env_name_problem(key)
        if problem:
            raise EnvVarError(f"-e: {problem}")
        env[key] = item[1] if len(item) == 2 else ""
    return env
