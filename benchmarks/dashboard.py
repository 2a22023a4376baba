"""The dashboard's jobs page with 10,000 jobs in the controller: the JSON API, and the page in
headless Chromium from navigation to the table on screen.

A ``Controller`` (in memory, no workers, no autoscaler) gets ``--jobs`` jobs through
``launch_job`` (one task each, alternating users; every third killed, so the list holds PENDING
and KILLED jobs with pending reasons and errors), served by the controller's ``HttpServer`` on
127.0.0.1. Then:

* the API: ``--calls`` sequential ``GET /api/jobs`` (the first page of 50, what the page asks
  for), the same filtered by ``state=KILLED``, by a user, and the 100th page; ``/health`` (the
  page polls it too); and the first page of tasks of one more job, of 10,000 tasks (the job
  page's poll); per-call times;
* the page: ``--runs`` fresh loads of ``/#/jobs`` in headless Chromium (Debian's ``chromium``
  and ``chromium-driver``, driven by Selenium), each read from the page itself
  (``window.irisTimings.firstJobsTable``: ms from navigation start, so the HTML, script and
  stylesheet fetches, the API call and the render are all in it); then, with the page left open
  for ``--watch`` seconds, the time each live poll (API + render) took.

Target (issue 15): the jobs page loads in under 1 s with 10,000 jobs.

    uv run python benchmarks/dashboard.py [--jobs 10000] [--runs 7] [--calls 50] [--watch 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import load_line, machine_line, summary_line, verdict  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def fill(jobs: int):
    from iris.cluster.controller.controller import Controller
    from iris.job.records import JobSpec
    from iris.job.types import Entrypoint, ResourceSpec

    controller = Controller()
    entrypoint = Entrypoint.from_command("python", "train.py", "--steps", "1000")
    started = time.perf_counter()
    for i in range(jobs):
        spec = JobSpec(name=f"job-{i:05d}", entrypoint=entrypoint, resources=ResourceSpec(cpu=1, memory="1GB"), user=f"user{i % 4}")
        job_id = controller.launch_job(spec)
        if i % 3 == 0:
            controller.kill_job(job_id, reason="benchmark: killed")
    controller.launch_job(JobSpec(name="big", entrypoint=entrypoint, resources=ResourceSpec(cpu=1, memory="1GB"), user="user0", replicas=10_000))
    print(f"launched {jobs} jobs and one of 10,000 tasks in {time.perf_counter() - started:.1f} s")
    return controller


def time_api(url: str, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        out.append(time.perf_counter() - t0)
    return out


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="iris-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options), profile


def wait_for(driver, script: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(script)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7, help="fresh page loads")
    parser.add_argument("--calls", type=int, default=50, help="API calls per query")
    parser.add_argument("--watch", type=float, default=5.0, help="seconds of live polling measured")
    args = parser.parse_args()
    print(machine_line())
    from iris.cluster.controller.http_server import HttpServer

    controller = fill(args.jobs)
    server = HttpServer(controller)
    base = server.start()
    try:
        print(f"API ({args.calls} sequential calls each):")
        for label, query in (
            ("first page of 50", "/api/jobs"),
            ("state=KILLED", "/api/jobs?state=KILLED"),
            ("user=user2", "/api/jobs?user=user2"),
            ("page 100", "/api/jobs?page=100"),
            ("/health", "/health"),
            ("10,000-task job", "/api/job?id=/user0/big"),
        ):
            print("  " + summary_line(label, time_api(base + query, args.calls), unit="ms", scale=1000, digits=1, width=18))
        if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
            print(f"no browser: needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
            return 1
        driver, profile = browser()
        try:
            loads = []
            for _ in range(args.runs):
                driver.get("about:blank")
                driver.get(base + "/#/jobs")
                loads.append(wait_for(driver, "return window.irisTimings && window.irisTimings.firstJobsTable") / 1000)
                rows = driver.execute_script("return document.querySelectorAll('#jobs tbody tr[data-job-id]').length")
                assert rows == 50, rows
            info = driver.execute_script("return document.getElementById('page-info').textContent")
            print(f"page ({info}), {args.runs} fresh loads:")
            median = statistics.median(loads)
            print("  " + summary_line("navigation to table", loads, unit="ms", scale=1000, digits=0, width=18) + f"  target < 1000 ms: {verdict(median, 1.0)}")
            time.sleep(args.watch)
            polls = driver.execute_script("return window.irisTimings.polls.slice(1)")
            print("  " + summary_line("live poll (API+render)", [p / 1000 for p in polls], unit="ms", scale=1000, digits=0, width=18))
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
    finally:
        server.stop()
    print(load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
