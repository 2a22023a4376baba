"""The actor transport: length-prefixed frames over persistent TCP connections.

A connection opens with ``MAGIC`` and a HELLO frame carrying the caller's credential metadata
(JSON, ``[[key, value], ...]``), so a connection is bound to one credential and the token travels
once. Every later frame is ``HEADER`` (body length, request id, kind, timeout in seconds, 0 for
none) followed by the body: a request (cloudpickled, as :mod:`iris.actor.protocol` encodes it) or
an answer (``OK`` + the outcome bytes, or ``ERROR`` + JSON ``[status, details]``). Status names
follow gRPC's (``UNAVAILABLE``, ``NOT_FOUND``, ``PERMISSION_DENIED``...) so the client's error
mapping reads the same as it did over gRPC.

A connection carries one call at a time: the client keeps a small pool of idle connections per
(address, credential), shared by its threads (a thread takes one, sends, reads the answer on the
same thread, puts it back); the server runs one thread per connection and runs the call on it.
No thread hands a call to another, which is where gRPC's Python per-call CPU went (docs/actors.md,
"Why this wire format").

Nothing is unpickled before the caller is admitted: the HELLO is JSON, and the server checks the
connection's credential before it decodes each request.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from iris.actor.protocol import MAX_MESSAGE

logger = logging.getLogger(__name__)

MAGIC = b"IRISACT1"
HEADER = struct.Struct("!IQBd")  # body length, request id, kind, timeout (s; 0: none)
MAX_HELLO = 64 << 10

# request kinds (client -> server)
CALL, START, POLL, CANCEL, HELLO = 1, 2, 3, 4, 5
# answer kinds (server -> client)
OK, ERROR = 16, 17

_IDLE_PER_ENDPOINT = 64  # idle connections kept per (address, credential); more are closed
CONNECT_TIMEOUT = 10.0
_SMALL = 64 << 10  # bodies below this go out in one send with their header


class RemoteStatus(Exception):
    """The server answered ERROR: ``status`` (a gRPC status name) and ``details``."""

    def __init__(self, status: str, details: str):
        super().__init__(f"{status}: {details}")
        self.status = status
        self.details = details


class ConnectionLost(Exception):
    """The connection failed or closed before a whole answer came back (nobody listens, the
    server died, or it reset the connection): a retry elsewhere may succeed."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"actor address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def hello_frame(metadata: Sequence[tuple[str, str]]) -> bytes:
    body = json.dumps([[str(k), str(v)] for k, v in metadata]).encode()
    return MAGIC + HEADER.pack(len(body), 0, HELLO, 0.0) + body


def error_body(status: str, details: str) -> bytes:
    return json.dumps([status, details]).encode()


# --- client side -------------------------------------------------------------------------------


class ClientConnection:
    """One connection; used by one thread at a time (:class:`Endpoint` hands them out)."""

    __slots__ = ("sock", "rfile", "next_id", "reused")

    def __init__(self, address: str, hello: bytes):
        try:
            host, port = split_address(address)
        except ValueError as exc:
            raise ConnectionLost(str(exc)) from None
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
            sock.sendall(hello)
        except OSError as exc:
            raise ConnectionLost(f"{address}: {exc.strerror or exc}") from None
        self.sock = sock
        self.rfile = sock.makefile("rb", buffering=_SMALL)
        self.next_id = 0
        self.reused = False

    def request(self, kind: int, payload: bytes, timeout: float | None) -> bytes:
        """Send one request and read its answer; ``TimeoutError`` after ``timeout`` seconds
        (the connection is then unusable), :class:`ConnectionLost`, or :class:`RemoteStatus`."""
        self.next_id += 1
        request_id = self.next_id
        sock = self.sock
        sock.settimeout(timeout)
        head = HEADER.pack(len(payload), request_id, kind, timeout or 0.0)
        try:
            if len(payload) < _SMALL:
                sock.sendall(head + payload)
            else:
                sock.sendall(head)
                sock.sendall(payload)
        except TimeoutError:
            raise
        except OSError:
            pass  # the server may have refused the request and closed: its answer says why, below
        try:
            head = self.rfile.read(HEADER.size)
            if len(head) < HEADER.size:
                raise ConnectionLost("the connection closed before the answer (the actor's server stopped or died)")
            size, answered, answer_kind, _ = HEADER.unpack(head)
            if size > MAX_MESSAGE:
                raise ConnectionLost(f"the server announced an answer of {size} bytes, over the {MAX_MESSAGE}-byte limit")
            body = self.rfile.read(size) if size else b""
            if len(body) < size:
                raise ConnectionLost("the connection closed in the middle of the answer (the actor's server stopped or died)")
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectionLost(f"the connection failed: {exc.strerror or exc}") from None
        if answered != request_id:
            raise ConnectionLost(f"answer to request {answered} where {request_id} was expected")
        if answer_kind == OK:
            return body
        if answer_kind == ERROR:
            try:
                status, details = json.loads(body)
            except ValueError:
                status, details = "INTERNAL", repr(bytes(body[:200]))
            raise RemoteStatus(str(status), str(details))
        raise ConnectionLost(f"unknown answer kind {answer_kind}")

    def close(self) -> None:
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass


