"""Property-based fuzzing of what parses user input: the config loader, the size and resource
parsers, the constraint parser, and bundle unpacking. Whatever comes in, the answer is a value
or the module's own error (one line, naming the field, short), never another exception.

Derandomized and without an example database, so CI runs the same cases every time.
"""

from __future__ import annotations

import copy
import math
import os
import re
import stat
import string
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iris.bundle import BAD_ZIP_ERRORS, bundle_problem, extract_bundle
from iris.config import ClusterConfig, config_to_dict, load_config, parse_config
from iris.errors import BundleError, ConfigError, ResourceError
from iris.job.constraints import Constraint, ConstraintError, parse_constraint
from iris.job.records import BundleLimits
from iris.job.types import MAX_SIZE_BYTES, ResourceSpec, parse_memory
from iris.rpc import convert

MAX_MESSAGE = 600
# what a printed traceback looks like: its header, a line break, then a frame. Not the word
# "Traceback" alone (nor the header alone), which a fuzzed value echoed in a message may be:
# Hypothesis also draws strings from the literals of the code it runs, this file's included
TRACEBACK = re.compile(r"Traceback \(most recent call last\):\s*\n\s*File ")


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def one_line(message: str) -> None:
    assert "\n" not in message and not TRACEBACK.search(message) and len(message) <= MAX_MESSAGE, message[:300]


def mostly(valid: st.SearchStrategy[Any], weird: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` four times in five, else ``weird`` (one_of picks a branch evenly)."""
    return st.one_of(valid, valid, valid, valid, weird)


ALPHABET = string.ascii_letters + string.digits + " ./_-=!<>,:\t\n\0éü€"
text = st.text(ALPHABET, max_size=30)
long_text = st.one_of(text, st.just("9" * 5000), st.just("x" * 5000))
numbers = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 2**63, 2**63 - 1, math.nan, math.inf])
)
units = st.sampled_from(["", "B", "K", "KB", "KiB", "M", "MB", "MiB", "G", "GB", "gib", "T", "TB", "TiB", "PB", "x"])
size_text = st.builds(
    lambda n, frac, unit, pad: f"{pad}{n}{frac}{pad}{unit}{pad}",
    st.integers(0, 10**25),
    st.sampled_from(["", ".5", ".0001", ".", ".x"]),
    units,
    st.sampled_from(["", " ", "\t"]),
)


# --- sizes and resources ---------------------------------------------------------------------------


@fuzz(3000)
@given(value=st.one_of(size_text, numbers, long_text, st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
def test_fuzz_parse_memory_returns_a_size_or_a_resource_error(value: Any) -> None:
    try:
        size = parse_memory(value)
    except ResourceError as exc:
        one_line(str(exc))
        assert str(exc).startswith("memory: ")
        return
    assert isinstance(size, int) and 0 <= size <= MAX_SIZE_BYTES


@fuzz(1000)
@given(size=st.integers(0, MAX_SIZE_BYTES))
def test_fuzz_parse_memory_reads_any_byte_count_exactly(size: int) -> None:
    assert parse_memory(size) == size
    assert parse_memory(str(size)) == size


@fuzz(1500)
@given(cpu=st.one_of(numbers, text, st.none()), memory=st.one_of(size_text, numbers, text), disk=st.one_of(size_text, numbers))
def test_fuzz_resource_spec_is_sendable_or_a_resource_error(cpu: Any, memory: Any, disk: Any) -> None:
    try:
        spec = ResourceSpec(cpu=cpu, memory=memory, disk=disk)
    except ResourceError as exc:
        one_line(str(exc))
        return
    assert math.isfinite(spec.cpu) and spec.cpu >= 0
    assert convert.resources_from_proto(convert.resources_to_proto(spec)) == spec  # fits the wire


# --- constraints -------------------------------------------------------------------------------------

constraint_text = st.one_of(
    text,
    st.builds(
        lambda neg, key, op, value: f"{neg}{key}{op}{value}",
        st.sampled_from(["", "!", " "]),
        st.one_of(st.sampled_from(["zone", "memory-gb", "a.b/c", "in"]), text),
        st.sampled_from(["", "=", "!=", ">=", "<=", ">", "<", "==", " in ", " in", "=>"]),
        st.one_of(st.sampled_from(["", "1", "2.5", "us-a", "a,b", " a , b ", ",", "nan", "1e999"]), text),
    ),
    long_text,
)


@fuzz(2000)
@given(value=constraint_text)
def test_fuzz_parse_constraint_returns_a_constraint_or_a_constraint_error(value: str) -> None:
    try:
        constraint = parse_constraint(value)
    except ConstraintError as exc:
        one_line(str(exc))
        return
    assert isinstance(constraint, Constraint) and constraint.key
    assert parse_constraint(constraint.describe()) == constraint  # what iris job status shows reads back the same
    assert convert.constraint_from_proto(convert.constraint_to_proto(constraint)) == constraint


# --- the config loader ---------------------------------------------------------------------------

junk = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, text, st.just("x" * 300)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=6,
)


# A full config (every section, a CPU and a TPU scale group) with one to three mutations: a
# value replaced (by one of its own type four times in five, else by anything), a field
# removed, or an unknown field added. Cheaper to draw than a config built from nothing, and each
# case is one odd value among valid ones, so every field's own check is reached.
BASE = config_to_dict(
    parse_config(
        {
            "provider": {"type": "local"},
            "scale_groups": {
                "cpu": {"min_slices": 1, "max_slices": 2, "cpu": 4, "memory": "8GB", "zones": ["a"], "attributes": {"k": "v"}},
                "tpu": {"accelerator_type": "tpu", "accelerator_variant": "v5litepod-16", "vms_per_slice": 4, "template": {"x": 1}},
            },
        }
    )
)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in node.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out.extend(_paths(value, (*prefix, key)))
    return out


PATHS = _paths(BASE)
_OF_TYPE: dict[type, st.SearchStrategy[Any]] = {
    bool: st.booleans(),
    int: st.integers(-5, 70000),
    float: st.one_of(st.floats(-1, 1e4), st.integers(0, 100)),
    str: st.one_of(st.sampled_from(["local", "gcp", "", "tpu", "cpu", "2GB", "v5litepod-16"]), size_text, text),
    list: st.lists(text, max_size=3),
    dict: st.dictionaries(text, junk, max_size=2),
}


def _at(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = _at(data, path[:-1])
        if not isinstance(parent, dict):
            continue  # an earlier mutation replaced it
        action = draw(st.sampled_from(["set", "set", "set", "remove", "add"]))
        if action == "remove":
            parent.pop(path[-1], None)
        elif action == "add":
            parent[draw(text)] = draw(junk)
        else:
            kind = type(_at(BASE, path))
            parent[path[-1]] = draw(mostly(_OF_TYPE.get(kind, junk), junk))
    return data


@fuzz(2000)
@given(data=configs())
def test_fuzz_parse_config_returns_a_config_or_a_config_error_naming_the_source(data: Any) -> None:
    try:
        config = parse_config(data, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml: "), str(exc)[:300]
        assert "\n" not in str(exc) and not TRACEBACK.search(str(exc))
        return
    assert isinstance(config, ClusterConfig)
    assert config.bundle.limits.max_files >= 1 and config.bundle.limits.max_unpacked_bytes > 0


@fuzz(300)
@given(document=st.one_of(st.text(ALPHABET + "{}[]#&*|>'\"%@`", max_size=80), configs().map(lambda d: yaml.safe_dump(d, allow_unicode=True))))
def test_fuzz_load_config_reads_any_file_as_a_config_or_a_config_error(document: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(document)
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path)), str(exc)[:300]


