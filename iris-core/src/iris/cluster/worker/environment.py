"""Task environments: the Python a task runs with, built by uv and cached on the worker.

A bundle with a ``pyproject.toml`` gets ``uv sync`` (``--locked`` when it has a ``uv.lock``) with
the job's extras, then its ``pip_packages``; a bundle without one gets a plain virtualenv with
only those packages. Either way the environment holds ``cloudpickle`` (what the callable runner
needs) and the callable runner itself, and it is built from the worker's *task python*, never
from Iris's own virtualenv, so a task imports only what it declared.

An environment is cached under ``env_dir/<key>``; the key is the sha256 of everything that
decides its contents (the bundle's ``pyproject.toml`` files and ``uv.lock``, extras, packages,
the task python's version and platform, the runner), so the second task with the same lock
starts without running uv. A file lock per key makes concurrent attempts build once; an
environment counts only once its marker file is written (the last step of a build), so one
half built by a process that died is removed and built again.

The bundle's own projects (the root project and its workspace members) are not installed into
the shared environment, whose lifetime outlives the attempt: their source directories go on the
task's ``PYTHONPATH`` instead (``src/`` where the project has one), so each attempt imports its
own bundle's code.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, BinaryIO

import attrs

from iris.job.types import extra_problem, package_problem
from iris.plugin.protocols import TaskStartError
from iris.runtime.output_log import ENV, encode_text

#: Bump when the layout of an environment changes, so older cached ones are not reused.
ENV_FORMAT = 1
#: The file whose presence says an environment is complete (written last).
MARKER = "iris-env.json"
#: Where the callable runner sits inside an environment.
RUNNER = Path("iris-runner") / "run_callable.py"
_RUNNER_SOURCE = Path(__file__).with_name("run_callable.py")
_POLL_SECONDS = 0.05  # how often a build (or the wait for another's) looks for a cancellation
_KILL_GRACE_SECONDS = 2.0
# Variables of the worker's own environment that would point uv at the wrong interpreter,
# environment or mode.
_UV_ENV_DROP = ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT", "UV_PYTHON",
                "UV_LOCKED", "UV_FROZEN", "UV_NO_SYNC", "UV_RUN_RECURSION_DEPTH", "UV_SYSTEM_PYTHON")  # fmt: skip
def default_task_python() -> str:
    """The interpreter task environments are built from: ``/usr/bin/python3`` when it exists
    (what the Debian task images have at the same path), else the first ``python3`` on PATH that
    is not inside Iris's own virtualenv; empty if there is none."""
    if os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3"
    own = Path(sys.prefix).resolve()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory:
            continue
        candidate = Path(directory) / "python3"
        if not os.access(candidate, os.X_OK):
            continue
        if Path(directory).resolve().is_relative_to(own):
            continue
        return str(candidate)
    return ""


