"""Cluster config: YAML structured into attrs classes by cattrs, validated in one place.

Every error names the YAML path of the bad field, the value, and what is accepted::

    cluster.yaml: scale_groups.tpu.min_slices: expected int, got 'two'
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError

from iris.auth import static_token_entry
from iris.job.records import DEFAULT_MAX_BUNDLE_FILES, BundleLimits
from iris.job.types import image_reference_problem, parse_memory, show
from iris.errors import ConfigError, ResourceError


@attrs.define
class ProviderConfig:
    """Which provider runs the machines (the ``iris.plugins`` entry-point name) and its settings."""

    type: str = "local"
    project_id: str = ""
    region: str = ""
    zone: str = ""
    hosts: list[str] = attrs.field(factory=list)
    ssh_user: str = ""
    ssh_key: str = ""
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class DockerConfig:
    """``image``: the image tasks run in when their job names none, on workers whose runtime
    runs images (``worker.runtime: docker``)."""

    image: str = ""
    worker_port: int = 10001


@attrs.define
class ControllerVmConfig:
    enabled: bool = False
    image: str = ""
    machine_type: str = ""
    port: int = 10000


@attrs.define
class ControllerConfig:
    """Where the controller listens and keeps its state.

    ``port`` 0 picks a free port. ``http_port`` is the HTTP side (``/health``, the JSON API, the
    dashboard) of a long-lived controller, on the same host: 0 picks a free port, -1 turns it off
    (the in-process cluster of ``iris run --provider local`` has none). ``state_dir`` defaults to ``~/.iris/<cluster name>``
    (a temporary directory for the in-process local cluster). ``bundle_prefix`` defaults to
    ``file://<state_dir>/bundles``. ``checkpoint_url`` (``file:///dir``, ``gs://bucket/prefix``;
    empty = none) is where the controller copies its state every ``checkpoint_interval_seconds``
    and when it stops, and where a controller starting without state restores it from. ``tunnel`` is how clients reach ``host:port``: a Tunnel
    plugin (``direct``, ``ssh``, ...; empty = the provider's default), given the provider section.
    """

    host: str = "127.0.0.1"
    port: int = 0
    http_port: int = 0
    tunnel: str = ""
    state_dir: str = ""
    bundle_prefix: str = ""
    worker_timeout_seconds: float = 60.0
    checkpoint_url: str = ""
    checkpoint_interval_seconds: float = 60.0
    vm: ControllerVmConfig = attrs.field(factory=ControllerVmConfig)


@attrs.define
class BundleConfig:
    """The workspace bundle a client uploads: a workspace larger than ``max_size`` is refused,
    naming its largest files (``iris run --max-bundle-size`` overrides it). A worker unpacks at
    most ``max_unpacked_size`` bytes in at most ``max_files`` entries from one bundle; past either,
    the task fails saying which limit it crossed."""

    max_size: int | str = "100MB"
    max_unpacked_size: int | str = "1GB"
    max_files: int = DEFAULT_MAX_BUNDLE_FILES

    @property
    def max_bytes(self) -> int:
        return parse_memory(self.max_size)

    @property
    def limits(self) -> BundleLimits:
        """What workers are told to unpack at most (sent with every attempt)."""
        return BundleLimits(max_unpacked_bytes=parse_memory(self.max_unpacked_size), max_files=self.max_files)


@attrs.define
class WorkerConfig:
    """How workers run tasks. ``runtime`` empty = the provider's default runtime.

    ``task_python``: the interpreter task environments are built from (empty: ``/usr/bin/python3``
    when it exists, else ``python3`` on PATH outside Iris's virtualenv); ``env_dir``: where workers
    cache task environments (empty: each worker's ``work_dir/envs``). See docs/environments.md."""

    runtime: str = ""
    reconcile_wait_seconds: float = 2.0
    task_python: str = ""
    env_dir: str = ""


@attrs.define
class AutoscalerConfig:
    """How the autoscaler decides (see docs/autoscaler.md). Times are in seconds."""

    evaluation_interval_seconds: float = 2.0
    idle_threshold_seconds: float = 300.0
    scale_up_cooldown_seconds: float = 0.0
    scale_down_cooldown_seconds: float = 60.0
    backoff_initial_seconds: float = 5.0
    backoff_max_seconds: float = 300.0
    quota_hold_seconds: float = 600.0
    boot_timeout_seconds: float = 900.0


@attrs.define
class ScaleGroupConfig:
    """A kind of slice the cluster can have. ``cpu``/``memory`` 0 = the machine's own size."""

    accelerator_type: str = "cpu"
    accelerator_variant: str = ""
    runtime_version: str = ""
    min_slices: int = 0
    max_slices: int = 1
    vms_per_slice: int = 1
    cpu: float = 0.0
    memory: int | str = 0
    priority: int = 0
    preemptible: bool = False
    zones: list[str] = attrs.field(factory=list)
    attributes: dict[str, str] = attrs.field(factory=dict)
    template: dict[str, Any] = attrs.field(factory=dict)

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)


@attrs.define
class StaticTokenConfig:
    """A token given in the config (``auth.tokens``): ``token`` is the token itself or
    ``sha256:<hex>`` of it; ``role`` admin or user; ``name`` the user it stands for."""

    name: str = ""
    role: str = "user"
    token: str = ""


@attrs.define
class AuthConfig:
    """Who may call the controller (docs/security.md).

    ``enabled`` unset (null) = on for every controller but the in-process local cluster
    (``iris run --provider local``, ``IrisClient.local()``). ``tokens_file``: static tokens,
    ``TOKEN ROLE NAME`` per line. ``allow_unauthenticated_remote``: let a controller without auth
    listen on a non-loopback ``controller.host`` (anyone who reaches it may do anything).
    ``owner_token_ttl_seconds``: the lifetime of the admin token written for the user who starts
    the controller (0 = it does not expire).
    """

    enabled: bool | None = None
    tokens_file: str = ""
    tokens: list[StaticTokenConfig] = attrs.field(factory=list)
    allow_unauthenticated_remote: bool = False
    owner_token_ttl_seconds: float = 0.0


@attrs.define
class ClusterConfig:
    name: str = "iris"
    label_prefix: str = "iris"
    provider: ProviderConfig = attrs.field(factory=ProviderConfig)
    docker: DockerConfig = attrs.field(factory=DockerConfig)
    controller: ControllerConfig = attrs.field(factory=ControllerConfig)
    worker: WorkerConfig = attrs.field(factory=WorkerConfig)
    bundle: BundleConfig = attrs.field(factory=BundleConfig)
    autoscaler: AutoscalerConfig = attrs.field(factory=AutoscalerConfig)
    scale_groups: dict[str, ScaleGroupConfig] = attrs.field(factory=dict)
    auth: AuthConfig = attrs.field(factory=AuthConfig)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)

    def strict(kind: type) -> Any:
        def structure(value: Any, _: type) -> Any:
            if isinstance(value, bool) and kind is not bool:
                raise ValueError(f"expected {kind.__name__}, got {show(value)}")
            if kind is float and isinstance(value, int):
                return float(value)
            if not isinstance(value, kind):
                raise ValueError(f"expected {kind.__name__}, got {show(value)}")
            return value

        return structure

    for kind in (str, int, float, bool):
        converter.register_structure_hook(kind, strict(kind))

    def memory(value: Any, _: type) -> int | str:
        try:
            parse_memory(value)
        except ResourceError:
            raise ValueError(f"expected a size such as 2GB or 512MiB, got {show(value)}") from None
        return value

    converter.register_structure_hook(typing.Union[int, str], memory)

    def checked(kind: Any, expected: type, what: str) -> None:
        base = converter.get_structure_hook(kind)

        def structure(value: Any, type_: Any) -> Any:
            if not isinstance(value, expected):
                raise ValueError(f"expected {what}, got {show(value)}")
            return base(value, type_)

        converter.register_structure_hook_func(lambda t: t == kind, structure)

    # A string where a list belongs would otherwise be split into characters.
    checked(list[str], list, "a list")
    checked(dict[str, str], dict, "a mapping")
    checked(dict[str, Any], dict, "a mapping")
    def optional_bool(value: Any, _: type) -> bool | None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"expected true, false or null, got {value!r}")
        return value

    converter.register_structure_hook(typing.Optional[bool], optional_bool)
    checked(StaticTokenConfig, dict, "a mapping of fields")
    checked(list[StaticTokenConfig], list, "a list")
    for cls in (
        ProviderConfig, DockerConfig, ControllerVmConfig, ControllerConfig, WorkerConfig, AutoscalerConfig, ScaleGroupConfig,
        AuthConfig, StaticTokenConfig,
    ):  # fmt: skip
        checked(cls, dict, "a mapping of fields")
    checked(dict[str, ScaleGroupConfig], dict, "a mapping of scale group names to settings")
    return converter


