"""An attempt's output log: one file of records, one line of one stream each.

A container's stdout and stderr are captured apart, as Docker's and Kubernetes' log files keep
them, and written to one append-only file as records::

    <stream><end> <content>\\n

``stream`` is one byte: ``o`` (stdout), ``e`` (stderr) or ``v`` (the worker's lines about the
task's environment); ``end`` is a space when the task ended the line with a newline, ``+`` when
it did not (a piece of a line longer than :data:`MAX_LINE_BYTES`, or the unfinished last bytes
of a stream). ``content`` never holds a newline. Within a stream, records are in the order the
task wrote them; between streams, in the order the runtime read them (as with any two pipes).

The file is the bytes :meth:`ContainerHandle.read_logs <iris.plugin.protocols.ContainerHandle>`
returns: the worker ships them by byte offset and the controller turns each record into a log
line with its stream (:func:`parse_record`). Both built-in runtimes keep theirs with
:class:`OutputLog`; a runtime of a plugin can too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

STDOUT = "stdout"
STDERR = "stderr"
ENV = "env"
#: Every stream a log line can come from, in the order of their proto enum values.
STREAMS = (STDOUT, STDERR, ENV)

_TAG = {STDOUT: ord("o"), STDERR: ord("e"), ENV: ord("v")}
_STREAM = {tag: stream for stream, tag in _TAG.items()}
#: The first three bytes of a record, and the stream they say (for readers of many records).
HEADS = {bytes((tag, end, 32)): stream for stream, tag in _TAG.items() for end in (32, 43)}
_SCAN_BYTES = 4 << 20
#: A longer line is cut into records of at most this many bytes (as Docker cuts at 16 KiB).
MAX_LINE_BYTES = 16 * 1024


def encode(stream: str, content: bytes, complete: bool = True) -> bytes:
    """One record of ``stream``; ``content`` must hold no newline."""
    return bytes((_TAG[stream], 32 if complete else 43, 32)) + content + b"\n"


def encode_text(stream: str, text: str) -> bytes:
    """Records for each line of ``text`` (the worker's own messages)."""
    return b"".join(encode(stream, line.encode()) for line in text.split("\n"))


def parse_record(record: bytes) -> tuple[str, bytes, bool]:
    """``(stream, content, complete)`` of one record without its newline. Bytes that are not a
    record (a file of another kind) are one whole line of stdout."""
    if len(record) >= 3 and record[0] in _STREAM and record[1] in (32, 43) and record[2] == 32:
        return _STREAM[record[0]], record[3:], record[1] == 32
    return STDOUT, record, True


def records(stream: str, data: bytes, final: bool) -> tuple[bytes, int]:
    """Records for the bytes ``data`` a task wrote to ``stream``, and how many bytes of ``data``
    they hold: every whole line, pieces of a line that reached :data:`MAX_LINE_BYTES`, and with
    ``final`` (the stream has ended) the unfinished rest. What is left is kept by the caller
    until more comes."""
    last = data.rfind(b"\n")
    if last >= 0:  # the common case, whole lines none too long: one join, no loop per line
        lines = data[:last].split(b"\n")
        if max(map(len, lines)) <= MAX_LINE_BYTES and len(data) - last - 1 < MAX_LINE_BYTES:
            head = bytes((_TAG[stream], 32, 32))
            out = head + (b"\n" + head).join(lines) + b"\n"
            if final and last + 1 < len(data):
                return out + encode(stream, data[last + 1 :], complete=False), len(data)
            return out, last + 1
    out = []
    start = 0
    n = len(data)
    while start < n:
        newline = data.find(b"\n", start, start + MAX_LINE_BYTES + 1)
        if newline >= 0:
            out.append(encode(stream, data[start:newline]))
            start = newline + 1
        elif n - start >= MAX_LINE_BYTES:
            out.append(encode(stream, data[start : start + MAX_LINE_BYTES], complete=False))
            start += MAX_LINE_BYTES
        elif final:
            out.append(encode(stream, data[start:], complete=False))
            start = n
        else:
            break
    return b"".join(out), start


class OutputLog:
    """The record file at ``path``: what ``log_size`` and ``read_logs`` of a container read, and
    how its capture appends to it. Appends come from one writer at a time (the caller's lock)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def read(self, offset: int, max_bytes: int) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return f.read(max_bytes)
        except OSError:
            return b""

    def append(self, data: bytes) -> None:
        if data:
            with open(self.path, "ab") as f:
                f.write(data)

    def captured(self) -> dict[str, int]:
        """How many bytes of each stream the file holds (what a capture resuming after a
        restart skips): each record's content, and its newline when it had one."""
        counts = dict.fromkeys(STREAMS, 0)
        rest = b""
        try:
            with open(self.path, "rb") as f:
                while chunk := f.read(_SCAN_BYTES):  # a piece at a time: the log may be large
                    *whole, rest = (rest + chunk).split(b"\n")
                    for record in whole:  # a torn last record (no newline) holds nothing yet
                        stream, content, complete = parse_record(record)
                        counts[stream] += len(content) + (1 if complete else 0)
        except OSError:
            pass
        return counts


class LineWriter:
    """Turns chunks of a task's streams, as a capture reads them, into records appended to an
    :class:`OutputLog`, keeping each stream's unfinished line until its end comes.

    ``skip``: bytes of each stream already in the log (:meth:`OutputLog.captured`), dropped from
    the start of what comes, for a capture that replays a stream from its beginning."""

    def __init__(self, log: OutputLog, skip: dict[str, int] | None = None):
        self._log = log
        self._skip = dict(skip or {})
        self._pending: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes) -> None:
        skip = self._skip.get(stream, 0)
        if skip:
            self._skip[stream] = max(0, skip - len(data))
            data = data[skip:]
            if not data:
                return
        buffered = self._pending.get(stream, b"") + data
        out, used = records(stream, buffered, final=False)
        self._pending[stream] = buffered[used:]
        self._log.append(out)

    def close(self, streams: Iterable[str] | None = None) -> None:
        """The streams ended: their unfinished lines are records too."""
        for stream in list(streams if streams is not None else self._pending):
            out, _ = records(stream, self._pending.pop(stream, b""), final=True)
            self._log.append(out)
