"""Providers depend on the seams and public helpers only, never on the worker's or the
controller's internals: they start workers through ``iris.plugin.worker_host``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROVIDER_SOURCES = ("iris-local/src", "iris-gcp/src", "iris-manual/src")
INTERNALS = ("iris.cluster.worker", "iris.cluster.controller")


def _is_internal(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in INTERNALS)


def internal_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of an internal module, static or by name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_internal(alias.name):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from iris.cluster import worker` names the package too
                if _is_internal(node.module) or _is_internal(f"{node.module}.{alias.name}"):
                    yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            target = node.args[0].value
            if name in ("import_module", "__import__") and isinstance(target, str) and _is_internal(target):
                yield node.lineno, target


def provider_modules() -> list[Path]:
    return sorted(path for source in PROVIDER_SOURCES for path in (ROOT / source).rglob("*.py"))


def test_provider_sources_are_found() -> None:
    names = {path.relative_to(ROOT).parts[0] for path in provider_modules()}
    assert names == {"iris-local", "iris-gcp", "iris-manual"}


@pytest.mark.parametrize(
    "source",
    [
        "from iris.cluster.worker.worker import Worker",
        "import iris.cluster.controller.state",
        "from iris.cluster import worker",
        "import importlib\nimportlib.import_module('iris.cluster.worker.main')",
    ],
)
def test_internal_import_detector_catches(source: str) -> None:
    assert list(internal_imports(ast.parse(source)))


def test_internal_import_detector_allows_public_modules() -> None:
    source = "from iris.plugin.worker_host import WorkerLaunch\nimport iris.procfs\nfrom iris.cluster.types import TaskState\n"
    assert list(internal_imports(ast.parse(source))) == []


def test_providers_import_no_worker_or_controller_internals() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in provider_modules()
        for line, module in internal_imports(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert not offenders, "providers must use iris.plugin (worker_host) instead of:\n" + "\n".join(offenders)
