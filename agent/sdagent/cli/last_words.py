"""SIGTERM within seconds, even while the main thread is inside one long native call.

Why: Python runs a signal handler only between bytecodes, in the main thread. One native
call (a 2048x2048 attention or VAE convolution) can last minutes; a unit's SIGTERM then
waits for it (122 s were seen). PyTorch releases the GIL inside its operators, so a
watchdog thread can act meanwhile.

How: the C-level handler writes the signal number to a wakeup pipe
(signal.set_wakeup_fd); the watchdog thread reads it. If the Python-level handler has
not run `GRACE_S` seconds later (the main thread is stuck in native code), the watchdog
runs the registered last words (verify's terminated record), says one line and ends
the process with os._exit(143): the kernel releases the host lock and the memory.
When the handler did run, the normal unwinding (every `finally`) is left to finish.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable

from sdagent.errors import Exit

#: Seconds the main thread has to reach its own SIGTERM handler before the watchdog ends the process.
GRACE_S = 3.0

_words: list[Callable[[], None]] = []
_handled = threading.Event()
_installed = False


def register(fn: Callable[[], None]) -> None:
    """Run `fn` before a forced exit (best effort: its errors are ignored)."""
    _words.append(fn)


def clear() -> None:
    _words.clear()


def handled() -> None:
    """The Python-level SIGTERM handler ran: normal unwinding is under way."""
    _handled.set()


def _watch(fd: int, grace_s: float) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGTERM in data:
            if _handled.wait(grace_s):
                return
            for fn in list(_words):
                try:
                    fn()
                except BaseException:  # noqa: BLE001 - last words never stop the exit
                    pass
            try:
                os.write(2, b"sdagent: terminated\n")
            finally:
                os._exit(int(Exit.TERMINATED))


def install(grace_s: float = GRACE_S) -> None:
    """Start the watchdog (main thread only; once per process)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(r)
        os.close(w)
        return
    _installed = True
    threading.Thread(target=_watch, args=(r, grace_s), name="sdagent-sigterm-watchdog", daemon=True).start()
