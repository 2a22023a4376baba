"""The actor transport (iris.actor.wire) on real loopback sockets: frames split across reads,
a server dying mid-call, many threads sharing pooled connections, large and oversized
requests, bytes that are not an actor client's, and the credential a connection carries."""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris.actor import ActorCallError, ActorClient, ActorGate, ActorPermissionDenied, ActorServer, FixedResolver, ResolvedEndpoint, protocol, wire


class Echo:
    def echo(self, value: object) -> object:
        return value

    def tagged(self, tag: object, seconds: float = 0.0) -> object:
        if seconds:
            time.sleep(seconds)
        return tag

    def size(self, data: bytes) -> int:
        return len(data)

    def make(self, n: int) -> bytes:
        return b"m" * n

    def started_then_sleep(self, seconds: float) -> str:
        RUNNING.set()  # the test shares this process with the server
        time.sleep(seconds)
        return "answered"


RUNNING = threading.Event()


@pytest.fixture(scope="module")
def server() -> Iterator[ActorServer]:
    with ActorServer(max_message=4 << 20) as s:
        s.register("echo", Echo())
        yield s


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _read_answer(sock: socket.socket) -> tuple[int, int, bytes]:
    """(request id, kind, body) of the next answer on a raw connection."""
    size, request_id, kind, _ = wire.HEADER.unpack(_read_exactly(sock, wire.HEADER.size))
    return request_id, kind, _read_exactly(sock, size)


