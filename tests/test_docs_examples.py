"""Examples in the README and docs/ run as written (a start: the Python ones that need no
running controller of their own)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_docs_examples_readme_python_block_runs_as_written(tmp_path: Path) -> None:
    (block,) = [b for b in python_blocks(ROOT / "README.md") if "IrisClient.local" in b]
    script = tmp_path / "example.py"
    script.write_text(block)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Hello from Iris!" in result.stdout


@pytest.mark.parametrize("doc", ["jobs.md"])
def test_docs_examples_result_example_runs(doc: str, tmp_path: Path) -> None:
    """The `job.result()` example in docs/jobs.md, on an in-process cluster."""
    (block,) = [b for b in python_blocks(ROOT / "docs" / doc) if "job.result()" in b]
    script = tmp_path / "example.py"
    script.write_text(
        "from iris.client import IrisClient\nfrom iris.cluster.types import Entrypoint\n"
        "with IrisClient.local() as client:\n" + "".join(f"    {line}\n" for line in block.splitlines())
    )
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


ACTORS_EXPECTED = {  # a line each example of docs/actors.md prints, in order of the blocks
    0: "task 1 of 2 attempt 0 ['actor']",
    1: "raised in the actor:",
    2: "remote: ZeroDivisionError('division by zero') with cause RemoteTraceback",
    3: "cancelled: stopped at step",
    4: "(200, 2646700)",
    5: "raised in a worker: negative: -1",
}


@pytest.mark.parametrize("index", sorted(ACTORS_EXPECTED))
def test_docs_examples_actors_page_runs_as_written(index: int, iris_workspace: Path) -> None:
    blocks = python_blocks(ROOT / "docs" / "actors.md")
    assert len(blocks) == len(ACTORS_EXPECTED), "docs/actors.md gained or lost an example: list what it prints here"
    # a workspace with the page's pyproject.toml (iris-core from this checkout)
    script = iris_workspace / "example.py"
    script.write_text(blocks[index])
    result = subprocess.run([sys.executable, str(script)], cwd=iris_workspace, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert ACTORS_EXPECTED[index] in result.stdout
