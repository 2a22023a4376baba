"""Authentication and roles at the controller's one door, over real gRPC on real sockets.

Every RPC without a valid token is refused (UNAUTHENTICATED); a user reads, kills and starts
children under their own jobs only; a task's credential acts inside its job and cannot reconcile
as a worker; a worker's credential reconciles only as the worker it names (PERMISSION_DENIED).
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from iris.auth import Authenticator, Principal, Role, TokenSigner, load_static_tokens
from iris.cluster.controller.controller import Controller
from iris.cluster.controller.service import ControllerServer
from iris.cluster.manager import ClusterManager
from iris.cluster.types import Entrypoint, EnvironmentSpec, JobState
from iris.config import parse_config
from iris.errors import ConfigError
from iris.job.records import Endpoint, JobSpec
from iris.rpc import controller_pb2, controller_pb2_grpc, convert, worker_pb2, worker_pb2_grpc
from iris.rpc.channel import authorized_channel
from iris.testing.fakes import InMemoryBundleStore
from iris.testing.polling import wait_until

SECRET = b"k" * 32


@pytest.fixture
def server() -> Iterator[ControllerServer]:
    auth = Authenticator(TokenSigner(SECRET))
    server = ControllerServer(Controller(), InMemoryBundleStore(), port=0, auth=auth)
    server.start()
    yield server
    server.stop()


class Caller:
    """Both services' stubs on one channel that presents ``token``."""

    def __init__(self, server: ControllerServer, token: str):
        self.channel = authorized_channel(server.address.removeprefix("http://"), token)
        self.controller = controller_pb2_grpc.ControllerServiceStub(self.channel)
        self.worker = worker_pb2_grpc.WorkerServiceStub(self.channel)


@pytest.fixture
def callers(server: ControllerServer) -> Iterator[dict[str, Caller]]:
    auth = server.auth
    assert auth is not None
    made = {
        "anonymous": Caller(server, ""),
        "admin": Caller(server, auth.mint(Principal(Role.ADMIN, "root"))),
        "alice": Caller(server, auth.mint(Principal(Role.USER, "alice"))),
        "bob": Caller(server, auth.mint(Principal(Role.USER, "bob"))),
        "w1": Caller(server, auth.mint(Principal(Role.WORKER, "w1"))),
    }
    yield made
    for caller in made.values():
        caller.channel.close()


def refused(call, request) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=20)
    return caught.value


def launch(name: str, *, user: str = "", parent: str = "", env: dict[str, str] | None = None) -> controller_pb2.LaunchJobRequest:
    spec = JobSpec(
        name=name,
        entrypoint=Entrypoint(argv=("true",)),
        environment=EnvironmentSpec(env=env or {}),
        user=user,
        parent_job_id=parent,
    )
    return controller_pb2.LaunchJobRequest(spec=convert.job_spec_to_proto(spec))


def reconcile(worker_id: str, cpu: float = 4.0) -> worker_pb2.ReconcileRequest:
    from iris.job.records import WorkerIdentity

    identity = WorkerIdentity(worker_id=worker_id, slice_id="", cpu=cpu, memory_bytes=8 << 30, attributes={})
    return convert.reconcile_request_to_proto(identity, [], 0, 0.0)


# --- authentication -------------------------------------------------------------------------


def test_auth_every_rpc_without_a_token_is_unauthenticated(server: ControllerServer) -> None:
    """Every method of both services, called with no token, a forged one, or one of another
    cluster, is refused before it runs."""
    other = TokenSigner(b"z" * 32).mint(Principal(Role.ADMIN, "root"))
    genuine = server.auth.mint(Principal(Role.ADMIN, "root"))  # type: ignore[union-attr]
    body, signature = genuine.rsplit(".", 1)
    forged = body.replace(body.split(".")[1], body.split(".")[1][:-2] + "xx") + "." + signature
    methods = []
    for module, name in ((controller_pb2, "ControllerService"), (worker_pb2, "WorkerService")):
        for method in module.DESCRIPTOR.services_by_name[name].methods:
            request_class = getattr(module, method.input_type.name)
            methods.append((f"/iris.v1.{name}/{method.name}", request_class))
    assert len(methods) >= 18
    for token, expected in (("", "requires a token"), (other, "not valid"), (forged, "not valid"), ("x" * 40, "not valid")):
        with authorized_channel(server.address.removeprefix("http://"), token) as channel:
            for path, request_class in methods:
                call = channel.unary_unary(path, request_serializer=request_class.SerializeToString, response_deserializer=lambda b: b)
                error = refused(call, request_class())
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (path, token[:12], error.details())
                assert expected in error.details(), error.details()
    assert server.controller.list_jobs() == []  # nothing got through


