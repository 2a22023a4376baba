"""The controller's HTTP side end to end: a long-lived cluster started by the CLI, jobs submitted
by the CLI, the JSON API read over HTTP, and the dashboard driven in headless Chromium.

The browser is Debian's ``chromium`` and ``chromium-driver`` (installed with apt-get by the
``browser`` fixture when missing), driven by Selenium from the dev dependency group. A screenshot
of each page is saved under the pytest tmp dir; with ``IRIS_DOCS_SCREENSHOTS=1`` they are also
copied to ``docs/images/`` (how the docs' screenshots are made).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from iris.testing import wait_until

REPO = Path(__file__).resolve().parents[1]
IRIS = str(Path(sys.executable).parent / "iris")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
UI_TIMEOUT = 60.0


def until(predicate: Any, timeout: float) -> None:
    """Poll ``predicate`` (a browser or CLI read) until it holds; fail the test at the deadline."""
    assert wait_until(predicate, timeout=timeout, interval=0.2), f"not true within {timeout:.0f}s: the condition at line {predicate.__code__.co_firstlineno}"


def iris_cmd(*args: str, home: Path, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("IRIS_CONTROLLER_ADDRESS", "HF_TOKEN", "WANDB_API_KEY", "BROWSER")}
    full.update(HOME=str(home), **(env or {}))
    return subprocess.run([IRIS, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


class Cluster:
    """A long-lived local cluster started with ``iris cluster start``."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.work = root / "work"
        self.work.mkdir()
        self.config = root / "cluster.yaml"
        self.config.write_text(
            "name: dashtest\n"
            "provider: {type: local, options: {worker_mode: process}}\n"
            f"controller: {{state_dir: {root / 'state'}}}\n"
            "scale_groups:\n"
            "  cpu: {min_slices: 1, max_slices: 1, cpu: 2, memory: 2GB}\n"
        )
        self.url = ""
        self.http_url = ""

    @property
    def token(self) -> str:
        """The admin token the controller wrote for the user who started it."""
        return (self.root / "state" / "owner.token").read_text().strip()

    def iris(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        owner = self.root / "state" / "owner.token"  # the controller runs with auth: present its owner's token
        token = {"IRIS_TOKEN": owner.read_text().strip()} if owner.exists() else {}
        return iris_cmd(*args, home=self.home, cwd=self.work, timeout=timeout, env={**token, **(env or {})})

    def cluster(self, *args: str) -> subprocess.CompletedProcess:
        return self.iris("cluster", "--config", str(self.config), *args)

    def submit(self, *command: str, replicas: int = 1) -> str:
        """``iris run --no-wait`` through the CLI; the job id it prints."""
        ran = self.iris(
            "--controller-url", self.url, "run", "--no-wait", "--cpu", "0.2", "--memory", "64MB", "--replicas", str(replicas), "--", *command
        )
        assert ran.returncode == 0, ran.stderr
        return ran.stdout.strip().splitlines()[-1]

    def job_status(self, job_id: str) -> dict[str, Any]:
        shown = self.iris("job", "status", "--controller-url", self.url, job_id, "--json")
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("dash"))
    try:
        started = c.cluster("start")
        assert started.returncode == 0, started.stderr
        c.url = started.stdout.strip()
        shown = c.cluster("dashboard", "--no-open")
        assert shown.returncode == 0, shown.stderr
        c.http_url = shown.stdout.strip()
        yield c
    finally:
        c.cluster("stop")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def get(url: str, token: str) -> tuple[int, dict[str, Any]]:
    """GET a JSON answer, presenting ``token`` ('' for none)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_auth(token)), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post(url: str, body: bytes, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **_auth(token)})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- the HTTP API without a browser ---------------------------------------------------------------


def test_cluster_status_and_dashboard_command_print_the_http_url(cluster: Cluster) -> None:
    assert cluster.http_url.startswith("http://127.0.0.1:") and cluster.http_url != cluster.url
    status = cluster.cluster("status")
    assert status.returncode == 0, status.stderr
    assert f"dashboard: {cluster.http_url}" in status.stdout
    as_json = json.loads(cluster.cluster("status", "--json").stdout)
    assert as_json["controller"]["dashboard"] == cluster.http_url
    assert (cluster.root / "state" / "controller.http_url").read_text().strip() == cluster.http_url


def test_dashboard_command_opens_the_url_in_the_users_browser(cluster: Cluster, tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser.sh"  # $BROWSER, as Python's webbrowser honours it
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    shown = cluster.iris("cluster", "--config", str(cluster.config), "dashboard", env={"BROWSER": str(browser)})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == cluster.http_url  # what the terminal (and its logs) keep: no ticket
    until(lambda: opened.exists() and opened.read_text().startswith(cluster.http_url + "/login?ticket="), timeout=30)
    link = opened.read_text().strip()  # a one-time link: the first use sets the session cookie, a second is refused
    status, location, cookie = login_response(link)
    assert (status, location) == (303, "/") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert login_response(link)[0] == 401


def login_response(url: str) -> tuple[int, str, str]:
    """(status, Location, Set-Cookie) of GET ``url``, not following the redirect."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location", ""), response.getheader("Set-Cookie", "")
    finally:
        conn.close()


