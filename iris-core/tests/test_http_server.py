"""The controller's HTTP side against a real controller (in memory, no workers) over loopback:
paging and filtering, the authorization hook, and what a browser on another site cannot do."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from iris.cluster.controller.controller import Controller
from iris.cluster.controller.http_server import Forbidden, HttpRequest, HttpServer, Unauthorized
from iris.job.records import JobSpec
from iris.job.types import Entrypoint, JobState


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def spec(name: str, user: str = "alice", replicas: int = 1) -> JobSpec:
    return JobSpec(name=name, entrypoint=Entrypoint.from_command("true"), user=user, replicas=replicas)


@pytest.fixture
def controller() -> Controller:
    clock = Clock()
    c = Controller(clock=clock)
    for i in range(7):
        clock.now += 1
        c.launch_job(spec(f"j{i}", user="alice" if i % 2 == 0 else "bob", replicas=2))
    c.kill_job("/alice/j0")
    c.kill_job("/bob/j1")
    return c


def request(server: HttpServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if response.getheader("Content-Type", "").startswith("application/json") else data
    finally:
        conn.close()


@pytest.fixture
def server(controller: Controller) -> Iterator[HttpServer]:
    s = HttpServer(controller)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_page_jobs_filters_counts_and_pages_newest_first(controller: Controller) -> None:
    page = controller.page_jobs(limit=3)
    assert page.total == 7 and page.counts == {"PENDING": 5, "KILLED": 2}
    assert [j.job_id for j in page.jobs] == ["/alice/j6", "/bob/j5", "/alice/j4"]
    second = controller.page_jobs(offset=3, limit=3)
    assert [j.job_id for j in second.jobs] == ["/bob/j3", "/alice/j2", "/bob/j1"]
    bob = controller.page_jobs(user="bob", states=[JobState.PENDING])
    assert [j.job_id for j in bob.jobs] == ["/bob/j5", "/bob/j3"] and bob.counts == {"PENDING": 2, "KILLED": 1}
    assert controller.page_jobs(prefix="/alice/j").total == 4
    summary = controller.page_jobs(prefix="/alice/j6").jobs[0]
    assert summary.tasks_by_state == {"PENDING": 2} and summary.pending_reason and summary.replicas == 2
    killed = controller.page_jobs(states=[JobState.KILLED], user="alice").jobs[0]
    assert killed.state == "KILLED" and killed.error == "killed by user" and killed.pending_reason == ""


def test_api_jobs_answers_the_page_and_its_bounds(server: HttpServer) -> None:
    status, body = request(server, "GET", "/api/jobs?per_page=2&page=4")
    assert status == 200 and body["pages"] == 4 and [j["job_id"] for j in body["jobs"]] == ["/alice/j0"]
    status, body = request(server, "GET", "/api/jobs?per_page=2&page=5")
    assert status == 400 and body["field"] == "page" and "1 to 4" in body["accepted"]
    status, body = request(server, "GET", "/api/jobs?state=killed,PENDING&user=bob")
    assert status == 200 and body["total"] == 3


def test_api_job_pages_the_tasks_of_a_big_job(controller: Controller, server: HttpServer) -> None:
    controller.launch_job(spec("big", replicas=250))
    status, body = request(server, "GET", "/api/job?id=/alice/big")
    assert status == 200
    assert body["task_count"] == 250 and body["tasks_by_state"] == {"PENDING": 250} and body["task_pages"] == 3
    assert [t["index"] for t in body["tasks"]] == list(range(100))
    status, body = request(server, "GET", "/api/job?id=/alice/big&task_page=3")
    assert [t["index"] for t in body["tasks"]] == list(range(200, 250))
    status, body = request(server, "GET", "/api/job?id=/alice/big&task_page=4")
    assert status == 400 and body["field"] == "task_page" and "250 tasks" in body["accepted"]
    status, body = request(server, "GET", "/api/job?id=/alice/big&tasks_per_page=0")
    assert status == 400 and body["field"] == "tasks_per_page"


def test_authorize_hook_sees_token_and_job_and_refuses_with_401_or_403(controller: Controller) -> None:
    seen: list[HttpRequest] = []
    users = {"s3cret": "alice", "b0b": "bob"}

    def authorize(request: HttpRequest) -> None:  # what an auth plugin would pass: tokens, then owners
        seen.append(request)
        user = users.get(request.token)
        if user is None:
            raise Unauthorized("a valid token is required (Authorization: Bearer TOKEN)")
        if request.path == "/api/kill" and controller.get_job(request.job_id).spec.user != user:
            raise Forbidden(f"{user} may kill only their own jobs")

    s = HttpServer(controller, authorize=authorize)
    s.start()
    json_body = {"Content-Type": "application/json"}
    try:
        status, body = request(s, "GET", "/api/jobs")
        assert status == 401 and "token is required" in body["error"]
        assert request(s, "GET", "/", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert request(s, "GET", "/health", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert request(s, "GET", "/api/job?id=/bob/j3", headers={"Cookie": "theme=dark; iris_token=s3cret"})[0] == 200
        status, _ = request(s, "POST", "/api/kill", b'{"job_id": "/alice/j2"}', json_body)
        assert status == 401 and controller.job_state("/alice/j2")[1] is JobState.PENDING
        status, body = request(s, "POST", "/api/kill", b'{"job_id": "/alice/j2"}', {**json_body, "Authorization": "Bearer b0b"})
        assert status == 403 and "only their own" in body["error"]
        assert controller.job_state("/alice/j2")[1] is JobState.PENDING
        status, _ = request(s, "POST", "/api/kill", b'{"job_id": "/alice/j2"}', {**json_body, "Authorization": "Bearer s3cret"})
        assert status == 200 and controller.job_state("/alice/j2")[1] is JobState.KILLED
    finally:
        s.stop()
    assert HttpRequest("", "GET", "/api/jobs") in seen
    assert HttpRequest("s3cret", "GET", "/api/job", "/bob/j3") in seen
    assert HttpRequest("b0b", "POST", "/api/kill", "/alice/j2") in seen


def test_another_site_cannot_kill_through_the_browser(server: HttpServer, controller: Controller) -> None:
    body = b'{"job_id": "/alice/j2"}'
    status, answer = request(server, "POST", "/api/kill", body, {"Content-Type": "text/plain"})  # a "simple" cross-site request
    assert status == 400 and answer["field"] == "Content-Type"
    status, answer = request(server, "POST", "/api/kill", body, {"Content-Type": "application/json", "Origin": "https://evil.example"})
    assert status == 403 and "cross-origin" in answer["error"]
    status, answer = request(server, "GET", "/api/jobs", headers={"Host": "evil.example"})  # DNS rebinding
    assert status == 403 and "evil.example" in answer["error"]
    assert controller.job_state("/alice/j2")[1] is JobState.PENDING
    origin = f"http://127.0.0.1:{server.port}"
    status, answer = request(server, "POST", "/api/kill", body, {"Content-Type": "application/json", "Origin": origin})
    assert status == 200 and answer == {"job_id": "/alice/j2", "state": "KILLED"}
    assert controller.get_job("/alice/j2").error == "killed from the dashboard"


def test_static_files_come_from_the_package_and_nothing_outside_it(server: HttpServer) -> None:
    status, page = request(server, "GET", "/")
    assert status == 200 and b"/static/app.js" in page
    assert request(server, "GET", "/static/app.js")[0] == 200
    for path in ("/static/../http_server.py", "/static/%2e%2e/controller.py", "/static/missing.js", "/static/app.py"):
        assert request(server, "GET", path)[0] == 404, path


def test_http_server_refuses_a_port_in_use_with_one_line(controller: Controller, server: HttpServer) -> None:
    from iris.errors import IrisError

    with pytest.raises(IrisError, match=rf"controller.http_port: cannot listen on 127.0.0.1:{server.port}"):
        HttpServer(controller, port=server.port)


# --- behind the RPCs' authentication (the controller's Authenticator) ---------------------------


class Tokens:
    """Minted credentials of one cluster secret: an admin, two users, a worker."""

    def __init__(self) -> None:
        from iris.auth import Authenticator, Principal, Role, TokenSigner

        self.auth = Authenticator(TokenSigner(b"k" * 32))
        self.admin = self.auth.mint(Principal(Role.ADMIN, "root"))
        self.alice = self.auth.mint(Principal(Role.USER, "alice"))
        self.bob = self.auth.mint(Principal(Role.USER, "bob"))
        self.worker = self.auth.mint(Principal(Role.WORKER, "w1"))


@pytest.fixture
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture
def authed(controller: Controller, tokens: Tokens) -> Iterator[HttpServer]:
    s = HttpServer(controller, auth=tokens.auth)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


def set_cookie(server: HttpServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, Location, Set-Cookie) of a login request."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location", ""), response.getheader("Set-Cookie", "")
    finally:
        conn.close()


def test_auth_on_without_a_token_gets_401_and_the_login_page_not_the_data(authed: HttpServer) -> None:
    status, page = request(authed, "GET", "/")
    assert status == 401 and b'action="/login"' in page and b"/static/app.js" not in page
    for path in ("/api/jobs", "/api/job?id=/alice/j2", "/api/logs?job=/alice/j2", "/api/workers", "/api/endpoints", "/static/app.js"):
        status, body = request(authed, "GET", path)
        assert status == 401 and "requires a token" in body["error"], path
        assert "/alice/" not in json.dumps(body)
    status, body = request(authed, "GET", "/api/jobs", headers=bearer("iris1.forged.token"))
    assert status == 401 and "not valid" in body["error"]


def test_auth_on_health_stays_open_for_probes(authed: HttpServer) -> None:
    status, body = request(authed, "GET", "/health")
    assert status == 200 and body["ok"] is True and body["jobs"] == {"PENDING": 5, "KILLED": 2}


def test_auth_on_a_user_sees_and_kills_only_their_own_jobs(authed: HttpServer, controller: Controller, tokens: Tokens) -> None:
    status, body = request(authed, "GET", "/api/jobs", headers=bearer(tokens.bob))
    assert status == 200 and {j["job_id"] for j in body["jobs"]} == {"/bob/j1", "/bob/j3", "/bob/j5"}
    assert body["counts"] == {"PENDING": 2, "KILLED": 1}
    status, body = request(authed, "GET", "/api/jobs?user=alice", headers=bearer(tokens.bob))
    assert status == 403 and "only their own jobs" in body["error"]
    for path in ("/api/job?id=/alice/j2", "/api/logs?job=/alice/j2"):
        status, body = request(authed, "GET", path, headers=bearer(tokens.bob))
        assert status == 403 and "belongs to alice" in body["error"] and "tasks" not in body, path
    status, body = request(authed, "GET", "/api/job?id=/bob/j3", headers=bearer(tokens.bob))
    assert status == 200 and body["may_kill"] is True
    kill = {"Content-Type": "application/json"}
    status, body = request(authed, "POST", "/api/kill", b'{"job_id": "/alice/j2"}', bearer(tokens.bob, **kill))
    assert status == 403 and "may not kill /alice/j2" in body["error"]
    assert controller.job_state("/alice/j2")[1] is JobState.PENDING
    status, body = request(authed, "POST", "/api/kill", b'{"job_id": "/bob/j3"}', {"Cookie": f"iris_token={tokens.bob}", **kill})
    assert status == 200 and controller.job_state("/bob/j3")[1] is JobState.KILLED


def test_auth_on_an_admin_sees_and_kills_every_job_and_a_worker_sees_nothing(authed: HttpServer, controller: Controller, tokens: Tokens) -> None:
    status, body = request(authed, "GET", "/api/jobs", headers=bearer(tokens.admin))
    assert status == 200 and body["total"] == 7
    status, body = request(authed, "GET", "/api/job?id=/alice/j2", headers=bearer(tokens.admin))
    assert status == 200 and body["may_kill"] is True
    status, _ = request(authed, "POST", "/api/kill", b'{"job_id": "/alice/j2"}', bearer(tokens.admin, **{"Content-Type": "application/json"}))
    assert status == 200 and controller.job_state("/alice/j2")[1] is JobState.KILLED
    for path in ("/api/jobs", "/api/workers", "/"):
        status, body = request(authed, "GET", path, headers=bearer(tokens.worker))
        assert status == 403 and "worker" in body["error"], path


def test_login_link_is_one_time_and_sets_an_httponly_strict_session_cookie(authed: HttpServer, tokens: Tokens) -> None:
    status, body = request(authed, "POST", "/api/login-ticket", b"{}", bearer(tokens.alice, **{"Content-Type": "application/json"}))
    assert status == 200 and body["ticket"]
    ticket = body["ticket"]
    status, body = request(authed, "GET", "/api/jobs", headers=bearer(ticket))  # a ticket is no bearer token
    assert status == 401
    status, location, cookie = set_cookie(authed, "GET", f"/login?ticket={ticket}")
    assert status == 303 and location == "/"
    assert cookie.startswith("iris_token=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie and ticket not in cookie
    session = cookie.split(";")[0].removeprefix("iris_token=")
    status, body = request(authed, "GET", "/api/jobs", headers={"Cookie": f"iris_token={session}"})
    assert status == 200 and {j["job_id"] for j in body["jobs"]} == {"/alice/j0", "/alice/j2", "/alice/j4", "/alice/j6"}
    assert tokens.auth.authenticate(session) is None  # a session is good on the HTTP side only, not for the RPCs
    status, page = request(authed, "GET", "/", headers={"Cookie": f"iris_token={session}"})
    assert status == 200 and b"/static/app.js" in page
    status, location, cookie = set_cookie(authed, "GET", f"/login?ticket={ticket}")  # used once already
    assert status == 401 and not cookie
    assert set_cookie(authed, "GET", "/login?ticket=iris1.bad.ticket")[0] == 401


def test_login_form_checks_the_token_and_refuses_other_sites(authed: HttpServer, tokens: Tokens) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, page = request(authed, "GET", "/login")
    assert status == 200 and b'name="token"' in page
    status, location, cookie = set_cookie(authed, "POST", "/login", f"token={tokens.bob}".encode(), form)
    assert status == 303 and "HttpOnly" in cookie and tokens.bob not in cookie
    status, page = request(authed, "POST", "/login", b"token=wrong", form)
    assert status == 401 and b"not valid here" in page
    status, body = request(authed, "POST", "/login", f"token={tokens.bob}".encode(), {**form, "Origin": "https://evil.example"})
    assert status == 403
    status, _, cookie = set_cookie(authed, "GET", "/logout")
    assert status == 303 and "Max-Age=0" in cookie


def test_auth_off_login_pages_lead_to_the_dashboard(server: HttpServer) -> None:
    assert set_cookie(server, "GET", "/login")[:2] == (303, "/")
    status, body = request(server, "POST", "/api/login-ticket", b"{}", {"Content-Type": "application/json"})
    assert status == 200 and body == {"ticket": "", "auth_enabled": False}
