"""Every fenced code block in README.md and docs/*.md is an example that runs as written.

Each doc gets its own workspace (a temp directory, the current directory of its examples); all
docs share one temp ``HOME``. A block is handled by its language, or by a directive: an HTML
comment on the line right before its fence, ``<!-- example: KIND [ARGS] -->``. A block that
none of the rules below handles fails the test, naming its file and line.

Without a directive:

- ``python``: run as a script with this environment's python, in the workspace; what some print
  is checked (``PRINTS``). A line that is a bare expression followed by a comment that is a
  Python literal (``report.requested  # ('iris-tpu-v5e-16-0',)``) asserts that the expression
  equals it; so does ``print(EXPR)  # 6`` (and still prints).
- ``bash``/``sh``: run as one bash script in the workspace, with ``iris`` and ``python`` from this
  environment first on PATH and a leading ``scripts/dev`` dropped (these tests run in the
  environment it sets up). Every command must exit 0, except one whose line's comment says
  ``exits N``, which must exit N.
- a transcript (a ``bash``/``sh`` or untagged block whose first line starts with ``$ ``): each
  ``$ COMMAND`` runs on its own; every output line shown must be among the lines it printed
  (stdout and stderr together, order free), and every other line it printed must be an
  ``iris:`` or ``[iris env]`` status line (progress, on stderr). Job ids, durations, this
  machine's size and runs of spaces are normalised; a shown ``...`` stands for anything. A
  command shown without output must exit 0. ``$ cat FILE`` of a file the workspace does not
  have creates it with the lines shown; of a fixture file, it is taken as shown (the fixture
  stands for it).
- untagged, every line starting with ``iris ``: usage lines. ``iris SUBCOMMAND... --help`` must
  succeed and mention every ``--option`` shown.
- ``yaml``: a cluster config, or a part of one, read with ``iris.config.load_config``.
- ``toml``: parsed with ``tomllib``.

Directives:

- ``file PATH``: the block is the file PATH of the workspace (written before any block of the
  doc runs, so a command may come first). A python file is compiled, a YAML one read as a
  config; the examples that use them run them.
- ``plugin PATH``: a python block that is the plugin module PATH of the workspace (written as
  ``file`` does): it must import and pass Iris's checks for a plugin
  (``PluginRegistry.register``), registering at least one implementation.
- ``with client``: a python fragment run inside ``with IrisClient.local() as client:`` (with
  ``IrisClient``, ``Entrypoint``, ``ResourceSpec`` and ``Path`` imported).
- ``task [IRIS RUN OPTIONS]``: a python block that is a task's code: run as
  ``iris run --provider local [OPTIONS] -- python example_task.py``, which must exit 0.
- ``cluster``: a bash block for a running controller: run while the cluster of ``cluster.yaml``
  (below) runs (``iris cluster --config cluster.yaml start --local``), with
  ``IRIS_CONTROLLER_ADDRESS`` set to it; a controller URL in the block
  (``http://127.0.0.1:10000``, ``http://controller:10000``) stands for it, and the placeholder
  ``JOB`` for the id of the last job it ran.
- ``output``: output or a diagram, shown as the program prints it but not run by this test
  (a sample of a state that the reader's cluster would be in).
- ``skip REASON``: not run, for the reason given (python is still compiled, YAML still read).

Files that docs refer to without showing them are written into every workspace before the
doc's own files (``FIXTURES``): ``pyproject.toml`` (declares iris-core, which tasks that
import iris need, and an extra ``cpu``), ``cluster.yaml`` (a local cluster with a CPU group and a
``v5litepod-16`` group), ``train.py``, ``flaky.py`` (fails its first attempt) and
``long_job.py``. Clusters that a block starts itself (``iris cluster --config C start``) are
stopped after it, whatever happened.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tokenize
import tomllib
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
IRIS = str(BIN / "iris")
TIMEOUT = 180

DIRECTIVES = {"file", "plugin", "with client", "task", "cluster", "output", "skip"}

FIXTURES = {
    "pyproject.toml": f"""\
# the docs' workspace (tests/test_docs_examples.py): tasks import iris, so it declares iris-core
# (this checkout's), as docs/environments.md says a workspace must; `cpu` is an extra
[project]
name = "docs-examples"
version = "0"
requires-python = ">=3.11"
dependencies = ["iris-core"]

[project.optional-dependencies]
cpu = []

[tool.uv.sources]
iris-core = {{ path = "{ROOT / 'iris-core'}", editable = true }}
""",
    "cluster.yaml": """\
