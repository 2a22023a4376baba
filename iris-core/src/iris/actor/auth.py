"""Who may call an actor: the credentials actor calls carry, and how an actor server checks them.

Only tasks of the actor's job tree, the job's owner and admins may call a job's actors. A caller
presents the controller's own credential as ``authorization: Bearer TOKEN`` metadata at the
opening of each connection (:mod:`iris.actor.wire`; the server checks it on every request):
inside a task, the task's credential (``IRIS_TOKEN``, minted by the controller per attempt,
bound to its job); outside a task, the owner's token, and only to actors of the owner's own jobs.

The actor server, itself a task, cannot check a controller-minted token (it does not hold the
cluster's secret, and must not: a task holding it could mint any token). So :class:`ActorGate`
asks the controller once who a token names (``WhoAmI`` presenting that token) and remembers the
answer: the first call with a token costs one controller round trip, every later one a dict
lookup. A token the controller refuses is remembered briefly too, so a refused caller cannot
make the server hammer the controller. See docs/actors.md ("Who may call an actor").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from iris.auth import METADATA_KEY, Principal, Role

if TYPE_CHECKING:
    from iris.actor.resolver import Resolver

__all__ = ["ActorGate", "default_credentials"]

logger = logging.getLogger(__name__)

ALLOWED_TTL = 300.0  # how long an accepted token is trusted without asking again
REFUSED_TTL = 5.0  # how long a refused token is refused without asking again
_CACHE_LIMIT = 4096


def _root(job_id: str) -> str:
    from iris.client.job_info import root_job_id

    return root_job_id(job_id)


class ActorGate:
    """Checks the credential of each call to the actors of job ``job_id``, whose own task
    credential is ``own_token``, against the controller at ``controller_address``.

    :meth:`check` answers None (allowed) or why not, as (status, message); the status is a gRPC
    status code, whose name the actor transport sends back."""

    def __init__(self, controller_address: str, own_token: str, job_id: str, *, who_is: Callable[[str], Principal | None] | None = None):
        self._address = controller_address
        self._own_token = own_token
        self.job_id = job_id
        self.root = _root(job_id)
        self.owner = ""
        self.enabled = True
        self._who_is = who_is or self._ask_controller
        self._stub: Any = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[grpc.StatusCode, str] | None, float]] = {}

    # --- the controller ---------------------------------------------------------------

    def _ask_controller(self, token: str) -> Principal | None:
        """Who ``token`` names, by the controller's ``WhoAmI``; None if it refuses the token."""
        from iris.rpc import controller_pb2

        if self._stub is None:
            from iris.rpc import controller_pb2_grpc

            target = self._address.split("://", 1)[-1]
            self._stub = controller_pb2_grpc.ControllerServiceStub(grpc.insecure_channel(target))
        try:
            answer = self._stub.WhoAmI(controller_pb2.WhoAmIRequest(), metadata=((METADATA_KEY, f"Bearer {token}"),), timeout=30)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return None
            raise
        if not answer.auth_enabled:
            return Principal(Role.OPEN)
        try:
            role = Role(answer.role)
        except ValueError:
            return None
        return Principal(role, answer.name, answer.job_id)

    def start(self) -> ActorGate:
        """Learn this server's own owner (one ``WhoAmI``); a controller without auth turns the gate off."""
        me = self._who_is(self._own_token)
        if me is None:
            raise PermissionError(f"actor server of {self.job_id}: the controller refuses this task's own credential (IRIS_TOKEN)")
        if me.role is Role.OPEN:
            self.enabled = False
        else:
            self.owner = me.name
        return self

    # --- the rule -------------------------------------------------------------------------

    def decide(self, who: Principal | None) -> tuple[grpc.StatusCode, str] | None:
        """None if ``who`` may call this job's actors, else (status, why not)."""
        if who is None:
            return grpc.StatusCode.UNAUTHENTICATED, "actor call refused: the caller's credential is not valid for this cluster"
        if who.role in (Role.ADMIN, Role.OPEN):
            return None
        if who.role is Role.TASK and _root(who.job_id) == self.root:
            return None
        if who.role is Role.USER and who.name == self.owner:
            return None
        return (
            grpc.StatusCode.PERMISSION_DENIED,
            f"actor call refused: {who.describe()} may not call the actors of {self.job_id} "
            f"(only tasks of {self.root} and below, its owner {self.owner}, or an admin)",
        )

    def check(self, metadata: Sequence[tuple[str, Any]] | None) -> tuple[grpc.StatusCode, str] | None:
        """None if the call with this metadata may go on, else (status, message)."""
        if not self.enabled:
            return None
        token = ""
        for key, value in metadata or ():
            if key == METADATA_KEY:
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                token = token.strip() if scheme.lower() == "bearer" else ""
                break
        if not token:
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                f"actor call refused: no credential; the actors of {self.job_id} answer only tasks of its job tree, "
                "its owner and admins (inside a task the task's credential is sent by itself)",
            )
        cached = self._cache.get(token)
        now = time.monotonic()
        if cached is not None and now < cached[1]:
            return cached[0]
        try:
            verdict = self.decide(self._who_is(token))
        except grpc.RpcError as exc:  # the controller is unreachable: refuse now, ask again next call
            return grpc.StatusCode.UNAVAILABLE, f"actor call refused for now: cannot check the caller's credential with the controller ({exc.code().name})"
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = (verdict, now + (ALLOWED_TTL if verdict is None else REFUSED_TTL))
        if verdict is not None:
            logger.warning("%s", verdict[1])
        return verdict


def task_gate() -> ActorGate | None:
    """The gate of an actor server inside a task of a cluster with auth (the task has a credential),
    else None (auth off, or not in a task)."""
    from iris.client.job_info import get_job_info

    info = get_job_info()
    if info is None or not info.token or not info.controller_address:
        return None
    return ActorGate(info.controller_address, info.token, info.job_id)


CallMetadata = Callable[[], Sequence[tuple[str, str]]]


def default_credentials(resolver: Resolver | None = None, job_id: str = "") -> CallMetadata | None:
    """What an actor client presents when not told (``metadata=None``):

    * inside a task: the task's credential (``IRIS_TOKEN``);
    * outside: the token of the resolver's client (a :class:`~iris.client.ClusterResolver`), but
      only when the actors' job (``job_id``, else the resolver's namespace) is the token holder's
      own (``/NAME/...``): a token is never handed to another user's code;
    * else nothing (auth off, or a :class:`~iris.actor.FixedResolver` outside a task)."""
    from iris.client.job_info import get_job_info

    info = get_job_info()
    if info is not None and info.token:
        metadata = ((METADATA_KEY, f"Bearer {info.token}"),)
        return lambda: metadata
    client = getattr(resolver, "client", None)
    token = getattr(client, "token", None)
    target = job_id or getattr(resolver, "namespace", "")
    if not token or not target:
        return None
    return _OwnerCredential(client, token, target)


class _OwnerCredential:
    """The client's token, sent once the controller has said it names the owner of ``target``."""

    def __init__(self, client: Any, token: str, target: str):
        self._client = client
        self._metadata = ((METADATA_KEY, f"Bearer {token}"),)
        self._user = [p for p in target.split("/") if p][:1]
        self._decided: bool | None = None

    def __call__(self) -> Sequence[tuple[str, str]]:
        if self._decided is None:
            try:
                who = self._client.whoami()
                self._decided = bool(who.auth_enabled) and [who.name] == self._user
            except Exception:  # noqa: BLE001 - no answer now: send nothing, ask again next call
                return ()
        return self._metadata if self._decided else ()