class Endpoint:
    """The idle connections to one address under one credential."""

    __slots__ = ("address", "hello", "idle")

    def __init__(self, address: str, metadata: Sequence[tuple[str, str]]):
        self.address = address
        self.hello = hello_frame(metadata)
        self.idle: list[ClientConnection] = []

    def request(self, kind: int, payload: bytes, timeout: float | None) -> bytes:
        """One request on an idle connection (or a new one). A reused connection that turns out
        dead (its server restarted) is dropped with the other idle ones and the request is sent
        once more on a new connection."""
        while True:
            try:
                conn = self.idle.pop()  # list.pop/append are atomic: no lock needed
                conn.reused = True
            except IndexError:
                conn = ClientConnection(self.address, self.hello)
            try:
                answer = conn.request(kind, payload, timeout)
            except RemoteStatus as exc:
                if exc.status == "RESOURCE_EXHAUSTED":
                    conn.close()  # the server closes after refusing an oversized request
                else:
                    self._put_back(conn)
                raise
            except ConnectionLost as exc:
                conn.close()
                if conn.reused:
                    logger.debug("actor connection to %s: a pooled connection failed (%s); trying a new one", self.address, exc)
                    self.drop_idle()
                    continue
                raise
            except BaseException:  # a timeout (or an interrupt) leaves the answer unread: unusable
                conn.close()
                raise
            self._put_back(conn)
            return answer

    def _put_back(self, conn: ClientConnection) -> None:
        if len(self.idle) < _IDLE_PER_ENDPOINT:
            self.idle.append(conn)
        else:
            conn.close()

    def drop_idle(self) -> None:
        while True:
            try:
                self.idle.pop().close()
            except IndexError:
                return


_endpoints: dict[tuple[str, tuple], Endpoint] = {}
_endpoints_lock = threading.Lock()


def endpoint(address: str, metadata: tuple) -> Endpoint:
    """The process-wide connection pool to ``address`` for callers presenting ``metadata``."""
    key = (address, metadata)
    found = _endpoints.get(key)
    if found is None:
        with _endpoints_lock:
            found = _endpoints.get(key)
            if found is None:
                found = _endpoints[key] = Endpoint(address, metadata)
    return found


def close_all() -> None:
    """Close every idle client connection of this process (tests; a fork)."""
    with _endpoints_lock:
        for ep in _endpoints.values():
            ep.drop_idle()
        _endpoints.clear()


def _forget_after_fork() -> None:
    """A forked child must not share its parent's connections: drop (close its copies of) them."""
    global _endpoints_lock
    for ep in list(_endpoints.values()):
        ep.drop_idle()
    _endpoints.clear()
    _endpoints_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


# --- server side -------------------------------------------------------------------------------


class Abort(Exception):
    """Raised by a handler to answer ERROR (``status``, ``details``) instead of a value."""

    def __init__(self, status: Any, details: str):
        super().__init__(details)
        self.status = getattr(status, "name", str(status))
        self.details = details


# a handler: (kind, request body, connection metadata, timeout or None) -> answer body
Handler = Callable[[int, bytes, "ServerConnection", "float | None"], bytes]


class ServerConnection:
    """The server's side of one connection: its credential metadata and its socket."""

    __slots__ = ("sock", "peer", "metadata", "busy")

    def __init__(self, sock: socket.socket, peer: str):
        self.sock = sock
        self.peer = peer
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.busy = False

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def abort(self, status: Any, details: str) -> None:
        raise Abort(status, details)


