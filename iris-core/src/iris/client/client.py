"""IrisClient: submit jobs, follow their logs, wait for their outcome.

    client = IrisClient.remote("http://controller:10000", workspace=Path("."))
    job = client.submit(name="my-job", entrypoint=Entrypoint.from_callable(fn),
                        resources=ResourceSpec(cpu=1, memory="2GB"))
    job.wait()

``IrisClient.local()`` runs a whole cluster (controller and workers) in this process.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from iris.bundle import DEFAULT_MAX_BUNDLE_BYTES, BundleProgress, create_bundle
from iris.cluster.constraints import Constraint, parse_constraint
from iris.job.records import AttemptStatus, Endpoint, JobSpec, JobStatus, TaskStatus
from iris.job.records import ENVIRONMENT_LOG_PREFIX
from iris.job.records import JobLogLine as LogLine
from iris.job.validation import check_job_spec
from iris.cluster.types import Entrypoint, EnvironmentSpec, JobState, ResourceSpec, TaskState
from iris.auth import PermissionDenied, Unauthenticated, current_user, find_token  # noqa: F401 (callers catch them from here)
from iris.errors import ConfigError, ControllerUnavailable, IrisError, JobNotFound, RemoteTraceback, VmNotFound  # noqa: F401 (as above)
from iris.rpc import controller_pb2, controller_pb2_grpc, convert
from iris.rpc.channel import authorized_channel
from iris.rpc.channel import call as _call

__all__ = ["AttemptStatus", "IrisClient", "Job", "JobFailed", "JobStatus", "LogLine", "RemoteTraceback", "TaskStatus"]

CONTROLLER_ENV = "IRIS_CONTROLLER_ADDRESS"
JOB_ENV = "IRIS_JOB_ID"
_WAIT_SLICE = 10.0
logger = logging.getLogger(__name__)


# How long waiting for a job or following its logs keeps retrying a controller that does not
# answer (restarting, or a network blip) before giving up; the cursor makes the retry exact.
RECONNECT_SECONDS = 120.0
_RETRY_FIRST, _RETRY_MAX = 0.1, 2.0


def _call_retrying(method: Callable[..., Any], request: Any, address: str, timeout: float | None) -> Any:
    """:func:`_call` for the long-lived loops: a controller that cannot be reached is retried
    (backing off to every 2 s) for up to ``RECONNECT_SECONDS`` before the error is raised."""
    give_up = time.monotonic() + RECONNECT_SECONDS
    delay = _RETRY_FIRST
    warned = False
    while True:
        try:
            return _call(method, request, address, timeout)
        except ControllerUnavailable as exc:
            if time.monotonic() + delay > give_up:
                raise
            if not warned:
                logger.warning("%s; retrying for up to %.0fs", exc, RECONNECT_SECONDS)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)


FAILURE_TAIL_LINES = 20  # lines of the failing task's output a JobFailed carries


class JobFailed(IrisError):
    """A waited-for job ended without succeeding. ``status`` is its final status; ``output`` the
    last lines of the failing task's output (of its last attempt), also in the message."""

    def __init__(self, status: JobStatus, output: list[str] | None = None):
        self.status = status
        self.output = list(output or ())
        message = f"job {status.job_id} {status.state.value}: {status.error or 'no error recorded'}"
        if self.output:
            message += "\nlast lines of its output:\n" + "\n".join(f"  {line}" for line in self.output)
        super().__init__(message)


