"""Real OpenSSH servers for tests: "hosts" that are ``sshd`` processes on loopback addresses of
this machine (127.0.0.11, 127.0.0.12, ...), each with a host key and a user key generated for
the test, so providers and tunnels that speak SSH are tested against the real thing.

    with SshServer(tmp_path / "host1", address="127.0.0.11") as host:
        host.address, host.port, host.user, host.key_path   # what a config names
        host.drop_connections()                             # cut every SSH session it serves

:func:`ensure_sshd` installs Debian's ``openssh-server`` when ``sshd`` is missing (the test
setup's job on a fresh machine) and says exactly why when it cannot.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from iris.testing.polling import wait_until

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 15.0


class SshdUnavailable(Exception):
    """``sshd`` is not installed and could not be installed; the message says why."""


def ensure_sshd() -> str:
    """The path of ``sshd``, installing ``openssh-server`` with apt-get when it is missing."""
    if os.access(SSHD, os.X_OK):
        return SSHD
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SshdUnavailable(f"{SSHD} is missing and cannot be installed here (needs apt-get and root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0 or not os.access(SSHD, os.X_OK):
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise SshdUnavailable(f"installing openssh-server failed: {' / '.join(tail)}")
    return SSHD


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def keygen(path: Path) -> Path:
    """A new ed25519 key pair without a passphrase at ``path`` (and ``path.pub``)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "iris-test", "-f", str(path)], check=True)
    return path


class SshServer:
    """One ``sshd -D`` on ``address``:``port`` accepting ``user`` with a key made for it.

    Everything it needs lives in ``directory``: its config, host key, the user's key pair and
    ``authorized_keys``. Only public-key authentication is accepted; TCP forwarding is allowed
    (tunnels). ``stop()`` (or leaving the ``with`` block) ends it and every session it serves."""

    def __init__(self, directory: Path, *, address: str = "127.0.0.1", port: int = 0, user: str | None = None):
        self.directory = Path(directory)
        self.address = address
        self.port = port or _free_port(address)
        self.user = user or getpass.getuser()
        self.key_path = self.directory / "id_ed25519"
        self.process: subprocess.Popen | None = None

    def start(self) -> SshServer:
        sshd = ensure_sshd()
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # its privilege separation directory
        host_key = keygen(self.directory / "host_key")
        keygen(self.key_path)
        authorized = self.directory / "authorized_keys"
        authorized.write_text(Path(f"{self.key_path}.pub").read_text())
        os.chmod(authorized, 0o600)
        config = self.directory / "sshd_config"
        config.write_text(
            f"ListenAddress {self.address}:{self.port}\n"
            f"HostKey {host_key}\n"
            f"PidFile {self.directory / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            f"AllowUsers {self.user}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
            "MaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\n"
            "ClientAliveInterval 5\n"
        )
        log = open(self.directory / "sshd.log", "ab")
        try:
            self.process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        if not wait_until(self._accepting, START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"sshd on {self.address}:{self.port} did not start; see {self.directory / 'sshd.log'}")
        return self

    def _accepting(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"sshd on {self.address}:{self.port} exited; see {self.directory / 'sshd.log'}")
        try:
            with socket.create_connection((self.address, self.port), timeout=1):
                return True
        except OSError:
            return False

    def drop_connections(self) -> int:
        """Kill every session process of this sshd (its connections drop; it keeps listening).
        Returns how many were killed. Only the session processes: a command a session was running
        is left to finish on its own, as when a network cuts an SSH connection (killing it could
        leave behind what a login shell was in the middle of, e.g. a stale lock file in ``~``)."""
        if self.process is None:
            return 0
        killed = 0
        for pid in _children(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed

    def log(self) -> str:
        try:
            return (self.directory / "sshd.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """End every session (while the listener still reaps them: no zombies), then the
        listener. Commands the sessions were running finish on their own (see drop_connections)."""
        if self.process is None:
            return
        sessions = _children(self.process.pid)
        self.drop_connections()
        deadline = time.monotonic() + 5
        while any(os.path.exists(f"/proc/{pid}") for pid in sessions) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
