"""One benchmark at a time per host: a host-wide lock that tune, verify, bench and the ladder take.

Why: two measurements on the same cores measure each other. A verify timer
firing during a tune, two instances' timers at once, or `verify.yml` while a
user benchmarks would each report the other's load as their own latency.

The lock is an advisory flock(2) on one file for every user of the host
(`/run/lock/sdagent-bench.lock` where that directory exists, else in the temp
directory; SDAGENT_LOCK_FILE overrides). A lock file only this process's mount
namespace can see (a unit's PrivateTmp=yes /tmp, an unshare(1)d tmpfs) would
not be host-wide: it is refused (exit 2). Opened read-only and without following
symlinks, so no user can make another's process write through it. The kernel
drops the lock with its holder, crashed or not; the holder is named from
/proc/locks when another process has to wait.

A flock belongs to the open file, not the process: every process that holds a
descriptor of it holds the lock. The measurement workers inherit the held
descriptor (`held_fds`, workers.parent), so when the agent is SIGKILLed the
lock stays held until its last worker has gone too, and the next benchmark
never measures beside an orphan.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from sdagent.errors import BadInput, Exit, SdagentError

LOCK_ENV = "SDAGENT_LOCK_FILE"
LOCK_NAME = "sdagent-bench.lock"

#: Descriptors of the locks this process holds now (bench_lock adds and removes them).
_HELD: set[int] = set()


def held_fds() -> tuple[int, ...]:
    """The descriptors of the host locks this process holds: a child started now should inherit them."""
    return tuple(sorted(_HELD))


def lock_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(LOCK_ENV):
        return Path(env[LOCK_ENV])
    run_lock = Path("/run/lock")
    if run_lock.is_dir() and os.access(run_lock, os.W_OK | os.X_OK):
        return run_lock / LOCK_NAME
    return Path(tempfile.gettempdir()) / LOCK_NAME


@dataclass(frozen=True)
class Mount:
    """One line of /proc/PID/mountinfo (proc(5)): what matters for sharing a file."""

    device: str  # major:minor
    root: str  # the directory of the filesystem mounted here ("/" unless a bind mount of a subtree)
    point: str  # where it is mounted in that namespace


def parse_mountinfo(text: str) -> list[Mount]:
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 5:
            out.append(Mount(f[2], _unescape(f[3]), _unescape(f[4])))
    return out


def _unescape(field: str) -> str:
    """mountinfo octal-escapes space, tab, newline and backslash."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount a path lives on: the last-mounted entry whose mount point is its longest prefix."""
    best: Mount | None = None
    for m in mounts:
        pre = m.point.rstrip("/") + "/"
        if (path == m.point or path.startswith(pre) or m.point == "/") and \
                (best is None or len(m.point) >= len(best.point)):
            best = m
    return best


def private_mount(path: str, own: str, init: str | None) -> str | None:
    """Why a lock file at `path` (a resolved absolute path) is private to this process's mount namespace,
    or None. `own` is /proc/self/mountinfo, `init` PID 1's (None where unreadable).

    Private when its mount is systemd's PrivateTmp= (a bind of /tmp/systemd-private-*), or when PID 1's
    namespace has no mount of the same filesystem subtree at that point (unshare(1), a container's own
    tmpfs): then another unit's or a login shell's run takes a different lock, and the lock is no longer
    host-wide.
    """
    m = mount_of(path, parse_mountinfo(own))
    if m is None:
        return None
    if "/systemd-private-" in m.root:
        return f"{m.point} is systemd's PrivateTmp (a private bind of {m.root})"
    if init is not None and m.point != "/":
        if not any(x.device == m.device and x.root == m.root and x.point == m.point
                   for x in parse_mountinfo(init)):
            return f"{m.point} (device {m.device}) is mounted in this process's mount namespace only"
    return None


def check_shared(path: Path, read: Callable[[str], str | None] | None = None) -> None:
    """Refuse (exit 2) a lock path other processes of this host cannot see (private_mount)."""
    def _read(p: str) -> str | None:
        try:
            return Path(p).read_text()
        except OSError:
            return None

    read = read or _read
    own = read("/proc/self/mountinfo")
    if own is None:
        return
    real = os.path.realpath(path.parent) + "/" + path.name
    why = private_mount(real, own, read("/proc/1/mountinfo"))
    if why:
        raise BadInput(f"the benchmark lock {path} is private to this process's mount namespace: {why}; "
                       f"other runs would take another lock and measure beside this one. Set {LOCK_ENV} "
                       f"to a path every run shares (the roles make /run/lock/sdagent)")


def _open(path: Path) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(3):
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            try:
                return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue  # another process created it meanwhile: open theirs
        except OSError as exc:
            raise SdagentError(f"cannot open the benchmark lock {path}: {exc.strerror} "
                               f"(set {LOCK_ENV} to another path)", Exit.ERROR) from None
    raise SdagentError(f"cannot open the benchmark lock {path}", Exit.ERROR)


def holder(fd: int, locks_text: str | None = None) -> str:
    """Who holds the flock on this file: 'pid N (command line)', from /proc/locks."""
    ino = os.fstat(fd).st_ino
    if locks_text is None:
        try:
            locks_text = Path("/proc/locks").read_text()
        except OSError:
            return "another process"
    for line in locks_text.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234567 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(ino):
            pid = parts[4]
            try:
                import psutil

                cmd = " ".join(psutil.Process(int(pid)).cmdline())[:200]
            except Exception:  # noqa: BLE001 - the holder may just have exited
                cmd = "?"
            return f"pid {pid} ({cmd})"
    return "another process"


@dataclass(frozen=True)
class HeldLock:
    """The host lock as its holder got it: where, and how long it waited (seconds) for another holder."""

    path: Path
    waited_s: float


@contextlib.contextmanager
def bench_lock(what: str, timeout_s: float, *, path: Path | None = None, poll_s: float = 0.5,
               on_wait: Callable[[str], None] | None = None,
               clock: Callable[[], float] = time.monotonic) -> Iterator[HeldLock]:
    """Hold the host's benchmark lock for `what`; wait up to `timeout_s`, then exit 5 naming the holder.

    Yields the lock and the seconds waited for it: figures of the process's own start-up (verify's)
    must not count another benchmark's time. A timeout that is not a finite number >= 0 (NaN would
    wait forever) and a lock path private to this mount namespace are refused (exit 2) before
    anything is opened.
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) \
            or timeout_s < 0:
        raise BadInput(f"invalid lock timeout {timeout_s!r}: a finite number of seconds >= 0")
    p = path or lock_path()
    check_shared(p)
    fd = _open(p)
    try:
        start = clock()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                who = holder(fd)
                if clock() - start >= timeout_s:
                    raise SdagentError(f"{what}: another benchmark holds the host lock {p} ({who}); waited "
                                       f"{timeout_s:g} s (--lock-timeout): not measuring beside it",
                                       Exit.INCONCLUSIVE) from None
                if on_wait is not None and not told:
                    on_wait(f"{what}: waiting for the host benchmark lock {p}, held by {who}")
                    told = True
                time.sleep(poll_s)
        _HELD.add(fd)
        yield HeldLock(p, clock() - start)
    finally:
        _HELD.discard(fd)
        os.close(fd)  # releases the lock (once no worker holds a copy)
