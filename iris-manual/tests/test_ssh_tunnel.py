"""The ``ssh`` tunnel against real sshd servers on loopback addresses, with keys made by the test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iris.testing.contracts import TunnelContract
from iris.testing.sshd import SshdUnavailable, SshServer, ensure_sshd
from iris_manual.tunnel import SshTunnel, TunnelError

HOST = "127.0.0.11"  # the fake host's own loopback address


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    try:
        ensure_sshd()
    except SshdUnavailable as exc:
        pytest.skip(str(exc))
    with SshServer(tmp_path_factory.mktemp("sshd"), address=HOST) as server:
        yield server


def tunnel_for(host: SshServer, tmp_path: Path, **extra: Any) -> SshTunnel:
    return SshTunnel({"ssh_host": host.address, "ssh_port": host.port, "ssh_user": host.user, "ssh_key": str(host.key_path),
                      "ssh_known_hosts": str(tmp_path / "known_hosts"), "connect_timeout": 5, **extra})  # fmt: skip


class TestSshTunnelContract(TunnelContract):
    @pytest.fixture
    def tunnel(self, host: SshServer, tmp_path: Path) -> SshTunnel:
        return tunnel_for(host, tmp_path)


class EchoServer:
    """A TCP echo server on 127.0.0.1 (what the tunnel leads to)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def roundtrip(url: str, payload: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_ssh_tunnel_carries_bytes_both_ways_and_records_the_host_key(host: SshServer, echo: EchoServer, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with tunnel_for(host, tmp_path).connect(echo.address) as url:
        assert url.startswith("http://127.0.0.1:")
        assert roundtrip(url, payload) == payload
    assert HOST in (tmp_path / "known_hosts").read_text()  # accept-new: recorded for next time


def test_ssh_tunnel_reconnects_after_its_ssh_connection_is_killed(host: SshServer, echo: EchoServer, tmp_path: Path) -> None:
    with tunnel_for(host, tmp_path).connect(echo.address) as url:
        assert roundtrip(url, b"before") == b"before"
        assert host.drop_connections() >= 1  # sshd's session processes: the SSH connection is gone
        assert roundtrip(url, b"after") == b"after"  # a new connection to the local port reconnects


def test_ssh_tunnel_wrong_key_is_one_error_naming_host_and_user(host: SshServer, echo: EchoServer, tmp_path: Path) -> None:
    from iris.testing.sshd import keygen

    wrong = keygen(tmp_path / "wrong_key")
    with pytest.raises(TunnelError) as info:
        with tunnel_for(host, tmp_path, ssh_key=str(wrong)).connect(echo.address):
            pass
    message = str(info.value)
    assert f"{host.user}@{HOST}:{host.port}" in message and "authentication failed" in message and str(wrong) in message


def test_ssh_tunnel_unreachable_host_is_one_error_naming_it(host: SshServer, echo: EchoServer, tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.12", 0))  # a port nothing listens on
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(TunnelError, match=rf"{host.user}@127\.0\.0\.12:{port}: cannot connect"):
        with tunnel_for(host, tmp_path, ssh_host="127.0.0.12", ssh_port=port).connect(echo.address):
            pass


def test_ssh_tunnel_changed_host_key_is_refused(host: SshServer, echo: EchoServer, tmp_path: Path) -> None:
    from iris.testing.sshd import keygen

    other = keygen(tmp_path / "other_host_key")
    key_type, key_b64 = Path(f"{other}.pub").read_text().split()[:2]
    (tmp_path / "known_hosts").write_text(f"[{HOST}]:{host.port} {key_type} {key_b64}\n")
    with pytest.raises(TunnelError, match="is not the one recorded"):
        with tunnel_for(host, tmp_path).connect(echo.address):
            pass


def test_ssh_tunnel_target_that_never_answers_is_reported(host: SshServer, tmp_path: Path) -> None:
    with pytest.raises(TunnelError, match=r"127\.0\.0\.1:1 did not answer within 1s as seen from 127\.0\.0\.11"):
        with tunnel_for(host, tmp_path, connect_timeout=1).connect("http://127.0.0.1:1"):
            pass
