"""Public value types of the job model: resources, entrypoints, environment, states.

These are the names users write against (seed API):
``from iris.job.types import Entrypoint, ResourceSpec``.
"""

from __future__ import annotations

import enum
import math
import re
import shlex
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import attrs

from iris.errors import ResourceError

_MEMORY_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "KI": 1024,
    "KIB": 1024,
    "M": 1000**2,
    "MB": 1000**2,
    "MI": 1024**2,
    "MIB": 1024**2,
    "G": 1000**3,
    "GB": 1000**3,
    "GI": 1024**3,
    "GIB": 1024**3,
    "T": 1000**4,
    "TB": 1000**4,
    "TI": 1024**4,
    "TIB": 1024**4,
}
_MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid environment variable name (POSIX: a letter or ``_``, then
    letters, digits or ``_``), or None."""
    if ENV_NAME_RE.match(name):
        return None
    return f"environment variable name {name!r} is invalid; use a letter or '_' then letters, digits or '_'"


EXTRA_RE = re.compile(r"^(?:([A-Za-z0-9][A-Za-z0-9._-]*):)?([A-Za-z0-9][A-Za-z0-9._-]*)$")
# A PEP 508 requirement as far as it matters here: a name, optional extras, then a version or
# marker part; never an option (a leading '-'), which uv would read as a flag.
PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[A-Za-z0-9._,\s-]*\])?\s*([<>=!~;@(].*)?$")


def extra_problem(extra: str) -> str | None:
    """Why ``extra`` is not an extra name (``cpu``) or ``package:extra`` (``marin:cpu``), or None."""
    if EXTRA_RE.match(extra):
        return None
    return f"extra {show(extra)} is invalid; use an extra name (e.g. cpu) or PACKAGE:EXTRA for a workspace member (e.g. marin:cpu)"


def package_problem(package: str) -> str | None:
    """Why ``package`` is not a requirement uv can install (``numpy``, ``numpy>=2``,
    ``requests[socks]==2.32``), or None."""
    if PACKAGE_RE.match(package) and "\n" not in package and "\0" not in package:
        return None
    return f"pip package {show(package)} is invalid; use a requirement such as numpy, numpy>=2 or requests[socks]==2.32"


MAX_SIZE_BYTES = (1 << 63) - 1  # what a size field holds on the wire (int64)


def show(value: object, limit: int = 60) -> str:
    """``value`` for an error message: a string or bytes cut to ``limit`` characters, so an
    error stays small whatever was sent."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_memory(value: str | int | float, *, field: str = "memory") -> int:
    """Parse a memory size such as ``2GB``, ``512MiB`` or ``1073741824`` into bytes."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ResourceError(f"{field}: {show(value)} is not a size; use a number of bytes or e.g. 2GB, 512MB, 1GiB")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ResourceError(f"{field}: {value!r} is not a finite size; use a number of bytes or e.g. 2GB")
        if value < 0:
            raise ResourceError(f"{field}: {value!r} is negative; a size must be >= 0")
        size = int(value)
    else:
        match = _MEMORY_RE.match(value) if len(value) <= 64 else None
        unit = match.group(2).upper() if match else None
        if not match or unit not in _MEMORY_UNITS:
            raise ResourceError(
                f"{field}: {show(value)} is not a size; use a number with an optional unit "
                "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 2GB or 512MiB"
            )
        size = int(Fraction(match.group(1)) * _MEMORY_UNITS[unit])  # exact, where a float would round
    if size > MAX_SIZE_BYTES:
        raise ResourceError(f"{field}: {show(value)} is too large; at most {MAX_SIZE_BYTES} bytes")
    return size


def format_memory(num_bytes: int) -> str:
    """Render bytes as a short human-readable size (``2.0GB``)."""
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{size:.1f}TB"


def _device_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
        raise ResourceError(f"device count: {show(value)}; must be a whole number >= 0")
    return value


@attrs.frozen
class DeviceSpec:
    """An accelerator request: kind (``cpu``, ``tpu``, ``gpu``), variant and count."""

    kind: str = "cpu"
    variant: str = ""
    count: int = attrs.field(default=0, converter=_device_count)


def tpu_device(variant: str) -> DeviceSpec:
    """A TPU device request, e.g. ``tpu_device("v5litepod-16")``."""
    if not variant or not isinstance(variant, str):
        raise ResourceError(f"tpu: {variant!r} is not a TPU type; use e.g. v5litepod-16")
    return DeviceSpec(kind="tpu", variant=variant, count=1)


_GPU_RE = re.compile(r"^(?:(?P<variant>[A-Za-z][A-Za-z0-9_.-]*?)(?:x(?P<count>[0-9]+))?|(?P<only>[0-9]+))$")


def gpu_device(variant: str = "", count: int = 1) -> DeviceSpec:
    """A GPU device request, e.g. ``gpu_device("H100", 8)``; the variant may be empty (any GPU)."""
    if not isinstance(variant, str) or (variant and not re.match(r"^[A-Za-z][A-Za-z0-9_.-]*$", variant)):
        raise ResourceError(f"gpu: {variant!r} is not a GPU type; use e.g. H100 or A100-80GB")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ResourceError(f"gpu: count {count!r} is invalid; it must be an integer >= 1")
    return DeviceSpec(kind="gpu", variant=variant, count=count)


def parse_gpu(text: str) -> DeviceSpec:
    """``--gpu`` as written: ``H100x8`` (8 H100s), ``H100`` (one), ``4`` (four of any type)."""
    match = _GPU_RE.match(text or "")
    if not match:
        raise ResourceError(f"gpu: {text!r} is not a GPU request; use TYPE, TYPExCOUNT or COUNT, e.g. H100x8 or 2")
    if match["only"]:
        return gpu_device("", int(match["only"]))
    return gpu_device(match["variant"], int(match["count"] or 1))


def _memory_converter(value: str | int | float) -> int:
    return parse_memory(value)


def _cpu_converter(value: Any) -> float:
    try:
        cpu = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ResourceError(f"cpu: {show(value)} is not a number; use e.g. 1 or 0.5") from None
    if not math.isfinite(cpu):
        raise ResourceError(f"cpu: {show(value)} is not a finite number; use e.g. 1 or 0.5")
    if cpu < 0:
        raise ResourceError(f"cpu: {show(value)} is negative; cpu must be >= 0")
    return cpu


@attrs.define
class ResourceSpec:
    """What one task needs: cpu cores, memory (bytes, or a string like ``2GB``), disk, device.

    Mutable on purpose: the seed API sets ``resources.device = tpu_device(...)``.
    """

    cpu: float = attrs.field(default=1.0, converter=_cpu_converter)
    memory: int = attrs.field(default="1GB", converter=_memory_converter)
    disk: int = attrs.field(default=0, converter=_memory_converter)
    device: DeviceSpec = attrs.field(factory=DeviceSpec)


@attrs.define(init=False)
class EnvironmentSpec:
    """The task's environment: variables, and what its Python environment installs.

    ``extras`` are the bundle's optional-dependency extras (``"cpu"`` for the root project,
    ``"marin:cpu"`` for a workspace member); ``pip_packages`` are requirements installed on top
    (``"numpy>=2"``). See docs/environments.md. ``EnvironmentSpec(env={...})`` as seed 000 writes
    it; ``env_vars={...}`` as the original Iris does is the same thing. A child job that leaves
    ``extras`` and ``pip_packages`` empty inherits its parent's."""

    env: dict[str, str] = attrs.field(factory=dict)
    extras: list[str] = attrs.field(factory=list)
    pip_packages: list[str] = attrs.field(factory=list)

    def __init__(
        self,
        env: dict[str, str] | None = None,
        extras: Sequence[str] | None = None,
        *,
        env_vars: dict[str, str] | None = None,
        pip_packages: Sequence[str] | None = None,
    ):
        if env is not None and env_vars is not None:
            raise TypeError("EnvironmentSpec: give env or env_vars (the same thing), not both")
        for name, values in (("extras", extras), ("pip_packages", pip_packages)):
            if isinstance(values, str):
                raise TypeError(f"EnvironmentSpec: {name} is a list of strings, not the string {values!r}")
        self.__attrs_init__(
            env=dict(env if env is not None else env_vars or {}),
            extras=[str(e) for e in extras or []],
            pip_packages=[str(p) for p in pip_packages or []],
        )