def test_health_answers_ok_with_version_uptime_and_counts(cluster: Cluster) -> None:
    status, body = get(cluster.http_url + "/health", "")  # open: probes and bootstrap scripts have no token
    assert status == 200
    assert body["ok"] is True and body["version"] and body["uptime_seconds"] > 0
    assert body["workers"] >= 1 and isinstance(body["jobs"], dict)
    assert body["grpc_url"] == cluster.url


@pytest.mark.parametrize(
    ("path", "code", "field", "value"),
    [
        ("/api/jobs?state=DONE", 400, "state", "DONE"),
        ("/api/jobs?page=0", 400, "page", "0"),
        ("/api/jobs?page=x", 400, "page", "x"),
        ("/api/jobs?per_page=100000", 400, "per_page", "100000"),
        ("/api/jobs?page=999999", 400, "page", 999999),
        ("/api/job?id=/nobody/nothing", 404, "id", "/nobody/nothing"),
        ("/api/job", 400, "id", ""),
        ("/api/logs?job=/nobody/nothing", 404, "job", "/nobody/nothing"),
        ("/api/logs?job=/nobody/nothing&cursor=!!", 400, "cursor", "!!"),
    ],
)
def test_api_bad_input_is_a_json_error_naming_field_value_and_accepted(cluster: Cluster, path: str, code: int, field: str, value: Any) -> None:
    status, body = get(cluster.http_url + path, cluster.token)
    assert status == code
    assert body["field"] == field and body["value"] == value and body["accepted"]
    assert field in body["error"] and "Traceback" not in body["error"]


def test_without_a_token_the_api_and_page_answer_401_not_the_data(cluster: Cluster) -> None:
    job_id = cluster.submit("true")
    for path in ("/api/jobs", f"/api/job?id={job_id}", f"/api/logs?job={job_id}", "/api/workers", "/api/endpoints"):
        status, body = get(cluster.http_url + path, "")
        assert status == 401 and "requires a token" in body["error"] and job_id not in json.dumps(body), path
    status, body = post(cluster.http_url + "/api/kill", json.dumps({"job_id": job_id}).encode(), "")
    assert status == 401
    try:
        urllib.request.urlopen(cluster.http_url + "/", timeout=30)
        raise AssertionError("the dashboard page was served without a token")
    except urllib.error.HTTPError as exc:
        page = exc.read().decode()
        assert exc.code == 401 and 'action="/login"' in page and job_id not in page and "/static/app.js" not in page