def test_auth_expired_token_is_unauthenticated(server: ControllerServer) -> None:
    token = server.auth.mint(Principal(Role.USER, "alice"), ttl_seconds=1)  # type: ignore[union-attr]
    caller = Caller(server, token)
    assert caller.controller.WhoAmI(controller_pb2.WhoAmIRequest(), timeout=20).name == "alice"
    time.sleep(1.1)  # the token's own lifetime is what is under test
    error = refused(caller.controller.ListJobs, controller_pb2.ListJobsRequest())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    caller.channel.close()


def test_auth_token_signer_rejects_tampering_and_other_secrets() -> None:
    signer = TokenSigner(SECRET)
    token = signer.mint(Principal(Role.TASK, "alice", "/alice/train"))
    assert signer.verify(token) == Principal(Role.TASK, "alice", "/alice/train")
    assert TokenSigner(b"q" * 32).verify(token) is None
    prefix, body, sig = token.split(".")
    other_sig = signer.mint(Principal(Role.ADMIN, "alice")).split(".")[2]
    assert signer.verify(f"{prefix}.{body}.{other_sig}") is None
    assert signer.verify(f"{prefix}.{body[:-1]}.{sig}") is None
    assert signer.verify("not-a-token") is None


# --- users ------------------------------------------------------------------------------------


def test_auth_user_cannot_read_kill_or_submit_under_another_users_job(callers: dict[str, Caller]) -> None:
    alice, bob = callers["alice"].controller, callers["bob"].controller
    job_id = alice.LaunchJob(launch("train", env={"API_KEY": "hunter2"}), timeout=20).job_id
    assert job_id == "/alice/train"
    for call, request, what in [
        (bob.GetJob, controller_pb2.GetJobRequest(job_id=job_id), "read"),
        (bob.GetJob, controller_pb2.GetJobRequest(job_id="train"), "read"),  # a short name resolves, then is refused
        (bob.WaitJob, controller_pb2.WaitJobRequest(job_id=job_id, timeout_seconds=1), "wait for"),
        (bob.GetLogs, controller_pb2.GetLogsRequest(job_id=job_id), "read the logs of"),
        (bob.GetResults, controller_pb2.GetResultsRequest(job_id=job_id), "read the results of"),
        (bob.KillJob, controller_pb2.KillJobRequest(job_id=job_id), "kill"),
        (bob.LaunchJob, launch("child", parent=job_id), "start a child job under"),
    ]:
        error = refused(call, request)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (what, error.details())
        assert error.details() == f"permission denied: user bob may not {what} /alice/train (it belongs to alice)"
    endpoint = convert.endpoint_to_proto(Endpoint("svc", "127.0.0.1:9", job_id, 0, {}))
    error = refused(bob.RegisterEndpoint, controller_pb2.RegisterEndpointRequest(endpoint=endpoint))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert bob.LookupEndpoint(controller_pb2.LookupEndpointRequest(name="svc"), timeout=20).endpoints == []
    # bob sees only his own jobs; asking to run as alice runs as bob
    assert bob.LaunchJob(launch("mine", user="alice"), timeout=20).job_id == "/bob/mine"
    assert [j.job_id for j in bob.ListJobs(controller_pb2.ListJobsRequest(), timeout=20).jobs] == ["/bob/mine"]
    # alice's job is untouched and hers to use
    info = alice.GetJob(controller_pb2.GetJobRequest(job_id=job_id), timeout=20)
    assert info.user == "alice"
    assert list(info.env_names) == ["API_KEY"] and "hunter2" not in str(info)
    assert alice.LaunchJob(launch("child", parent=job_id), timeout=20).job_id == "/alice/train/child"
    alice.RegisterEndpoint(controller_pb2.RegisterEndpointRequest(endpoint=endpoint), timeout=20)
    assert alice.KillJob(controller_pb2.KillJobRequest(job_id=job_id), timeout=20).state == convert.job_state_to_proto(JobState.KILLED)
    admin = callers["admin"].controller
    assert {j.job_id for j in admin.ListJobs(controller_pb2.ListJobsRequest(), timeout=20).jobs} == {
        "/alice/train", "/alice/train/child", "/bob/mine"
    }


