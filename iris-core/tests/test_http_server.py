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