def test_another_users_jobs_are_neither_shown_nor_killable(cluster: Cluster) -> None:
    created = cluster.iris("--config", str(cluster.config), "token", "create", "bob")
    assert created.returncode == 0, created.stderr
    bob = created.stdout.strip()
    mine = cluster.submit("sh", "-c", "sleep 600")  # the owner's (an admin's) job
    try:
        ran = cluster.iris("--controller-url", cluster.url, "run", "--no-wait", "--cpu", "0.1", "--memory", "64MB", "--", "true",
                           env={"IRIS_TOKEN": bob})  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        bobs = ran.stdout.strip().splitlines()[-1]
        assert bobs.startswith("/bob/")
        status, body = get(cluster.http_url + "/api/jobs?per_page=500", bob)
        assert status == 200 and [j["job_id"] for j in body["jobs"]] == [bobs] and body["total"] == 1
        status, body = get(f"{cluster.http_url}/api/job?id={mine}", bob)
        assert status == 403 and "may not read" in body["error"] and "tasks" not in body
        assert get(f"{cluster.http_url}/api/logs?job={mine}", bob)[0] == 403
        status, body = post(cluster.http_url + "/api/kill", json.dumps({"job_id": mine}).encode(), bob)
        assert status == 403 and "may not kill" in body["error"]
        assert cluster.job_status(mine)["state"] in ("PENDING", "RUNNING")
        status, body = get(f"{cluster.http_url}/api/job?id={bobs}", cluster.token)  # an admin sees (and may kill) every job
        assert status == 200 and body["user"] == "bob" and body["may_kill"] is True
    finally:
        cluster.iris("job", "kill", "--controller-url", cluster.url, mine)


def test_api_kill_refuses_bad_bodies_and_unknown_jobs(cluster: Cluster) -> None:
    assert post(cluster.http_url + "/api/kill", b"not json", cluster.token)[0] == 400
    status, body = post(cluster.http_url + "/api/kill", b'{"job_id": 7}', cluster.token)
    assert status == 400 and body["field"] == "job_id"
    status, body = post(cluster.http_url + "/api/kill", b'{"job_id": "/nobody/nothing"}', cluster.token)
    assert status == 404 and body["field"] == "job_id"
    status, body = get(cluster.http_url + "/api/kill", cluster.token)
    assert status == 405