def _raw(address: str, metadata: tuple = ()) -> socket.socket:
    sock = socket.create_connection(wire.split_address(address), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(wire.hello_frame(metadata))
    return sock


def _request(kind: int, payload: bytes, request_id: int = 1) -> bytes:
    return wire.HEADER.pack(len(payload), request_id, kind, 0.0) + payload


def _still_serves(address: str) -> None:
    assert ActorClient(FixedResolver({"echo": address}), "echo", connect_timeout=5).echo("still here") == "still here"


def test_request_split_across_many_reads_is_answered_whole(server: ActorServer) -> None:
    frame = wire.hello_frame(()) + _request(wire.CALL, protocol.encode_request("echo", "echo", ("split" * 100,), {}), 7)
    with socket.create_connection(wire.split_address(server.address), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(frame), 3):  # 3 bytes a send, with pauses: the server sees many short reads
            sock.sendall(frame[i : i + 3])
            if i % 60 == 0:
                time.sleep(0.001)
        request_id, kind, body = _read_answer(sock)
    assert (request_id, kind) == (7, wire.OK)
    assert protocol.decode_outcome(body, "echo.echo") == "split" * 100


def test_answer_split_across_many_reads_is_read_whole() -> None:
    """A server (raw socket) that dribbles its answer out a few bytes at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"

    def dribble() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = _read_exactly(conn, len(wire.MAGIC) + wire.HEADER.size)
            _read_exactly(conn, wire.HEADER.unpack(hello[len(wire.MAGIC) :])[0])
            size, request_id, _, _ = wire.HEADER.unpack(_read_exactly(conn, wire.HEADER.size))
            _read_exactly(conn, size)
            body = protocol.encode_value(list(range(300)))
            answer = wire.HEADER.pack(len(body), request_id, wire.OK, 0.0) + body
            for i in range(0, len(answer), 5):
                conn.sendall(answer[i : i + 5])
                time.sleep(0.0005)

    thread = threading.Thread(target=dribble)
    thread.start()
    try:
        assert ActorClient(FixedResolver({"x": address}), "x", timeout=10, connect_timeout=5).anything() == list(range(300))
    finally:
        thread.join(10)
        listener.close()
        wire.close_all()


SERVER_THAT_DIES = """
import os, sys
from iris.actor import ActorServer

class Mortal:
    def work(self):
        os._exit(3)  # dies in the middle of the call, before answering

server = ActorServer(0, gate=False)
server.register("worker", Mortal())
server.serve()
print(server.address, flush=True)
sys.stdin.read()
"""


class _MovingResolver:
    """The first answer names the endpoint that dies; every later one its replacement (as a
    retried task comes back on another worker)."""

    def __init__(self, first: str, then: str):
        self.answers = [first, then]
        self.asked = 0

    def resolve(self, name: str) -> list[ResolvedEndpoint]:
        self.asked += 1
        return [ResolvedEndpoint(self.answers[min(self.asked, 2) - 1])]


def test_server_dying_mid_call_is_retried_on_the_endpoint_that_replaces_it() -> None:
    dying = subprocess.Popen([sys.executable, "-c", SERVER_THAT_DIES], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = dying.stdout.readline().strip()
        with ActorServer() as alive:

            class Survivor:
                def work(self) -> str:
                    return "done elsewhere"

            alive.register("worker", Survivor())
            resolver = _MovingResolver(first, alive.address)
            assert ActorClient(resolver, "worker", timeout=30, connect_timeout=20).work() == "done elsewhere"
        assert dying.wait(timeout=10) == 3  # it did die mid-call
        assert resolver.asked == 2
    finally:
        if dying.poll() is None:
            dying.kill()
            dying.wait()


def test_many_threads_over_shared_connections_each_get_their_own_answers(server: ActorServer) -> None:
    client = ActorClient(FixedResolver({"echo": server.address}), "echo", timeout=30)
    wrong: list[tuple] = []

    def caller(thread: int) -> None:
        for i in range(150):
            tag = (thread, i, "x" * (i % 7) * 100)
            answer = client.tagged(tag, 0.001 if i % 25 == 0 else 0.0)
            if answer != tag:
                wrong.append((tag, answer))

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    pooled = wire.endpoint(server.address, ())
    assert 1 <= len(pooled.idle) <= 24  # connections are reused, at most one per concurrent caller


def test_large_payload_round_trips(server: ActorServer) -> None:
    client = ActorClient(FixedResolver({"echo": server.address}), "echo", timeout=60)
    with ActorServer() as big:  # the default limit (512 MB)
        big.register("echo", Echo())
        data = bytes(range(256)) * (40 * 4096)  # 40 MB
        answer = ActorClient(FixedResolver({"echo": big.address}), "echo", timeout=60).echo(data)
        assert len(answer) == len(data) and answer == data
    assert client.size(b"y" * (3 << 20)) == 3 << 20  # under this server's 4 MB limit


def test_oversized_request_is_refused_cleanly_and_the_server_keeps_serving(server: ActorServer) -> None:
    client = ActorClient(FixedResolver({"echo": server.address}), "echo", timeout=30, connect_timeout=30)
    started = time.monotonic()
    with pytest.raises(ActorCallError, match=r"echo.size at .* failed: RESOURCE_EXHAUSTED: request of \d+ bytes exceeds this actor server's limit of 4194304 bytes"):
        client.size(b"z" * (6 << 20))
    assert time.monotonic() - started < 20  # refused, not retried as if unavailable
    _still_serves(server.address)
    with _raw(server.address) as sock:  # a header announcing 4 GB, with no body at all
        sock.sendall(wire.HEADER.pack(0xFFFFFFFF, 9, wire.CALL, 0.0))
        request_id, kind, body = _read_answer(sock)
    assert (request_id, kind) == (9, wire.ERROR) and b"RESOURCE_EXHAUSTED" in body
    _still_serves(server.address)


def test_oversized_answer_is_a_clear_error_not_a_retry(server: ActorServer) -> None:
    client = ActorClient(FixedResolver({"echo": server.address}), "echo", timeout=30, connect_timeout=30)
    with pytest.raises(ActorCallError, match=r"echo.make at .* failed: RESOURCE_EXHAUSTED: the answer of \d+ bytes exceeds this actor server's limit of 4194304 bytes"):
        client.make(5 << 20)
    assert len(client.make(1 << 20)) == 1 << 20


@pytest.mark.parametrize(
    ("garbage", "expected"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
        (b"\x00" * 4096, None),
        (bytes(range(256)) * 8, None),
        (wire.MAGIC + wire.HEADER.pack(10 << 20, 0, wire.HELLO, 0.0), None),  # a hello too long
        (wire.MAGIC + wire.HEADER.pack(5, 0, wire.HELLO, 0.0) + b"{{{{{", None),  # a hello that is not JSON
        (b"IRIS", None),  # half an opening, then close
        (wire.hello_frame(()) + wire.HEADER.pack(3, 1, 99, 0.0) + b"abc", "UNIMPLEMENTED: unknown request kind 99"),
        (wire.hello_frame(()) + wire.HEADER.pack(8, 1, wire.CALL, 0.0) + b"notapick", "the arguments cannot be unpickled by the actor"),
        (wire.hello_frame(()) + wire.HEADER.pack(100, 1, wire.CALL, 0.0) + b"short", None),  # a body cut short
    ],
)
def test_garbage_on_the_port_does_not_kill_the_server(server: ActorServer, garbage: bytes, expected: str | None) -> None:
    with socket.create_connection(wire.split_address(server.address), timeout=10) as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk  # until the server closes its side
    if expected is None:
        assert received == b""  # closed without an answer
    else:
        size, _, kind, _ = wire.HEADER.unpack(received[: wire.HEADER.size])
        body = received[wire.HEADER.size :]
        assert len(body) == size
        if kind == wire.ERROR:
            assert expected in ": ".join(json.loads(body))
        else:
            with pytest.raises(ActorCallError, match=expected):
                protocol.decode_outcome(body, "raw")
    _still_serves(server.address)


def test_a_restarted_server_at_the_same_address_is_reached_past_stale_pooled_connections() -> None:
    first = ActorServer().serve()
    first.register("echo", Echo())
    address = first.address
    resolver = _CountingResolver(FixedResolver({"echo": address}))
    client = ActorClient(resolver, "echo", connect_timeout=10)
    assert client.echo(1) == 1  # leaves an idle pooled connection to the first server
    first.stop()
    second = ActorServer(int(address.rsplit(":", 1)[1])).serve()
    try:
        second.register("echo", Echo())
        assert client.echo(2) == 2
        assert resolver.asked == 1  # the stale connection was replaced at once, not retried as a lost endpoint
    finally:
        second.stop()


class _CountingResolver:
    def __init__(self, inner: FixedResolver):
        self.inner = inner
        self.asked = 0

    def resolve(self, name: str) -> list[ResolvedEndpoint]:
        self.asked += 1
        return self.inner.resolve(name)


# --- the credential a connection carries -----------------------------------------------------------


@pytest.fixture
def gated() -> Iterator[tuple[ActorServer, dict[str, str], list[str]]]:
    from iris.auth import Authenticator, Principal, Role, TokenSigner

    auth = Authenticator(TokenSigner(b"w" * 32))
    asked: list[str] = []

    def who_is(token: str) -> Principal | None:
        asked.append(token)
        return auth.authenticate(token)

    tokens = {
        "own": auth.mint(Principal(Role.TASK, "ada", "/ada/job/actors")),
        "sibling": auth.mint(Principal(Role.TASK, "ada", "/ada/job/workers")),
        "stranger": auth.mint(Principal(Role.TASK, "bob", "/bob/job")),
    }
    with ActorServer(gate=ActorGate("", tokens["own"], "/ada/job/actors", who_is=who_is)) as s:
        s.register("echo", Echo())
        yield s, tokens, asked


def _bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def test_connection_with_an_accepted_token_is_served_and_the_token_checked_once(gated) -> None:
    server, tokens, asked = gated
    client = ActorClient(FixedResolver({"echo": server.address}), "echo", metadata=lambda: _bearer(tokens["sibling"]))
    assert [client.echo(i) for i in range(20)] == list(range(20))
    assert asked.count(tokens["sibling"]) == 1


def test_connection_without_or_with_a_refused_token_is_refused_and_nothing_is_unpickled(gated, tmp_path: Path) -> None:
    server, tokens, _ = gated
    for metadata, status in [((), "UNAUTHENTICATED"), (_bearer(tokens["stranger"]), "PERMISSION_DENIED"), (_bearer("iris1.e30.forged"), "UNAUTHENTICATED")]:
        client = ActorClient(FixedResolver({"echo": server.address}), "echo", metadata=lambda metadata=metadata: metadata, connect_timeout=30)
        with pytest.raises(ActorPermissionDenied, match=f"echo.echo at .* failed: {status}: actor call refused"):
            client.echo(1)
        marker = tmp_path / f"unpickled-{status}"
        with _raw(server.address, metadata) as sock:  # a request whose unpickling would create a file
            sock.sendall(_request(wire.CALL, pickle.dumps(_CreatesFile(str(marker)))))
            _, kind, body = _read_answer(sock)
        assert kind == wire.ERROR and status.encode() in body
        assert not marker.exists()


class _CreatesFile:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_stop_lets_an_inflight_call_answer_then_refuses_new_ones() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from iris.actor import ActorNotFound

    server = ActorServer().serve()
    server.register("echo", Echo())
    client = ActorClient(FixedResolver({"echo": server.address}), "echo", timeout=30, connect_timeout=0.5)
    assert client.echo("warm") == "warm"  # an idle pooled connection, closed by stop()
    with ThreadPoolExecutor(1) as pool:
        inflight = pool.submit(client.started_then_sleep, 0.5)
        assert RUNNING.wait(timeout=10)  # the call is running on the server
        server.stop(grace=10)
        assert inflight.result(timeout=10) == "answered"
    with pytest.raises(ActorNotFound, match="no endpoint for actor 'echo' answered"):
        client.echo("after stop")


def test_calls_beyond_max_workers_wait_for_a_free_worker() -> None:
    """Two workers, six concurrent calls: never more than two run at once, and all answer."""
    running, most = [0], [0]
    lock = threading.Lock()

    class Gauge:
        def work(self) -> str:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.1)
            with lock:
                running[0] -= 1
            return "ok"

    with ActorServer(max_workers=2) as server:
        server.register("gauge", Gauge())
        client = ActorClient(FixedResolver({"gauge": server.address}), "gauge", timeout=30)
        futures = [client.work.submit() for _ in range(6)]
        assert [f.result(timeout=30) for f in futures] == ["ok"] * 6
    assert 1 <= most[0] <= 2  # the cap holds (six calls at once would reach 6 without it)


def test_a_forked_child_does_not_share_its_parents_connections(server: ActorServer) -> None:
    import os
    import signal

    client = ActorClient(FixedResolver({"echo": server.address}), "echo", timeout=10, connect_timeout=5)
    assert client.echo(1) == 1
    parent_idle = list(wire.endpoint(server.address, ()).idle)
    assert parent_idle
    pid = os.fork()
    if pid == 0:  # the child: no pooled connection of its parent; its own calls work
        code = 1
        try:
            code = 0 if not wire._endpoints and client.echo(2) == 2 else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if waited[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish its call")
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    assert client.echo(3) == 3  # the parent's connections were not disturbed by the child