class FrameServer:
    """Listens on ``host:port`` and serves each connection on its own thread with ``handler``."""

    def __init__(self, host: str, port: int, handler: Handler, *, max_message: int = MAX_MESSAGE, name: str = "actor"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, port), family=family, backlog=1024)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port = self._listener.getsockname()[1]
        self._handler = handler
        self._max_message = max_message
        self._name = name
        self._connections: set[ServerConnection] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._idle = threading.Condition(self._lock)
        self._acceptor = threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return  # the listener was closed: stop()
            with self._lock:
                if self._stopping:
                    sock.close()
                    return
                conn = ServerConnection(sock, f"{peer[0]}:{peer[1]}")
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name=f"{self._name}-conn", daemon=True).start()

    def _serve(self, conn: ServerConnection) -> None:
        sock = conn.sock
        rfile = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rfile = sock.makefile("rb", buffering=_SMALL)
            if not self._hello(conn, rfile):
                return
            send = sock.sendall
            while True:
                head = rfile.read(HEADER.size)
                if len(head) < HEADER.size:
                    return  # the caller closed (or sent half a header and closed)
                size, request_id, kind, timeout = HEADER.unpack(head)
                if size > self._max_message:
                    self._refuse_oversized(conn, rfile, size, request_id)
                    return
                body = rfile.read(size) if size else b""
                if len(body) < size:
                    return
                with self._lock:
                    if self._stopping:
                        return
                    conn.busy = True
                try:
                    try:
                        answer, answer_kind = self._handler(kind, body, conn, timeout or None), OK
                    except Abort as exc:
                        answer, answer_kind = error_body(exc.status, exc.details), ERROR
                    except Exception as exc:  # noqa: BLE001 - a bug of ours: tell the caller, keep serving
                        logger.exception("actor server: request of kind %d from %s failed", kind, conn.peer)
                        answer, answer_kind = error_body("INTERNAL", f"{type(exc).__name__}: {exc}"), ERROR
                    if len(answer) > self._max_message:
                        details = f"the answer of {len(answer)} bytes exceeds this actor server's limit of {self._max_message} bytes"
                        answer, answer_kind = error_body("RESOURCE_EXHAUSTED", details), ERROR
                    head = HEADER.pack(len(answer), request_id, answer_kind, 0.0)
                    if len(answer) < _SMALL:
                        send(head + answer)
                    else:
                        send(head)
                        send(answer)
                finally:  # busy until answered: stop() waits for the answer to be sent
                    with self._lock:
                        conn.busy = False
                        if self._stopping:
                            self._idle.notify_all()
        except OSError:
            pass  # the caller went away, or stop() shut the socket
        finally:
            with self._lock:
                self._connections.discard(conn)
                self._idle.notify_all()
            try:
                if rfile is not None:
                    rfile.close()  # the socket's file descriptor closes only once its file is closed too
                sock.close()
            except OSError:
                pass

    def _hello(self, conn: ServerConnection, rfile: Any) -> bool:
        """Read the connection's opening; False (and log) if it is not an actor client's."""
        opening = rfile.read(len(MAGIC) + HEADER.size)
        if len(opening) < len(MAGIC) + HEADER.size or not opening.startswith(MAGIC):
            if opening:
                logger.warning("actor server: %s sent %r, not an actor client's opening; connection closed", conn.peer, opening[:16])
            return False
        size, _, kind, _ = HEADER.unpack(opening[len(MAGIC):])
        if kind != HELLO or size > MAX_HELLO:
            logger.warning("actor server: %s opened with a bad hello (kind %d, %d bytes); connection closed", conn.peer, kind, size)
            return False
        try:
            conn.metadata = tuple((str(k), str(v)) for k, v in json.loads(rfile.read(size)))
        except (ValueError, TypeError) as exc:
            logger.warning("actor server: %s sent an unreadable hello (%s); connection closed", conn.peer, exc)
            return False
        return True

    def _refuse_oversized(self, conn: ServerConnection, rfile: Any, size: int, request_id: int) -> None:
        """Answer RESOURCE_EXHAUSTED, then discard what the caller is still sending (for up to a
        few seconds) so it reads the answer rather than a reset connection."""
        details = f"request of {size} bytes exceeds this actor server's limit of {self._max_message} bytes"
        logger.warning("actor server: %s: %s", conn.peer, details)
        body = error_body("RESOURCE_EXHAUSTED", details)
        conn.sock.sendall(HEADER.pack(len(body), request_id, ERROR, 0.0) + body)
        conn.sock.settimeout(5.0)
        left = size
        while left > 0:
            chunk = rfile.read1(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def stop(self, grace: float | None) -> None:
        """Stop accepting; close idle connections now and busy ones once their call has
        answered (or after ``grace`` seconds)."""
        with self._lock:
            self._stopping = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            for conn in list(self._connections):
                if not conn.busy:
                    _shutdown(conn.sock)
            if grace:
                self._idle.wait_for(lambda: not any(c.busy for c in self._connections), timeout=grace)
            for conn in list(self._connections):
                _shutdown(conn.sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
