"""Tunnel ``ssh``: reach a controller that only listens where an SSH host can see it.

``connect(address)`` opens an SSH connection (paramiko) to the SSH host, listens on a free port
of 127.0.0.1 and forwards each connection made to it through SSH to ``address`` as the SSH host
sees it (``direct-tcpip``, as ``ssh -L`` does). It returns once a connection through the tunnel
reaches the controller, so the URL it yields answers at once. When the SSH connection drops (the
host rebooted sshd, a NAT forgot it), the next connection made to the local port opens a new one,
so clients that retry (every Iris client does) carry on; nothing is cached per connection.

Options (the provider's config section, as every tunnel gets; SSH settings from ``options``
override the provider's ``ssh_user``/``ssh_key``):

``ssh_host``
    the host to SSH to (default: the manual provider's ``controller_host`` when it places the
    controller there, with its port and user; else the host in ``address``)
``ssh_port``
    default 22
``ssh_user``, ``ssh_key``
    default: the current user; the key file (else the SSH agent and ``~/.ssh`` keys)
``ssh_known_hosts``
    where host keys are checked and a new host's key is recorded (default ``~/.ssh/known_hosts``).
    A host whose key changed is refused: a man in the middle, or a reinstalled host to remove
    from that file.
``ssh_target_host``
    the controller's host as the SSH host sees it (default: the host in ``address``)
``connect_timeout``
    seconds to wait for the controller to answer through the tunnel (default 30)
"""

from __future__ import annotations

import getpass
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paramiko

from iris.errors import PluginError
from iris_manual import ssh

logger = logging.getLogger(__name__)

PUMP_CHUNK = 1 << 16
RECONNECT_BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)


class TunnelError(PluginError):
    """The tunnel cannot be opened; the message names the host, the user and the SSH error."""


def _options(options: dict[str, Any]) -> dict[str, Any]:
    """The tunnel's settings from a provider config section (``attrs.asdict`` of it) or a flat dict."""
    merged = {k: v for k, v in options.items() if k != "options" and v not in (None, "", [], {})}
    merged.update({k: v for k, v in (options.get("options") or {}).items() if v not in (None, "")})
    return merged


def _controller_host(options: dict[str, Any]) -> Any:
    """The manual provider's ``controller_host`` (a Host), when the config places the controller
    there and names no other ``ssh_host``: the tunnel goes through that host's sshd."""
    entry = options.get("controller_host")
    if not entry or options.get("ssh_host"):
        return None
    from iris_manual.vm_manager import parse_host

    return parse_host(str(entry), "")


class SshTunnel:
    def __init__(self, options: dict[str, Any] | None = None):
        self._options = _options(options or {})

    @contextmanager
    def connect(self, address: str) -> Iterator[str]:
        parsed = urlparse(address if "://" in address else f"http://{address}")
        if not parsed.hostname or not parsed.port:
            raise TunnelError(f"ssh tunnel: address {address!r} has no host and port")
        o = self._options
        via = _controller_host(o)
        forwarder = _Forwarder(
            ssh_host=str(o.get("ssh_host") or (via.address if via else parsed.hostname)),
            ssh_port=int(o.get("ssh_port", via.port if via else 22)),
            user=str(o.get("ssh_user") or (via.user if via else "") or getpass.getuser()),
            key=str(o["ssh_key"]) if o.get("ssh_key") else None,
            known_hosts=Path(str(o.get("ssh_known_hosts") or "~/.ssh/known_hosts")).expanduser(),
            target=(str(o.get("ssh_target_host") or parsed.hostname), parsed.port),
        )
        forwarder.start(timeout=float(o.get("connect_timeout", 30.0)))
        try:
            yield f"http://127.0.0.1:{forwarder.local_port}"
        finally:
            forwarder.close()


