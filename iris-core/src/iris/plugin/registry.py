"""The plugin registry: finds plugins through entry points, loads them lazily, owns the names.

``get_registry()`` returns the process-wide registry. Nothing is imported until a seam is
asked for by name: ``registry.vm_manager("local")`` loads only the ``local`` entry point
(plus the core's ``builtin`` one) unless the name is not found there, in which case every
installed plugin is loaded so the error can list the real choices.

The environment variable ``IRIS_PLUGINS`` (comma-separated entry-point names) restricts
which installed plugins may load at all.

Hooks are called through pluggy, so a hookimpl may take a subset of the spec's arguments. A
plugin is rejected, naming it and the offending function, if a hookimpl names no hook (a
misspelling), if an ``iris_`` function is not marked ``@hookimpl``, or if a hookimpl gives an
argument a default value (pluggy never passes those). A rejected plugin is treated like one that
fails to import: skipped and reported when every plugin loads, an error when it is selected.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import attrs
import pluggy

from iris.errors import PluginError
from iris.plugin import hookspecs
from iris.plugin.records import BundleStorePlugin, ContainerRuntimePlugin, TunnelPlugin, VmManagerPlugin

logger = logging.getLogger(__name__)

# First-party providers and the distribution that ships each; named in "not installed" errors.
KNOWN_DISTRIBUTIONS = {"local": "iris-local", "gcp": "iris-gcp", "manual": "iris-manual"}
BUILTIN = "builtin"


@attrs.frozen
class InstalledPlugin:
    """An ``iris.plugins`` entry point, described without importing it."""

    name: str
    module: str
    distribution: str
    version: str


def installed_plugins() -> list[InstalledPlugin]:
    """Every entry point in the ``iris.plugins`` group, sorted by name; imports nothing."""
    found = []
    seen: set[tuple[str, str, str]] = set()
    for ep in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        dist = ep.dist
        dist_name = dist.metadata["Name"] if dist is not None else "<unknown>"
        version = dist.version if dist is not None else "?"
        key = (ep.name, ep.value, dist_name)
        if key in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(key)
        found.append(InstalledPlugin(ep.name, ep.value, dist_name, version))
    return sorted(found, key=lambda p: (p.name, p.distribution))


class _InvalidPlugin(Exception):
    """A plugin's hookimpls do not match the hookspecs; the message lists every problem."""