_converter = _make_converter()


def _field_name(name: str) -> str:
    """A field name as written, quoted (and shortened) if it is not a plain word."""
    return name if name.isidentifier() and len(name) <= 60 else show(name)


def _printable(message: str) -> str:
    """One line whatever the YAML held: control characters escaped."""
    return "".join(c if 32 <= ord(c) != 127 else repr(c)[1:-1] for c in message)


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        accepted = ", ".join(a.name for a in attrs.fields(exc.cl))
        return f"unknown field {', '.join(_field_name(f) for f in sorted(map(str, exc.extra_fields)))}; accepted: {accepted}"
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ValueError) and str(exc).startswith("expected"):
        return str(exc)
    if isinstance(exc, (TypeError, ValueError, AttributeError)):
        name = getattr(type_, "__name__", str(type_))
        if isinstance(exc, AttributeError) or "mapping" in str(exc).lower() or "not iterable" in str(exc):
            return f"expected {name if name != 'dict' else 'a mapping'}"
        return f"invalid value for {name}: {exc}"
    return f"{type(exc).__name__}: {exc}"


_SEED_TOP_LEVEL = ("project_id", "region", "zone")


def normalize_seed_shape(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Accept the shape of the original Iris configs (seeds 000/002) as well as this one's:
    top-level ``project_id``/``region``/``zone`` (they move under ``provider``),
    ``controller_vm: {gcp|manual|local: {...}, image, bundle_prefix}`` (under ``controller``),
    and a scale group's ``provider: {tpu|manual|local: {...}}`` (its slice ``template``)."""
    data = dict(data)
    provider = dict(data.get("provider") or {}) if isinstance(data.get("provider"), dict) or data.get("provider") is None else data["provider"]
    moved = {k: data.pop(k) for k in _SEED_TOP_LEVEL if k in data}
    if moved and isinstance(provider, dict):
        for key, value in moved.items():
            if provider.get(key) not in (None, "", value):
                raise ConfigError(f"{source}: {key}: given both at the top level ({value!r}) and under provider ({provider[key]!r})")
            provider[key] = value
        provider.setdefault("type", "gcp")
        data["provider"] = provider
    if "controller_vm" in data:
        vm = data.pop("controller_vm")
        if not isinstance(vm, dict):
            raise ConfigError(f"{source}: controller_vm: expected a mapping, got {vm!r}")
        controller = dict(data.get("controller") or {})
        vm = dict(vm)
        if "bundle_prefix" in vm:
            controller["bundle_prefix"] = vm.pop("bundle_prefix")
        section = dict(controller.get("vm") or {})
        for kind in ("gcp", "manual", "local"):
            if kind in vm:
                settings = vm.pop(kind) or {}
                if not isinstance(settings, dict):
                    raise ConfigError(f"{source}: controller_vm.{kind}: expected a mapping, got {settings!r}")
                if kind == "local":
                    if "port" in settings:
                        controller["port"] = settings["port"]
                    continue
                section["enabled"] = True
                for key in ("image", "machine_type", "port"):
                    if key in settings:
                        section[key] = settings[key]
                if kind == "manual" and "host" in settings:  # the host the manual provider places it on
                    if not isinstance(data.get("provider"), dict):
                        data["provider"] = {} if data.get("provider") is None else data["provider"]
                    if isinstance(data["provider"], dict):
                        data["provider"] = {**data["provider"], "options": {**(data["provider"].get("options") or {}),
                                                                           "controller_host": settings["host"]}}  # fmt: skip
                if isinstance(data.get("provider"), dict):
                    data["provider"].setdefault("type", kind)
        if "image" in vm:
            section["image"] = vm.pop("image")
        if vm:
            raise ConfigError(
                f"{source}: controller_vm: unknown field {', '.join(_field_name(f) for f in sorted(map(str, vm)))}; "
                "accepted: gcp, manual, local, image, bundle_prefix"
            )
        if section:
            controller["vm"] = section
        data["controller"] = controller
    groups = data.get("scale_groups")
    if isinstance(groups, dict):
        fixed = {}
        for name, group in groups.items():
            if isinstance(group, dict) and isinstance(group.get("provider"), dict):
                group = dict(group)
                template = dict(group.get("template") or {})
                template.update(group.pop("provider"))
                group["template"] = template
            fixed[name] = group
        data["scale_groups"] = fixed
    return data


def parse_config(data: Any, source: str = "config") -> ClusterConfig:
    """Structure a parsed YAML document into a ClusterConfig, or raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of fields, got {type(data).__name__}")
    data = normalize_seed_shape(data, source)
    try:
        config = _converter.structure(data, ClusterConfig)
    except Exception as exc:
        messages = cattrs.transform_error(exc, path="$", format_exception=_format_exception)
        first = messages[0] if messages else str(exc)
        detail, _, path = first.rpartition(" @ ")
        path = path.removeprefix("$").lstrip(".") or "(top level)"
        path = path.replace("['", ".").replace("']", "")
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        raise ConfigError(_printable(f"{source}: {path}: {detail}{more}")) from None
    _validate(config, source)
    return config


def _validate(config: ClusterConfig, source: str) -> None:
    if not config.provider.type:
        raise ConfigError(f"{source}: provider.type: must name a provider, e.g. local, gcp or manual")
    for name, group in config.scale_groups.items():
        where = f"{source}: scale_groups.{name}"
        if group.min_slices < 0:
            raise ConfigError(f"{where}.min_slices: {group.min_slices} is negative; must be >= 0")
        if group.max_slices < group.min_slices:
            raise ConfigError(
                f"{where}.max_slices: {group.max_slices} is below min_slices ({group.min_slices}); must be >= min_slices"
            )
        if group.vms_per_slice < 1:
            raise ConfigError(f"{where}.vms_per_slice: {group.vms_per_slice}; must be >= 1")
    if config.docker.image and (problem := image_reference_problem(config.docker.image)):
        raise ConfigError(f"{source}: docker.image: {problem}")
    for field, value in (("max_size", config.bundle.max_bytes), ("max_unpacked_size", config.bundle.limits.max_unpacked_bytes)):
        if value <= 0:
            raise ConfigError(f"{source}: bundle.{field}: {value}; must be a size above 0, e.g. 100MB")
    if config.bundle.max_files < 1:
        raise ConfigError(f"{source}: bundle.max_files: {config.bundle.max_files}; must be >= 1")
    if not 0 <= config.controller.port <= 65535:
        raise ConfigError(f"{source}: controller.port: {config.controller.port}; must be 0 (any) to 65535")
    if not -1 <= config.controller.http_port <= 65535:
        raise ConfigError(f"{source}: controller.http_port: {config.controller.http_port}; must be -1 (off), 0 (any) or a port up to 65535")
    if (problem := checkpoint_url_problem(config.controller.checkpoint_url)):
        raise ConfigError(f"{source}: controller.checkpoint_url: {config.controller.checkpoint_url!r}: {problem}")
    if not config.controller.checkpoint_interval_seconds > 0:
        raise ConfigError(
            f"{source}: controller.checkpoint_interval_seconds: {config.controller.checkpoint_interval_seconds:g}; must be above 0, e.g. 60"
        )
    for i, entry in enumerate(config.auth.tokens):
        static_token_entry(entry.token, entry.role, entry.name, f"{source}: auth.tokens[{i}]")
    if config.auth.owner_token_ttl_seconds < 0:
        raise ConfigError(f"{source}: auth.owner_token_ttl_seconds: {config.auth.owner_token_ttl_seconds:g}; must be >= 0")


def checkpoint_url_problem(url: str) -> str:
    """Why ``controller.checkpoint_url`` is malformed ('' if it is fine or empty). The scheme is
    checked against the installed plugins only when the controller starts."""
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        return "must be a URL such as file:///var/lib/iris/checkpoints or gs://my-bucket/iris/checkpoints"
    if scheme == "file" and not rest.startswith("/"):
        return "a file:// URL needs an absolute path, e.g. file:///var/lib/iris/checkpoints"
    if scheme != "file" and not rest.strip("/"):
        return f"names no place after {scheme}://, e.g. {scheme}://my-bucket/iris/checkpoints"
    return ""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster config YAML file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(data, source=str(path))


def config_to_dict(config: ClusterConfig) -> dict[str, Any]:
    return _converter.unstructure(config)


def local_state_dir(name: str) -> Path:
    """Where the ``--local`` copy of the cluster ``name`` keeps its state unless the config says
    (``~/.iris/<name>-local``)."""
    return Path.home() / ".iris" / f"{name}-local"


def auth_enabled(config: ClusterConfig) -> bool:
    """Whether this config's controller checks tokens: ``auth.enabled`` when set, else on for
    every controller but the in-process local cluster (local provider, workers as threads)."""
    if config.auth.enabled is not None:
        return config.auth.enabled
    options = config.provider.options
    in_process = config.provider.type == "local" and options.get("worker_mode", "thread") == "thread"
    return not in_process