class _Forwarder:
    """A local listener whose connections are forwarded over one (re)connecting SSH transport."""

    def __init__(self, *, ssh_host: str, ssh_port: int, user: str, key: str | None, known_hosts: Path, target: tuple[str, int]):
        self.ssh_host, self.ssh_port, self.user, self.key = ssh_host, ssh_port, user, key
        self.known_hosts = known_hosts
        self.target = target
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()  # guards _client (one reconnect at a time)
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.local_port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()

    @property
    def where(self) -> str:
        return f"{self.user}@{self.ssh_host}:{self.ssh_port}"

    # --- SSH ----------------------------------------------------------------------------

    def _open_client(self) -> paramiko.SSHClient:
        try:
            return ssh.connect(self.ssh_host, self.ssh_port, self.user, self.key, self.known_hosts)
        except ssh.SshError as exc:
            raise TunnelError(f"ssh tunnel to {exc}") from None

    def _transport(self) -> paramiko.Transport:
        """A live SSH transport: the current one, or a new connection if it dropped."""
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
            if transport is not None and transport.is_active():
                return transport
            if self._client is not None:
                logger.info("ssh tunnel to %s dropped; reconnecting", self.where)
                self._client.close()
                self._client = None
            error: Exception | None = None
            for delay in (0.0, *RECONNECT_BACKOFF):
                if self._closed.wait(delay):
                    break
                try:
                    self._client = self._open_client()
                    transport = self._client.get_transport()
                    assert transport is not None
                    return transport
                except TunnelError as exc:
                    error = exc
            raise error or TunnelError(f"ssh tunnel to {self.where}: closed")

    def _channel(self, origin: tuple[str, int]) -> paramiko.Channel:
        try:
            return self._transport().open_channel("direct-tcpip", self.target, origin, timeout=10)
        except (paramiko.SSHException, OSError, EOFError):
            # the transport died between the check and the open: once more, on a new connection
            with self._lock:
                if self._client is not None:
                    self._client.close()
                    self._client = None
            return self._transport().open_channel("direct-tcpip", self.target, origin, timeout=10)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Connect, and return once a connection through the tunnel reaches the target."""
        self._transport()  # SSH problems (host, key, auth) are reported as they are, at once
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                self._channel(("127.0.0.1", 0)).close()
                break
            except (paramiko.SSHException, OSError, EOFError) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() >= deadline:
                self.close()
                raise TunnelError(
                    f"ssh tunnel to {self.where}: {self.target[0]}:{self.target[1]} did not answer within {timeout:g}s "
                    f"as seen from {self.ssh_host} ({last})"
                )
            time.sleep(0.2)
        accept = threading.Thread(target=self._accept_loop, name=f"iris-ssh-tunnel-{self.local_port}", daemon=True)
        accept.start()
        self._threads.append(accept)

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if self._client is not None:
                self._client.close()
                self._client = None
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    # --- forwarding ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._listener.settimeout(0.5)
                conn, origin = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn, origin), name="iris-ssh-tunnel-conn", daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, conn: socket.socket, origin: tuple[str, int]) -> None:
        with self._lock:
            self._sockets.add(conn)
        try:
            try:
                channel = self._channel(origin)
            except (TunnelError, paramiko.SSHException, OSError, EOFError) as exc:
                logger.warning("ssh tunnel to %s: cannot forward a connection: %s", self.where, exc)
                return
            with channel:
                try:
                    _pump(conn, channel, self._closed)
                except (OSError, EOFError, paramiko.SSHException):
                    pass  # either side went away (the SSH connection dropped): the client retries
        finally:
            with self._lock:
                self._sockets.discard(conn)
            conn.close()


def _pump(sock: socket.socket, channel: paramiko.Channel, closed: threading.Event) -> None:
    """Copy bytes both ways until both sides have finished sending (a half-close is passed on,
    so a client that shuts down its writing side still reads the whole answer)."""
    sources = [sock, channel]
    while sources and not closed.is_set():
        readable, _, _ = select.select(sources, [], [], 0.5)
        if sock in readable:
            data = sock.recv(PUMP_CHUNK)
            if data:
                channel.sendall(data)
            else:
                channel.shutdown_write()
                sources.remove(sock)
        if channel in readable:
            data = channel.recv(PUMP_CHUNK)
            if data:
                sock.sendall(data)
            else:
                sock.shutdown(socket.SHUT_WR)
                sources.remove(channel)
