"""Printing a job's log lines where the task wrote them, in `iris run` and `iris job logs`."""

from __future__ import annotations

import sys
from typing import Any


def print_log_line(line: Any, label: str, flush: bool = True) -> None:
    """Print ``line`` (an ``iris.client.LogLine``) after ``label``: a line of the task's stdout
    on stdout, of its stderr on stderr (so ``2>/dev/null`` hides what the task wrote there), and
    the worker's lines about the task's environment on stderr, marked ``[iris env] ``.

    stdout is flushed before anything goes to stderr, so a terminal that shows both shows them
    in the order they came."""
    stream = line.stream
    if stream == "stdout":
        sys.stdout.write(f"{label}{line.data}\n")
        if flush:
            sys.stdout.flush()
        return
    sys.stdout.flush()
    marker = ""
    if stream == "env":
        from iris.job.records import ENVIRONMENT_LOG_PREFIX  # here: `iris --help` imports no iris

        marker = ENVIRONMENT_LOG_PREFIX
    sys.stderr.write(f"{label}{marker}{line.data}\n")
    sys.stderr.flush()
