"""Contract suites: the behaviour every implementation of a seam must have.

One base class per seam. Subclass it in your test suite (name the subclass ``Test...`` so pytest
collects it) and provide the fixture it names; every ``test_*`` method then runs against your
implementation::

    import pytest
    from iris.testing.contracts import BundleStoreContract

    class TestGcsBundleStore(BundleStoreContract):
        @pytest.fixture
        def bundle_store(self):
            return GcsBundleStore("gs://my-test-bucket/iris-contract")

Class attributes (``errors``, ``vm_count``, ``python``, ...) adapt a suite to an implementation
without weakening it; each is documented where it is defined. To mark one inherited test as a
known failure, override it in the subclass with ``pytest.mark.xfail`` and call ``super()``.

Every test cleans up what it created (containers, slices), even when it fails.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from iris.errors import BundleError
from iris.plugin.protocols import (
    BundleStore,
    ContainerHandle,
    ContainerRuntime,
    ContainerSpec,
    ContainerStatus,
    SliceInfo,
    SliceRequest,
    SliceState,
    Tunnel,
    VmManager,
)
from iris.runtime.output_log import MAX_LINE_BYTES, STDERR, STDOUT, encode, parse_record
from iris.testing.polling import wait_until


def _token() -> str:
    return uuid.uuid4().hex[:12]


# --- BundleStore ----------------------------------------------------------------------------


class BundleStoreContract:
    """Contract for :class:`~iris.plugin.protocols.BundleStore`.

    Provide a ``bundle_store`` fixture. Each test stores fresh random bytes, so a store backed
    by a shared bucket can run the suite repeatedly.
    """

    #: Exceptions the store raises for a malformed id, a mismatched id or a missing bundle.
    errors: tuple[type[BaseException], ...] = (BundleError,)

    MALFORMED_IDS = (
        "",
        "abc",
        "a" * 63,
        "a" * 65,
        "z" * 64,
        "../" + "a" * 61,
        "a" * 30 + "/" + "a" * 33,
        "a" * 60 + ".zip",
    )

    @staticmethod
    def new_bundle() -> tuple[str, bytes]:
        """Fresh bytes (never stored before) and their sha256 id."""
        data = b"iris bundle-store contract " + uuid.uuid4().bytes + os.urandom(32)
        return hashlib.sha256(data).hexdigest(), data

    def test_bundle_store_implements_protocol(self, bundle_store: Any) -> None:
        assert isinstance(bundle_store, BundleStore)

    def test_put_new_bundle_returns_url_for_its_id(self, bundle_store: Any) -> None:
        bundle_id, data = self.new_bundle()
        url = bundle_store.put(bundle_id, data)
        assert url == bundle_store.url_for(bundle_id)
        assert url.endswith(f"/{bundle_id}.zip")

    def test_put_existing_bundle_is_noop_returning_same_url(self, bundle_store: Any, tmp_path: Path) -> None:
        bundle_id, data = self.new_bundle()
        first = bundle_store.put(bundle_id, data)
        second = bundle_store.put(bundle_id, data)
        assert second == first
        assert Path(bundle_store.get(bundle_id, tmp_path)).read_bytes() == data

    def test_put_mismatched_id_raises_and_stores_nothing(self, bundle_store: Any) -> None:
        wrong_id, _ = self.new_bundle()
        _, data = self.new_bundle()
        with pytest.raises(self.errors):
            bundle_store.put(wrong_id, data)
        assert not bundle_store.exists(wrong_id)

    def test_exists_before_and_after_put_reports_presence(self, bundle_store: Any) -> None:
        bundle_id, data = self.new_bundle()
        assert not bundle_store.exists(bundle_id)
        bundle_store.put(bundle_id, data)
        assert bundle_store.exists(bundle_id)

    def test_get_stored_bundle_returns_local_file_with_identical_bytes(self, bundle_store: Any, tmp_path: Path) -> None:
        bundle_id, data = self.new_bundle()
        bundle_store.put(bundle_id, data)
        dest = tmp_path / "dest"
        dest.mkdir()
        path = Path(bundle_store.get(bundle_id, dest))
        assert path.is_file()
        assert path.read_bytes() == data

    def test_get_missing_bundle_raises(self, bundle_store: Any, tmp_path: Path) -> None:
        bundle_id, _ = self.new_bundle()
        with pytest.raises(self.errors):
            bundle_store.get(bundle_id, tmp_path)

    @pytest.mark.parametrize("bad_id", MALFORMED_IDS)
    def test_malformed_id_is_rejected_by_every_method(self, bundle_store: Any, tmp_path: Path, bad_id: str) -> None:
        with pytest.raises(self.errors):
            bundle_store.url_for(bad_id)
        with pytest.raises(self.errors):
            bundle_store.exists(bad_id)
        with pytest.raises(self.errors):
            bundle_store.put(bad_id, b"data")
        with pytest.raises(self.errors):
            bundle_store.get(bad_id, tmp_path)


# --- ContainerRuntime -----------------------------------------------------------------------


class ContainerRuntimeContract:
    """Contract for :class:`~iris.plugin.protocols.ContainerRuntime` and its handles.

    Provide a ``runtime_factory`` fixture: a zero-argument callable that builds a new runtime
    instance over the same storage each time it is called (the suite builds a second instance
    to check that containers are adopted after a restart). The ``runtime`` fixture is built
    from it and closed after the test; override it only if you must.

    The commands run are ``python`` (the attribute below) and POSIX ``sh``, ``env`` and
    ``sleep`` found through ``PATH`` in ``base_env``.
    """

    #: The Python interpreter inside the container. The host's by default; a runtime that runs
    #: an image sets e.g. ``"python3"``.
    python: str = sys.executable
    #: Variables every test container gets (on top of the test's own).
    base_env: Mapping[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    #: Variables the runtime adds to a container's environment that the spec did not ask for
    #: (e.g. ``HOSTNAME`` in Docker). Everything else must be exactly the spec's env.
    allowed_extra_env: frozenset[str] = frozenset()
    #: True if the container's process ids are visible from the test process, so the suite can
    #: check that a kill also ends the container's child processes.
    shares_pid_namespace: bool = True
    #: True if processes that leave the task's process group (``setsid``, a double fork) are
    #: still ended by a kill and by ``remove`` (a container, a cgroup). Only a runtime that
    #: cannot (the process runtime without cgroups) sets False.
    escapes_are_contained: bool = True
    #: Seconds to wait for a container to reach an expected state.
    timeout: float = 60.0
    #: Label key that scopes every test's containers.
    label_key: str = "iris-contract"

    # --- fixtures and helpers ---------------------------------------------------------------

    @pytest.fixture
    def runtime(self, runtime_factory: Callable[[], Any]) -> Iterator[Any]:
        runtime = runtime_factory()
        yield runtime
        runtime.close()

    @pytest.fixture(autouse=True)
    def _clean_up_containers(self, runtime: Any) -> Iterator[None]:
        # Depends on ``runtime`` so that containers are ended before the runtime is closed.
        self._run = _token()
        self._handles: list[Any] = []
        self._runtimes: list[Any] = []
        self._escaped: list[int] = []  # pids of processes a test's task left behind
        yield
        for pid in self._escaped:  # a runtime that failed to end them must not leak them
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for handle in self._handles:
            try:
                handle.kill(grace_seconds=0)
                handle.wait(timeout=10)
                handle.remove()
            except Exception:
                pass
        for runtime in self._runtimes:
            runtime.close()

    def start(
        self,
        runtime: Any,
        argv: Sequence[str],
        cwd: Path,
        *,
        env: Mapping[str, str] | None = None,
        memory_bytes: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> Any:
        """Start a container labelled for this test; it is killed and removed afterwards."""
        spec = ContainerSpec(
            container_id=f"contract-{_token()}",
            argv=list(argv),
            cwd=cwd,
            env={**self.base_env, **(env or {})},
            memory_bytes=memory_bytes,
            labels={self.label_key: self._run, **(labels or {})},
        )
        handle = runtime.start(spec)
        self._handles.append(handle)
        return handle

    def adopt_runtime(self, runtime_factory: Callable[[], Any]) -> Any:
        """A second runtime instance over the same storage, closed after the test."""
        runtime = runtime_factory()
        self._runtimes.append(runtime)
        return runtime

    def py(self, code: str) -> list[str]:
        return [self.python, "-c", code]

    @staticmethod
    def records(handle: Any) -> list[tuple[str, bytes, bool]]:
        """``(stream, content, complete)`` of each record of the handle's log (see
        :mod:`iris.runtime.output_log`)."""
        data = handle.read_logs(0, 1 << 24)
        return [parse_record(record) for record in data.split(b"\n")[:-1]]

    @classmethod
    def logs(cls, handle: Any) -> bytes:
        """The text of the handle's log lines, both streams, a newline after each."""
        return b"".join(content + b"\n" for _, content, _ in cls.records(handle))

    @classmethod
    def stream_lines(cls, handle: Any, stream: str) -> list[bytes]:
        return [content for s, content, _ in cls.records(handle) if s == stream]

    def wait_for_output(self, handle: Any, marker: bytes) -> None:
        assert wait_until(lambda: marker in self.logs(handle), self.timeout), (
            f"{marker!r} never appeared in the logs of {handle.container_id}: {self.logs(handle)!r}"
        )

    def wait_ended(self, handle: Any) -> ContainerStatus:
        status = handle.wait(timeout=self.timeout)
        assert not status.running, f"{handle.container_id} still running after {self.timeout}s"
        return status

    # --- starting and ending ----------------------------------------------------------------

    def test_runtime_and_handle_implement_protocols(self, runtime: Any, tmp_path: Path) -> None:
        assert isinstance(runtime, ContainerRuntime)
        handle = self.start(runtime, self.py("pass"), tmp_path)
        assert isinstance(handle, ContainerHandle)
        assert handle.labels[self.label_key] == self._run
        self.wait_ended(handle)

    def test_start_command_writing_stdout_and_stderr_exits_zero_with_each_line_tagged_in_stream_order(
        self, runtime: Any, tmp_path: Path
    ) -> None:
        code = (
            "import sys\n"
            "for i in range(50):\n"
            "    print(f'out-{i}', flush=True)\n"
            "    print(f'err-{i}', file=sys.stderr, flush=True)\n"
        )
        handle = self.start(runtime, self.py(code), tmp_path)
        status = self.wait_ended(handle)
        assert status.exit_code == 0
        assert not status.oom
        records = self.records(handle)
        assert all(complete for _, _, complete in records), records
        assert self.stream_lines(handle, STDOUT) == [f"out-{i}".encode() for i in range(50)], records
        assert self.stream_lines(handle, STDERR) == [f"err-{i}".encode() for i in range(50)], records
        assert {s for s, _, _ in records} == {STDOUT, STDERR}

    def test_line_without_newline_and_long_line_are_kept_whole_across_records(self, runtime: Any, tmp_path: Path) -> None:
        long = MAX_LINE_BYTES * 2 + 5
        code = f"import sys; sys.stderr.write('x' * {long} + '\\n'); sys.stdout.write('no-newline')"
        handle = self.start(runtime, self.py(code), tmp_path)
        assert self.wait_ended(handle).exit_code == 0
        err = [(content, complete) for s, content, complete in self.records(handle) if s == STDERR]
        assert [len(c) for c, _ in err] == [MAX_LINE_BYTES, MAX_LINE_BYTES, 5]
        assert [complete for _, complete in err] == [False, False, True]
        assert [(s, c, complete) for s, c, complete in self.records(handle) if s == STDOUT] == [(STDOUT, b"no-newline", False)]
    def test_start_failing_command_reports_its_exit_code(self, runtime: Any, tmp_path: Path) -> None:
        handle = self.start(runtime, self.py("import sys; sys.exit(3)"), tmp_path)
        status = self.wait_ended(handle)
        assert status.exit_code == 3
        assert not status.oom
        assert handle.status() == status

    def test_start_env_is_exactly_the_spec_env(
        self, runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("IRIS_CONTRACT_HOST_ONLY", "must-not-leak")
        env = {"IRIS_CONTRACT_A": "alpha", "IRIS_CONTRACT_SPACES": "two words = here", "EMPTY": ""}
        handle = self.start(runtime, ["env"], tmp_path, env=env)
        assert self.wait_ended(handle).exit_code == 0
        seen = dict(line.split("=", 1) for line in self.logs(handle).decode().splitlines() if "=" in line)
        expected = {**self.base_env, **env}
        extra = set(seen) - set(expected)
        assert extra <= self.allowed_extra_env, f"unexpected variables in the container: {sorted(extra)}"
        assert {k: seen.get(k) for k in expected} == expected

    def test_start_runs_in_spec_cwd(self, runtime: Any, tmp_path: Path) -> None:
        work = tmp_path / "work dir"
        work.mkdir()
        (work / "marker.txt").write_text("found-the-marker")
        code = "import os; print(os.getcwd()); print(open('marker.txt').read())"
        handle = self.start(runtime, self.py(code), work)
        assert self.wait_ended(handle).exit_code == 0
        lines = self.logs(handle).decode().splitlines()
        assert os.path.realpath(lines[0]) == os.path.realpath(work)
        assert lines[1] == "found-the-marker"

    def test_status_of_running_container_is_running_without_exit_code(self, runtime: Any, tmp_path: Path) -> None:
        handle = self.start(runtime, ["sleep", "60"], tmp_path)
        status = handle.status()
        assert status.running
        assert status.exit_code is None

    def test_wait_with_timeout_on_running_container_returns_running(self, runtime: Any, tmp_path: Path) -> None:
        handle = self.start(runtime, ["sleep", "60"], tmp_path)
        assert handle.wait(timeout=0.1).running

    # --- kill ---------------------------------------------------------------------------

    def test_kill_sleeping_container_stops_it_within_grace(self, runtime: Any, tmp_path: Path) -> None:
        handle = self.start(runtime, ["sleep", "60"], tmp_path)
        grace = 30.0
        began = time.monotonic()
        handle.kill(grace_seconds=grace)
        # sleep obeys SIGTERM, so the kill must not need to sit out the grace period.
        assert time.monotonic() - began < grace
        status = self.wait_ended(handle)
        assert status.exit_code != 0

    def test_kill_container_ignoring_sigterm_force_kills_after_grace(self, runtime: Any, tmp_path: Path) -> None:
        code = (
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n"
        )
        handle = self.start(runtime, self.py(code), tmp_path)
        self.wait_for_output(handle, b"ready")
        handle.kill(grace_seconds=1.0)
        status = self.wait_ended(handle)
        assert status.exit_code != 0

    def test_kill_container_handling_sigterm_lets_it_finish_within_grace(self, runtime: Any, tmp_path: Path) -> None:
        code = (
            "import signal, sys, time\n"
            "def on_term(*_):\n"
            "    print('got-term', flush=True)\n"
            "    time.sleep(0.5)\n"
            "    print('cleaned-up', flush=True)\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, on_term)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n"
        )
        handle = self.start(runtime, self.py(code), tmp_path)
        self.wait_for_output(handle, b"ready")
        handle.kill(grace_seconds=30.0)
        self.wait_ended(handle)
        assert b"cleaned-up" in self.logs(handle), f"the grace period was cut short: {self.logs(handle)!r}"

    def test_kill_also_ends_child_processes(self, runtime: Any, tmp_path: Path) -> None:
        if not self.shares_pid_namespace:
            pytest.skip("needs the container's pids to be visible from the test (shares_pid_namespace)")
        handle = self.start(runtime, ["sh", "-c", "sleep 60 & echo child=$!; wait"], tmp_path)
        self.wait_for_output(handle, b"child=")
        pid = int(self.logs(handle).decode().split("child=", 1)[1].split()[0])
        assert _pid_alive(pid)
        handle.kill(grace_seconds=5.0)
        self.wait_ended(handle)
        assert wait_until(lambda: not _pid_alive(pid), self.timeout), f"child process {pid} outlived the kill"

    # A task can leave its process group (setsid) or double-fork so its process is re-parented
    # away from the task; a kill, and the removal of an ended container, must still end it.
    # (The escaped sleep outlasts the suite's timeout, so only the runtime can have ended it.)
    ESCAPE = "setsid sh -c 'sleep 900 & echo escaped=$!; wait' &"
    DOUBLE_FORK = "( sh -c 'sleep 900 & echo escaped=$!' & ) ; "

    def _escaped_pid(self, handle: Any) -> int:
        self.wait_for_output(handle, b"escaped=")
        pid = int(self.logs(handle).decode().split("escaped=", 1)[1].split()[0])
        self._escaped.append(pid)
        return pid

    def test_kill_ends_processes_that_left_the_task_with_setsid(self, runtime: Any, tmp_path: Path) -> None:
        if not self.shares_pid_namespace or not self.escapes_are_contained:
            pytest.skip("needs visible pids and a runtime that contains escaped processes (escapes_are_contained)")
        handle = self.start(runtime, ["sh", "-c", self.ESCAPE + " sleep 60"], tmp_path)
        pid = self._escaped_pid(handle)
        assert _pid_alive(pid)
        handle.kill(grace_seconds=2.0)
        self.wait_ended(handle)
        assert wait_until(lambda: not _pid_alive(pid), self.timeout), f"process {pid} (setsid) outlived the kill"

    def test_removing_an_ended_container_ends_what_it_left_running(self, runtime: Any, tmp_path: Path) -> None:
        if not self.shares_pid_namespace or not self.escapes_are_contained:
            pytest.skip("needs visible pids and a runtime that contains escaped processes (escapes_are_contained)")
        handle = self.start(runtime, ["sh", "-c", self.DOUBLE_FORK + "exit 0"], tmp_path)
        pid = self._escaped_pid(handle)
        assert self.wait_ended(handle).exit_code == 0
        assert _pid_alive(pid)  # the task ended and left it running, double-forked away
        handle.remove()
        assert wait_until(lambda: not _pid_alive(pid), self.timeout), f"process {pid} outlived its container's removal"

    def test_kill_twice_and_after_exit_is_not_an_error(self, runtime: Any, tmp_path: Path) -> None:
        running = self.start(runtime, ["sleep", "60"], tmp_path)
        running.kill(grace_seconds=1.0)
        running.kill(grace_seconds=1.0)
        assert not self.wait_ended(running).running
        ended = self.start(runtime, self.py("pass"), tmp_path)
        self.wait_ended(ended)
        ended.kill(grace_seconds=1.0)
        assert ended.status().exit_code == 0

    # --- memory -------------------------------------------------------------------------

    def test_memory_over_limit_ends_container_with_oom(self, runtime: Any, tmp_path: Path) -> None:
        code = "import time\nblob = b'x' * (300 * 1024 * 1024)\nprint('allocated', flush=True)\ntime.sleep(60)\n"
        handle = self.start(runtime, self.py(code), tmp_path, memory_bytes=100 * 1024 * 1024)
        status = self.wait_ended(handle)
        assert status.oom, status
        assert status.exit_code != 0

    def test_memory_under_limit_runs_normally(self, runtime: Any, tmp_path: Path) -> None:
        code = "blob = b'x' * (10 * 1024 * 1024); print(len(blob))"
        handle = self.start(runtime, self.py(code), tmp_path, memory_bytes=500 * 1024 * 1024)
        status = self.wait_ended(handle)
        assert status.exit_code == 0
        assert not status.oom

    # --- listing and adoption -----------------------------------------------------------

    def test_list_containers_filters_by_labels(self, runtime: Any, tmp_path: Path) -> None:
        a = self.start(runtime, self.py("pass"), tmp_path, labels={"role": "a"})
        b = self.start(runtime, ["sleep", "60"], tmp_path, labels={"role": "b"})

        def ids(labels: Mapping[str, str]) -> set[str]:
            return {h.container_id for h in runtime.list_containers(labels)}

        assert ids({self.label_key: self._run}) == {a.container_id, b.container_id}
        assert ids({self.label_key: self._run, "role": "a"}) == {a.container_id}
        assert ids({self.label_key: self._run, "role": "c"}) == set()
        assert ids({self.label_key: f"{self._run}-other"}) == set()

    def test_list_containers_from_new_runtime_adopts_running_and_ended(
        self, runtime: Any, runtime_factory: Callable[[], Any], tmp_path: Path
    ) -> None:
        ended = self.start(
            runtime, self.py("import sys; print('bye', flush=True); sys.exit(7)"), tmp_path, labels={"role": "ended"}
        )
        running = self.start(runtime, ["sleep", "60"], tmp_path, labels={"role": "running"})
        assert self.wait_ended(ended).exit_code == 7

        restarted = self.adopt_runtime(runtime_factory)
        adopted = {h.container_id: h for h in restarted.list_containers({self.label_key: self._run})}
        assert set(adopted) == {ended.container_id, running.container_id}

        again_ended = adopted[ended.container_id]
        assert again_ended.labels["role"] == "ended"
        status = again_ended.status()
        assert (status.running, status.exit_code, status.oom) == (False, 7, False)
        assert b"bye" in self.logs(again_ended)

        again_running = adopted[running.container_id]
        assert again_running.status().running
        # After a real restart the old process is gone and init reaps the container's processes.
        # Here the first instance still lives, so it does the reaping, as init would.
        reaper = threading.Thread(target=running.wait, kwargs={"timeout": self.timeout}, daemon=True)
        reaper.start()
        again_running.kill(grace_seconds=5.0)
        assert not self.wait_ended(again_running).running
        reaper.join(self.timeout)
        assert not running.status().running

    # --- logs and removal ---------------------------------------------------------------

    def test_read_logs_with_offset_and_max_bytes_returns_the_slice(self, runtime: Any, tmp_path: Path) -> None:
        handle = self.start(runtime, self.py("import sys; sys.stdout.write('0123456789abcdef')"), tmp_path)
        assert self.wait_ended(handle).exit_code == 0
        assert self.records(handle) == [(STDOUT, b"0123456789abcdef", False)]
        whole = handle.read_logs(0, 1 << 20)
        assert handle.log_size() == len(whole) == len(encode(STDOUT, b"0123456789abcdef", complete=False))
        assert handle.read_logs(0, 4) == whole[:4]
        assert handle.read_logs(10, 100) == whole[10:]
        assert handle.read_logs(4, 3) == whole[4:7]
        assert handle.read_logs(len(whole), 10) == b""

    def test_remove_ended_container_deletes_it(self, runtime: Any, tmp_path: Path) -> None:
        handle = self.start(runtime, self.py("print('x')"), tmp_path)
        self.wait_ended(handle)
        handle.remove()
        assert handle.container_id not in {h.container_id for h in runtime.list_containers({self.label_key: self._run})}


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (an unreaped corpse is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


# --- VmManager ------------------------------------------------------------------------------


class VmManagerContract:
    """Contract for :class:`~iris.plugin.protocols.VmManager`.

    Provide a ``vm_manager`` fixture (and close it in its teardown). Override
    :meth:`slice_request` if your provider needs a template or attributes to create a slice.
    Every slice a test creates is deleted afterwards.
    """

    #: VMs per slice the suite asks for.
    vm_count: int = 2
    #: Scale group name on every request.
    scale_group: str = "contract"
    #: Seconds a delete may take to show in ``describe_slice``/``list_slices``.
    settle_timeout: float = 60.0
    #: Label key that scopes every test's slices.
    label_key: str = "iris-contract"

    @pytest.fixture(autouse=True)
    def _clean_up_slices(self, vm_manager: Any) -> Iterator[None]:
        self._run = _token()
        self._created: list[str] = []
        yield
        for slice_id in self._created:
            try:
                vm_manager.delete_slice(slice_id)
            except Exception:
                pass

    def slice_request(self, slice_id: str, labels: Mapping[str, str]) -> SliceRequest:
        """The request the suite sends for ``slice_id``; override to add provider specifics."""
        return SliceRequest(
            slice_id=slice_id, scale_group=self.scale_group, vm_count=self.vm_count, labels=dict(labels)
        )

    def kill_slice(self, vm_manager: Any, info: SliceInfo) -> None:
        """Make the slice's machines die behind the manager's back (a crash, a preemption), for
        the failure-reporting test. Override it; the default skips that test."""
        pytest.skip(f"{type(self).__name__} does not override kill_slice, so failure reporting is not tested")

    def create(self, vm_manager: Any, role: str = "a") -> SliceInfo:
        """Create a slice labelled for this test (and with ``role``); deleted afterwards."""
        slice_id = f"contract-{_token()}"
        self._created.append(slice_id)
        return vm_manager.create_slice(self.slice_request(slice_id, {self.label_key: self._run, "role": role}))

    def ids(self, vm_manager: Any, **labels: str) -> set[str]:
        return {s.slice_id for s in vm_manager.list_slices({self.label_key: self._run, **labels})}

    def test_vm_manager_implements_protocol(self, vm_manager: Any) -> None:
        assert isinstance(vm_manager, VmManager)

    def test_create_slice_returns_requested_id_and_vm_count(self, vm_manager: Any) -> None:
        info = self.create(vm_manager)
        assert isinstance(info, SliceInfo)
        assert info.slice_id == self._created[0]
        assert info.scale_group == self.scale_group
        assert len(info.vms) == self.vm_count
        assert len({vm.vm_id for vm in info.vms}) == self.vm_count
        assert info.labels[self.label_key] == self._run

    def test_create_slice_twice_with_same_id_returns_same_slice_without_duplicate(self, vm_manager: Any) -> None:
        first = self.create(vm_manager)
        second = vm_manager.create_slice(self.slice_request(first.slice_id, {self.label_key: self._run, "role": "a"}))
        assert second.slice_id == first.slice_id
        assert {vm.vm_id for vm in second.vms} == {vm.vm_id for vm in first.vms}
        listed = [s.slice_id for s in vm_manager.list_slices({self.label_key: self._run})]
        assert listed == [first.slice_id]

    def test_list_slices_filters_by_labels(self, vm_manager: Any) -> None:
        a = self.create(vm_manager, role="a")
        b = self.create(vm_manager, role="b")
        assert self.ids(vm_manager) == {a.slice_id, b.slice_id}
        assert self.ids(vm_manager, role="a") == {a.slice_id}
        assert self.ids(vm_manager, role="c") == set()
        assert {s.slice_id for s in vm_manager.list_slices({self.label_key: f"{self._run}-other"})} == set()

    def test_describe_slice_unknown_returns_none(self, vm_manager: Any) -> None:
        assert vm_manager.describe_slice(f"contract-missing-{_token()}") is None

    def test_describe_slice_known_returns_it(self, vm_manager: Any) -> None:
        info = self.create(vm_manager)
        described = vm_manager.describe_slice(info.slice_id)
        assert described is not None
        assert described.slice_id == info.slice_id
        assert len(described.vms) == self.vm_count

    def test_slice_whose_machines_die_is_reported_failed_with_an_error(self, vm_manager: Any) -> None:
        info = self.create(vm_manager)
        self.kill_slice(vm_manager, info)

        def reported() -> bool:
            found = vm_manager.describe_slice(info.slice_id)
            return found is not None and found.state in (SliceState.FAILED, SliceState.PREEMPTED) and bool(found.error)

        assert wait_until(reported, timeout=self.settle_timeout), vm_manager.describe_slice(info.slice_id)
        listed = {s.slice_id: s for s in vm_manager.list_slices({self.label_key: self._run})}
        assert listed[info.slice_id].state in (SliceState.FAILED, SliceState.PREEMPTED)

    def test_delete_slice_removes_it_and_deleting_again_is_not_an_error(self, vm_manager: Any) -> None:
        keep = self.create(vm_manager, role="keep")
        gone = self.create(vm_manager, role="gone")
        vm_manager.delete_slice(gone.slice_id)
        assert wait_until(
            lambda: vm_manager.describe_slice(gone.slice_id) is None and gone.slice_id not in self.ids(vm_manager),
            self.settle_timeout,
            interval=0.1,
        )
        vm_manager.delete_slice(gone.slice_id)
        assert self.ids(vm_manager) == {keep.slice_id}


# --- Tunnel ---------------------------------------------------------------------------------


class _Listener:
    """A TCP listener on 127.0.0.1 that a tunnel's URL should lead to."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.address = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def accepted(self, timeout: float) -> bool:
        """True if a connection arrives within ``timeout`` seconds."""
        self._sock.settimeout(timeout)
        try:
            conn, _ = self._sock.accept()
        except (TimeoutError, socket.timeout):
            return False
        conn.close()
        return True

    def close(self) -> None:
        self._sock.close()


class TunnelContract:
    """Contract for :class:`~iris.plugin.protocols.Tunnel`.

    Provide a ``tunnel`` fixture. ``tunnel_target`` is a local TCP listener by default, with an
    ``address`` (``http://host:port``, the form the host passes to ``connect``) and
    ``accepted(timeout) -> bool``; a tunnel that reaches another network overrides it with a
    target on that network.
    """

    #: Seconds to wait for a connection through the tunnel.
    timeout: float = 30.0

    @pytest.fixture
    def tunnel_target(self) -> Iterator[Any]:
        listener = _Listener()
        yield listener
        listener.close()

    def test_tunnel_implements_protocol(self, tunnel: Any) -> None:
        assert isinstance(tunnel, Tunnel)

    def test_connect_yields_url_with_scheme_and_host(self, tunnel: Any, tunnel_target: Any) -> None:
        with tunnel.connect(tunnel_target.address) as url:
            parsed = urlparse(url)
            assert parsed.scheme, url
            assert parsed.hostname, url
            assert parsed.port, url

    def test_connect_url_reaches_the_address(self, tunnel: Any, tunnel_target: Any) -> None:
        with tunnel.connect(tunnel_target.address) as url:
            parsed = urlparse(url)
            with socket.create_connection((parsed.hostname, parsed.port), timeout=self.timeout):
                assert tunnel_target.accepted(self.timeout)

    def test_connect_again_after_exit_yields_a_url(self, tunnel: Any, tunnel_target: Any) -> None:
        with tunnel.connect(tunnel_target.address) as first:
            assert urlparse(first).scheme
        with tunnel.connect(tunnel_target.address) as second:
            assert urlparse(second).scheme


CONTRACTS: dict[str, type] = {
    "vm_manager": VmManagerContract,
    "container_runtime": ContainerRuntimeContract,
    "bundle_store": BundleStoreContract,
    "tunnel": TunnelContract,
}
"""The contract suite for each seam in :data:`iris.plugin.hookspecs.SEAMS`."""