def find_uv() -> str:
    """The uv binary: the one the ``uv`` package (a dependency of iris-core) installed, else
    ``uv`` on PATH."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise RuntimeError("uv is not installed on this worker (pip install uv)") from None
        return found


class BuildCancelled(Exception):
    """The attempt was killed while its environment was building (or waiting for another
    attempt's build); the build was stopped and what it left removed."""


@attrs.frozen
class TaskEnvironment:
    """A built environment, and what an attempt needs to run in it."""

    path: Path
    key: str
    cached: bool
    source_paths: tuple[Path, ...] = ()  # the bundle's own projects, for PYTHONPATH

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin_dir / "python"

    @property
    def runner(self) -> Path:
        return self.path / RUNNER


@attrs.frozen
class _Project:
    """What the bundle declares: its pyproject files (for the key), lock, workspace members."""

    pyprojects: dict[str, bytes]  # relative path -> contents
    lock: bytes | None
    members: dict[str, tuple[Path, dict]]  # project name -> (directory, parsed pyproject)


class EnvironmentBuilder:
    """Builds and caches task environments under ``env_dir`` (see the module docstring)."""

    def __init__(self, env_dir: Path, *, task_python: str = "", uv: str = "", uv_cache_dir: Path | None = None):
        self.env_dir = Path(env_dir)
        self._task_python = task_python
        self._uv = uv
        self._uv_cache_dir = uv_cache_dir
        self._python_id: dict[str, str] | None = None

    # --- what determines an environment ----------------------------------------------------

    @property
    def task_python(self) -> str:
        if not self._task_python:
            self._task_python = default_task_python()
            if not self._task_python:
                raise RuntimeError("no task python on this worker: /usr/bin/python3 does not exist and no python3 is on PATH")
        return self._task_python

    def python_id(self) -> dict[str, str]:
        """The task python's path, version and platform (asked once)."""
        if self._python_id is None:
            code = "import json, platform, sys; print(json.dumps({'version': platform.python_version(), 'platform': sys.platform, 'machine': platform.machine(), 'implementation': sys.implementation.name}))"
            try:
                out = subprocess.run([self.task_python, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=True)
            except (OSError, subprocess.SubprocessError) as exc:
                raise RuntimeError(f"the task python {self.task_python} does not run: {exc}") from exc
            self._python_id = {"path": self.task_python, **json.loads(out.stdout)}
        return self._python_id

    def key(self, project: _Project | None, extras: Sequence[str], packages: Sequence[str]) -> str:
        digest = hashlib.sha256()
        facts = {
            "format": ENV_FORMAT,
            "python": self.python_id(),
            "extras": sorted(set(extras)),
            "packages": list(packages),
            "runner": _runner_digest(),
            "pyprojects": {} if project is None else {k: hashlib.sha256(v).hexdigest() for k, v in sorted(project.pyprojects.items())},
            "lock": None if project is None or project.lock is None else hashlib.sha256(project.lock).hexdigest(),
        }
        digest.update(json.dumps(facts, sort_keys=True).encode())
        return digest.hexdigest()

    # --- building ----------------------------------------------------------------------------

    def prepare(
        self,
        app: Path | None,
        extras: Sequence[str],
        packages: Sequence[str],
        log: BinaryIO,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> TaskEnvironment:
        """The environment for a task whose bundle is unpacked in ``app`` (None: no bundle),
        built now if it is not cached. What the build prints goes to ``log`` as records of the
        ``env`` stream (:mod:`iris.runtime.output_log`), so clients can tell it from the task's
        output (``iris run`` prints it on stderr).

        Raises TaskStartError when the task's own declaration cannot be built (uv's error is
        the message), BuildCancelled once ``cancelled()`` turns true during a build or the wait
        for one; any other exception is this machine's trouble."""
        for extra in extras:
            if problem := extra_problem(extra):
                raise TaskStartError(problem)
        for package in packages:
            if problem := package_problem(package):
                raise TaskStartError(problem)
        project = _read_project(app) if app is not None else None
        if project is None and extras:
            raise TaskStartError(
                f"extras {', '.join(extras)} were asked for, but the bundle has no pyproject.toml to take them from"
            )
        if project is not None:
            _check_member_extras(project, extras)
        key = self.key(project, extras, packages)
        path = self.env_dir / key
        sources = _source_paths(app, project) if project is not None else ()
        what = _describe(project, extras, packages)
        if (path / MARKER).exists():
            _say(log, f"using the cached environment {key[:12]} ({what})")
            return TaskEnvironment(path=path, key=key, cached=True, source_paths=sources)
        self.env_dir.mkdir(parents=True, exist_ok=True)
        with open(self.env_dir / f"{key}.lock", "a") as lock:
            _lock(lock, cancelled)  # one build per key; the others wait, then find it built
            if (path / MARKER).exists():
                _say(log, f"using the cached environment {key[:12]} ({what}), built meanwhile by another attempt")
                return TaskEnvironment(path=path, key=key, cached=True, source_paths=sources)
            if path.exists():  # left half built by a process that died
                shutil.rmtree(path)
            started = time.monotonic()
            _say(log, f"building the environment {key[:12]} ({what}) with {self.task_python}")
            try:
                self._build(path, app, project, extras, packages, log, cancelled)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
            _say(log, f"built the environment {key[:12]} in {time.monotonic() - started:.1f}s")
        return TaskEnvironment(path=path, key=key, cached=False, source_paths=sources)

    def _build(self, path: Path, app: Path | None, project: _Project | None, extras: Sequence[str],
               packages: Sequence[str], log: BinaryIO, cancelled: Callable[[], bool]) -> None:  # fmt: skip
        python = self.task_python
        if project is not None:
            assert app is not None
            argv = ["sync", "--python", python, "--no-install-project", "--no-install-workspace"]
            if project.lock is not None:
                argv.append("--locked")
            member_extras = [e for e in extras if ":" in e]
            if member_extras:  # uv takes extras per sync, not per package: enable them where defined
                argv.append("--all-packages")
            for extra in extras:
                argv += ["--extra", extra.split(":", 1)[-1]]
            self._uv_run(argv, cwd=app, env_path=path, log=log, cancelled=cancelled)
        else:
            self._uv_run(["venv", "--python", python, str(path)], cwd=self.env_dir, env_path=path, log=log, cancelled=cancelled)
        self._uv_run(
            ["pip", "install", "--python", str(path / "bin" / "python"), "cloudpickle", *packages],
            cwd=app or self.env_dir, env_path=path, log=log, cancelled=cancelled,
        )  # fmt: skip
        runner = path / RUNNER
        runner.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_RUNNER_SOURCE, runner)
        marker = {"key": path.name, "python": self.python_id(), "extras": list(extras), "packages": list(packages),
                  "built_at": time.time()}  # fmt: skip
        (path / (MARKER + ".tmp")).write_text(json.dumps(marker, indent=1))
        os.replace(path / (MARKER + ".tmp"), path / MARKER)

    def _uv_run(self, argv: list[str], *, cwd: Path, env_path: Path, log: BinaryIO, cancelled: Callable[[], bool]) -> None:
        uv = self._uv or find_uv()
        env = {k: v for k, v in os.environ.items() if k not in _UV_ENV_DROP}
        env.update({"UV_PROJECT_ENVIRONMENT": str(env_path), "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1",
                    "UV_NO_PROGRESS": "1"})  # fmt: skip
        if self._uv_cache_dir is not None:
            env["UV_CACHE_DIR"] = str(self._uv_cache_dir)
        _say(log, "$ uv " + " ".join(argv))
        try:  # in a session of its own, so a cancel stops uv and the builds it started
            proc = subprocess.Popen([uv, *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        except OSError as exc:
            raise RuntimeError(f"uv ({uv}) cannot be run: {exc}") from exc
        tail: list[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(encode_text(ENV, line))
                log.flush()
                tail[:] = (tail + [line])[-20:]

        reader = threading.Thread(target=pump, name="iris-env-build-log", daemon=True)
        reader.start()
        try:
            while True:
                try:
                    code = proc.wait(_POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if cancelled():
                        _stop_group(proc)
                        reader.join()
                        raise BuildCancelled("killed while its environment was building") from None
            reader.join()
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
        if code != 0:
            lines = [ln for ln in tail if ln.strip()]
            first_error = next((i for i, ln in enumerate(lines) if ln.startswith("error:")), None)
            detail = "\n".join(lines[first_error:] if first_error is not None else lines[-8:]) or f"exit status {code}"
            command = " ".join(argv[:2] if argv[0] == "pip" else argv[:1])
            raise TaskStartError(f"the task environment could not be built (uv {command} failed):\n{detail}")


def _lock(lock: IO[str], cancelled: Callable[[], bool]) -> None:
    """Take the exclusive lock on ``lock``, waiting as long as another holds it, unless cancelled."""
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if cancelled():
                raise BuildCancelled("killed while waiting for its environment to be built") from None
            time.sleep(_POLL_SECONDS)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM uv's process group, SIGKILL it after a grace period; reap uv."""
    for sig, grace in ((signal.SIGTERM, _KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
            if sig == signal.SIGTERM:
                os.killpg(proc.pid, signal.SIGKILL)  # what uv started may outlive it
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


@functools.cache
def _runner_digest() -> str:
    return hashlib.sha256(_RUNNER_SOURCE.read_bytes()).hexdigest()


def _say(log: BinaryIO, message: str) -> None:
    log.write(encode_text(ENV, message))
    log.flush()


def _describe(project: _Project | None, extras: Sequence[str], packages: Sequence[str]) -> str:
    if project is None:
        parts = ["no pyproject.toml: a plain environment"]
    else:
        parts = ["uv.lock" if project.lock is not None else "pyproject.toml without uv.lock"]
    if extras:
        parts.append("extras " + ", ".join(extras))
    if packages:
        parts.append("packages " + ", ".join(packages))
    return "; ".join(parts)


def _load_toml(path: Path, relative: str) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TaskStartError(f"{relative} in the bundle is not valid TOML: {exc}") from None


def _read_project(app: Path) -> _Project | None:
    """What the bundle declares, or None when it has no ``pyproject.toml`` with a project or a
    uv workspace (a pyproject that only configures tools is no project)."""
    root = app / "pyproject.toml"
    if not root.is_file():
        return None
    data = _load_toml(root, "pyproject.toml")
    workspace = data.get("tool", {}).get("uv", {}).get("workspace")
    if "project" not in data and workspace is None:
        return None
    pyprojects = {"pyproject.toml": root.read_bytes()}
    members: dict[str, tuple[Path, dict]] = {}
    if "project" in data and isinstance(data["project"], dict) and "name" in data["project"]:
        members[_normalize(str(data["project"]["name"]))] = (app, data)
    if isinstance(workspace, dict):
        excluded = {p.resolve() for p in _glob(app, workspace, "exclude")}
        for directory in _glob(app, workspace, "members"):
            member = directory / "pyproject.toml"
            if directory.resolve() in excluded or not member.is_file():
                continue
            relative = str(member.relative_to(app))
            pyprojects[relative] = member.read_bytes()
            parsed = _load_toml(member, relative)
            project = parsed.get("project")
            name = project.get("name") if isinstance(project, dict) else None
            if name:
                members[_normalize(str(name))] = (directory, parsed)
    lock = app / "uv.lock"
    return _Project(pyprojects=pyprojects, lock=lock.read_bytes() if lock.is_file() else None, members=members)


def _glob(app: Path, workspace: dict, field: str) -> list[Path]:
    """The directories ``tool.uv.workspace.<field>`` names (glob patterns relative to the root)."""
    patterns = workspace.get(field, [])
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise TaskStartError(f"pyproject.toml: tool.uv.workspace.{field} is {patterns!r}; it must be a list of glob patterns such as \"packages/*\"")
    found: list[Path] = []
    for pattern in patterns:
        try:
            found += sorted(p for p in app.glob(pattern) if p.is_dir())
        except (ValueError, NotImplementedError) as exc:
            raise TaskStartError(f"pyproject.toml: tool.uv.workspace.{field}: pattern {pattern!r} is invalid: {exc}") from None
    return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _check_member_extras(project: _Project, extras: Sequence[str]) -> None:
    """A ``package:extra`` must name a project of the bundle that defines that extra (uv itself
    checks plain extras against the root project)."""
    for extra in extras:
        if ":" not in extra:
            continue
        package, name = extra.split(":", 1)
        member = project.members.get(_normalize(package))
        if member is None:
            known = ", ".join(sorted(project.members)) or "none"
            raise TaskStartError(f"extra {extra!r}: the bundle has no project named {package!r} (its projects: {known})")
        defined = member[1].get("project", {}).get("optional-dependencies", {})
        defined = defined if isinstance(defined, dict) else {}
        if _normalize(name) not in {_normalize(k) for k in defined}:
            known = ", ".join(sorted(defined)) or "none"
            raise TaskStartError(f"extra {extra!r}: project {package!r} defines no extra {name!r} (its extras: {known})")


def _source_paths(app: Path | None, project: _Project) -> tuple[Path, ...]:
    """Where the bundle's own projects' code is: ``src/`` when a project has one, else its
    directory (what an editable install would put on the path)."""
    paths: list[Path] = []
    for directory, _ in project.members.values():
        src = directory / "src"
        paths.append(src if src.is_dir() else directory)
    return tuple(dict.fromkeys(paths))
