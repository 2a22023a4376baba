"""SSH connections for the manual provider and the ``ssh`` tunnel (paramiko).

paramiko because it is already this distribution's dependency (libcloud's SSH client is built on
it), works from threads without an event loop (the VmManager protocol is synchronous), and gives
``direct-tcpip`` channels for the tunnel; asyncssh would need a loop thread for the same.

Host keys: ``known_hosts`` is read, an unknown host's key is recorded there (as ``ssh -o
StrictHostKeyChecking=accept-new`` does), and a host presenting a key other than the recorded
one is refused. Every failure is a :class:`SshError` naming ``user@host:port`` and what SSH said.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import paramiko

from iris.errors import PluginError

logger = logging.getLogger(__name__)


class SshError(PluginError):
    """An SSH connection or command failed; the message names the user, host and port."""


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Record an unknown host's key; a known host presenting another key is refused by paramiko
    before this is asked."""

    def __init__(self, known_hosts: Path):
        self._known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        try:
            self._known_hosts.parent.mkdir(parents=True, exist_ok=True)
            client.save_host_keys(str(self._known_hosts))
        except OSError as exc:
            logger.warning("could not record the host key of %s in %s: %s", hostname, self._known_hosts, exc)


def connect(host: str, port: int, user: str, key: str | None, known_hosts: Path, timeout: float = 10.0) -> paramiko.SSHClient:
    """An authenticated SSH connection (keepalives on), or SshError saying why not."""
    where = f"{user}@{host}:{port}"
    client = paramiko.SSHClient()
    if known_hosts.exists():
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(_AcceptNewPolicy(known_hosts))
    try:
        client.connect(
            host, port=port, username=user, key_filename=key, timeout=timeout, banner_timeout=timeout,
            auth_timeout=timeout, allow_agent=key is None, look_for_keys=key is None,
        )  # fmt: skip
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SshError(
            f"{where}: the host's key is not the one recorded in {known_hosts} ({exc}); "
            "if the host was reinstalled, remove its line from that file"
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        with_key = f"with key {key}" if key else "with the SSH agent's and ~/.ssh keys"
        raise SshError(f"{where}: authentication failed {with_key}: {exc}") from None
    except (OSError, paramiko.SSHException) as exc:
        client.close()
        raise SshError(f"{where}: cannot connect: {exc}") from None
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(5)
    return client


def run(client: paramiko.SSHClient, argv: list[str], where: str, *, stdin: bytes = b"", timeout: float = 120.0) -> tuple[int, str, str]:
    """Run ``argv`` on the host (quoted for its shell); (exit status, stdout, stderr)."""
    command = shlex.join(argv)
    try:
        channel = client.get_transport().open_session(timeout=timeout)  # type: ignore[union-attr]
        channel.settimeout(timeout)
        channel.exec_command(command)
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            if channel.recv_ready():
                out += channel.recv(1 << 16)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(1 << 16)
            elif channel.exit_status_ready():
                while channel.recv_ready():
                    out += channel.recv(1 << 16)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(1 << 16)
                break
            else:
                channel.status_event.wait(0.02)
        status = channel.recv_exit_status()
        channel.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise SshError(f"{where}: running {argv[0]!r} failed: {exc}") from None
    return status, out.decode(errors="replace"), err.decode(errors="replace")
