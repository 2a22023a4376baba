"""``iris cluster status`` counts jobs with the controller's cheap counts (``/health``, from
``Controller.page_jobs(limit=0)``), not by fetching every job over ListJobs."""

from __future__ import annotations

from iris.cluster.controller.controller import Controller
from iris.cluster.controller.http_server import HttpServer
from iris.job.records import JobSpec
from iris.job.types import Entrypoint


class NoListing:
    """A client that counts how often every job is listed (the counts must not need a listing)."""

    def __init__(self) -> None:
        self.listed = 0

    def list_jobs(self, **_: object) -> list[object]:
        self.listed += 1
        return []


def test_cluster_status_counts_jobs_from_the_controllers_counts_without_listing_them() -> None:
    from iris_cli.cluster import _job_counts

    controller = Controller()
    for i in range(30):
        controller.launch_job(JobSpec(name=f"j{i}", entrypoint=Entrypoint.from_command("true"), user="alice"))
    for i in range(0, 30, 3):
        controller.kill_job(f"/alice/j{i}")
    server = HttpServer(controller)
    server.start()
    client = NoListing()
    try:
        assert _job_counts(server.url, client) == {"KILLED": 10, "PENDING": 20}
    finally:
        server.stop()
    assert client.listed == 0
    assert _job_counts("", client) == {} and client.listed == 1  # a controller without HTTP: listed