# the docs' cluster.yaml (tests/test_docs_examples.py): a local cluster with a CPU worker
# and room for one simulated v5litepod-16 slice (4 hosts)
name: docs-examples
provider: {type: local}
scale_groups:
  cpu: {min_slices: 1, max_slices: 1}
  tpu_v5e_16: {accelerator_type: tpu, accelerator_variant: v5litepod-16, max_slices: 1, cpu: 1, memory: 2GB}
""",
    "train.py": """\
import os

print(f"training: task {os.environ['IRIS_TASK_INDEX']} of {os.environ['IRIS_NUM_TASKS']}")
""",
    "flaky.py": """\
import os
import sys

print("attempt", os.environ["IRIS_ATTEMPT_ID"])
sys.exit(1 if os.environ["IRIS_ATTEMPT_ID"] == "0" else 0)
""",
    "long_job.py": """\
import time

time.sleep(3)
print("done")
""",
}

PRINTS = {  # a line a standalone python example prints, by page and the example's place among its python blocks
    ("docs/actors.md", 0): "task 1 of 2 attempt 0 ['actor']",
    ("docs/actors.md", 1): "raised in the actor:",
    ("docs/actors.md", 2): "remote: ZeroDivisionError('division by zero') with cause RemoteTraceback",
    ("docs/actors.md", 3): "cancelled: ",  # "stopped at step N", or "... was cancelled" if it had not started
    ("docs/actors.md", 4): "(200, 2646700)",
    ("docs/actors.md", 5): "raised in a worker: negative: -1",
    ("README.md", 1): "Hello from Iris!",
}

FENCE = re.compile(r"^```([\w-]*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*example:\s*(.*?)\s*-->\s*$")
CONTROLLER_URLS = ("http://127.0.0.1:10000", "http://controller:10000")
STATUS_LINE = re.compile(r"^(\[[^\]]*\] )?(iris: |\[iris env\] )")  # progress, on stderr
NORMALISE = [
    (re.compile(r"/[\w.-]+/[\w.-]+-\d{8}-\d{6}-[0-9a-f]+"), "<job>"),
    (re.compile(r"\b\d+(\.\d+)?s\b"), "<N>s"),
    (re.compile(r"largest worker has [\d.]+\w*"), "largest worker has <N>"),
    (re.compile(r"\b[\d.]+\w* (cpu|memory) per VM"), r"<N> \1 per VM"),
    (re.compile(r"\s+"), " "),
]


@attrs.frozen
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    directive: str = ""  # the directive's kind, "" for none
    arg: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def doc_blocks(doc: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the directive on the line before it."""
    lines = doc.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"{doc.relative_to(ROOT)}:{i + 1}: fence not closed"
        directive, arg = "", ""
        if i > 0 and (d := DIRECTIVE.match(lines[i - 1])):
            text = d.group(1)
            directive = next((k for k in sorted(DIRECTIVES, key=len, reverse=True) if text == k or text.startswith(k + " ")), text)
            arg = text[len(directive) :].strip()
        blocks.append(Block(doc, i + 1, fence.group(1), "\n".join(lines[i + 1 : end]) + "\n", directive, arg))
        i = end + 1
    fences = [n for n, line in enumerate(lines, 1) if line.lstrip().startswith("```")]
    parsed = {n for block in blocks for n in (block.line, block.line + block.text.count("\n") + 1)}
    stray = [n for n in fences if n not in parsed]
    assert not stray, f"{doc.relative_to(ROOT)}:{stray[0]}: a fence this test does not read (write ```LANG alone on its line)"
    return blocks


# ---- running things --------------------------------------------------------------------------