# --- bundle unpacking --------------------------------------------------------------------------------

entry_names = st.one_of(
    st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.txt", "é", "\\", "/", "x" * 300]), min_size=1, max_size=4).map("/".join),
    st.sampled_from(["/abs", "../up", "a/../../up", "..\\up", "a/", "./", "a\0b"]),
)
modes = st.one_of(
    st.sampled_from([0, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777]),
    st.sampled_from([stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK, stat.S_IFREG | 0o4755, stat.S_IFREG | 0o2755, 0o1777]),
    st.integers(0, 0xFFFF),
)
link_targets = st.one_of(st.sampled_from([".", "..", "../..", "a", "a/../..", "/etc", "b/c", "", "a/b/../../.."]), text.map(lambda t: t.replace("\0", "")))


@st.composite
def bundles(draw: st.DrawFn) -> list[tuple[str, int, bytes]]:
    entries = []
    for _ in range(draw(st.integers(1, 5))):
        mode = draw(modes)
        data = draw(link_targets).encode() if stat.S_IFMT(mode) == stat.S_IFLNK else draw(st.binary(max_size=64))
        entries.append((draw(entry_names), mode, data))
    return entries


def tree(root: Path) -> set[str]:
    return {os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.mark.filterwarnings("ignore:Duplicate name")
@fuzz(800)
@given(entries=bundles())
def test_fuzz_extract_bundle_unpacks_inside_or_refuses(entries: list[tuple[str, int, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp).resolve()
        archive = box / "b.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for name, mode, data in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.create_system = 3
                info.external_attr = mode << 16
                zf.writestr(info, data)
        dest = box / "task"
        before = tree(box)
        problem = bundle_problem(archive)
        try:
            extract_bundle(archive, dest, BundleLimits(max_unpacked_bytes=1000, max_files=4))
        except (BundleError, *BAD_ZIP_ERRORS) as exc:
            one_line(str(exc))
        except OSError as exc:  # the worker turns these into the task's error (not a machine's errno)
            assert exc.errno not in (None,), exc
        else:
            assert problem is None, problem  # what unpacks was never refused at upload
        outside = {p for p in tree(box) - before if not p.startswith(str(dest) + os.sep) and p != str(dest)}
        assert outside == set()
        for path in tree(dest) if dest.exists() else ():
            if os.path.islink(path):
                real = os.path.realpath(path)
                assert real == str(dest) or real.startswith(str(dest) + os.sep), (path, os.readlink(path))
            else:
                assert not os.lstat(path).st_mode & 0o7000
