"""One benchmark at a time per host: a host-wide lock that tune, verify, bench and the ladder take.

Why: two measurements on the same cores measure each other. A verify timer
firing during a tune, two instances' timers at once, or `verify.yml` while a
user benchmarks would each report the other's load as their own latency.

The lock is an advisory flock(2) on one file for every user of the host
(`/run/lock/sdagent-bench.lock` where that directory exists, else in the temp
directory; SDAGENT_LOCK_FILE overrides). Opened read-only and without following
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
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from sdagent.errors import Exit, SdagentError

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
    must not count another benchmark's time.
    """
    p = path or lock_path()
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
