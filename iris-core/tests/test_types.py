"""Public value types: memory sizes, resources, entrypoints, states."""

from __future__ import annotations

import cloudpickle
import pytest

from iris.cluster.types import (
    Entrypoint,
    JobState,
    ResourceSpec,
    TaskState,
    format_memory,
    gpu_device,
    parse_memory,
    tpu_device,
)
from iris.job.types import image_reference_problem, parse_gpu
from iris.errors import ResourceError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2GB", 2 * 1000**3),
        ("512MiB", 512 * 1024**2),
        ("1024", 1024),
        (1024, 1024),
        ("1.5GB", 1_500_000_000),
        ("1GiB", 1024**3),
        ("16gb", 16 * 1000**3),
        (" 4 KB ", 4000),
        ("0", 0),
        (2.5, 2),
    ],
)
def test_parse_memory_valid_size_returns_bytes(value: str | int | float, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize("value", ["2XB", "-1", "", "GB", "1.2.3GB", "two", -1, True])
def test_parse_memory_invalid_size_raises_naming_the_value(value: object) -> None:
    with pytest.raises(ResourceError) as excinfo:
        parse_memory(value)  # type: ignore[arg-type]
    assert repr(value) in str(excinfo.value)
    assert str(excinfo.value).startswith("memory: ")


def test_parse_memory_field_name_appears_in_error() -> None:
    with pytest.raises(ResourceError, match="^disk: '3QB'"):
        parse_memory("3QB", field="disk")


def test_resource_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_memory("2XB")


@pytest.mark.parametrize(
    ("num_bytes", "text"), [(0, "0B"), (999, "999B"), (1500, "1.5KB"), (2 * 1000**3, "2.0GB"), (3 * 1000**4, "3.0TB")]
)
def test_format_memory_renders_short_size(num_bytes: int, text: str) -> None:
    assert format_memory(num_bytes) == text


def test_resource_spec_converts_memory_strings_and_cpu() -> None:
    spec = ResourceSpec(cpu="2", memory="512MiB", disk="1GB")  # type: ignore[arg-type]
    assert (spec.cpu, spec.memory, spec.disk) == (2.0, 512 * 1024**2, 1000**3)
    assert ResourceSpec().memory == 1000**3


@pytest.mark.parametrize(
    ("kwargs", "fragment"), [({"cpu": "many"}, "cpu: 'many'"), ({"cpu": -1}, "negative"), ({"memory": "2XB"}, "'2XB'")]
)
def test_resource_spec_invalid_value_raises_resource_error(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ResourceError, match=fragment):
        ResourceSpec(**kwargs)


def test_tpu_device_builds_device_and_rejects_empty_variant() -> None:
    device = tpu_device("v5litepod-16")
    assert (device.kind, device.variant, device.count) == ("tpu", "v5litepod-16", 1)
    with pytest.raises(ResourceError, match="not a TPU type"):
        tpu_device("")


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        (("python", "train.py"), ("python", "train.py")),
        ((["python", "train.py"],), ("python", "train.py")),
        ((("python", "-c", "print(1)"),), ("python", "-c", "print(1)")),
        (("python train.py --lr 0.1",), ("python", "train.py", "--lr", "0.1")),
        (("echo 'a b' c",), ("echo", "a b", "c")),
        (("true",), ("true",)),
        (("echo", "a b"), ("echo", "a b")),
    ],
)
def test_entrypoint_from_command_variants_give_argv(args: tuple, argv: tuple[str, ...]) -> None:
    entrypoint = Entrypoint.from_command(*args)
    assert entrypoint.argv == argv
    assert not entrypoint.is_callable


@pytest.mark.parametrize("args", [(), ("",), ([],), ([""],), ("   ",)])
def test_entrypoint_from_command_empty_raises_value_error(args: tuple) -> None:
    with pytest.raises(ValueError, match="command is empty"):
        Entrypoint.from_command(*args)


def test_entrypoint_describe_quotes_arguments() -> None:
    assert Entrypoint.from_command("echo", "a b").describe() == "echo 'a b'"


def test_entrypoint_from_callable_round_trips_through_cloudpickle() -> None:
    offset = 10

    def add(a: int, b: int, *, scale: int = 1) -> int:
        return (a + b) * scale + offset

    entrypoint = Entrypoint.from_callable(add, 1, 2, scale=3)
    assert entrypoint.is_callable
    assert entrypoint.argv == ()
    assert entrypoint.describe() == "<python callable>"
    fn, args, kwargs = cloudpickle.loads(entrypoint.callable_bytes)
    assert (args, kwargs) == ((1, 2), {"scale": 3})
    assert fn(*args, **kwargs) == 19


def test_entrypoint_from_callable_not_callable_raises_type_error() -> None:
    with pytest.raises(TypeError, match="not callable"):
        Entrypoint.from_callable(42)  # type: ignore[arg-type]


def test_task_states_terminal_and_active_are_disjoint() -> None:
    terminal = {s for s in TaskState if s.is_terminal}
    active = {s for s in TaskState if s.is_active}
    assert not terminal & active
    assert TaskState.PENDING not in terminal | active
    assert active == {TaskState.ASSIGNED, TaskState.BUILDING, TaskState.RUNNING}


def test_job_states_terminal_are_all_but_pending_and_running() -> None:
    assert {s for s in JobState if not s.is_terminal} == {JobState.PENDING, JobState.RUNNING}


@pytest.mark.parametrize(
    ("text", "variant", "count"), [("H100x8", "H100", 8), ("A100-80GB", "A100-80GB", 1), ("4", "", 4), ("l4x1", "l4", 1)]
)
def test_parse_gpu_forms_give_variant_and_count(text: str, variant: str, count: int) -> None:
    device = parse_gpu(text)
    assert (device.kind, device.variant, device.count) == ("gpu", variant, count)
    assert gpu_device(variant, count) == device


@pytest.mark.parametrize(("text", "fragment"), [("", "not a GPU request"), ("H100 x8", "not a GPU request"), ("-1", "not a GPU request"), ("H100x0", "count 0")])
def test_parse_gpu_invalid_raises_resource_error_naming_it(text: str, fragment: str) -> None:
    with pytest.raises(ResourceError, match=fragment):
        parse_gpu(text)


@pytest.mark.parametrize(
    "image", ["python:3.11", "127.0.0.1:5000/iris-worker:1", "ghcr.io/org/repo/img", "img@sha256:" + "a" * 64]
)
def test_image_reference_valid_forms_have_no_problem(image: str) -> None:
    assert image_reference_problem(image) is None


@pytest.mark.parametrize("image", ["", "Upper:1", "has space", "img:", "img:-tag", "/img"])
def test_image_reference_invalid_names_the_value_and_the_form(image: str) -> None:
    problem = image_reference_problem(image)
    assert problem is not None and repr(image) in problem and "[REGISTRY[:PORT]/]NAME[:TAG]" in problem