def test_auth_slices_and_tokens_are_admin_only(server: ControllerServer, callers: dict[str, Caller]) -> None:
    for name in ("alice", "w1"):
        stub = callers[name].controller
        for call, request in [
            (stub.TerminateSlices, controller_pb2.TerminateSlicesRequest(all=True)),
            (stub.CreateSlice, controller_pb2.CreateSliceRequest(scale_group="g")),
            (stub.CreateToken, controller_pb2.CreateTokenRequest(role="admin", name=name)),
        ]:
            error = refused(call, request)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
            assert "admins only" in error.details()
    admin = callers["admin"].controller
    token = admin.CreateToken(controller_pb2.CreateTokenRequest(role="user", name="carol"), timeout=20).token
    carol = Caller(server, token)
    who = carol.controller.WhoAmI(controller_pb2.WhoAmIRequest(), timeout=20)
    carol.channel.close()
    assert (who.role, who.name, who.auth_enabled) == ("user", "carol", True)
    error = refused(admin.CreateToken, controller_pb2.CreateTokenRequest(role="worker", name="w9"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "role 'worker' is not one of: admin, user"


def test_auth_vms_are_listed_by_people_and_their_logs_read_by_admins_only(server: ControllerServer, callers: dict[str, Caller]) -> None:
    """ListVms is open to people as ListWorkers is (a worker is refused); GetVmLogs, a worker's
    log with every user's task lines, is for admins. A controller without an autoscaler says so."""
    for name in ("alice", "w1"):
        error = refused(callers[name].controller.GetVmLogs, controller_pb2.GetVmLogsRequest(vm_id="vm-0"))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert error.details().endswith("may not read the worker log of VM 'vm-0' (admins only)")
    error = refused(callers["w1"].controller.ListVms, controller_pb2.ListVmsRequest())
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "permission denied: worker w1 may not list VMs"
    for name, call, request in [
        ("alice", "ListVms", controller_pb2.ListVmsRequest()),
        ("admin", "ListVms", controller_pb2.ListVmsRequest()),
        ("admin", "GetVmLogs", controller_pb2.GetVmLogsRequest(vm_id="vm-0")),
    ]:
        error = refused(getattr(callers[name].controller, call), request)
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "this controller runs without an autoscaler"), call
    error = refused(callers["admin"].controller.GetVmLogs, controller_pb2.GetVmLogsRequest(vm_id=""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("vm_id"), error.details()


def test_auth_served_cluster_vms_through_the_controller(tmp_path: Path) -> None:
    """A real cluster with auth on: a user lists the VMs the controller's provider reports and is
    refused their logs; the admin reads them; an unknown VM is VmNotFound (NOT_FOUND)."""
    from iris.auth import PermissionDenied
    from iris.client import IrisClient
    from iris.errors import VmNotFound

    config = parse_config(
        {
            "controller": {"state_dir": str(tmp_path / "state")},
            "provider": {"type": "local", "options": {"worker_mode": "process"}},
            "scale_groups": {"g": {"min_slices": 1, "max_slices": 1, "cpu": 1, "memory": "1GB"}},
        }
    )
    manager = ClusterManager(config)
    manager.start()
    try:
        assert manager.auth is not None
        alice_token = manager.auth.mint(Principal(Role.USER, "alice"))
        with IrisClient.remote(manager.controller.address, token=manager.owner_token) as admin, IrisClient.remote(
            manager.controller.address, token=alice_token
        ) as alice:
            assert wait_until(lambda: [vm["state"] for vm in admin.list_vms()] == ["READY"], timeout=60)
            [vm] = alice.list_vms()
            assert (vm["scale_group"], vm["slice_error"]) == ("g", "")
            assert vm["slice_id"] == vm["attributes"]["slice"]
            with pytest.raises(PermissionDenied, match="admins only"):
                alice.vm_logs(vm["vm_id"])
            assert f"iris worker {vm['vm_id']} running" in admin.vm_logs(vm["vm_id"], 50)
            assert len(admin.vm_logs(vm["vm_id"], 1).splitlines()) == 1
            with pytest.raises(VmNotFound, match="no VM 'nope' in this cluster"):
                admin.vm_logs("nope")
    finally:
        manager.stop()


# --- workers and tasks ------------------------------------------------------------------------


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.txt", "a")
    return buffer.getvalue()


ZIP = _zip()  # a well-formed bundle: the refusal below is about who sends it


def test_auth_worker_credential_reconciles_only_as_its_own_worker(callers: dict[str, Caller]) -> None:
    w1 = callers["w1"]
    error = refused(w1.worker.Reconcile, reconcile("w2", cpu=1000))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "permission denied: worker w1 may not reconcile as worker 'w2'"
    for call, request in [
        (w1.controller.ListJobs, controller_pb2.ListJobsRequest()),
        (w1.controller.LaunchJob, launch("as-worker")),
        (w1.controller.UploadBundle, controller_pb2.UploadBundleRequest(bundle_id=hashlib.sha256(ZIP).hexdigest(), data=ZIP)),
    ]:
        assert refused(call, request).code() == grpc.StatusCode.PERMISSION_DENIED
    for name in ("alice", "admin"):  # nobody but a worker reconciles
        error = refused(callers[name].worker.Reconcile, reconcile("w1"))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only workers do" in error.details()
    assert w1.worker.Reconcile(reconcile("w1"), timeout=20).version >= 0


def test_auth_task_credential_acts_inside_its_job_and_cannot_reconcile(server: ControllerServer, callers: dict[str, Caller]) -> None:
    alice, bob, w1 = callers["alice"].controller, callers["bob"].controller, callers["w1"].worker
    job_id = alice.LaunchJob(launch("serve", env={"API_KEY": "hunter2"}), timeout=20).job_id
    other = bob.LaunchJob(launch("other"), timeout=20).job_id
    response = w1.Reconcile(reconcile("w1"), timeout=20)
    (desired,) = [d for d in response.attempts if d.spec.job_id == job_id]
    assert desired.spec.env["API_KEY"] == "hunter2" and desired.spec.token  # the worker alone gets secrets
    task = Caller(server, desired.spec.token)
    try:
        who = task.controller.WhoAmI(controller_pb2.WhoAmIRequest(), timeout=20)
        assert (who.role, who.name, who.job_id) == ("task", "alice", job_id)
        for worker_id in ("w1", "w2"):
            error = refused(task.worker.Reconcile, reconcile(worker_id, cpu=1000))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert error.details() == f"permission denied: a task of {job_id} may not reconcile as a worker (only workers do)"
        child = task.controller.LaunchJob(launch("child", user="bob", parent=job_id), timeout=20).job_id
        assert child == f"{job_id}/child"
        assert task.controller.GetJob(controller_pb2.GetJobRequest(job_id=child), timeout=20).user == "alice"
        endpoint = convert.endpoint_to_proto(Endpoint("svc", "127.0.0.1:9", job_id, 0, {}))
        task.controller.RegisterEndpoint(controller_pb2.RegisterEndpointRequest(endpoint=endpoint), timeout=20)
        for call, request in [
            (task.controller.GetJob, controller_pb2.GetJobRequest(job_id=other)),
            (task.controller.KillJob, controller_pb2.KillJobRequest(job_id=other)),
            (task.controller.LaunchJob, launch("escape")),
            (task.controller.LaunchJob, launch("graft", parent=other)),
            (task.controller.CreateToken, controller_pb2.CreateTokenRequest(name="alice")),
        ]:
            assert refused(call, request).code() == grpc.StatusCode.PERMISSION_DENIED
        listed = [j.job_id for j in task.controller.ListJobs(controller_pb2.ListJobsRequest(), timeout=20).jobs]
        assert listed == [job_id, child]
    finally:
        task.channel.close()


def test_auth_static_tokens_file_accepts_plain_and_hashed_tokens(tmp_path: Path) -> None:
    import hashlib

    plain, hashed = "p" * 32, "h" * 32
    path = tmp_path / "tokens"
    path.write_text(f"# ops\n{plain} admin ops\nsha256:{hashlib.sha256(hashed.encode()).hexdigest()} user dana\n")
    auth = Authenticator(TokenSigner(SECRET), load_static_tokens(path))
    assert auth.authenticate(plain) == Principal(Role.ADMIN, "ops")
    assert auth.authenticate(hashed) == Principal(Role.USER, "dana")
    assert auth.authenticate("q" * 32) is None
    path.write_text(f"{plain} worker w1\n")
    with pytest.raises(ConfigError, match=r"tokens:1: role 'worker' is not one of: admin, user"):
        load_static_tokens(path)


# --- how controllers are started ---------------------------------------------------------------


def test_auth_controller_without_auth_refuses_a_non_loopback_host(tmp_path: Path) -> None:
    config = parse_config(
        {"auth": {"enabled": False}, "controller": {"host": "0.0.0.0", "state_dir": str(tmp_path / "s")}, "provider": {"type": "local"}}
    )
    manager = ClusterManager(config)
    with pytest.raises(ConfigError) as caught:
        manager.start()
    message = str(caught.value)
    assert "controller.host: '0.0.0.0'" in message and "auth.allow_unauthenticated_remote: true" in message


def test_auth_in_process_local_cluster_is_open_and_served_ones_are_not(tmp_path: Path) -> None:
    from iris.cluster.manager import auth_enabled

    assert not auth_enabled(parse_config({}))
    assert auth_enabled(parse_config({"provider": {"type": "local", "options": {"worker_mode": "process"}}}))
    assert auth_enabled(parse_config({"provider": {"type": "gcp"}}))
    assert not auth_enabled(parse_config({"provider": {"type": "gcp"}, "auth": {"enabled": False}}))


def test_auth_served_cluster_tasks_get_their_own_credential_and_secrets_stay_private(tmp_path: Path) -> None:
    """A real cluster with auth on and process workers: a task's IRIS_TOKEN names its job and
    cannot reconcile as the worker running it; no worker credential reaches the task; state,
    the database, tokens and work directories are the owner's only."""
    from iris.client import IrisClient

    state = tmp_path / "state"
    config = parse_config(
        {
            "controller": {"state_dir": str(state)},
            "provider": {"type": "local", "options": {"worker_mode": "process"}},
            "scale_groups": {"g": {"min_slices": 1, "max_slices": 1, "cpu": 2, "memory": "2GB"}},
        }
    )
    probe = (
        "import os, grpc\n"
        "from iris.client import IrisClient\n"
        "from iris.rpc import convert, worker_pb2_grpc\n"
        "from iris.rpc.channel import authorized_channel\n"
        "from iris.job.records import WorkerIdentity\n"
        "c = IrisClient.from_env(); w = c.whoami()\n"
        "print('whoami', w.role, w.name, w.job_id)\n"
        "print('worker-token', 'IRIS_WORKER_TOKEN' in os.environ)\n"
        "pid, seen = os.getppid(), []\n"  # the worker is an ancestor: is its credential in its /proc environ?
        "while pid > 1:\n"
        "    seen.append(b'IRIS_WORKER_TOKEN=iris1' in open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    pid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "print('ancestors-show-worker-token', any(seen), len(seen) > 0)\n"
        "ident = WorkerIdentity(worker_id=os.environ['IRIS_WORKER_ID'], slice_id='', cpu=1000, memory_bytes=1 << 40, attributes={})\n"
        "stub = worker_pb2_grpc.WorkerServiceStub(authorized_channel(os.environ['IRIS_CONTROLLER_ADDRESS'][7:], os.environ['IRIS_TOKEN']))\n"
        "try:\n"
        "    stub.Reconcile(convert.reconcile_request_to_proto(ident, [], 0, 0.0), timeout=20); print('reconcile', 'OK')\n"
        "except grpc.RpcError as e:\n"
        "    print('reconcile', e.code().name)\n"
    )
    manager = ClusterManager(config)
    manager.start()
    try:
        assert manager.owner_token
        with IrisClient.remote(manager.controller.address, token=manager.owner_token) as client:
            job = client.submit(
                Entrypoint.from_command(sys.executable, "-c", probe), name="probe", environment=EnvironmentSpec(env={"API_KEY": "hunter2"})
            )
            status = job.wait(timeout=90)
            lines = [ln.data for ln in job.logs()]
        assert status.state is JobState.SUCCEEDED, lines
        user = status.user
        assert lines == [
            f"whoami task {user} {job.job_id}",
            "worker-token False",
            "ancestors-show-worker-token False True",
            "reconcile PERMISSION_DENIED",
        ]
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
        assert mode(state) == 0o700
        for name in ("controller.db", "secret.key", "owner.token"):
            assert mode(state / name) == 0o600, name
        work_dirs = list((state / "workers").iterdir())
        assert work_dirs and all(mode(d) == 0o700 for d in work_dirs)
    finally:
        manager.stop()


def test_auth_cli_owner_login_tokens_and_refusals(tmp_path: Path, iris) -> None:  # type: ignore[no-untyped-def]
    """`iris cluster start --local` turns auth on; the owner's commands through --config just
    work, and so does --controller-url for them; another user's bare --controller-url is refused
    with one line (exit 3) until `iris login`; an
    admin mints a user's token; that user cannot read the owner's job; status shows env names."""
    home = tmp_path / "home"
    home.mkdir()
    ws = tmp_path / "ws"
    ws.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("name: authcli\nscale_groups:\n  g: {min_slices: 1, max_slices: 1, cpu: 1, memory: 1GB}\n")
    env = {"HOME": str(home), "IRIS_TOKEN": "", "IRIS_CONTROLLER_ADDRESS": ""}
    try:
        started = iris("cluster", "--config", str(config), "start", "--local", cwd=ws, env=env)
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        ran = iris("--config", str(config), "run", "--memory", "100MB", "--cpu", "0.1", "--job-name", "secret", "-e", "API_KEY", "hunter2", "--", "true", cwd=ws, env=env)
        assert ran.returncode == 0, ran.stderr
        status = iris("--config", str(config), "job", "status", "secret", cwd=ws, env=env)
        assert status.returncode == 0, status.stderr
        assert "API_KEY" in status.stdout and "hunter2" not in status.stdout
        job_id = next(line.split()[-1] for line in status.stdout.splitlines() if line.startswith("job:"))

        owner = iris("job", "list", "--controller-url", url, cwd=ws, env=env)  # the owner: found by URL in ~/.iris
        assert owner.returncode == 0 and "secret" in owner.stdout, owner.stderr
        stranger = tmp_path / "stranger"
        stranger.mkdir()
        bare = iris("job", "list", "--controller-url", url, cwd=ws, env={**env, "HOME": str(stranger)})
        assert bare.returncode == 3 and bare.stderr.count("\n") == 1, bare.stderr
        assert "unauthenticated: this controller requires a token" in bare.stderr and "Traceback" not in bare.stderr

        token = iris("--config", str(config), "token", "create", "alice", "--ttl", "1d", cwd=ws, env=env)
        assert token.returncode == 0, token.stderr
        alice = token.stdout.strip()
        login = iris("login", "--controller-url", url, "--token", alice, cwd=ws, env=env)
        assert login.returncode == 0 and "as user alice" in login.stderr, login.stderr
        credentials = home / ".iris" / "credentials.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert json.loads(credentials.read_text()) == {url: alice}
        who = iris("whoami", "--controller-url", url, cwd=ws, env=env)
        assert who.stdout.strip() == "user alice", who.stderr
        listed = iris("job", "list", "--controller-url", url, "--json", cwd=ws, env=env)
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr  # the owner's job is not hers
        denied = iris("job", "status", job_id, "--controller-url", url, cwd=ws, env=env)
        assert denied.returncode == 3, denied.stderr
        assert denied.stderr.strip() == f"iris: error: permission denied: user alice may not read {job_id} (it belongs to {job_id.split('/')[1]})"
        minted = iris("token", "create", "mallory", "--role", "admin", "--controller-url", url, cwd=ws, env=env)
        assert minted.returncode == 3 and "admins only" in minted.stderr, minted.stderr
        overridden = iris("whoami", "--controller-url", url, cwd=ws, env={**env, "IRIS_TOKEN": "x" * 32})
        assert overridden.returncode == 3 and "not valid" in overridden.stderr  # IRIS_TOKEN wins over the login
        assert iris("logout", "--controller-url", url, cwd=ws, env=env).returncode == 0
        assert json.loads(credentials.read_text()) == {}
    finally:
        stopped = iris("cluster", "--config", str(config), "stop", "--local", cwd=ws, env=env)
        assert stopped.returncode == 0, stopped.stderr


def test_auth_static_token_from_the_config_acts_as_its_user(tmp_path: Path) -> None:
    """``auth.tokens`` in the config: the token works as its user, whose jobs run under that name."""
    from iris.client import IrisClient
    from iris.errors import IrisError

    ops = "o" * 32
    config = parse_config({"auth": {"enabled": True, "tokens": [{"name": "dana", "role": "user", "token": ops}]}})
    with IrisClient.local(config) as admin:
        with IrisClient.remote(admin.address, token=ops) as dana:
            assert (dana.whoami().role, dana.whoami().name) == ("user", "dana")
            job = dana.submit(Entrypoint.from_command("true"), name="static")
            assert job.job_id == "/dana/static"
            with pytest.raises(IrisError, match="admins only"):
                dana.create_token("eve")
        with pytest.raises(IrisError, match="name 'no spaces' is invalid"):
            admin.create_token("no spaces")
