"""The controller's HTTP side: ``/health``, a JSON API over the controller's snapshots, and the
dashboard's static files (shipped in this package, under ``dashboard/``).

    GET  /health                        ok, version, uptime, counts (for probes and bootstrap scripts)
    GET  /api/jobs?state=&user=&prefix=&page=&per_page=
                                        one page of job summaries, newest first
    GET  /api/job?id=JOB&task_page=&tasks_per_page=
                                        one job: a page of its tasks with their attempts, children
    GET  /api/logs?job=JOB&cursor=C&max_lines=N&children=1
                                        a job's log lines after a cursor (the gRPC GetLogs cursor)
    GET  /api/workers                   every worker, lost ones included
    GET  /api/scale-groups              the autoscaler's groups and slices (empty without one)
    GET  /api/endpoints                 every registered endpoint
    POST /api/kill   {"job_id": JOB, "reason": "..."}
    GET  /  and  /static/<file>         the dashboard

It is a stdlib ``ThreadingHTTPServer`` on its own thread (one short-lived thread per request):
every handler is a short, non-blocking controller read, so no request waits on the controller's
asyncio loop and the gRPC side never waits on HTTP. Bad input gets a 4xx with a JSON body naming
the field, the value and what is accepted; never a traceback.

    GET  /login?ticket=T                exchanges a one-time login link for the session cookie
    GET  /login,  POST /login           the login form (paste a token), the fallback
    GET  /logout                        forgets the session cookie
    POST /api/login-ticket              (Bearer TOKEN) a one-time login link's ticket, for the CLI

Every request but ``/health`` and the login pages passes :meth:`HttpServer.authorize` first (see
:data:`Authorizer`). With ``auth`` (the controller's :class:`~iris.auth.Authenticator`) it is
:func:`token_authorizer`: the request must carry a token the RPCs would accept (``Authorization:
Bearer``, or the ``iris_token`` cookie the login pages set), and what the principal may read or
kill is decided by :mod:`iris.cluster.controller.access`, as for the RPCs. Without auth every
request is allowed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from iris.auth import OPEN, Authenticator, PermissionDenied, Principal, Role
from iris.cluster.controller import access
from iris.cluster.controller.controller import BadCursor, Controller, InvalidRequest
from iris.errors import IrisError, JobNotFound
from iris.job.types import JobState

logger = logging.getLogger(__name__)

MAX_PER_PAGE = 500
DEFAULT_PER_PAGE = 50
DEFAULT_TASKS_PER_PAGE = 100
MAX_LOG_LINES = 5_000
MAX_BODY_BYTES = 64 * 1024
TOKEN_COOKIE = "iris_token"
#: How long a login link's ticket may wait to be used (once), and how long a session lasts.
TICKET_TTL_SECONDS = 120.0
SESSION_TTL_SECONDS = 12 * 3600.0
LOGIN_PURPOSE = "login"
#: A session cookie's token is minted for this purpose: good on the HTTP side only, so a cookie
#: that leaks cannot submit jobs or reach any RPC.
SESSION_PURPOSE = "dashboard-session"

@attrs.frozen
class HttpRequest:
    """What the authorization hook sees of a request.

    ``token``: the bearer token of the ``Authorization`` header, else the ``iris_token`` cookie,
    else "". ``job_id``: the job the request reads or acts on (``id``/``job`` in the query, the
    body's ``job_id`` for a kill), "" for the others, so an owner check (kill only your own job)
    needs nothing else."""

    token: str
    method: str
    path: str
    job_id: str = ""


#: ``authorize(request) -> Principal | None`` raises :class:`Unauthorized` (401) or
#: :class:`Forbidden` (403) to refuse a request, else says who sent it (None: anyone, as with auth
#: off). The principal then meets the RPCs' rules (:mod:`~iris.cluster.controller.access`): a user
#: lists, reads and kills only their own jobs. :func:`token_authorizer` is the controller's.
Authorizer = Callable[[HttpRequest], "Principal | None"]


class Unauthorized(IrisError):
    """The request's token is missing, unknown, or lacks the role for this request."""


class Forbidden(IrisError):
    """A request refused whoever sends it: one a browser was made to send by another site (wrong
    Host, cross-origin POST), or one the caller's role does not allow."""


class BadRequest(IrisError):
    """A query value outside what the API accepts (the message names field, value, accepted)."""

    def __init__(self, field: str, value: Any, accepted: str):
        super().__init__(f"{field}: {value!r} is not accepted; expected {accepted}")
        self.field, self.value, self.accepted = field, value, accepted


class NotFound(BadRequest):
    """A job id that names no job (404)."""

    def __init__(self, field: str, value: str):
        IrisError.__init__(self, f"{field}: no job {value!r}; expected the id of a job this controller knows, e.g. /alice/train")
        self.field, self.value, self.accepted = field, value, "a known job id"


def _resolving(field: str, job_id: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except JobNotFound:
        raise NotFound(field, job_id) from None


def allow_all(request: HttpRequest) -> None:
    """Auth off: every request is allowed."""


NO_TOKEN = (
    "this controller requires a token: open the dashboard with `iris cluster dashboard` (a one-time "
    "login link), log in at /login, or send Authorization: Bearer TOKEN"
)
BAD_TOKEN = "the token is not valid for this controller (expired, rotated, or from another cluster); log in again at /login"


def token_authorizer(auth: Authenticator) -> Authorizer:
    """The RPCs' authentication for HTTP: the request's token must name a principal ``auth``
    accepts, and not a worker (a worker's credential only reconciles)."""

    def authorize(request: HttpRequest) -> Principal:
        if not request.token:
            raise Unauthorized(NO_TOKEN)
        who = auth.authenticate(request.token) or auth.check_purpose(request.token, SESSION_PURPOSE)
        if who is None:
            raise Unauthorized(BAD_TOKEN)
        if who.role is Role.WORKER:
            raise Forbidden(f"permission denied: {who.describe()} may not use the dashboard (a worker's credential only reconciles)")
        return who

    return authorize


_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_STATES = ", ".join(s.value for s in JobState)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("iris-core")
    except PackageNotFoundError:
        return "unknown"


def _local_name(name: str, bound: str) -> bool:
    """A Host name this server answers to: an IP address, localhost, or the host it was bound to."""
    import ipaddress

    if name in ("localhost", bound.lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _int(query: dict[str, list[str]], field: str, default: int, low: int, high: int) -> int:
    raw = query.get(field, [""])[-1]
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(field, raw, f"an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise BadRequest(field, raw, f"an integer from {low} to {high}")
    return value


def _states(query: dict[str, list[str]]) -> list[JobState]:
    out = []
    for raw in query.get("state", []):
        for part in filter(None, raw.split(",")):
            try:
                out.append(JobState(part.strip().upper()))
            except ValueError:
                raise BadRequest("state", part, f"one of {_STATES} (comma-separated or repeated)") from None
    return out


def _required(query: dict[str, list[str]], field: str) -> str:
    value = query.get(field, [""])[-1]
    if not value:
        raise BadRequest(field, value, "a job id, e.g. /alice/train")
    return value


def _plain(value: Any) -> Any:
    """attrs records, enums and tuples as JSON-ready values."""
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):  # an enum
        return value.value
    return value


class HttpServer:
    """The controller's HTTP port: health, the JSON API and the dashboard, on one thread."""

    def __init__(
        self,
        controller: Controller,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cluster: Any = None,
        authorize: Authorizer | None = None,
        auth: Authenticator | None = None,
    ):
        """``cluster`` (the ClusterManager) answers ``/api/scale-groups``; None = no autoscaler.
        ``auth``: the controller's token checker (None: auth off); it also mints the login
        tickets and session cookies. ``authorize`` replaces the check it implies."""
        self.controller = controller
        self.cluster = cluster
        self.auth = auth
        self.authorize: Authorizer = authorize or (token_authorizer(auth) if auth is not None else allow_all)
        self._used_tickets: dict[str, float] = {}  # ticket -> when it expires (each is used once)
        self._tickets_lock = threading.Lock()
        self.host = host
        self.version = _version()
        self.started = time.time()
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise IrisError(f"controller.http_port: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="iris-http", daemon=True)

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    # --- the API (each returns a JSON-ready value or raises) ---------------------------------

    def health(self, query: dict[str, list[str]], who: Principal) -> dict[str, Any]:
        page = self.controller.page_jobs(limit=0)
        workers = self.controller.list_workers()
        return {
            "ok": True,
            # the whole controller is up (its provider and autoscaler too), not only this port: what
            # `iris cluster start` waits for when the controller runs on another machine
            "started": bool(getattr(self.cluster, "started", True)),
            "version": self.version,
            "uptime_seconds": round(time.time() - self.started, 3),
            "jobs": page.counts,
            "workers": sum(1 for w in workers if not w.lost),
            "lost_workers": sum(1 for w in workers if w.lost),
            "grpc_url": self.controller.address,
        }

    def jobs(self, query: dict[str, list[str]], who: Principal) -> dict[str, Any]:
        states = _states(query)
        page = _int(query, "page", 1, 1, 10**9)
        per_page = _int(query, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
        user = query.get("user", [""])[-1]
        prefix = query.get("prefix", [""])[-1]
        if who.role is Role.USER:  # a user's list is their own jobs (ListJobs' rule)
            if user and user != who.name:
                raise Forbidden(f"permission denied: user {who.name} may list only their own jobs, not {user!r}'s")
            user = who.name
        elif who.role is Role.TASK:
            raise Forbidden(f"permission denied: {who.describe()} reads its own job (/api/job?id={who.job_id}), not the job list")
        result = self.controller.page_jobs(states=states, user=user, prefix=prefix, offset=(page - 1) * per_page, limit=per_page)
        pages = max(1, -(-result.total // per_page))
        if page > pages:
            raise BadRequest("page", page, f"a page from 1 to {pages} ({result.total} matching jobs, {per_page} per page)")
        return {"total": result.total, "page": page, "per_page": per_page, "pages": pages, "counts": result.counts, "jobs": _plain(result.jobs)}

    def job(self, query: dict[str, list[str]], who: Principal) -> dict[str, Any]:
        job_id = self._visible("id", _required(query, "id"), who, "read")
        task_page = _int(query, "task_page", 1, 1, 10**9)
        per_page = _int(query, "tasks_per_page", DEFAULT_TASKS_PER_PAGE, 1, MAX_PER_PAGE)
        offset = (task_page - 1) * per_page
        view, by_state = _resolving("id", job_id, lambda: self.controller.get_job_page(job_id, offset, per_page))
        task_count = sum(by_state.values())
        task_pages = max(1, -(-task_count // per_page))
        if task_page > task_pages:
            raise BadRequest("task_page", task_page, f"a page from 1 to {task_pages} ({task_count} tasks, {per_page} per page)")
        spec = view.spec
        return {
            "job_id": view.job_id,
            "name": spec.name,
            "user": spec.user,
            "state": view.state.value,
            "submitted_at": view.submitted_at,
            "started_at": view.started_at,
            "finished_at": view.finished_at,
            "error": view.error,
            "exit_code": view.exit_code,
            "parent_job_id": spec.parent_job_id,
            "children": list(view.children),
            "entrypoint": _entrypoint(spec.entrypoint),
            "resources": _plain(spec.resources),
            "replicas": spec.replicas,
            "max_retries": spec.max_retries,
            "task_count": task_count,
            "tasks_by_state": by_state,
            "task_page": task_page,
            "task_pages": task_pages,
            "tasks_per_page": per_page,
            "tasks": _plain(view.tasks),
            "may_kill": who.role in (Role.ADMIN, Role.OPEN) or access.may_see(who, view.job_id, spec.user),
        }

    def logs(self, query: dict[str, list[str]], who: Principal) -> dict[str, Any]:
        job_id = self._visible("job", _required(query, "job"), who, "read the logs of")
        max_lines = _int(query, "max_lines", 1000, 1, MAX_LOG_LINES)
        children = query.get("children", ["0"])[-1] in ("1", "true", "yes")
        cursor = query.get("cursor", [""])[-1]
        try:
            lines, cursor, finished, _ = _resolving(
                "job", job_id, lambda: self.controller.read_logs(job_id, cursor, max_lines, include_children=children)
            )
        except BadCursor:
            raise BadRequest("cursor", cursor, "a cursor returned by an earlier /api/logs answer, or empty for the start") from None
        return {
            "lines": [
                {"job_id": j, "task": ln.task_index, "attempt": ln.attempt_id, "time": ln.timestamp, "stream": ln.stream, "data": ln.data}
                for j, ln in lines
            ],
            "cursor": cursor,
            "finished": finished,
        }

    def workers(self, query: dict[str, list[str]], who: Principal) -> dict[str, Any]:
        access.require_person(who, "list workers")
        now = time.time()
        workers = sorted(self.controller.list_workers(), key=lambda w: (w.lost, w.worker_id))
        attempts = self.controller.worker_attempts()
        out = []
        for w in workers:
            row = _plain(w)
            row["attempts"] = [{"task_id": t, "attempt_id": a, "state": s} for t, a, s in attempts.get(w.worker_id, [])]
            row.update(free_cpu=max(0.0, w.cpu - w.used_cpu), free_memory=max(0, w.memory_bytes - w.used_memory), seen_ago=max(0.0, now - w.last_seen))
            out.append(row)
        return {"workers": out}

    def scale_groups(self, query: dict[str, list[str]], who: Principal) -> dict[str, Any]:
        access.require_person(who, "read the autoscaler's status")
        if self.cluster is None or not hasattr(self.cluster, "autoscaler_status"):
            return {"groups": [], "autoscaler": False}
        return {"groups": self.cluster.autoscaler_status(), "autoscaler": True}

    def endpoints(self, query: dict[str, list[str]], who: Principal) -> dict[str, Any]:
        access.require_person(who, "look up endpoints")
        return {"endpoints": _plain(self.controller.list_endpoints())}

    def kill(self, body: dict[str, Any], who: Principal) -> dict[str, Any]:
        job_id = body.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise BadRequest("job_id", job_id, "a job id string, e.g. /alice/train")
        job_id = self._visible("job_id", job_id, who, "kill")
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise BadRequest("reason", reason, "a string")
        view = _resolving("job_id", job_id, lambda: self.controller.kill_job(job_id, reason=reason or "killed from the dashboard"))
        return {"job_id": view.job_id, "state": view.state.value}


    def login_ticket(self, body: dict[str, Any], who: Principal) -> dict[str, Any]:
        """A one-time ticket for ``/login?ticket=``, naming the caller (for ``iris cluster dashboard``)."""
        if self.auth is None or who.role is Role.OPEN:
            return {"ticket": "", "auth_enabled": False}
        ticket = self.auth.mint(who, TICKET_TTL_SECONDS, purpose=LOGIN_PURPOSE)
        return {"ticket": ticket, "auth_enabled": True, "expires_in": TICKET_TTL_SECONDS}

    def redeem_ticket(self, ticket: str) -> Principal | None:
        """The principal of an unused, unexpired login ticket, now used up; else None."""
        if self.auth is None:
            return None
        who = self.auth.check_purpose(ticket, LOGIN_PURPOSE)
        if who is None:
            return None
        now = time.time()
        with self._tickets_lock:
            for used, expires in list(self._used_tickets.items()):
                if expires < now:
                    del self._used_tickets[used]
            if ticket in self._used_tickets:
                return None
            self._used_tickets[ticket] = now + TICKET_TTL_SECONDS + 60
        return who

    def session_for(self, who: Principal) -> str:
        """The session cookie's value: a token for ``who`` that ends after SESSION_TTL_SECONDS
        and that only this HTTP side accepts (not the RPCs)."""
        assert self.auth is not None
        return self.auth.mint(who, SESSION_TTL_SECONDS, purpose=SESSION_PURPOSE)

    def _visible(self, field: str, job_id: str, who: Principal, what: str) -> str:
        """The full id of ``job_id`` once ``who`` may ``what`` it (the RPCs' rule), else 403."""
        if who.role in (Role.OPEN, Role.ADMIN):  # may see every job: the handler resolves the id
            return job_id
        full_id, owner = _resolving(field, job_id, lambda: self.controller.job_owner(job_id))
        access.check_job(who, full_id, owner, what)
        return full_id


def _entrypoint(entrypoint: Any) -> str:
    import shlex

    return shlex.join(entrypoint.argv) if entrypoint.argv else "python callable"


_GET_ROUTES = {
    "/health": HttpServer.health,
    "/api/health": HttpServer.health,
    "/api/jobs": HttpServer.jobs,
    "/api/job": HttpServer.job,
    "/api/logs": HttpServer.logs,
    "/api/workers": HttpServer.workers,
    "/api/scale-groups": HttpServer.scale_groups,
    "/api/endpoints": HttpServer.endpoints,
}
_POST_ROUTES = {"/api/kill": HttpServer.kill, "/api/login-ticket": HttpServer.login_ticket}
_OPEN_ROUTES = ("/health", "/login", "/logout")  # answered before (or without) authorization


class _Handler(BaseHTTPRequestHandler):
    app: HttpServer
    server_version = "iris-controller"
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle kept-alive browser connection gives its thread back after this

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("http %s " + format, self.client_address[0], *args)

    def _token(self) -> str:
        header = self.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE:
                return value
        return ""

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "same-origin")  # never sent off-site; "no-referrer" would make a form POST's Origin "null"
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    def _error(self, status: int, message: str, **fields: Any) -> None:
        self._json(status, {"error": message, **fields})

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _check_origin(self, method: str, path: str) -> None:
        """Refuse what another web site could make a browser send here: a Host that is not this
        server's (DNS rebinding), and a cross-origin or non-JSON POST (a form or fetch from another
        page: a JSON body forces the browser to ask first, and this server never says yes). The
        login form is the one form POST, and only from this origin."""
        host = (self.headers.get("Host") or "").strip()
        name = urlsplit(f"//{host}").hostname or ""
        if not _local_name(name, self.app.host):
            raise Forbidden(f"Host {host!r} is not this controller's; use an IP address, localhost or {self.app.host}")
        if method == "POST":
            origin = self.headers.get("Origin")
            if origin and urlsplit(origin).netloc != host:
                raise Forbidden(f"cross-origin request from {origin} refused")
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if path == "/login":
                if content_type != "application/x-www-form-urlencoded":
                    raise BadRequest("Content-Type", self.headers.get("Content-Type", ""), "application/x-www-form-urlencoded (the login form)")
            elif content_type != "application/json":
                raise BadRequest("Content-Type", self.headers.get("Content-Type", ""), "application/json")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        try:
            self._check_origin(method, path)
            query = parse_qs(url.query, keep_blank_values=True)
            if path in ("/health", "/api/health") and method == "GET":  # probes and bootstrap scripts: no token
                self._json(200, self.app.health(query, OPEN))
                return
            if path in ("/login", "/logout"):
                self._login(method, path, query)
                return
            body = self._body() if method == "POST" and path in _POST_ROUTES else {}
            job_id = body.get("job_id") if isinstance(body.get("job_id"), str) else (query.get("id") or query.get("job") or [""])[-1]
            try:
                who = self.app.authorize(HttpRequest(self._token(), method, path, job_id)) or OPEN
            except Unauthorized as exc:
                if method == "GET" and path in ("/", "/index.html"):  # a browser without a session: the login page
                    self._login_page(401, str(exc))
                    return
                raise
            if method == "GET" and path in _GET_ROUTES:
                self._json(200, _GET_ROUTES[path](self.app, query, who))
            elif method == "POST" and path in _POST_ROUTES:
                self._json(200, _POST_ROUTES[path](self.app, body, who))
            elif method == "GET" and (path in ("/", "/index.html") or path.startswith("/static/")):
                self._static(path)
            elif path in _GET_ROUTES or path in _POST_ROUTES:
                allowed = "GET" if path in _GET_ROUTES else "POST"
                self._send(405, json.dumps({"error": f"{path} accepts {allowed} only"}).encode(), "application/json", {"Allow": allowed})
            else:
                self._error(404, f"no such page or API: {path}", accepted="/health, /api/jobs, /api/job, /api/logs, /api/workers, /api/scale-groups, /api/endpoints, /api/kill, /login, /")
        except Unauthorized as exc:
            self._error(401, str(exc))
        except (Forbidden, PermissionDenied) as exc:
            self._error(403, str(exc))
        except BadRequest as exc:
            status = 404 if isinstance(exc, NotFound) else 400
            self._error(status, str(exc), field=exc.field, value=exc.value, accepted=exc.accepted)
        except JobNotFound as exc:
            self._error(404, str(exc))
        except (InvalidRequest, BadCursor) as exc:
            self._error(400, str(exc))
        except IrisError as exc:
            self._error(409, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            logger.exception("http %s %s failed", method, path)
            self._error(500, "internal error; see the controller's log")

    # --- logging in: a one-time link or the form, then an HttpOnly session cookie ----------------

    def _login(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        app = self.app
        if path == "/logout":
            self._redirect("/login" if app.auth is not None else "/", clear=True)
            return
        if app.auth is None:  # auth off: nothing to log in to
            self._redirect("/")
            return
        if method == "GET":
            ticket = query.get("ticket", [""])[-1]
            if not ticket:
                self._login_page(200, "")
                return
            who = app.redeem_ticket(ticket)
            if who is None:
                self._login_page(401, "That login link has expired or was used already: run `iris cluster dashboard` again, or paste a token below.")
                return
        elif method == "POST":
            token = parse_qs(self._form(), keep_blank_values=True).get("token", [""])[-1].strip()
            who = app.auth.authenticate(token) if token else None
            if who is None or who.role is Role.WORKER:
                self._login_page(401, "That token is not valid here (mistyped, expired, rotated, or from another cluster)." if token else "Paste a token.")
                return
        else:
            self._error(405, "/login accepts GET and POST only")
            return
        logger.info("dashboard login: %s", who.describe())
        self._redirect("/", cookie=app.session_for(who))

    def _form(self) -> str:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("Content-Length", self.headers.get("Content-Length"), "a byte count") from None
        if length > MAX_BODY_BYTES:
            raise BadRequest("body", f"{length} bytes", f"at most {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length).decode("utf-8", "replace") if length else ""

    def _redirect(self, location: str, cookie: str | None = None, clear: bool = False) -> None:
        extra = {"Location": location}
        if cookie is not None:
            extra["Set-Cookie"] = f"{TOKEN_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(SESSION_TTL_SECONDS)}"
        elif clear:
            extra["Set-Cookie"] = f"{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        self._send(303, b"", "text/plain; charset=utf-8", extra)

    def _login_page(self, status: int, message: str) -> None:
        import html

        page = resources.files("iris.cluster.controller").joinpath("dashboard", "login.html").read_text()
        notice = f'<p class="problem">{html.escape(message)}</p>' if message else ""
        self._send(status, page.replace("<!--message-->", notice).encode(), _CONTENT_TYPES[".html"])

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("Content-Length", self.headers.get("Content-Length"), "a byte count") from None
        if length > MAX_BODY_BYTES:
            raise BadRequest("body", f"{length} bytes", f"at most {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise BadRequest("body", raw[:80].decode("utf-8", "replace"), "a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("body", body, "a JSON object")
        return body

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("/", "/index.html") else path[len("/static/") :]
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in _CONTENT_TYPES:
            self._error(404, f"no such file: {path}")
            return
        asset = resources.files("iris.cluster.controller").joinpath("dashboard", name)
        if not asset.is_file():
            self._error(404, f"no such file: {path}")
            return
        self._send(200, asset.read_bytes(), _CONTENT_TYPES[suffix])
