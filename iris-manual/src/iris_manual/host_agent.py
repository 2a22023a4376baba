"""What the manual provider runs on a host over SSH: the shared start of its agent scripts.

The VmManager (workers) and the ControllerHost (the controller) each send a small script to the
host's Python (``python3 -c SCRIPT ACTION ...``; stdlib only, nothing installed there). Both
start with :data:`PRELUDE`: the helpers every action needs (is a recorded process still the one
started, ``docker`` with the record's environment, start a process in its own session with a
log, stop one with a grace period, write a record atomically)."""

from __future__ import annotations

PRELUDE = r'''
import json, os, shutil, signal, subprocess, sys, time

def start_time(pid):
    """The process's start time (clock ticks since boot), or None if it is gone or a zombie:
    with the pid, what tells a recorded process from a later one given the same pid."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]

def process_alive(rec):
    return bool(rec.get("pid")) and start_time(rec["pid"]) == rec.get("start_time")

def docker(*args, env=None, check=False):
    done = subprocess.run(["docker", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check and done.returncode != 0:
        sys.stderr.write("docker %s: %s\n" % (args[0], (done.stderr.strip() or done.stdout.strip() or "failed")))
        sys.exit(3)
    return done

def spawn(argv, directory, log_name, env):
    """Start argv in its own session in directory, its output appended to log_name there;
    (pid, start time)."""
    with open(os.path.join(directory, log_name), "ab") as log:
        child = subprocess.Popen(argv, cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
    return child.pid, start_time(child.pid)

def terminate(rec, grace):
    """SIGTERM the recorded process (it stops what it started, then exits); SIGKILL its process
    group after grace seconds. True if it had to be killed."""
    if not process_alive(rec):
        return False
    os.kill(rec["pid"], signal.SIGTERM)
    deadline = time.time() + grace
    while process_alive(rec) and time.time() < deadline:
        time.sleep(0.05)
    if process_alive(rec):
        os.killpg(rec["pid"], signal.SIGKILL)
        return True
    return False

def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}

def write_json(path, data):
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)
'''