def example_env(home: Path, controller: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY", "IRIS_CONTROLLER_ADDRESS")}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    if controller:
        env["IRIS_CONTROLLER_ADDRESS"] = controller
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run with stdout and stderr together; on timeout kill its whole process group, so a command
    that hangs leaves nothing behind."""
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return subprocess.CompletedProcess(args, -9, f"{out}\n(timed out after {TIMEOUT}s)")
    return subprocess.CompletedProcess(args, proc.returncode, out)


def tail(text: str, n: int = 25) -> str:
    return "\n".join(text.splitlines()[-n:])


def stop_clusters(configs: set[str], cwd: Path, env: dict[str, str]) -> None:
    for config in configs:
        run([IRIS, "cluster", "--config", config, "stop", "--local"], cwd, env)


class Cluster:
    """The long-lived local cluster of FIXTURES['cluster.yaml'], started on first use."""

    def __init__(self, home: Path, root: Path) -> None:
        self.home, self.root, self.url, self.started = home, root, "", False

    def start(self) -> str:
        if self.url and not self._answers():  # an example stopped it (its own `cluster stop`): again
            self.url = ""
        if not self.url:
            (self.root / "cluster.yaml").write_text(FIXTURES["cluster.yaml"])
            self.started = True
            result = run([IRIS, "cluster", "--config", "cluster.yaml", "start", "--local"], self.root, example_env(self.home))
            urls = [line for line in result.stdout.splitlines() if line.startswith("http://127.0.0.1:")]
            assert result.returncode == 0 and urls, f"cannot start the docs' cluster:\n{result.stdout}"
            self.url = urls[0]
        return self.url

    def _answers(self) -> bool:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.started:
            stop_clusters({"cluster.yaml"}, self.root, example_env(self.home))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def cluster(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    shared = Cluster(home, tmp_path_factory.mktemp("cluster"))
    try:
        yield shared
    finally:
        shared.stop()


# ---- python ----------------------------------------------------------------------------------


def with_value_checks(code: str) -> str:
    """Turn ``EXPR  # LITERAL`` lines (a whole expression statement on one line, its comment a
    Python literal) into asserts that EXPR == LITERAL; ``print(EXPR)  # LITERAL`` still prints."""
    one_line_expressions = {
        node.lineno: node.value
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Expr) and node.lineno == node.end_lineno and not isinstance(node.value, ast.Constant)
    }
    lines = code.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        row, col = tok.start
        if tok.type != tokenize.COMMENT or row not in one_line_expressions:
            continue
        expected = tok.string[1:].strip()
        try:
            ast.literal_eval(expected)
        except (SyntaxError, ValueError):
            continue
        source = lines[row - 1][:col].rstrip()
        indent = source[: len(source) - len(source.lstrip())]
        doc_line = lines[row - 1].strip()
        value, show = source.strip(), ""
        call = one_line_expressions[row]
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "print":
            if len(call.args) != 1 or call.keywords:
                continue
            value, show = ast.unparse(call.args[0]), " print(_value);"
        lines[row - 1] = f"{indent}_value = ({value});{show} assert _value == ({expected}), ({doc_line!r}, 'is', _value)"
    return "\n".join(lines) + "\n"


CLIENT_PREAMBLE = """\
from pathlib import Path
from iris.client import IrisClient
from iris.cluster.types import Entrypoint, ResourceSpec

with IrisClient.local() as client:
"""


def check_python(block: Block, ws: Path, env: dict[str, str]) -> str | None:
    code = block.text
    try:
        compile(code, block.where, "exec")
    except SyntaxError as exc:
        return f"does not compile: {exc}"
    if block.directive in ("file", "skip"):
        return None
    code = with_value_checks(code)
    if block.directive == "plugin":
        return check_plugin(block, ws, env)
    if block.directive == "with client":
        code = CLIENT_PREAMBLE + "".join(f"    {line}\n" for line in code.splitlines())
    if block.directive == "task":
        (ws / "example_task.py").write_text(code)
        result = run([IRIS, "run", "--provider", "local", *shlex.split(block.arg), "--", "python", "example_task.py"], ws, env)
    else:
        script = ws / f"example_{block.line}.py"
        script.write_text(code)
        result = run([sys.executable, script.name], ws, env)
        script.unlink()
    if result.returncode != 0:
        return f"exited {result.returncode}:\n{tail(result.stdout)}"
    python_blocks = [b.line for b in doc_blocks(block.doc) if b.lang == "python"]
    expected = PRINTS.get((str(block.doc.relative_to(ROOT)), python_blocks.index(block.line)), "")
    if expected not in result.stdout:
        return f"did not print {expected!r}:\n{tail(result.stdout)}"
    return None


PLUGIN_CHECK = """\
import importlib, sys
from iris.plugin import hookspecs
from iris.plugin.registry import PluginRegistry

registry = PluginRegistry(plugins=[])
registry.register(importlib.import_module(sys.argv[1]), "example")
names = {seam: list(registry.names(seam)) for seam in hookspecs.SEAMS}
print(names)
sys.exit(0 if any(names.values()) else 1)
"""


def check_plugin(block: Block, ws: Path, env: dict[str, str]) -> str | None:
    module = block.arg.removesuffix(".py").replace("/", ".")
    result = run([sys.executable, "-c", PLUGIN_CHECK, module], ws, dict(env, PYTHONPATH=str(ws)))
    if result.returncode != 0:
        return f"is not a plugin Iris accepts (or registers nothing):\n{tail(result.stdout)}"
    return None


# ---- shell -----------------------------------------------------------------------------------

LAST_JOB = """\
last_job() { iris job list --json | python -c 'import json, sys; print(json.load(sys.stdin)[-1]["job_id"])'; }
"""


