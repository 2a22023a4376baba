#!/usr/bin/env python3
"""Regenerate the committed protobuf and gRPC code under iris-core/src/iris/rpc.

Usage: uv run python scripts/generate_protos.py [--out DIR]
With --out, writes to DIR (used by the staleness test) instead of the source tree.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "iris-core" / "src"
PROTO_DIR = SRC / "iris" / "rpc"


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under iris/rpc into out_dir/iris/rpc; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{SRC}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p.relative_to(SRC)) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = []
        for produced in sorted((Path(tmp) / "iris" / "rpc").iterdir()):
            target = out_dir / "iris" / "rpc" / produced.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(produced, target)
            written.append(target)
        return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=SRC)
    args = parser.parse_args()
    for path in generate(args.out):
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