def test_api_pages_and_filters_jobs_submitted_by_the_cli(cluster: Cluster) -> None:
    ids = [cluster.submit("true") for _ in range(3)]
    until(lambda: all(cluster.job_status(j)["state"] == "SUCCEEDED" for j in ids), timeout=UI_TIMEOUT)
    prefix = ids[0].rsplit("/", 1)[0] + "/"
    status, body = get(f"{cluster.http_url}/api/jobs?prefix={prefix}&state=SUCCEEDED&per_page=2", cluster.token)
    assert status == 200
    assert body["total"] >= 3 and body["per_page"] == 2 and len(body["jobs"]) == 2
    assert body["pages"] == -(-body["total"] // 2)
    assert all(j["state"] == "SUCCEEDED" and j["tasks_by_state"] == {"SUCCEEDED": 1} for j in body["jobs"])
    newest_first = [j["submitted_at"] for j in body["jobs"]]
    assert newest_first == sorted(newest_first, reverse=True)
    assert get(f"{cluster.http_url}/api/jobs?prefix=/no-such-prefix/", cluster.token)[1]["total"] == 0
    status, job = get(f"{cluster.http_url}/api/job?id={ids[0]}", cluster.token)
    assert status == 200 and job["tasks"][0]["attempts"][0]["exit_code"] == 0 and job["tasks"][0]["attempts"][0]["worker_id"]


def test_dashboard_assets_are_served_from_the_package_and_nothing_else(cluster: Cluster) -> None:
    with urllib.request.urlopen(urllib.request.Request(cluster.http_url + "/", headers=_auth(cluster.token)), timeout=30) as response:
        page = response.read().decode()
    assert "/static/app.js" in page and "http" not in page.replace('lang="en"', "").split("<body>")[0].replace("/static/", "")
    for name in ("app.js", "style.css"):
        with urllib.request.urlopen(urllib.request.Request(f"{cluster.http_url}/static/{name}", headers=_auth(cluster.token)), timeout=30) as response:
            text = response.read().decode()
        assert "https://" not in text and "//cdn" not in text
    assert get(cluster.http_url + "/static/..%2fhttp_server.py", cluster.token)[0] == 404


def test_http_port_off_serves_no_http_and_dashboard_says_how_to_turn_it_on(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.config.write_text(c.config.read_text().replace("controller: {", "controller: {http_port: -1, "))
    try:
        started = c.cluster("start")
        assert started.returncode == 0, started.stderr
        assert not (tmp_path / "state" / "controller.http_url").exists()
        shown = c.cluster("dashboard", "--no-open")
        assert shown.returncode == 1
        assert shown.stderr.strip().count("\n") == 0 and "controller.http_port is -1" in shown.stderr
        assert "dashboard:" not in c.cluster("status").stdout
    finally:
        c.cluster("stop")
    stopped = c.cluster("dashboard", "--no-open")
    assert stopped.returncode == 1 and "not running" in stopped.stderr and "Traceback" not in stopped.stderr


def test_http_port_in_use_fails_the_start_with_one_line_naming_the_field(tmp_path: Path) -> None:
    import socket

    c = Cluster(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        c.config.write_text(c.config.read_text().replace("controller: {", f"controller: {{http_port: {port}, "))
        try:
            started = c.cluster("start")
            assert started.returncode != 0
            assert f"controller.http_port: cannot listen on 127.0.0.1:{port}" in started.stderr
            assert "Traceback" not in started.stderr
        finally:
            c.cluster("stop")


def test_in_process_local_cluster_serves_no_http(tmp_path: Path) -> None:
    from iris.cluster.manager import ClusterManager, make_local_config
    from iris.config import ClusterConfig

    manager = ClusterManager(make_local_config(ClusterConfig()))
    manager.start()
    try:
        assert manager.http_url == ""
    finally:
        manager.stop()


# --- the dashboard in headless Chromium -----------------------------------------------------------


def _install_browser() -> str | None:
    """Install Debian's chromium and chromium-driver if missing; None when they are there, else why not."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return None
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver); cannot install them without apt-get as root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = [apt, "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        subprocess.run([apt, "update"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0 or not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return f"apt-get install chromium chromium-driver failed: {done.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="session")
def chromium():
    problem = _install_browser()
    if problem:
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="iris-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(cluster: Cluster, chromium: Any) -> Any:
    """Chromium logged in to the cluster's dashboard the way a user is: through the one-time
    login link `iris cluster dashboard` makes (exchanged for the HttpOnly session cookie)."""
    shown = cluster.cluster("dashboard", "--login-link")
    assert shown.returncode == 0, shown.stderr
    link = shown.stdout.strip()
    assert link.startswith(cluster.http_url + "/login?ticket=")
    chromium.get(link)
    until(lambda: chromium.current_url.split("#")[0].rstrip("/") == cluster.http_url and "ticket" not in chromium.current_url, timeout=UI_TIMEOUT)
    assert [c["name"] for c in chromium.get_cookies()] == ["iris_token"]
    assert chromium.get_cookies()[0]["httpOnly"] is True and chromium.get_cookies()[0]["sameSite"] == "Strict"
    assert chromium.execute_script("return document.cookie;") == ""  # the page's scripts cannot read it
    return chromium


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory):
    """``screenshots(driver, name)`` saves a PNG of the page (and copies it to docs/images when
    IRIS_DOCS_SCREENSHOTS=1)."""
    folder = tmp_path_factory.mktemp("screenshots")

    def save(driver: Any, name: str) -> Path:
        path = folder / f"dashboard-{name}.png"
        assert driver.save_screenshot(str(path)), f"screenshot {name} failed"
        if os.environ.get("IRIS_DOCS_SCREENSHOTS") == "1":
            (REPO / "docs" / "images").mkdir(exist_ok=True)
            shutil.copy(path, REPO / "docs" / "images" / path.name)
        return path

    return save


def text_of(driver: Any, css: str) -> str:
    """The element's text, or "" while it is absent or being replaced by a re-render."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException

    try:
        return driver.find_element("css selector", css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""
    except WebDriverException as exc:
        # chromedriver's word for a stale element when the node went between find and read
        if "does not belong to the document" in str(exc):
            return ""
        raise


def open_page(driver: Any, url: str) -> None:
    """Load the dashboard and mark the window: the mark is gone if the page ever reloads."""
    driver.get(url)
    driver.execute_script("window.__irisTestMark = 'not reloaded';")


def not_reloaded(driver: Any) -> bool:
    return driver.execute_script("return window.__irisTestMark || null;") == "not reloaded"


def row_state(driver: Any, job_id: str) -> str:
    return text_of(driver, f'tr[data-job-id="{job_id}"] .state-cell')


def test_job_from_the_cli_appears_runs_logs_and_succeeds_without_a_reload(cluster: Cluster, browser: Any, screenshots: Any) -> None:
    gate = cluster.root / "gate-ok"
    open_page(browser, cluster.http_url + "/#/jobs")
    job_id = cluster.submit("sh", "-c", f"echo first-line; while [ ! -e {gate} ]; do sleep 0.1; done; echo second-line")
    until(lambda: row_state(browser, job_id) == "RUNNING", timeout=UI_TIMEOUT)
    screenshots(browser, "jobs")
    browser.find_element("css selector", f'tr[data-job-id="{job_id}"] a').click()  # a hash route: no reload
    until(lambda: "first-line" in text_of(browser, "#log"), timeout=UI_TIMEOUT)
    assert text_of(browser, "#job-state") == "RUNNING"  # the line showed up while the job runs
    assert "second-line" not in text_of(browser, "#log")
    first = browser.find_element("css selector", "#log .log-line")
    assert (first.get_attribute("data-task"), first.get_attribute("data-attempt")) == ("0", "0")
    assert "task 0 attempt 0" in first.text
    gate.touch()
    until(lambda: text_of(browser, "#job-state") == "SUCCEEDED", timeout=UI_TIMEOUT)
    until(lambda: "second-line" in text_of(browser, "#log"), timeout=UI_TIMEOUT)
    assert text_of(browser, "#tasks .exit-code") == "0"
    screenshots(browser, "job")
    browser.execute_script("history.back();")
    until(lambda: row_state(browser, job_id) == "SUCCEEDED", timeout=UI_TIMEOUT)
    assert not_reloaded(browser)


def test_failing_task_shows_its_exit_code_and_error(cluster: Cluster, browser: Any, screenshots: Any) -> None:
    job_id = cluster.submit("sh", "-c", "echo about to fail >&2; exit 3")
    open_page(browser, f"{cluster.http_url}/#/job/{job_id}")
    until(lambda: text_of(browser, "#job-state") == "FAILED", timeout=UI_TIMEOUT)
    status = cluster.job_status(job_id)
    task_error = status["tasks"][0]["error"]
    assert task_error  # the controller says why; the page must show the same
    assert text_of(browser, "#tasks tr.task .exit-code") == "3"
    assert text_of(browser, "#tasks tr.task .error") == task_error
    assert text_of(browser, "#attempts tr.attempt .exit-code") == "3"
    until(lambda: "about to fail" in text_of(browser, "#log"), timeout=UI_TIMEOUT)
    # the line the task wrote to stderr says so, and in another colour than stdout's
    line = browser.find_element("css selector", "#log .log-line.stderr")
    assert line.get_attribute("data-stream") == "stderr" and "about to fail" in line.text
    assert line.find_element("css selector", ".stream").text == "err"
    assert line.value_of_css_property("color") != browser.find_element("css selector", "#log").value_of_css_property("color")
    code, data = get(f"{cluster.http_url}/api/logs?job={job_id}", cluster.token)
    assert code == 200 and [(ln["stream"], ln["data"]) for ln in data["lines"] if ln["stream"] != "env"] == [("stderr", "about to fail")]
    screenshots(browser, "job-failed")
    assert not_reloaded(browser)


def test_kill_button_kills_the_job(cluster: Cluster, browser: Any, screenshots: Any) -> None:
    job_id = cluster.submit("sh", "-c", "echo waiting to be killed; sleep 600")
    open_page(browser, f"{cluster.http_url}/#/job/{job_id}")
    until(lambda: text_of(browser, "#job-state") == "RUNNING" and "waiting to be killed" in text_of(browser, "#log"), timeout=UI_TIMEOUT)
    kill = browser.find_element("css selector", "#kill")
    assert kill.is_displayed()
    kill.click()
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    alert = WebDriverWait(browser, 30).until(expected_conditions.alert_is_present())  # "Kill ... and its children?"
    assert job_id in alert.text
    alert.accept()
    until(lambda: text_of(browser, "#job-state") == "KILLED", timeout=UI_TIMEOUT)
    status = cluster.job_status(job_id)  # the controller, asked through the CLI, agrees
    assert status["state"] == "KILLED"
    assert "dashboard" in status["error"]
    until(lambda: not browser.find_element("css selector", "#kill").is_displayed(), timeout=UI_TIMEOUT)
    assert not_reloaded(browser)


def test_workers_scale_groups_and_endpoints_pages_show_the_cluster(cluster: Cluster, browser: Any, screenshots: Any) -> None:
    from iris.client import IrisClient

    server = cluster.submit("sh", "-c", "sleep 600")
    until(lambda: cluster.job_status(server)["state"] == "RUNNING", timeout=UI_TIMEOUT)
    with IrisClient.remote(cluster.url, token=cluster.token) as client:  # what an ActorServer in the task does
        client.register_endpoint("dash-test-actor", "127.0.0.1:45678", job_id=server, metadata={"kind": "actor"})
    try:
        _, workers = get(cluster.http_url + "/api/workers", cluster.token)
        worker = next(w for w in workers["workers"] if not w["lost"])
        assert worker["running_attempts"] >= 1 and worker["free_cpu"] < worker["cpu"]
        assert {"task_id": f"{server}/0", "attempt_id": 0, "state": "RUNNING"} in worker["attempts"]
        open_page(browser, cluster.http_url + "/#/workers")
        until(lambda: worker["worker_id"] in text_of(browser, "#workers"), timeout=UI_TIMEOUT)
        until(lambda: server in text_of(browser, f'tr[data-worker-id="{worker["worker_id"]}"] .attempts'), timeout=UI_TIMEOUT)
        screenshots(browser, "workers")
        browser.find_element("css selector", 'nav a[data-page="scale-groups"]').click()
        until(lambda: text_of(browser, '#groups tr[data-group="cpu"]') != "", timeout=UI_TIMEOUT)
        assert "iris-cpu-0" in text_of(browser, "#slices")
        screenshots(browser, "scale-groups")
        browser.find_element("css selector", 'nav a[data-page="endpoints"]').click()
        until(lambda: "dash-test-actor" in text_of(browser, "#endpoints"), timeout=UI_TIMEOUT)
        row = text_of(browser, "#endpoints tbody tr")
        assert "127.0.0.1:45678" in row and server in row and "kind=actor" in row
        screenshots(browser, "endpoints")
        assert not_reloaded(browser)
    finally:
        cluster.iris("job", "kill", "--controller-url", cluster.url, server)


def test_jobs_page_filters_by_state_and_pages_without_a_reload(cluster: Cluster, browser: Any) -> None:
    failed = cluster.submit("false")
    until(lambda: cluster.job_status(failed)["state"] == "FAILED", timeout=UI_TIMEOUT)
    open_page(browser, cluster.http_url + "/#/jobs?state=FAILED&per_page=1")
    until(lambda: row_state(browser, failed) == "FAILED", timeout=UI_TIMEOUT)
    states = [e.text for e in browser.find_elements("css selector", "#jobs .state-cell")]
    assert states and set(states) == {"FAILED"}
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("css selector", "#filter-state")).select_by_value("SUCCEEDED")
    until(lambda: row_state(browser, failed) == "" and "page 1 of" in text_of(browser, "#page-info"), timeout=UI_TIMEOUT)
    assert set(e.text for e in browser.find_elements("css selector", "#jobs .state-cell")) <= {"SUCCEEDED"}
    assert not_reloaded(browser)


def test_job_page_pages_the_tasks_of_a_big_job(cluster: Cluster, browser: Any) -> None:
    job_id = cluster.submit("sleep", "600", replicas=150)  # 10 run at once on the 2-cpu worker, the rest wait
    try:
        open_page(browser, f"{cluster.http_url}/#/job/{job_id}")
        until(lambda: "Tasks (150)" in text_of(browser, "#job-body"), timeout=UI_TIMEOUT)
        assert len(browser.find_elements("css selector", "#tasks tr.task")) == 100
        assert "pending" in text_of(browser, "#job-body h2")  # the tasks by state, over all 150
        browser.find_element("css selector", 'button[data-task-step="1"]').click()
        until(lambda: browser.find_elements("css selector", '#tasks tr.task[data-task="149"]') != [], timeout=UI_TIMEOUT)
        assert len(browser.find_elements("css selector", "#tasks tr.task")) == 50
        assert "page 2 of 2" in text_of(browser, "#job-body .pager")
        assert not_reloaded(browser)
        # the waiting tasks are demand on the only group (at its max): the scale groups page says so
        browser.find_element("css selector", 'nav a[data-page="scale-groups"]').click()
        until(lambda: int(text_of(browser, '#groups tr[data-group="cpu"] td:nth-child(4)') or 0) >= 100, timeout=UI_TIMEOUT)
    finally:
        cluster.iris("job", "kill", "--controller-url", cluster.url, job_id)


def test_jobs_page_past_the_last_page_falls_back_to_the_first(cluster: Cluster, browser: Any) -> None:
    done = cluster.submit("true")
    until(lambda: cluster.job_status(done)["state"] == "SUCCEEDED", timeout=UI_TIMEOUT)
    open_page(browser, cluster.http_url + "/#/jobs?page=99999")
    until(lambda: "page 1 of" in text_of(browser, "#page-info") and row_state(browser, done) == "SUCCEEDED", timeout=UI_TIMEOUT)
    assert "page=" not in browser.current_url
    assert not_reloaded(browser)


def test_without_a_session_the_browser_gets_the_login_page_and_the_form_logs_in(cluster: Cluster, browser: Any, screenshots: Any) -> None:
    done = cluster.submit("true")
    until(lambda: cluster.job_status(done)["state"] == "SUCCEEDED", timeout=UI_TIMEOUT)
    browser.delete_all_cookies()
    browser.get(cluster.http_url + "/#/jobs")
    until(lambda: browser.find_elements("css selector", "#login input[name=token]") != [], timeout=UI_TIMEOUT)
    assert done not in browser.page_source
    screenshots(browser, "login")
    browser.find_element("css selector", "#login input[name=token]").send_keys("not-a-token")
    browser.find_element("css selector", "#login button").click()
    until(lambda: "not valid here" in text_of(browser, "#login"), timeout=UI_TIMEOUT)
    browser.find_element("css selector", "#login input[name=token]").send_keys(cluster.token)
    browser.find_element("css selector", "#login button").click()
    until(lambda: row_state(browser, done) == "SUCCEEDED", timeout=UI_TIMEOUT)  # the dashboard, with the data
    assert browser.get_cookies()[0]["httpOnly"] is True
