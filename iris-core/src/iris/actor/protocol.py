"""The actor messages and their errors.

A request is a cloudpickled ``(actor, method, args, kwargs)``; an answer a pickled outcome (the
value, or the raised exception with its formatted traceback). ``Start``/``Poll``/``Cancel`` do
the same for long-running operations. cloudpickle because actor arguments and results are
arbitrary Python values, including functions and exceptions. They travel as length-prefixed
frames over persistent TCP connections (:mod:`iris.actor.wire`; why not gRPC: docs/actors.md).

A remote exception travels in-band (the call itself succeeded); a transport status means
transport or routing: ``UNAVAILABLE`` (nobody listens: retry elsewhere), ``NOT_FOUND`` (this
server does not host that actor: the endpoint moved), ``DEADLINE_EXCEEDED`` (the per-call timeout).
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

from iris.errors import IrisError, RemoteTraceback

# the largest request or answer either side sends or accepts
MAX_MESSAGE = 512 << 20

_OK, _RAISED, _RAISED_UNPICKLABLE = 0, 1, 2


class ActorError(IrisError):
    """Base for errors of the actor system itself (not raised by an actor's own code)."""


class ActorNotFound(ActorError, LookupError):
    """No endpoint serves the actor name (within the time allowed), or a server does not host it."""


class ActorMethodNotFound(ActorError, AttributeError):
    """The actor has no public method of that name."""


class ActorCallError(ActorError):
    """A call could not be made or answered: an argument or result that cannot be pickled, a
    transport failure, or a remote exception that could not be sent back as itself."""


class ActorPermissionDenied(ActorCallError, PermissionError):
    """The actor's server refused the caller: only tasks of the actor's job tree, the job's owner
    and admins may call it (or the call carried no valid credential)."""


class ActorTimeout(ActorError, TimeoutError):
    """The call did not finish within its timeout."""


class OperationCancelled(ActorError):
    """A long-running operation was cancelled before it finished."""


def encode_request(actor: str, method: str, args: tuple, kwargs: dict) -> bytes:
    """``(actor, method, args, kwargs)`` as bytes; an argument that cannot be pickled raises
    :class:`ActorCallError` naming it."""
    import cloudpickle

    try:
        return cloudpickle.dumps((actor, method, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - pickling raises many types
        for position, value in [*((f"argument {i}", a) for i, a in enumerate(args)), *((f"argument {k!r}", v) for k, v in kwargs.items())]:
            try:
                cloudpickle.dumps(value)
            except Exception:  # noqa: BLE001
                raise ActorCallError(
                    f"{actor}.{method}: {position} ({type(value).__name__}) cannot be pickled: {exc}; "
                    "actor arguments must be picklable by cloudpickle (plain data, functions, classes)"
                ) from exc
        raise ActorCallError(f"{actor}.{method}: the arguments cannot be pickled: {exc}") from exc


def decode_request(data: bytes) -> tuple[str, str, tuple, dict]:
    return pickle.loads(data)


def encode_value(value: Any) -> bytes:
    """A successful outcome; a value that cannot be pickled becomes an error outcome naming it."""
    import cloudpickle

    try:
        return cloudpickle.dumps((_OK, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001
        error = ActorCallError(f"the result ({type(value).__name__}) cannot be pickled: {exc}")
        return encode_exception(error, "")


def encode_exception(exc: BaseException, tb: str | None = None) -> bytes:
    """A raised exception with its formatted traceback; one that cannot be pickled travels as its
    type name and message."""
    import cloudpickle

    text = tb if tb is not None else "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        return cloudpickle.dumps((_RAISED, exc, text), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001
        return pickle.dumps((_RAISED_UNPICKLABLE, f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), text))


def decode_outcome(data: bytes, where: str) -> Any:
    """The value of an outcome, or raise the remote exception as its own type with the remote
    traceback as its cause (and as a note) ``where`` names the call for the note."""
    try:
        outcome = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - e.g. a class this process cannot import
        raise ActorCallError(f"{where}: the answer cannot be unpickled here: {exc!r}") from exc
    kind = outcome[0]
    if kind == _OK:
        return outcome[1]
    if kind == _RAISED:
        _, exc, text = outcome
    else:
        _, type_name, message, text = outcome
        exc = ActorCallError(f"{where} raised {type_name}: {message} (the exception could not be pickled)")
    if text:
        exc.__cause__ = RemoteTraceback(text)
        if hasattr(exc, "add_note"):
            exc.add_note(f"raised remotely in {where}:\n{text}")
    raise exc
