"""Client channels to the controller: plaintext gRPC whose every call carries the caller's token.

The token rides in each call's ``metadata`` argument rather than through a
``grpc.intercept_channel`` interceptor: gRPC's Python interceptor machinery costs about 35 us of
CPU per call, the metadata argument next to nothing (benchmarks/auth_cost.py).
"""

from __future__ import annotations

from typing import Any

import grpc

from iris.auth import METADATA_KEY


class _WithToken:
    """A unary-unary multicallable that adds the token to each call's metadata."""

    __slots__ = ("_inner", "_metadata")

    def __init__(self, inner: Any, metadata: tuple[tuple[str, str], ...]):
        self._inner = inner
        self._metadata = metadata

    def _merged(self, metadata: Any) -> tuple[tuple[str, str], ...]:
        return self._metadata if not metadata else (*metadata, *self._metadata)

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._inner(request, timeout=timeout, metadata=self._merged(metadata), **kwargs)

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._inner.future(request, timeout=timeout, metadata=self._merged(metadata), **kwargs)

    def with_call(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._inner.with_call(request, timeout=timeout, metadata=self._merged(metadata), **kwargs)


class TokenChannel:
    """A ``grpc.Channel`` stand-in for generated stubs: its unary-unary calls carry the token;
    everything else is the wrapped channel's."""

    def __init__(self, channel: grpc.Channel, token: str):
        self._channel = channel
        self._metadata = ((METADATA_KEY, f"Bearer {token}"),)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _WithToken:
        return _WithToken(self._channel.unary_unary(method, *args, **kwargs), self._metadata)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TokenChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


#: gRPC's own reconnect backoff grows to 120 s by default, so a controller back after a minute
#: away (restarted, or a new controller VM on the same address) would be tried again only up to
#: two minutes later: its workers miss ``worker_timeout_seconds`` and are lost with their running
#: attempts, and clients give up. Iris channels try a lost peer again at least this often.
MAX_RECONNECT_BACKOFF_MS = 1000


def authorized_channel(target: str, token: str, options: list[tuple[str, Any]] | None = None) -> Any:
    """A plaintext channel to ``target`` (host:port) whose calls carry ``token`` (none if empty);
    it reconnects within :data:`MAX_RECONNECT_BACKOFF_MS` of the peer coming back (unless
    ``options`` say otherwise)."""
    merged = dict([("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS), *(options or [])])
    channel = grpc.insecure_channel(target, options=list(merged.items()))
    return TokenChannel(channel, token) if token else channel


#: Trailing metadata key under which the controller names the Iris error class it aborted a call
#: with, so that one status code (NOT_FOUND: a job, a VM) comes back as the error it was.
ERROR_KIND_KEY = "iris-error-kind"


def error_kind(exc: Any) -> str:
    """The Iris error class the server named in a failed call's trailing metadata, or ""."""
    try:
        metadata = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 (an RpcError that is not a Call has none)
        return ""
    return next((str(value) for key, value in metadata if key == ERROR_KIND_KEY), "")


def call(method: Any, request: Any, address: str, timeout: float | None = 60.0) -> Any:
    """``method(request)`` on a controller stub, its gRPC errors turned into Iris's: NOT_FOUND is
    :class:`~iris.errors.VmNotFound` when the controller says so (:data:`ERROR_KIND_KEY`), else
    :class:`~iris.errors.JobNotFound`; UNAVAILABLE and DEADLINE_EXCEEDED are
    :class:`~iris.errors.ControllerUnavailable` naming ``address``; UNAUTHENTICATED and
    PERMISSION_DENIED are :mod:`iris.auth`'s; anything else an IrisError with the details."""
    from iris.auth import PermissionDenied, Unauthenticated
    from iris.errors import ControllerUnavailable, IrisError, JobNotFound, VmNotFound

    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.NOT_FOUND:
            raise (VmNotFound if error_kind(exc) == "VmNotFound" else JobNotFound)(details) from None
        if code == grpc.StatusCode.UNAVAILABLE:
            raise ControllerUnavailable(f"cannot reach the controller at {address}: {details}") from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise ControllerUnavailable(f"the controller at {address} did not answer in time") from None
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise Unauthenticated(f"{details} ({address})") from None
        if code == grpc.StatusCode.PERMISSION_DENIED:
            raise PermissionDenied(details) from None
        raise IrisError(details or str(code)) from None


def controller_stub(url: str, token: str | None) -> tuple[Any, Any]:
    """(channel, ControllerService stub) for a controller URL (``http://host:port``); close the
    channel when done. For code below the client (``iris.client.IrisClient`` is the API)."""
    from iris.rpc import controller_pb2_grpc

    channel = authorized_channel(url.split("://", 1)[-1], token or "")
    return channel, controller_pb2_grpc.ControllerServiceStub(channel)
