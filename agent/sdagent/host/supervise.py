"""How `sdagent exec` starts the command: replaced by it, or its parent when an abort needs explaining.

Why a parent at all: a plan that preloads libiomp5 can meet an application's
own OpenMP runtime, and the process then aborts ("OMP: Error #15", exit 134)
with a hint that recommends the unsafe KMP_DUPLICATE_LIB_OK. Only a parent sees
that exit and can name both runtimes and the real remedy (host.openmp). Without
such a preload nothing of ours can cause it, and exec replaces itself by the
command as before (no extra process in a service's tree).

As a parent, every signal reaches the command once. Interactive (stdin a
terminal, in the foreground): the command stays in our process group, so a
terminal's Ctrl-C and Ctrl-\\ reach it directly and are ignored here, as
system() does. Otherwise (a unit, a script, a test): the command gets a
process group of its own, so a group kill reaches only us, and we pass SIGINT,
SIGQUIT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 on; should we be killed outright,
the kernel sends it SIGTERM (PR_SET_PDEATHSIG). (systemd's default
KillMode=control-group signals every process itself: the command may then see
SIGTERM twice.) The command's status is ours: its exit code, or the same signal
re-raised here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Mapping, NoReturn, Sequence

from sdagent.host.openmp import abort_diagnosis, aborted, find_runtime_files, preloaded_runtime, search_roots

TERMINAL: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGQUIT)
FORWARDED: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

#: prctl(2) option: the signal a child gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def interactive() -> bool:
    """Whether stdin is a terminal whose foreground process group is ours (a user typing, Ctrl-C works)."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def _own_group_and_death_signal() -> None:  # runs in the child between fork and exec
    os.setpgid(0, 0)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def run_child(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run argv to its end, each signal reaching it once (see the module); its returncode
    (negative: killed by that signal)."""
    tty = interactive()
    proc = subprocess.Popen(list(argv), env=dict(env), preexec_fn=None if tty else _own_group_and_death_signal)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    saved = {s: signal.signal(s, forward) for s in FORWARDED + (() if tty else TERMINAL)}
    if tty:
        saved.update({s: signal.signal(s, signal.SIG_IGN) for s in TERMINAL})
    try:
        while True:
            try:
                return proc.wait()
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for old interpreters
                continue
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def exit_like(status: int) -> NoReturn:
    """Leave with the child's status: its exit code, or die of its signal (no core file of our own)."""
    if status >= 0:
        sys.exit(status)
    sig = -status
    with contextlib.suppress(ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    signal.signal(sig, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)
    sys.exit(128 + sig)  # a signal that does not end the process by default


def exec_command(argv: Sequence[str], env: Mapping[str, str], command: Sequence[str]) -> NoReturn:
    """`sdagent exec`'s last step: `argv` (launcher + `command`) under `env`.

    Replaced by it when the environment preloads no Intel/LLVM OpenMP runtime; otherwise its parent,
    and when it aborts, one line on stderr names the preloaded runtime, the application's own (found
    beside the command) and the remedy, before leaving with the command's status.
    """
    planned = preloaded_runtime(env)
    if planned is None:
        os.execvpe(argv[0], list(argv), dict(env))
    status = run_child(argv, env)
    if aborted(status):
        others = find_runtime_files(search_roots(command, env.get("PATH")))
        print(f"sdagent: error: {abort_diagnosis(command, planned, others)}", file=sys.stderr, flush=True)
    exit_like(status)
