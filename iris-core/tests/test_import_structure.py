"""The house's import rules, checked on the source: no import cycle anywhere (an import inside a
function counts: importing late to dodge a cycle is still a cycle), and each layer imports only
from its own layer or the ones below it.

Layers, bottom up: the job vocabulary (``iris.job``) and ``iris.errors``; then config, bundles,
RPC messages and conversion; then the plugin seams; then everything else (controller, worker,
autoscaler, cluster manager, client, testing). Providers (iris-local, iris-gcp, iris-manual)
sit on the seams and public helpers, never on controller or worker internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "iris-core" / "src", ROOT / "iris-local" / "src", ROOT / "iris-gcp" / "src", ROOT / "iris-manual" / "src"]

LAYERS: list[tuple[str, ...]] = [
    ("iris.errors", "iris.job", "iris.procfs", "iris.faults", "iris.auth"),
    ("iris.config", "iris.bundle", "iris.rpc"),
    ("iris.plugin",),
]


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for src in SOURCES:
        for path in src.rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every Iris module ``name`` imports, at top level or inside a function."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def layer_of(name: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    return len(LAYERS)


def test_import_structure_has_no_cycles_counting_imports_inside_functions() -> None:
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_import_structure_layers_import_only_downward() -> None:
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in graph().items()
        if name.startswith("iris.")
        for target in targets
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, "\n".join(sorted(upward))


def test_import_structure_providers_use_seams_not_controller_or_worker_internals() -> None:
    internal = ("iris.cluster.controller", "iris.cluster.worker")
    bad = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        if name.startswith(("iris_local", "iris_gcp", "iris_manual"))
        for target in targets
        if target.startswith(internal)
    ]
    assert not bad, "\n".join(sorted(bad))


def test_import_structure_checker_finds_a_cycle_and_an_upward_import() -> None:
    """The checks above can fail: a made-up graph with a cycle and an upward edge is caught."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert layer_of("iris.config") > layer_of("iris.job.types")
    assert layer_of("iris.cluster.controller.controller") > layer_of("iris.plugin.registry")