def expected_exits(text: str) -> dict[int, int]:
    """{line number in the block: exit status} for lines whose comment says ``exits N``."""
    found = {}
    for n, line in enumerate(text.splitlines(), 1):
        if m := re.search(r"#.*\bexits (\d+)\b", line):
            found[n] = int(m.group(1))
    return found


def started_clusters(text: str) -> set[str]:
    configs = set()
    for line in text.splitlines():
        if re.search(r"\biris\b.*\bcluster\b.*\bstart\b", line) and (m := re.search(r"--config[ =](\S+)", line)):
            configs.add(m.group(1))
    return configs


def check_script(block: Block, ws: Path, env: dict[str, str], controller: str | None) -> str | None:
    body = re.sub(r"^scripts/dev ", "", block.text, flags=re.M)
    if controller:
        for url in CONTROLLER_URLS:
            body = body.replace(url, controller)
        body = re.sub(r"\bJOB\b", '"$(last_job)"', body)
    status_file = ws / ".example-status"
    status_file.unlink(missing_ok=True)
    preamble = f"trap 's=$?; echo \"$((LINENO - 2)) $s\" >> {shlex.quote(str(status_file))}' ERR\n" + LAST_JOB
    assert preamble.count("\n") == 2
    try:
        result = run(["bash", "-c", preamble + body], ws, env)
    finally:
        # the shared cluster (a cluster block's cluster.yaml) is stopped by its fixture
        stop_clusters(started_clusters(body) - ({"cluster.yaml"} if controller else set()), ws, env)
    exits: dict[int, list[int]] = {}
    if status_file.exists():
        for record in status_file.read_text().split("\n"):
            if record:
                line, status = map(int, record.split())
                exits.setdefault(line, []).append(status)
    expected = expected_exits(block.text)
    problems = []
    for line, statuses in sorted(exits.items()):
        if any(s != expected.get(line) for s in statuses):
            problems.append(f"line {block.line + line} ({block.text.splitlines()[line - 1].strip()!r}) exited {statuses}")
    for line, status in expected.items():
        if status and status not in exits.get(line, []):
            problems.append(f"line {block.line + line} did not exit {status} as its comment says")
    if problems:
        return "; ".join(problems) + f"\noutput:\n{tail(result.stdout, 40)}"
    return None


def normalise(line: str) -> str:
    for pattern, replacement in NORMALISE:
        line = pattern.sub(replacement, line)
    return line.strip()