class PluginRegistry:
    """Loads plugins lazily and resolves seam implementations by name."""

    def __init__(self, plugins: Iterable[InstalledPlugin] | None = None, allow: Iterable[str] | None = None):
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._installed = list(plugins) if plugins is not None else None
        if allow is None and os.environ.get("IRIS_PLUGINS"):
            allow = [n.strip() for n in os.environ["IRIS_PLUGINS"].split(",") if n.strip()]
        self._allow = set(allow) if allow is not None else None
        self._loaded: dict[str, str] = {}  # plugin name -> distribution
        self._broken: dict[str, str] = {}
        self._all_loaded = False
        self._records: dict[str, dict[str, tuple[Any, str]]] | None = None
        self._lock = threading.RLock()

    # --- discovery ----------------------------------------------------------------------

    def installed(self) -> list[InstalledPlugin]:
        if self._installed is None:
            self._installed = installed_plugins()
        return self._installed

    @property
    def broken(self) -> dict[str, str]:
        """Plugins that failed to load, with the error, after a full load."""
        return dict(self._broken)

    def _entry_points_named(self, name: str) -> list[InstalledPlugin]:
        matches = [p for p in self.installed() if p.name == name]
        if len({p.distribution for p in matches}) > 1:
            dists = " and ".join(sorted(f"{p.distribution} ({p.module})" for p in matches))
            raise PluginError(f"plugin name {name!r} is claimed by two distributions: {dists}; uninstall one")
        return matches[:1]

    def register(self, plugin: object, name: str, distribution: str = "<registered>") -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        with self._lock:
            if name in self._loaded:
                raise PluginError(f"plugin {name!r} is already registered by {self._loaded[name]}")
            try:
                self._register_checked(plugin, name)
            except _InvalidPlugin as exc:
                raise PluginError(f"plugin {name!r} from {distribution} is invalid: {exc}") from None
            self._loaded[name] = distribution
            self._records = None

    def load(self, name: str, *, strict: bool = True) -> bool:
        """Load the entry point ``name`` if installed, allowed and not yet loaded."""
        with self._lock:
            if name in self._loaded or name in self._broken:
                return name in self._loaded
            if self._allow is not None and name not in self._allow:
                return False
            matches = self._entry_points_named(name)
            if not matches:
                return False
            ep = matches[0]
            try:
                module = importlib.import_module(ep.module)
            except Exception as exc:  # a broken plugin must not break unrelated commands
                message = f"{type(exc).__name__}: {exc}"
                self._broken[name] = message
                if strict:
                    raise PluginError(
                        f"plugin {name!r} from {ep.distribution} {ep.version} failed to import: {message}"
                    ) from exc
                logger.warning("skipping plugin %r from %s: %s", name, ep.distribution, message)
                return False
            try:
                self._register_checked(module, name)
            except _InvalidPlugin as exc:
                message = str(exc)
                self._broken[name] = message
                if strict:
                    raise PluginError(
                        f"plugin {name!r} from {ep.distribution} {ep.version} is invalid: {message}"
                    ) from None
                logger.warning("skipping plugin %r from %s: %s", name, ep.distribution, message)
                return False
            self._loaded[name] = ep.distribution
            self._records = None
            return True

    def _register_checked(self, plugin: object, name: str) -> None:
        """Register ``plugin`` with pluggy, or raise _InvalidPlugin naming every bad function.

        Does what ``pm.check_pending()`` does, for this plugin only, so the error can list all of
        its unknown hooks; a rejected plugin is unregistered again and leaves no trace.
        """
        already = self._pm.get_name(plugin)
        if already is not None:
            raise _InvalidPlugin(f"the same object is already registered as plugin {already!r}")
        problems = [
            f"function {attr} is not marked @hookimpl (from iris.plugin import hookimpl)"
            for attr in sorted(dir(plugin))
            if attr.startswith(f"{hookspecs.PROJECT_NAME}_")
            and _is_function(inspect.getattr_static(plugin, attr, None))
            and self._pm.parse_hookimpl_opts(plugin, attr) is None
        ]
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # e.g. an argument the hook does not offer
            problems.append(" ".join(str(exc).split()))
            raise _InvalidPlugin("; ".join(problems)) from None
        for caller in self._pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                function = _function_name(impl, caller)
                if caller.spec is None:
                    if not impl.optionalhook:
                        problems.append(f"{function} is not an Iris hook{_did_you_mean(caller.name)}")
                    continue
                for arg in impl.kwargnames:
                    if arg in caller.spec.argnames:
                        problems.append(
                            f"{function} gives argument {arg!r} a default value; "
                            "pluggy never passes an argument that has a default, so remove it"
                        )
        if problems:
            self._pm.unregister(plugin)
            raise _InvalidPlugin("; ".join(problems))

    def load_all(self) -> None:
        """Load every installed plugin; broken ones are recorded in ``broken`` and skipped."""
        with self._lock:
            if self._all_loaded:
                return
            for plugin in self.installed():
                try:
                    self.load(plugin.name, strict=False)
                except PluginError as exc:
                    self._broken[plugin.name] = str(exc)
            self._all_loaded = True

    # --- records ------------------------------------------------------------------------

    def _collect(self) -> dict[str, dict[str, tuple[Any, str]]]:
        """Call every seam's hook through pluggy, one plugin at a time, and index the records.

        One plugin at a time (``subset_hook_caller``) so each record is attributed to its
        distribution and a plugin whose hook raises is dropped without losing the others.
        """
        with self._lock:
            if self._records is not None:
                return self._records
            records: dict[str, dict[str, tuple[Any, str]]] = {seam: {} for seam in hookspecs.SEAMS}
            plugins = [(name, plugin) for name, plugin in self._pm.list_name_plugin() if plugin is not None]
            for plugin_name, plugin in plugins:
                dist = self._loaded.get(plugin_name, plugin_name)
                others = [other for _, other in plugins if other is not plugin]
                offered: dict[str, list[Any]] = {}
                try:
                    for seam, hook_name in hookspecs.SEAMS.items():
                        offered[seam] = []
                        self._pm.subset_hook_caller(hook_name, remove_plugins=others)(register=offered[seam].append)
                except Exception as exc:  # one broken plugin must not break the others
                    self._broken[plugin_name] = f"{hook_name} raised {type(exc).__name__}: {exc}"
                    logger.warning("skipping plugin %r from %s: %s", plugin_name, dist, self._broken[plugin_name])
                    self._pm.unregister(plugin)
                    continue
                for seam, registered in offered.items():
                    by_name = records[seam]
                    for record in registered:
                        if record.name in by_name and by_name[record.name][1] != dist:
                            raise PluginError(
                                f"{seam} {record.name!r} is registered by both {by_name[record.name][1]} and {dist}; "
                                "uninstall one of them"
                            )
                        by_name[record.name] = (record, dist)
            self._records = records
            return records

    def _lookup(self, seam: str, name: str, what: str) -> Any:
        with self._lock:
            self.load(BUILTIN, strict=False)
            self.load(name)
            found = self._collect()[seam].get(name)
            if found is None:
                self.load_all()
                found = self._collect()[seam].get(name)
            if found is None and name in self._broken:
                raise PluginError(f"plugin {name!r} is installed but broken: {self._broken[name]}")
            if found is None:
                choices = sorted(self._collect()[seam])
                hint = ""
                if name in KNOWN_DISTRIBUTIONS:
                    hint = f"; install the {KNOWN_DISTRIBUTIONS[name]} distribution (pip install {KNOWN_DISTRIBUTIONS[name]})"
                raise PluginError(
                    f"unknown {what} {name!r}; choose one of: {', '.join(choices) or '(none installed)'}{hint}"
                )
            return found[0]

    def names(self, seam: str) -> dict[str, str]:
        """Every registered name for a seam with its distribution (loads all plugins)."""
        self.load_all()
        return {name: dist for name, (_, dist) in sorted(self._collect()[seam].items())}

    def vm_manager(self, name: str) -> VmManagerPlugin:
        return self._lookup("vm_manager", name, "provider")

    def container_runtime(self, name: str) -> ContainerRuntimePlugin:
        return self._lookup("container_runtime", name, "container runtime")

    def bundle_store(self, scheme: str) -> BundleStorePlugin:
        return self._lookup("bundle_store", scheme, "bundle store scheme")

    def tunnel(self, name: str) -> TunnelPlugin:
        return self._lookup("tunnel", name, "tunnel")

    def open_bundle_store(self, url: str) -> Any:
        """Build the BundleStore for a URL prefix (``file:///path``, ``gs://bucket/prefix``)."""
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        return self.bundle_store(scheme).factory(url)

    def checkpoint_schemes(self) -> list[str]:
        """The URL schemes whose bundle store plugin also keeps controller checkpoints."""
        return sorted(name for name, (record, _) in self._collect()["bundle_store"].items() if record.checkpoints is not None)


def _is_function(value: object) -> bool:
    return inspect.isroutine(getattr(value, "__func__", value))  # staticmethod/classmethod wrap a function


def _function_name(impl: pluggy.HookImpl, caller: pluggy.HookCaller) -> str:
    name = getattr(impl.function, "__name__", caller.name)
    return name if name == caller.name else f"{name} (specname {caller.name})"


def _did_you_mean(hook_name: str) -> str:
    import difflib

    close = difflib.get_close_matches(hook_name, hookspecs.SEAMS.values(), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


_registry: PluginRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> PluginRegistry:
    """The process-wide registry, created on first use (loads nothing by itself)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = PluginRegistry()
        return _registry


def reset_registry(factory: Callable[[], PluginRegistry] | None = None) -> PluginRegistry:
    """Replace the process-wide registry (tests)."""
    global _registry
    with _registry_lock:
        _registry = factory() if factory else PluginRegistry()
        return _registry
