"""Job logs: bytes from workers become lines in the job's log; readers page through them with a
cursor (one position per job read, so a reader of a job and its children resumes exactly).

A worker sends an attempt's log as it is on disk: records, a line of one stream each
(:mod:`iris.runtime.output_log`); each record becomes a line that keeps its stream."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from iris.cluster.controller.state import Attempt, Job, LogLine, Task
from iris.errors import IrisError
from iris.runtime.output_log import HEADS, parse_record

MAX_LOG_LINES_PER_READ = 10_000


class BadCursor(IrisError):
    """A log cursor that this controller did not hand out."""


def encode_cursor(positions: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(positions, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in data.items()):
            return data
    except (ValueError, TypeError):
        pass
    raise BadCursor(f"log cursor {cursor[:40]!r} is invalid")


def _line(task_index: int, attempt_id: int, now: float, record: bytes) -> LogLine:
    stream, content, _ = parse_record(record)
    return LogLine(task_index, attempt_id, now, content.decode("utf-8", "replace"), stream)


class Logs:
    """Appending worker output and reading it back (called with the controller's lock held)."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock

    def append(self, job: Job, task: Task, attempt: Attempt, offset: int, data: bytes) -> bool:
        """Add the bytes the worker sent from ``offset``; True if whole lines were added.

        Bytes already received are skipped; a gap (bytes missing before ``offset``) is refused
        and the worker resends from the acknowledged offset."""
        if offset > attempt.log_offset:
            return False
        skip = attempt.log_offset - offset
        if skip >= len(data):
            return False
        data = data[skip:]
        attempt.log_offset += len(data)
        buffer = attempt.log_partial + data
        *complete, rest = buffer.split(b"\n")
        attempt.log_partial = rest
        if not complete:
            return False
        now = self._clock()
        index, attempt_id = task.index, attempt.attempt_id
        heads = HEADS
        for record in complete:  # _line, inlined: a busy task sends thousands of lines at once
            stream = heads.get(record[:3])
            if stream is None:
                job.logs.append(LogLine(index, attempt_id, now, record.decode("utf-8", "replace")))
            else:
                job.logs.append(LogLine(index, attempt_id, now, record[3:].decode("utf-8", "replace"), stream))
        return True

    def flush_partial(self, job: Job, task: Task, attempt: Attempt) -> None:
        """The attempt ended: an unfinished last record (its log was cut short) is a line."""
        if attempt.log_partial:
            job.logs.append(_line(task.index, attempt.attempt_id, self._clock(), attempt.log_partial))
            attempt.log_partial = b""

    @staticmethod
    def apply_tail(jobs: list[Job], positions: dict[str, int], tail: int) -> None:
        """Move the positions so that the next read returns the last ``tail`` lines overall."""
        candidates = []
        for job in jobs:
            for index in range(max(0, len(job.logs) - tail), len(job.logs)):
                candidates.append((job.logs[index].timestamp, job.job_id, index))
        candidates.sort()
        kept = candidates[-tail:]
        for job in jobs:
            indices = [i for _, jid, i in kept if jid == job.job_id]
            positions[job.job_id] = min(indices) if indices else len(job.logs)

    @staticmethod
    def read(
        jobs: list[Job], positions: dict[str, int], max_lines: int, since: float, settled: Callable[[Job], bool]
    ) -> tuple[list[tuple[str, LogLine]], bool]:
        """Lines after ``positions`` in time order (advancing them), and whether every job read
        is over, its last lines in (``settled``: a killed task's worker has sent what the task
        printed as it stopped), and all its lines returned."""
        limit = min(max_lines or MAX_LOG_LINES_PER_READ, MAX_LOG_LINES_PER_READ)
        merged: list[tuple[float, int, int, Job, LogLine]] = []
        for order, job in enumerate(jobs):
            start = positions.get(job.job_id, 0)
            for index in range(start, min(len(job.logs), start + limit)):
                line = job.logs[index]
                merged.append((line.timestamp, order, index, job, line))
        if len(jobs) > 1:
            merged.sort(key=lambda m: (m[0], m[1], m[2]))
        out: list[tuple[str, LogLine]] = []
        for _, _, index, job, line in merged[:limit]:
            positions[job.job_id] = index + 1
            if line.timestamp >= since:
                out.append((job.job_id, line))
        finished = all(j.state.is_terminal and positions.get(j.job_id, 0) >= len(j.logs) and settled(j) for j in jobs)
        return out, finished
