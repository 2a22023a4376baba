"""Actors: host Python objects in tasks and call their methods from anywhere (see docs/actors.md).

``ActorServer`` hosts, ``ActorClient`` calls one actor, ``ActorPool`` spans the replicas of an
actor job; resolvers find endpoints: ``FixedResolver`` (a fixed map) and
``iris.client.ClusterResolver`` (the controller's endpoint registry).
"""

from iris.actor.client import ActorClient, Operation
from iris.actor.pool import ActorPool
from iris.actor.protocol import (
    ActorCallError,
    ActorError,
    ActorMethodNotFound,
    ActorNotFound,
    ActorPermissionDenied,
    ActorTimeout,
    OperationCancelled,
)
from iris.actor.auth import ActorGate
from iris.actor.resolver import FixedResolver, ResolvedEndpoint, Resolver
from iris.actor.server import ActorServer, operation_cancelled
from iris.errors import RemoteTraceback

__all__ = [
    "ActorCallError",
    "ActorClient",
    "ActorError",
    "ActorGate",
    "ActorMethodNotFound",
    "ActorNotFound",
    "ActorPermissionDenied",
    "ActorPool",
    "ActorServer",
    "ActorTimeout",
    "FixedResolver",
    "Operation",
    "OperationCancelled",
    "RemoteTraceback",
    "ResolvedEndpoint",
    "Resolver",
    "operation_cancelled",
]
