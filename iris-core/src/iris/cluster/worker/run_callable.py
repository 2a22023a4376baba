"""Run a cloudpickled ``(fn, args, kwargs)`` inside a task: ``python -m iris.cluster.worker.run_callable FILE``.

An exception prints its traceback to stderr and exits 1; ``sys.exit`` inside ``fn`` is honoured.
"""

from __future__ import annotations

import sys
import traceback


def main(path: str) -> int:
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
        fn(*args, **kwargs)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