def transcript(text: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def check_transcript(block: Block, ws: Path, env: dict[str, str]) -> str | None:
    for command, shown in transcript(block.text):
        if m := re.fullmatch(r"cat (\S+)", command):
            if not (ws / m.group(1)).exists():
                (ws / m.group(1)).write_text("".join(f"{line}\n" for line in shown))
            elif FIXTURES.get(m.group(1)) == (ws / m.group(1)).read_text():
                continue  # the fixture stands for the file shown (iris-core from this checkout)
        result = run(["bash", "-c", command], ws, env)
        printed = [normalise(line) for line in result.stdout.splitlines()]
        wanted = [normalise(line) for line in shown if line.strip() != "..."]
        if not wanted and result.returncode != 0:
            return f"$ {command}: exited {result.returncode}:\n{tail(result.stdout)}"
        missing = []
        for line in wanted:
            if line in printed:
                printed.remove(line)
            else:
                missing.append(line)
        extra = [line for line in printed if not STATUS_LINE.match(line)]
        if missing or extra:
            return f"$ {command}: the doc shows lines it did not print: {missing}; it printed lines the doc does not show: {extra}\nprinted:\n{tail(result.stdout)}"
    return None


def check_usage(block: Block, ws: Path, env: dict[str, str]) -> str | None:
    for line in block.text.splitlines():
        words = line.split()
        command = []
        for word in words:
            if word[0] in "[-" or word.isupper() or not re.fullmatch(r"[a-z-]+", word):
                break
            command.append(word)
        result = run([IRIS, *command[1:], "--help"], ws, env)
        if result.returncode != 0:
            return f"{' '.join(command)} --help exited {result.returncode}:\n{tail(result.stdout)}"
        missing = [opt for opt in re.findall(r"--[a-z][\w-]*", line) if opt not in result.stdout]
        if missing:
            return f"{' '.join(command)} --help does not mention {missing}"
    return None


# ---- config ----------------------------------------------------------------------------------


def check_yaml(block: Block, ws: Path) -> str | None:
    from iris.config import ConfigError, load_config

    path = ws / f".example_{block.line}.yaml"
    path.write_text(block.text)
    try:
        load_config(path)
    except ConfigError as exc:
        return f"is not a valid config: {exc}"
    finally:
        path.unlink()
    return None


def check_toml(block: Block) -> str | None:
    try:
        tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        return f"is not valid TOML: {exc}"
    return None


# ---- dispatch --------------------------------------------------------------------------------


def check_block(block: Block, ws: Path, home: Path, cluster: Cluster) -> str | None:
    """None if the block runs as written, else what went wrong."""
    if block.directive and block.directive not in DIRECTIVES:
        return f"unknown directive {block.directive!r}; known: {', '.join(sorted(DIRECTIVES))}"
    if block.directive == "skip" and not block.arg:
        return "a skip directive must give its reason"
    shell = block.lang in ("bash", "sh")
    is_transcript = block.text.lstrip().startswith("$ ")
    if block.directive == "cluster" and not (shell and not is_transcript):
        return "the cluster directive is for bash blocks of commands"
    if block.directive == "task" and block.lang != "python":
        return "the task directive is for python blocks"
    if block.directive == "with client" and block.lang != "python":
        return "the with client directive is for python blocks"
    env = example_env(home)
    if block.lang == "python":
        return check_python(block, ws, env)
    if block.lang == "yaml":
        return check_yaml(block, ws)
    if block.lang == "toml":
        return check_toml(block)
    if block.directive in ("output", "skip", "file"):
        return None
    if (shell or block.lang == "") and is_transcript:
        return check_transcript(block, ws, env)
    if shell:
        controller = cluster.start() if block.directive == "cluster" else None
        return check_script(block, ws, example_env(home, controller), controller)
    if block.lang == "" and all(line.startswith("iris ") for line in block.text.splitlines()):
        return check_usage(block, ws, env)
    return f"no rule runs {f'a {block.lang}' if block.lang else 'an untagged'} block like this; give it a directive (see {Path(__file__).name})"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_docs_examples_every_block_runs_as_written(doc: Path, home: Path, cluster: Cluster, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    for name, text in FIXTURES.items():
        (ws / name).write_text(text)
    blocks = doc_blocks(doc)
    for block in blocks:
        if block.directive in ("file", "plugin"):
            path = ws / block.arg
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
    shutil.copytree(ROOT / "docs" / "examples", ws / "docs" / "examples")  # examples name them so
    failures = [f"{block.where}: {problem}" for block in blocks if (problem := check_block(block, ws, home, cluster))]
    assert not failures, "\n\n".join(failures)



BROKEN = {
    "python that raises": ("python", "", "raise SystemExit(1)\n"),
    "a value comment that is wrong": ("python", "", "1 + 1  # 3\n"),
    "a printed value comment that is wrong": ("python", "", "print(1 + 1)  # 3\n"),
    "a task that fails": ("python", "task", "import sys\nsys.exit(4)\n"),
    "a plugin that breaks the rules": ("python", "plugin", "from iris.plugin import hookimpl\n\n@hookimpl\ndef iris_register_tunnel(register):\n    pass\n"),
    "a command that fails": ("bash", "", "true\nfalse\n"),
    "a command that does not exit as its comment says": ("bash", "", "true   # exits 1\n"),
    "a command that exits otherwise than its comment says": ("bash", "", "sh -c 'exit 2'   # exits 1\n"),
    "a transcript that differs": ("", "", "$ echo hi\nho\n"),
    "a transcript with a line it did not show": ("", "", "$ printf 'hi\\nho\\n'\nhi\n"),
    "a transcript of a command that fails": ("", "", "$ false\n"),
    "a usage line with an unknown option": ("", "", "iris job list [--nope]\n"),
    "a config with a bad field": ("yaml", "", "scale_groups:\n  cpu: {min_slices: two}\n"),
    "bad TOML": ("toml", "", "name = \n"),
    "an unknown directive": ("python", "wiht client", "pass\n"),
    "a skip without its reason": ("bash", "skip", "true\n"),
    "text no rule handles": ("", "", "just some words\n"),
    "an unknown language": ("rust", "", "fn main() {}\n"),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_docs_examples_broken_example_is_reported(kind: str, home: Path, cluster: Cluster, tmp_path: Path) -> None:
    """The checks above can fail: a broken example of each kind is reported, not passed."""
    lang, directive, text = BROKEN[kind]
    block = Block(ROOT / "README.md", 1, lang, text, directive, "broken_plugin.py" if directive == "plugin" else "")
    if directive == "plugin":
        (tmp_path / block.arg).write_text(text)
    assert check_block(block, tmp_path, home, cluster)
