"""Run a cloudpickled ``(fn, args, kwargs)`` inside a task: ``python run_callable.py FILE [RESULT_FILE]``.

The worker copies this file into every task environment (``iris-runner/run_callable.py``) and
runs it with that environment's interpreter, where Iris is not installed: it imports only the
standard library and cloudpickle (which every task environment has), never ``iris``.

An exception prints its traceback to stderr and exits 1; ``sys.exit`` inside ``fn`` is honoured.
With ``RESULT_FILE``, the outcome is written for the worker to send to the controller: the
cloudpickled return value to ``RESULT_FILE``, or, when ``fn`` raised, the cloudpickled
``(exception, formatted traceback)`` to ``RESULT_FILE`` + ``.error`` (``(None, traceback)`` if the
exception itself cannot be pickled).
"""

from __future__ import annotations

import os
import sys
import traceback


def main(path: str, result_path: str = "") -> int:
    import cloudpickle

    try:
        with open(path, "rb") as f:
            fn, args, kwargs = cloudpickle.load(f)
    except ModuleNotFoundError as exc:
        print(
            f"iris: cannot load the submitted callable: module {exc.name!r} is not importable in the task. "
            "Functions are pickled by reference to their module; submit with a workspace that contains it "
            "(IrisClient.remote(url, workspace=Path('.'))), or define the function in the script you run.",
            file=sys.stderr,
        )
        return 1
    try:
        value = fn(*args, **kwargs)
    except SystemExit:
        raise
    except BaseException as exc:
        traceback.print_exc()
        sys.stderr.flush()
        if result_path:
            _write(result_path + ".error", (exc, traceback.format_exc()), (None, traceback.format_exc()))
        return 1
    if result_path and not _write(result_path, value):
        return 1
    return 0


_NONE = object()  # no fallback


def _write(path: str, outcome: object, fallback: object = _NONE) -> bool:
    """Write the outcome (or the fallback if it cannot be pickled); False if neither could be."""
    import cloudpickle

    for candidate in (outcome, fallback):
        if candidate is _NONE:
            continue
        try:
            data = cloudpickle.dumps(candidate)
        except Exception as exc:  # noqa: BLE001
            what = "exception" if path.endswith(".error") else "result"
            print(f"iris: the callable's {what} cannot be pickled: {exc}", file=sys.stderr)
            continue
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        return True
    return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""))