class Job:
    """A submitted job: wait for it, read its logs, kill it."""

    def __init__(self, client: IrisClient, job_id: str):
        self._client = client
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"Job({self.job_id!r})"

    def status(self) -> JobStatus:
        c = self._client
        return convert.job_status_from_proto(_call(c._stub.GetJob, controller_pb2.GetJobRequest(job_id=self.job_id), c.address))

    def results(self, timeout: float | None = None) -> list[Any]:
        """What the job's Python callable returned, one value per task (by task index), once
        the job has SUCCEEDED. A job that did not succeed raises as :meth:`wait` does; if a
        task's callable raised, its exception is raised again here (the first failing task's),
        with the remote traceback as a note (``RemoteTraceback`` as its cause)."""
        import cloudpickle

        status = self.wait(timeout, raise_on_failure=False)
        c = self._client
        outcomes = convert.task_results_from_proto(
            _call(c._stub.GetResults, controller_pb2.GetResultsRequest(job_id=self.job_id), c.address)
        )
        for outcome in sorted(outcomes, key=lambda r: r.task_index):
            if outcome.is_error:
                exc, remote = cloudpickle.loads(outcome.data)
                if exc is None:  # the exception could not be pickled: its traceback is all there is
                    raise JobFailed(status, remote.splitlines()[-FAILURE_TAIL_LINES:])
                exc.__cause__ = RemoteTraceback(remote)
                if hasattr(exc, "add_note"):
                    exc.add_note(f"raised in task {outcome.task_index} of {self.job_id}:\n{remote}")
                raise exc
        if not status.succeeded:
            raise JobFailed(status, self._failure_output(status))
        values = {r.task_index: cloudpickle.loads(r.data) for r in outcomes if not r.is_error}
        missing = [t.index for t in status.tasks if t.index not in values]
        if missing:
            raise IrisError(
                f"job {self.job_id}: task(s) {missing} sent no result; results come from Entrypoint.from_callable jobs"
            )
        return [values[t.index] for t in status.tasks]

    def result(self, timeout: float | None = None) -> Any:
        """What a one-task job's callable returned (see :meth:`results`)."""
        values = self.results(timeout)
        if len(values) != 1:
            raise IrisError(f"job {self.job_id} has {len(values)} tasks; use results() for one value per task")
        return values[0]

    def kill(self, *, keep_children: bool = False, reason: str = "") -> JobStatus:
        """Kill the job and, unless ``keep_children``, its unfinished child jobs; ``reason`` is
        recorded as its error (default: killed by user)."""
        c = self._client
        request = controller_pb2.KillJobRequest(job_id=self.job_id, keep_children=keep_children, reason=reason)
        _call(c._stub.KillJob, request, c.address)
        return self.status()

    def logs(
        self,
        *,
        follow: bool = False,
        cursor: str = "",
        include_children: bool = False,
        since: float = 0.0,
        tail: int = 0,
        environment: bool = False,
    ) -> Iterator[LogLine]:
        """Log lines from ``cursor`` on (children's too if asked), in arrival order. Each says
        which stream it came from (``line.stream``: ``stdout``, ``stderr`` or ``env``).

        With ``follow``, keeps reading until every job read is over and all its lines returned.
        ``since`` (unix time) skips older lines; ``tail`` starts with the last N lines. The lines
        the worker wrote about the task's environment (its build, or the cached one it used;
        ``line.is_environment``) come only with ``environment=True``.
        """
        c = self._client
        while True:
            response = _call_retrying(
                c._stub.GetLogs,
                controller_pb2.GetLogsRequest(
                    job_id=self.job_id,
                    cursor=cursor,
                    wait_seconds=_WAIT_SLICE if follow else 0,
                    include_children=include_children,
                    since=since,
                    tail=tail,
                ),
                c.address,
                timeout=_WAIT_SLICE + 30,
            )
            for ln in response.lines:
                line = convert.log_line_from_proto(ln)
                if environment or not line.is_environment:
                    yield line
            advanced = response.cursor != cursor
            cursor = response.cursor
            if response.finished or (not follow and not advanced):
                return

    def wait(
        self,
        timeout: float | None = None,
        *,
        stream_logs: bool = False,
        raise_on_failure: bool = True,
        log_sink: Callable[[LogLine], None] | None = None,
        include_children: bool = False,
        environment: bool | None = None,
    ) -> JobStatus:
        """Block until the job ends and return its final status; optionally print its logs (and
        its child jobs' logs, with ``include_children``) as they come.

        As in the original Iris, a job that does not succeed raises :class:`JobFailed` (with its
        status and the last lines of the failing task's output) unless ``raise_on_failure=False``;
        a job still running after ``timeout`` seconds raises ``TimeoutError``.

        Printed, a line goes where the task wrote it (``line.stream``: stdout or stderr); the
        lines about the task's environment (see :meth:`logs`) go to stderr. ``environment``
        (default: True when printing, False with a ``log_sink``) includes those."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if stream_logs:
            sink = log_sink or _print_line
            done = threading.Event()

            def pump() -> None:
                try:
                    with_environment = log_sink is None if environment is None else environment
                    for line in self.logs(follow=True, include_children=include_children, environment=with_environment):
                        sink(line)
                finally:
                    done.set()

            if deadline is None:
                pump()
            else:
                thread = threading.Thread(target=pump, daemon=True)
                thread.start()
                done.wait(max(0.0, deadline - time.monotonic()))
        c = self._client
        while True:
            wait = _WAIT_SLICE if deadline is None else max(0.0, min(_WAIT_SLICE, deadline - time.monotonic()))
            info = _call_retrying(
                c._stub.WaitJob, controller_pb2.WaitJobRequest(job_id=self.job_id, timeout_seconds=wait), c.address, wait + 30
            )
            status = convert.job_status_from_proto(info)
            if status.state.is_terminal:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {status.job_id} is still {status.state.value} after {timeout:g}s")
        if raise_on_failure and not status.succeeded:
            raise JobFailed(status, self._failure_output(status))
        return status

    def _failure_output(self, status: JobStatus) -> list[str]:
        """The last lines the failing task printed in its last attempt (best effort)."""
        failed = next((t for t in status.tasks if t.state.is_terminal and t.state is not TaskState.SUCCEEDED), None)
        if failed is None or not failed.attempts:
            return []
        attempt = failed.attempts[-1].attempt_id
        try:
            lines = [ln.data for ln in self.logs(tail=2000) if ln.task_index == failed.index and ln.attempt_id == attempt]
        except IrisError:
            return []
        return lines[-FAILURE_TAIL_LINES:]


def _print_line(line: LogLine) -> None:
    """A line where the task wrote it: stdout's on stdout; stderr's, and the environment's
    (marked ``[iris env] ``), on stderr."""
    if line.is_environment:
        sys.stderr.write(ENVIRONMENT_LOG_PREFIX + line.data + "\n")
        sys.stderr.flush()
        return
    out = sys.stderr if line.is_stderr else sys.stdout
    out.write(line.data + "\n")
    out.flush()


def default_job_name(entrypoint: Entrypoint) -> str:
    if entrypoint.argv:
        words = [Path(a).name for a in entrypoint.argv[:2] if not a.startswith("-")]
        base = "-".join(words) or "job"
    else:
        base = "callable"
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:40] or "job"
    return f"{base}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}"


class IrisClient:
    """A connection to a controller; see the module docstring."""

    def __init__(
        self,
        address: str,
        *,
        workspace: Path | None = None,
        bundle_blob: bytes | None = None,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        bundle_progress: BundleProgress | None = None,
        token: str | None = None,
    ):
        """``max_bundle_bytes`` refuses a larger workspace (naming its largest files);
        ``bundle_progress(files done, files, bytes done)`` hears about a bundle that takes over a
        second to make. ``token`` authenticates every call; None = ``$IRIS_TOKEN``, else the
        token ``iris login`` stored for this controller, else none."""
        self.address = address if "://" in address else f"http://{address}"
        scheme = self.address.split("://", 1)[0]
        if scheme != "http":
            # never talk plaintext to an address that asks for TLS
            raise ConfigError(
                f"controller URL {address!r}: scheme {scheme!r} is not supported; use http://HOST:PORT "
                "(the controller speaks plaintext gRPC; reach a remote one through the provider's tunnel)"
            )
        self.token = find_token(self.address, token)  # what every call presents (None: nothing)
        self._channel = authorized_channel(
            self.address.split("://", 1)[1],
            self.token,
            options=[("grpc.max_send_message_length", 512 << 20), ("grpc.max_receive_message_length", 512 << 20)],
        )
        self._stub = controller_pb2_grpc.ControllerServiceStub(self._channel)
        self._workspace = Path(workspace) if workspace is not None else None
        self._bundle_blob = bundle_blob
        self._max_bundle_bytes = max_bundle_bytes
        self._bundle_progress = bundle_progress
        self._bundle_id: str | None = None
        self._bundle_lock = threading.Lock()
        self._cluster: Any = None

    # --- constructors -------------------------------------------------------------------

    @classmethod
    def remote(
        cls,
        controller_url: str,
        *,
        workspace: Path | None = None,
        bundle_blob: bytes | None = None,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        bundle_progress: BundleProgress | None = None,
        token: str | None = None,
    ) -> IrisClient:
        """A client for the controller at ``controller_url``, bundling ``workspace`` on first
        submit. ``token``: see :class:`IrisClient` (default: ``$IRIS_TOKEN`` or ``iris login``'s)."""
        return cls(
            controller_url, workspace=workspace, bundle_blob=bundle_blob, max_bundle_bytes=max_bundle_bytes,
            bundle_progress=bundle_progress, token=token,
        )

    @classmethod
    def from_env(cls, *, workspace: Path | None = None) -> IrisClient:
        """Inside a task: a client for the controller that runs it (``IRIS_CONTROLLER_ADDRESS``),
        with the task's credential (``IRIS_TOKEN``)."""
        address = os.environ.get(CONTROLLER_ENV)
        if not address:
            raise IrisError(f"{CONTROLLER_ENV} is not set: not running inside an Iris task")
        return cls(address, workspace=workspace)

    @classmethod
    def local(cls, config: Any = None, *, workspace: Path | None = None) -> IrisClient:
        """A client on a new in-process local cluster; use as ``with IrisClient.local() as client:``."""
        from iris.cluster.manager import ClusterManager, make_local_config
        from iris.config import ClusterConfig

        config = config or ClusterConfig()
        local = make_local_config(config)
        # an in-process cluster keeps its state in a temporary directory unless told otherwise
        local = attrs.evolve(local, controller=attrs.evolve(local.controller, state_dir=config.controller.state_dir, port=0))
        manager = ClusterManager(local)
        address = manager.start()
        client = cls(address, workspace=workspace, token=manager.owner_token or None)
        client._cluster = manager
        return client

    def close(self) -> None:
        self._channel.close()
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None

    def __enter__(self) -> IrisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- bundles ------------------------------------------------------------------------

    def _ensure_bundle(self) -> str:
        with self._bundle_lock:
            if self._bundle_id is not None:
                return self._bundle_id
            if self._bundle_blob is not None:
                import hashlib

                bundle_id, data = hashlib.sha256(self._bundle_blob).hexdigest(), self._bundle_blob
            elif self._workspace is not None:
                bundle = create_bundle(self._workspace, max_bytes=self._max_bundle_bytes, progress=self._bundle_progress)
                bundle_id, data = bundle.bundle_id, bundle.data
            else:
                self._bundle_id = ""
                return ""
            exists = _call(self._stub.HasBundle, controller_pb2.HasBundleRequest(bundle_id=bundle_id), self.address).exists
            if not exists:
                _call(self._stub.UploadBundle, controller_pb2.UploadBundleRequest(bundle_id=bundle_id, data=data), self.address, timeout=600)
            self._bundle_id = bundle_id
            return bundle_id

    # --- jobs ---------------------------------------------------------------------------

    def submit(
        self,
        entrypoint: Entrypoint,
        name: str | None = None,
        resources: ResourceSpec | None = None,
        environment: EnvironmentSpec | None = None,
        *,
        replicas: int = 1,
        max_retries: int = 0,
        timeout: float = 0.0,
        constraints: list[Constraint | str] | None = None,
        coscheduling: str | bool = False,
        ports: list[str] | None = None,
        max_task_failures: int = 0,
        max_preemptions: int = 0,
        scheduling_timeout: float = 0.0,
        parent_job_id: str | None = None,
        user: str | None = None,
        task_image: str = "",
    ) -> Job:
        """Launch a job and return it at once; ``job.wait()`` follows it.

        ``constraints`` are :class:`Constraint` objects or their text form (``"zone=us-a"``).
        ``coscheduling`` True (or an attribute key) starts all tasks together on workers sharing
        that attribute (default ``slice``). ``ports`` names ports each task gets as
        ``IRIS_PORT_<NAME>``. Inside an Iris task the new job becomes a child of the task's job
        (``IRIS_JOB_ID``) unless ``parent_job_id=""``. ``task_image`` is the container image its
        tasks run in on workers whose runtime runs images (``docker``); empty: the cluster's
        ``docker.image``.
        """
        resources = resources or ResourceSpec()
        environment = environment or EnvironmentSpec()
        if parent_job_id is None:
            parent_job_id = os.environ.get(JOB_ENV, "")
        parsed = [c if isinstance(c, Constraint) else parse_constraint(c) for c in constraints or ()]
        group_by = coscheduling if isinstance(coscheduling, str) else ("slice" if coscheduling else "")
        spec = JobSpec(
            name=name or default_job_name(entrypoint),
            entrypoint=entrypoint,
            resources=resources,
            environment=environment,
            replicas=replicas,
            max_retries=max_retries,
            timeout_seconds=timeout,
            constraints=tuple(parsed),
            coschedule_by=group_by,
            ports=tuple(ports or ()),
            max_task_failures=max_task_failures,
            max_preemptions=max_preemptions,
            scheduling_timeout_seconds=scheduling_timeout,
            parent_job_id=parent_job_id,
            # a child job belongs to its parent's user unless told otherwise
            user=(current_user() if not parent_job_id else "") if user is None else user,
            task_image=task_image,
        )
        check_job_spec(spec)  # the controller's own checks, before a bundle is uploaded
        spec = attrs.evolve(spec, bundle_id=self._ensure_bundle())
        response = _call(self._stub.LaunchJob, controller_pb2.LaunchJobRequest(spec=convert.job_spec_to_proto(spec)), self.address)
        return Job(self, response.job_id)

    def job(self, job_id: str) -> Job:
        job = Job(self, job_id)
        return Job(self, job.status().job_id)

    def list_jobs(self, *, states: list[JobState] | None = None, prefix: str = "") -> list[JobStatus]:
        request = controller_pb2.ListJobsRequest(states=[convert.job_state_to_proto(s) for s in states or ()], prefix=prefix)
        response = _call(self._stub.ListJobs, request, self.address)
        return [convert.job_status_from_proto(j) for j in response.jobs]

    # --- cluster ------------------------------------------------------------------------

    def autoscaler_status(self) -> list[dict[str, Any]]:
        """The scale groups and their slices, as plain dicts (see ``iris cluster status``)."""
        response = _call(self._stub.GetAutoscalerStatus, controller_pb2.GetAutoscalerStatusRequest(), self.address)
        return convert.autoscaler_status_from_proto(response)

    def create_slice(self, scale_group: str) -> str:
        response = _call(self._stub.CreateSlice, controller_pb2.CreateSliceRequest(scale_group=scale_group), self.address)
        return response.slice_id

    def terminate_slices(self, slice_ids: list[str], *, all_slices: bool = False) -> list[str]:
        request = controller_pb2.TerminateSlicesRequest(slice_ids=slice_ids, all=all_slices)
        return list(_call(self._stub.TerminateSlices, request, self.address, timeout=600).slice_ids)

    def list_vms(self) -> list[dict[str, Any]]:
        """Every VM of every slice, as the controller's provider reports it, as plain dicts
        (vm_id, address, state, attributes, slice_id, scale_group, slice_error)."""
        return convert.vms_from_proto(_call(self._stub.ListVms, controller_pb2.ListVmsRequest(), self.address, timeout=600))

    def vm_logs(self, vm_id: str, tail: int = 100) -> str:
        """The last ``tail`` lines of the worker's log on that VM (admins only). VmNotFound for a
        VM the cluster does not have."""
        request = controller_pb2.GetVmLogsRequest(vm_id=vm_id, tail=tail)
        return _call(self._stub.GetVmLogs, request, self.address, timeout=600).text

    # --- endpoints ----------------------------------------------------------------------

    def register_endpoint(
        self, name: str, address: str, *, job_id: str | None = None, task_index: int | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        """Publish ``address`` under ``name`` while the job runs (inside a task: the task's job)."""
        job_id = job_id or os.environ.get(JOB_ENV, "")
        if not job_id:
            raise IrisError("register_endpoint: no job_id given and not running inside an Iris task")
        index = int(os.environ.get("IRIS_TASK_INDEX", "0")) if task_index is None else task_index
        endpoint = convert.endpoint_to_proto(Endpoint(name, address, job_id, index, dict(metadata or {})))
        _call(self._stub.RegisterEndpoint, controller_pb2.RegisterEndpointRequest(endpoint=endpoint), self.address)

    def lookup_endpoint(self, name: str) -> list[str]:
        """Addresses registered under ``name`` by jobs still running (empty if none)."""
        return [e.address for e in self.lookup_endpoints(name)]

    def lookup_endpoints(self, name: str) -> list[Endpoint]:
        """The endpoints (address, job, task index, metadata) registered under ``name`` by jobs
        still running."""
        response = _call(self._stub.LookupEndpoint, controller_pb2.LookupEndpointRequest(name=name), self.address, timeout=30)
        return [convert.endpoint_from_proto(e) for e in response.endpoints]

    def whoami(self) -> controller_pb2.WhoAmIResponse:
        """Who this client's token names (role, name, job), and whether the controller checks tokens."""
        return _call(self._stub.WhoAmI, controller_pb2.WhoAmIRequest(), self.address)

    def create_token(self, name: str, *, role: str = "user", ttl_seconds: float = 0.0) -> str:
        """Mint a token for ``name`` (admins only); ``ttl_seconds`` 0 = it does not expire."""
        request = controller_pb2.CreateTokenRequest(role=role, name=name, ttl_seconds=ttl_seconds)
        return _call(self._stub.CreateToken, request, self.address).token

    def list_workers(self) -> list[controller_pb2.WorkerSummary]:
        return list(_call(self._stub.ListWorkers, controller_pb2.ListWorkersRequest(), self.address).workers)
