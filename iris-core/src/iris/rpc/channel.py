"""Client channels to the controller: plaintext gRPC whose every call carries the caller's token."""

from __future__ import annotations

from typing import Any

import grpc

from iris.auth import METADATA_KEY


class _Bearer(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer TOKEN`` to every call of a channel."""

    def __init__(self, token: str):
        self._metadata = ((METADATA_KEY, f"Bearer {token}"),)

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        details = client_call_details._replace(metadata=tuple(client_call_details.metadata or ()) + self._metadata)
        return continuation(details, request)


def authorized_channel(target: str, token: str, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A plaintext channel to ``target`` (host:port) whose calls carry ``token`` (none if empty)."""
    channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, _Bearer(token)) if token else channel
