"""Errors that Iris reports to users as one clear line instead of a traceback."""

from __future__ import annotations


class IrisError(Exception):
    """Base for errors caused by user input or the environment, shown as one line."""


class ConfigError(IrisError):
    """A cluster config file is unreadable or invalid; the message names the field."""


class OtherConfigError(ConfigError):
    """The running controller of this cluster ``name`` was started from another config (two
    configs with one name, or this one edited since): commands refuse it, and only ``stop
    --force`` and ``restart --force`` (:func:`iris.cluster.lifecycle.restart_controller`) go on."""


class ResourceError(IrisError, ValueError):
    """A resource string (memory, cpu, device) is malformed."""


class PluginError(IrisError):
    """A plugin is missing, broken, or claims a name another plugin already claimed."""


class BundleError(IrisError):
    """The workspace cannot be bundled (too large, unreadable)."""


class BundleCorrupt(BundleError):
    """A bundle store holds other bytes under a bundle's id than the id says: the object was
    changed or truncated after upload. ``held`` says what it holds (size and sha256)."""

    def __init__(self, message: str, held: str = ""):
        super().__init__(message)
        self.held = held


class InvalidRequest(IrisError):
    """A request refused for what it asks (a field out of range, a name that cannot be used);
    the message names the field, the value and what is accepted. gRPC: INVALID_ARGUMENT."""


class ControllerUnavailable(IrisError):
    """The controller could not be reached, or did not answer in time."""


class JobNotFound(IrisError):
    """A job id that the controller does not know."""


class VmNotFound(IrisError):
    """A VM id that none of the cluster's slices has. gRPC: NOT_FOUND."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a task or an actor, attached as the re-raised
    exception's cause."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""
