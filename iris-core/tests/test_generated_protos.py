"""The committed protobuf/gRPC code under iris/rpc matches what scripts/generate_protos.py makes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "generate_protos.py"
COMMITTED = ROOT / "iris-core" / "src" / "iris" / "rpc"


def load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("iris_generate_protos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_protos_match_committed_files(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="needs grpcio-tools (the workspace dev group)")
    written = load_generator().generate(tmp_path)
    generated = {path.name: path for path in written}
    protos = sorted(p.stem for p in COMMITTED.glob("*.proto"))
    assert protos, f"no .proto files in {COMMITTED}"
    for stem in protos:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert f"{stem}{suffix}" in generated, f"generator did not produce {stem}{suffix}"
    stale = [
        name
        for name, path in sorted(generated.items())
        if not (COMMITTED / name).exists() or (COMMITTED / name).read_bytes() != path.read_bytes()
    ]
    assert not stale, f"stale generated code, run `uv run python scripts/generate_protos.py`: {stale}"
