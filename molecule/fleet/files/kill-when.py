"""Fault injection inside a fleet container: wait for a process, then kill.

    kill-when.py PATTERN user USER DELAY    SIGKILL every process of USER, DELAY s after
                                            a process whose argv contains PATTERN appears
                                            (the OOM killer taking the benchmark down)
    kill-when.py PATTERN host - DELAY       SIGTERM to PID 1 (the container stops: a host
                                            that dies mid-run)

PATTERN is a NUL-separated argv fragment, written with '|' between words
("bin/pip|install"). Gives up after 15 minutes. Started with `podman exec -d`.
"""
import os
import pwd
import signal
import sys
import time

pattern, mode, user, delay = sys.argv[1].replace("|", "\0").encode(), sys.argv[2], sys.argv[3], float(sys.argv[4])


def pids():
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                yield int(p), open(f"/proc/{p}/cmdline", "rb").read(), os.stat(f"/proc/{p}").st_uid
            except OSError:
                continue


deadline = time.time() + 900
while time.time() < deadline:
    if any(pattern in cmd for pid, cmd, _ in pids() if pid != os.getpid()):
        time.sleep(delay)
        if mode == "host":
            os.kill(1, signal.SIGTERM)
        else:
            uid = pwd.getpwnam(user).pw_uid
            for pid, _, owner in pids():
                if owner == uid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
