"""Marking where a retried task's output starts again, in `iris run` and `iris job logs`."""

from __future__ import annotations

from typing import Any


class AttemptMarks:
    """Remembers each task's attempt in a log stream and says when a line comes from a new one.

    A task retried after a failure prints its output again; without a mark the attempts' lines
    run together. The mark is a status line (stderr), so the job's own output stays as it was.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], int] = {}

    def mark(self, line: Any, label: str) -> str | None:
        """The status line to print before ``line`` (``label`` names its task), or None."""
        key = (line.job_id, line.task_index)
        previous = self._last.get(key)
        self._last[key] = line.attempt_id
        if line.attempt_id == previous or (previous is None and line.attempt_id == 0):
            return None
        return f"iris: {label}attempt {line.attempt_id}" + (f" (after attempt {previous})" if previous is not None else "")
