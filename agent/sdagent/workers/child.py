"""The worker's side of the border: one job in, one result out, and no life after the parent's.

Standard library and the torch-free sdagent modules only: the OpenVINO peer's
process (another venv, no torch) runs this too.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import Any, Callable, Mapping, TypeVar

from sdagent import atomicio
from sdagent.errors import Exit, SdagentError, one_line
from sdagent.workers.result import Measurement, failure

#: prctl(2) option: the signal this process gets when its parent (the thread that forked it) ends.
PR_SET_PDEATHSIG = 1

J = TypeVar("J")


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Ask the kernel to send `sig` to this process when its parent ends (prctl PR_SET_PDEATHSIG, Linux).

    Why: a worker runs in its own session (so its process group can be killed whole); when the
    agent is SIGKILLed nothing else would end it, and it would go on measuring beside the next
    benchmark. `parent`: the pid that started us; if it is already gone (we were re-parented
    before the call), the signal is sent now. Survives exec (numactl, taskset exec into the
    worker); not set-uid programs. False where prctl is not available (not Linux): nothing changes.
    Safe between fork and exec (no allocation beyond the call).
    """
    if _prctl is None:
        return False
    rc = _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if rc != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def _libc_prctl() -> Callable[..., int] | None:
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return fn
    except (OSError, AttributeError):  # not Linux
        return None


#: Resolved once, in the parent, so that a child between fork and exec only calls it.
_prctl = _libc_prctl()


def worker_main(prog: str, job_path: str, result_path: str, measure: Callable[[J], Measurement],
                parse: Callable[[Mapping[str, Any]], J]) -> int:
    """A worker process's life, the same for every kind of worker: die with the parent, read the job,
    measure, write the result (a failure record on any error, never a traceback), print one line on
    stdout (the measurement's summary) or stderr (the error), return the exit code."""
    die_with_parent()  # also under a launcher that forks (run_cpu): it ends with its parent, we with it
    try:
        job = atomicio.read_json(job_path, "job")
        if not isinstance(job, Mapping):
            raise SdagentError(f"not a worker job: expected a JSON object, got {type(job).__name__}", Exit.USAGE)
        m = measure(parse(job))
        data, code, error = m.to_dict(), 0, None
    except SdagentError as exc:
        error, code = str(exc), exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a crash is a failed measurement with its reason
        error, code = one_line(exc, 400), int(Exit.ERROR)
    if error is not None:
        data = failure(error)
    try:
        atomicio.write_json(result_path, data)
    except SdagentError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if error is not None:
        print(f"{prog}: error: {error}", file=sys.stderr)
    else:
        print(json.dumps(m.summary()))
    return code