@attrs.frozen
class Entrypoint:
    """What a task runs: a command (argv) or a pickled Python callable.

    ``Entrypoint.from_command("python", "train.py")`` or ``from_command(["python", "train.py"])``
    runs a program; ``Entrypoint.from_callable(fn, *args, **kwargs)`` runs ``fn`` in the task:
    what it returns comes back through ``job.result()`` / ``job.results()``, and an exception
    fails the task with the traceback in the logs and is raised again by ``job.result()``.
    """

    argv: tuple[str, ...] = ()
    callable_bytes: bytes = b""

    @classmethod
    def from_command(cls, *cmd: str | Sequence[str]) -> Entrypoint:
        if len(cmd) == 1 and not isinstance(cmd[0], str):
            argv = tuple(cmd[0])
        elif len(cmd) == 1 and isinstance(cmd[0], str) and " " in cmd[0]:
            argv = tuple(shlex.split(cmd[0]))
        else:
            argv = tuple(str(c) for c in cmd)
        if not argv or not argv[0]:
            raise ValueError("entrypoint: the command is empty; give the program to run, e.g. -- python train.py")
        return cls(argv=argv)

    @classmethod
    def from_callable(cls, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Entrypoint:
        import cloudpickle

        if not callable(fn):
            raise TypeError(f"entrypoint: {fn!r} is not callable")
        return cls(callable_bytes=cloudpickle.dumps((fn, args, kwargs)))

    @property
    def is_callable(self) -> bool:
        return bool(self.callable_bytes)

    def describe(self) -> str:
        if self.is_callable:
            return "<python callable>"
        return shlex.join(self.argv)


class JobState(enum.Enum):
    """Lifecycle of a job; derived from its tasks' states."""

    # members are singletons: hash by identity (Enum's default hashes the name in Python code,
    # and the controller looks states up in sets and dicts on every change)
    __hash__ = object.__hash__

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    WORKER_FAILED = "WORKER_FAILED"
    UNSCHEDULABLE = "UNSCHEDULABLE"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_JOB_STATES


_TERMINAL_JOB_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED, JobState.WORKER_FAILED, JobState.UNSCHEDULABLE}
)


