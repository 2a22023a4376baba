"""What a job request may carry: every field checked, each refusal one line naming the field,
the value (shortened: an error stays small whatever was sent) and what is accepted.

It sits below everything, so the controller (for in-process callers), the RPC layer
(:mod:`iris.rpc.validate`, for every request before a handler sees it) and the client (before it
sends) refuse the same things in the same words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from iris.errors import InvalidRequest
from iris.job.records import JobSpec
from iris.job.types import ENV_NAME_RE, extra_problem, image_reference_problem, package_problem, show

JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PORT_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
ATTRIBUTE_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,256}$")  # what constraints and coschedule_by name
DEVICE_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
DEVICE_VARIANT_RE = re.compile(r"^[A-Za-z0-9._-]{0,128}$")
BUNDLE_ID_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_ARG_BYTES = 128 * 1024  # one argv entry or env value (Linux MAX_ARG_STRLEN)
MAX_ARGS = 100_000
MAX_ENV = 10_000
MAX_ID_CHARS = 4096  # a job or task id: a path of names
MAX_TEXT_CHARS = 4096  # a constraint value, an attribute value, an endpoint address
MAX_NAME_CHARS = 256  # a worker, slice, scale group, endpoint or extra name
MAX_ITEMS = 10_000  # entries in a list or map field without a limit of its own
MAX_REPLICAS = 100_000
MAX_BYTES = (1 << 63) - 1  # int64 on the wire
MAX_INT32 = (1 << 31) - 1


def refuse(field: str, value: object, problem: str) -> InvalidRequest:
    """``<field> <value> <problem>``, e.g. ``job name 'a b' is invalid; use ...``."""
    return InvalidRequest(f"{field} {show(value)} {problem}")


def check_number(field: str, value: float, *, minimum: float = 0.0) -> None:
    if not math.isfinite(value) or value < minimum:
        raise InvalidRequest(f"{field}: {value!r}; must be a finite number >= {minimum:g}")


def check_count(field: str, value: int, *, minimum: int = 0, maximum: int = MAX_INT32) -> None:
    if not minimum <= value <= maximum:
        raise InvalidRequest(f"{field}: {value!r}; must be a whole number from {minimum} to {maximum}")


def check_text(
    field: str,
    value: str,
    *,
    max_chars: int = MAX_TEXT_CHARS,
    required: bool = False,
    pattern: re.Pattern[str] | None = None,
    accepted: str = "",
) -> None:
    """A string field: present if ``required``, at most ``max_chars``, no NUL or other control
    character, matching ``pattern`` if given (``accepted`` says what it accepts)."""
    if not value:
        if required:
            raise InvalidRequest(f"{field} is empty; {accepted or 'it is required'}")
        return
    if len(value) > max_chars:
        raise refuse(field, value, f"is longer than {max_chars} characters" + (f"; {accepted}" if accepted else ""))
    if pattern is not None:
        if not pattern.match(value):
            raise refuse(field, value, f"is invalid; {accepted}")
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise refuse(field, value, "contains a control character (NUL, newline, ...)")


def check_items(field: str, items: Iterable[object] | int, maximum: int = MAX_ITEMS) -> None:
    count = items if isinstance(items, int) else sum(1 for _ in items)
    if count > maximum:
        raise InvalidRequest(f"{field}: {count} entries; at most {maximum}")


def check_job_spec(spec: JobSpec) -> None:
    """Refuse, with one line naming the field, what could never run (or would swamp the
    controller: a million replicas, a megabyte name)."""
    check_text(
        "job name",
        spec.name,
        required=True,
        max_chars=128,
        pattern=JOB_NAME_RE,
        accepted="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
    )
    argv = spec.entrypoint.argv
    if not argv and not spec.entrypoint.callable_bytes:
        raise InvalidRequest("entrypoint: the command is empty")
    check_items("entrypoint arguments", len(argv), MAX_ARGS)
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise InvalidRequest(f"entrypoint: argument {i} {show(arg)} contains a NUL byte; a command cannot carry one")
        if len(arg.encode("utf-8", "surrogateescape")) > MAX_ARG_BYTES:
            raise InvalidRequest(f"entrypoint: argument {i} is longer than {MAX_ARG_BYTES} bytes; pass large data in a file")
    if argv and not argv[0]:
        raise InvalidRequest("entrypoint: the program name (argument 0) is empty")
    check_count("replicas", spec.replicas, minimum=1, maximum=MAX_REPLICAS)
    if spec.task_image and (problem := image_reference_problem(spec.task_image)):
        raise InvalidRequest(f"task_image: {problem}")
    for field, count in (
        ("max_retries", spec.max_retries),
        ("max_task_failures", spec.max_task_failures),
        ("max_preemptions", spec.max_preemptions),
    ):
        check_count(field, count)
    check_number("timeout", spec.timeout_seconds)
    check_number("scheduling_timeout", spec.scheduling_timeout_seconds)
    resources = spec.resources
    check_number("cpu", resources.cpu)
    check_count("memory", resources.memory, maximum=MAX_BYTES)
    check_count("disk", resources.disk, maximum=MAX_BYTES)
    device = resources.device
    check_text("device kind", device.kind, max_chars=32, pattern=DEVICE_KIND_RE, accepted="use e.g. cpu, tpu or gpu")
    check_text("device variant", device.variant, max_chars=128, pattern=DEVICE_VARIANT_RE, accepted="use letters, digits, '.', '_' or '-', e.g. v5litepod-16")
    check_count("device count", device.count)
    env = spec.environment.env
    check_items("environment", len(env), MAX_ENV)
    for key, value in env.items():
        if not ENV_NAME_RE.match(key) or len(key) > MAX_NAME_CHARS:
            raise refuse("environment variable name", key, "is invalid; use a letter or '_' then letters, digits or '_'")
        if "\0" in value:
            raise InvalidRequest(f"environment variable {key}: the value contains a NUL byte; an environment cannot carry one")
        if len(value.encode("utf-8", "surrogateescape")) > MAX_ARG_BYTES:
            raise InvalidRequest(f"environment variable {key}: the value is longer than {MAX_ARG_BYTES} bytes")
    check_items("extras", spec.environment.extras, 256)
    for extra in spec.environment.extras:
        check_text("extra", extra, max_chars=MAX_NAME_CHARS)
        if problem := extra_problem(extra):
            raise InvalidRequest(problem)
    check_items("pip packages", spec.environment.pip_packages, 1000)
    for package in spec.environment.pip_packages:
        check_text("pip package", package, max_chars=MAX_TEXT_CHARS)
        if problem := package_problem(package):
            raise InvalidRequest(problem)
    check_items("ports", len(spec.ports), 64)
    for port in spec.ports:
        check_text(
            "port name",
            port,
            required=True,
            max_chars=32,
            pattern=PORT_NAME_RE,
            accepted=f"use a letter then letters, digits or '_' (it becomes IRIS_PORT_{port[:32].upper()})",
        )
    if len(set(spec.ports)) != len(spec.ports):
        raise InvalidRequest(f"ports: {', '.join(spec.ports)} names a port twice")
    check_text("user", spec.user, max_chars=128, pattern=JOB_NAME_RE, accepted="use letters, digits, '.', '_' or '-'")
    check_text("bundle id", spec.bundle_id, max_chars=64, pattern=BUNDLE_ID_RE, accepted="a bundle id is a sha256 hex digest (64 characters 0-9a-f)")
    check_text("parent job id", spec.parent_job_id, max_chars=MAX_ID_CHARS)
    check_text(
        "coschedule_by", spec.coschedule_by, pattern=ATTRIBUTE_KEY_RE, accepted="name a worker attribute, e.g. slice or tpu-name"
    )
    check_items("constraints", len(spec.constraints), 256)
    for c in spec.constraints:
        check_text(
            "constraint key", c.key, required=True, pattern=ATTRIBUTE_KEY_RE, accepted="use letters, digits, '_', '.', '-' or '/'"
        )
        check_items(f"constraint {c.key} values", len(c.values), 1000)
        for value in c.values:
            check_text(f"constraint {c.key} value", value)

