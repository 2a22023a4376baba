"""Who is calling: principals, the tokens that name them, and where tokens are kept.

A token is a bearer credential sent in the ``authorization: Bearer TOKEN`` metadata of every
RPC. Two kinds resolve to a :class:`Principal`:

* **minted** tokens, ``iris1.<payload>.<signature>``: the payload (role, name, job, expiry) is
  signed with HMAC-SHA256 under the cluster's secret (``<state_dir>/secret.key``, mode 0600),
  so checking one costs a hash and no lookup. The controller mints them for workers (bound to
  the worker id), for tasks (bound to their job) and, on an admin's request, for users.
* **static** tokens from the config (``auth.tokens``) or a tokens file (``auth.tokens_file``):
  one per line, ``TOKEN ROLE NAME``, where TOKEN may be written ``sha256:<hex>`` so the file
  need not hold the token itself.

What each role may do is decided in one place, :mod:`iris.cluster.controller.access`.
This module imports nothing heavy: the CLI and clients use it to find their token.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from iris.errors import ConfigError, IrisError

__all__ = [
    "METADATA_KEY",
    "TOKEN_ENV",
    "Authenticator",
    "PermissionDenied",
    "Principal",
    "Role",
    "TokenSigner",
    "Unauthenticated",
    "load_static_tokens",
]

#: The gRPC metadata key that carries ``Bearer <token>``.
METADATA_KEY = "authorization"
#: Overrides every stored token (scripts; and inside a task, where the worker sets it).
TOKEN_ENV = "IRIS_TOKEN"
#: How a provider hands a worker process its credential (popped by the worker at start, so its
#: tasks never inherit it).
WORKER_TOKEN_ENV = "IRIS_WORKER_TOKEN"
SECRET_FILE = "secret.key"
OWNER_TOKEN_FILE = "owner.token"
_PREFIX = "iris1"


class Unauthenticated(IrisError):
    """The call carried no token, or one that is not valid here (gRPC UNAUTHENTICATED)."""


class PermissionDenied(IrisError):
    """The caller is known but may not do this (gRPC PERMISSION_DENIED)."""


class Role(enum.Enum):
    ADMIN = "admin"  # everything: every job, slices, minting tokens
    USER = "user"  # their own jobs (and the children they start under them)
    WORKER = "worker"  # only Reconcile, only as the worker id the token names
    TASK = "task"  # inside one job: read it, start children under it, register its endpoints
    OPEN = "open"  # auth is off: every call may do anything (the in-process local cluster)


#: Roles a person may be given a token for (workers and tasks get theirs from the controller).
GRANTABLE = (Role.ADMIN, Role.USER)


@attrs.frozen
class Principal:
    """Who a call comes from. ``name`` is the user (admin, user, task: the job's owner) or the
    worker id (worker); ``job_id`` is the job a task credential is bound to."""

    role: Role
    name: str = ""
    job_id: str = ""

    def describe(self) -> str:
        if self.role is Role.TASK:
            return f"a task of {self.job_id}"
        if self.role is Role.OPEN:
            return "anyone (auth is off)"
        return f"{self.role.value} {self.name}"


OPEN = Principal(Role.OPEN)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Mints and checks ``iris1.`` tokens with one secret (HMAC-SHA256)."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret

    def mint(self, principal: Principal, ttl_seconds: float = 0.0, purpose: str = "") -> str:
        """A token naming ``principal``; ``ttl_seconds`` 0 = it does not expire. A ``purpose``
        (e.g. ``"login"``: the dashboard's one-time login link) makes a token that only
        :meth:`verify` with that purpose accepts: it is no bearer token for the RPCs."""
        payload = {"r": principal.role.value, "n": principal.name, "i": secrets.token_hex(8)}
        if principal.job_id:
            payload["j"] = principal.job_id
        if purpose:
            payload["p"] = purpose
        if ttl_seconds > 0:
            payload["e"] = int(time.time() + ttl_seconds)
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{_PREFIX}.{body}.{self._sign(body)}"

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def verify(self, token: str, purpose: str = "") -> Principal | None:
        """The principal a token names, or None if it is not one of ours, is forged, expired, or
        was minted for another ``purpose`` (the default: none, a bearer token)."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            return None
        if not hmac.compare_digest(self._sign(parts[1]), parts[2]):
            return None
        try:
            payload = json.loads(_unb64(parts[1]))
            role = Role(payload["r"])
            expires = float(payload.get("e", 0))
            minted_for = str(payload.get("p", ""))
        except (ValueError, KeyError, TypeError):
            return None
        if minted_for != purpose:
            return None
        if role is Role.OPEN or (expires and time.time() >= expires):
            return None
        return Principal(role, str(payload.get("n", "")), str(payload.get("j", "")))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_static_token(line: str, where: str) -> tuple[str, Principal]:
    """``TOKEN ROLE NAME`` (TOKEN may be ``sha256:<hex>``) -> (sha256 of the token, principal)."""
    fields = line.split()
    if len(fields) != 3:
        raise ConfigError(f"{where}: expected 'TOKEN ROLE NAME', got {len(fields)} field(s)")
    token, role_text, name = fields
    return static_token_entry(token, role_text, name, where)


def static_token_entry(token: str, role_text: str, name: str, where: str) -> tuple[str, Principal]:
    """One static token (``auth.tokens`` entry or tokens-file line) checked: (sha256 of the token,
    its principal), or ConfigError naming ``where``."""
    accepted = ", ".join(r.value for r in GRANTABLE)
    try:
        role = Role(role_text)
    except ValueError:
        raise ConfigError(f"{where}: role {role_text!r} is not one of: {accepted}") from None
    if role not in GRANTABLE:
        raise ConfigError(f"{where}: role {role_text!r} is not one of: {accepted} (workers and tasks get minted tokens)")
    if not name:
        raise ConfigError(f"{where}: a static token needs a name")
    if token.startswith("sha256:"):
        digest = token.removeprefix("sha256:").lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"{where}: sha256:<hex> must be 64 hex digits")
        return digest, Principal(role, name)
    if len(token) < 16:
        raise ConfigError(f"{where}: the token is {len(token)} characters; use at least 16 (e.g. from `openssl rand -hex 32`)")
    return _digest(token), Principal(role, name)


def load_static_tokens(path: str | Path) -> dict[str, Principal]:
    """Read a tokens file (``TOKEN ROLE NAME`` per line; ``#`` comments) -> {sha256: principal}."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"auth.tokens_file: cannot read {path}: {exc.strerror}") from None
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            digest, principal = parse_static_token(line, f"{path}:{number}")
            out[digest] = principal
    return out


class Authenticator:
    """Turns the token of a call into a :class:`Principal` (or None): minted tokens by their
    signature, static ones by the sha256 of the token. Verified tokens are remembered (bounded),
    so a client's second call costs a dict lookup."""

    _CACHE_LIMIT = 4096

    def __init__(self, signer: TokenSigner, static: Mapping[str, Principal] | None = None):
        self.signer = signer
        self._static = dict(static or {})
        self._cache: dict[str, tuple[Principal, float]] = {}

    def authenticate(self, token: str) -> Principal | None:
        cached = self._cache.get(token)
        now = time.time()
        if cached is not None and (not cached[1] or now < cached[1]):
            return cached[0]
        principal = self._static.get(_digest(token)) if not token.startswith(_PREFIX + ".") else self.signer.verify(token)
        if principal is not None:
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = (principal, _expiry(token))
        return principal

    def mint(self, principal: Principal, ttl_seconds: float = 0.0, purpose: str = "") -> str:
        return self.signer.mint(principal, ttl_seconds, purpose)

    def check_purpose(self, token: str, purpose: str) -> Principal | None:
        """The principal of a token minted for ``purpose`` (see :meth:`TokenSigner.mint`), or None."""
        return self.signer.verify(token, purpose)


def _expiry(token: str) -> float:
    if not token.startswith(_PREFIX + "."):
        return 0.0
    try:
        return float(json.loads(_unb64(token.split(".")[1])).get("e", 0))
    except (ValueError, IndexError):
        return 0.0


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token in call metadata (``authorization: Bearer TOKEN``), or ''."""
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def current_user() -> str:
    """This process's OS user, as a job's user: the first component of top-level job ids
    (``/user/name``) when auth is off, and the name on the owner token of a controller it starts."""
    import getpass

    try:
        name = getpass.getuser()
    except Exception:
        name = "user"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._") or "user"


# --- files ----------------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def cluster_secret(state_dir: Path) -> bytes:
    """The cluster's token secret (``<state_dir>/secret.key``, 0600), created on first use."""
    path = state_dir / SECRET_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = secrets.token_hex(32)
        write_private(path, text + "\n")
    if len(text) < 32:
        raise ConfigError(f"{path}: the token secret is too short ({len(text)} characters); delete it to make a new one")
    return text.encode()


def read_token_file(path: Path) -> str:
    """A token kept in a file (first line), or '' if there is none."""
    try:
        return path.read_text().strip().splitlines()[0].strip() if path.exists() else ""
    except (OSError, IndexError):
        return ""


# --- the client's side: where a token comes from --------------------------------------------


def credentials_path() -> Path:
    """Where ``iris login`` keeps tokens: ``~/.iris/credentials.json`` (0600), by controller URL."""
    return Path.home() / ".iris" / "credentials.json"


def _load_credentials() -> dict[str, str]:
    try:
        data = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def store_token(url: str, token: str) -> Path:
    """Remember ``token`` for the controller at ``url`` (``iris login``); returns the file."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = _load_credentials()
    data[normalize_url(url)] = token
    write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def forget_token(url: str) -> bool:
    data = _load_credentials()
    if data.pop(normalize_url(url), None) is None:
        return False
    write_private(credentials_path(), json.dumps(data, indent=2, sort_keys=True) + "\n")
    return True


def normalize_url(url: str) -> str:
    return (url if "://" in url else f"http://{url}").rstrip("/")


def find_token(url: str, explicit: str | None = None, fallback: str = "") -> str:
    """The token to present to ``url``: ``explicit``, else ``$IRIS_TOKEN``, else the one
    ``iris login`` stored for that URL, else ``fallback`` (the CLI passes the owner's token of a
    cluster it found through ``--config``), else ''."""
    if explicit:
        return explicit
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    return _load_credentials().get(normalize_url(url), "") or fallback or _owner_token_for(url)


def _owner_token_for(url: str) -> str:
    """The owner token of a cluster this user started on this machine (``~/.iris/<name>/``)
    whose controller is at ``url``: whoever can read it started that controller, so
    ``iris job list --controller-url URL`` works for them as ``--config`` does."""
    root = Path.home() / ".iris"
    wanted = normalize_url(url)
    try:
        state_dirs = [d for d in root.iterdir() if d.is_dir()]
    except OSError:
        return ""
    for state_dir in state_dirs:
        try:
            if normalize_url((state_dir / "controller.url").read_text().strip()) == wanted:
                return (state_dir / OWNER_TOKEN_FILE).read_text().strip()
        except OSError:
            continue
    return ""