class TaskState(enum.Enum):
    """Lifecycle of a task (and of each of its attempts)."""

    __hash__ = object.__hash__  # identity, as JobState

    PENDING = "PENDING"
    ASSIGNED = "ASSIGNED"
    BUILDING = "BUILDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    WORKER_FAILED = "WORKER_FAILED"
    PREEMPTED = "PREEMPTED"
    UNSCHEDULABLE = "UNSCHEDULABLE"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_TASK_STATES

    @property
    def is_active(self) -> bool:
        return self in (TaskState.ASSIGNED, TaskState.BUILDING, TaskState.RUNNING)


_TERMINAL_TASK_STATES = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.KILLED,
        TaskState.WORKER_FAILED,
        TaskState.PREEMPTED,
        TaskState.UNSCHEDULABLE,
    }
)


# A Docker image reference: [HOST[:PORT]/]NAME[/NAME...][:TAG][@DIGEST], NAME lowercase.
_IMAGE_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(
    rf"^{_IMAGE_HOST}?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@[a-z0-9]+:[a-f0-9]{{32,}})?$"
)


def image_registry_host(image: str) -> str | None:
    """The registry host ``image`` names (``127.0.0.1:5000``, ``us-central1-docker.pkg.dev``),
    or None when it names none (Docker Hub): as Docker reads a reference, the part before the
    first ``/`` is a host when it holds a ``.`` or a ``:`` or is ``localhost``."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def image_reference_problem(image: str) -> str | None:
    """Why ``image`` is not a valid container image reference, or None if it is."""
    if _IMAGE_RE.match(image) and len(image) <= 255:
        return None
    return (
        f"{image!r} is not a valid image reference; expected [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST] with a "
        "lowercase NAME, e.g. 127.0.0.1:5000/iris-task:1 or python:3.11"
    )
