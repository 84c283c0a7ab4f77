"""The parent's side of the border: start a worker under a launch, wait for it, read its result.

The I/O edge shared by `sdagent tune`, `sdagent ladder`, verify's stock run,
throughput and the OpenVINO peer. A *launch* (planning.launch) is the argv
prefix and environment a configuration needs (stock, a plan, PyTorch's
run_cpu); a *job* is any record with `to_dict()` (measuring.runner.WorkerJob,
peers.ovjob.OvJob). The job crosses the border as one JSON file and the result
(workers.result, `sdagent-result/1`) comes back as one, both in a private
directory (0700) that nobody else can read or replace.

A worker never outlives the agent: it is started with PR_SET_PDEATHSIG
(workers.child.die_with_parent) and in its own session, so killing its group
ends whatever it started; and it inherits the host benchmark lock's file
descriptor (host.lock.held_fds), so a SIGKILLed agent's lock stays held until
its last worker is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from sdagent.errors import BadInput
from sdagent.host.lock import held_fds
from sdagent.planning.launch import Launch
from sdagent.workers.child import die_with_parent
from sdagent.workers.result import Measurement, WorkerResult, read_result


class Job(Protocol):
    """What a worker is handed: a record that serializes itself (its own format tag inside)."""

    def to_dict(self) -> dict[str, Any]: ...


def _tail(text: str, lines: int = 3) -> str:
    keep = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("[transformers]")]
    return " | ".join(keep[-lines:])[-500:]


def missing_preloads(expected: tuple[str, ...], mapped: tuple[str, ...] | list[str]) -> list[str]:
    """Expected preload libraries that the worker's /proc/self/maps does not show (pure)."""
    real = {os.path.realpath(m) for m in mapped}
    names = {Path(m).name.split(".so")[0] for m in mapped}
    out = []
    for lib in expected:
        if os.path.realpath(lib) in real:
            continue
        if "/" not in lib and lib in names:
            continue
        out.append(lib)
    return out


def child_options(death_signal: int = signal.SIGKILL) -> dict[str, Any]:
    """Popen options for any process the agent starts to measure: its own session, killed with the
    agent (PR_SET_PDEATHSIG, checked against this pid), holding the host lock's descriptor."""
    parent = os.getpid()
    return {"start_new_session": True, "pass_fds": held_fds(),
            "preexec_fn": lambda: die_with_parent(death_signal, parent)}


class WorkerProcess:
    """One worker started under a launch (in its own process group), to be waited for later.

    Several can run at once (throughput: one per instance). `death_signal`: what the worker gets
    when this process ends (SIGKILL; tests use a catchable one to watch the lock outlive the parent).
    The kernel sends it when the *thread* that started the worker ends: start workers from a thread
    that outlives them (the main thread, as every caller does).
    """

    def __init__(self, launch: Launch, job: Job, *, death_signal: int = signal.SIGKILL) -> None:
        self.launch, self.job = launch, job
        self.work = tempfile.mkdtemp(prefix="sdagent-measure-")
        self.job_file, self.result = os.path.join(self.work, "job.json"), os.path.join(self.work, "result.json")
        self.argv = tuple(launch.argv) + ("--job", self.job_file, "--result", self.result)
        self.proc: subprocess.Popen[str] | None = None
        self.t0 = time.perf_counter()
        self.start_error: str | None = None
        Path(self.job_file).write_text(json.dumps(job.to_dict()))
        try:
            self.proc = subprocess.Popen(self.argv, env=dict(launch.env), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         **child_options(death_signal))
        except OSError as exc:
            self.start_error = f"cannot start {self.argv[0]}: {exc.strerror}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """The worker and whatever it started (numactl's child, inductor's compile workers)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            self.proc.wait()

    def wait(self, timeout_s: float) -> WorkerResult:
        """The result; a crash, a timeout or a preload that did not take is a failure with a reason."""
        try:
            if self.proc is None:
                return WorkerResult(False, self.start_error or "not started", 0.0, None, self.argv)
            try:
                _, stderr = self.proc.communicate(timeout=max(0.0, timeout_s - (time.perf_counter() - self.t0)))
            except subprocess.TimeoutExpired:
                self.kill()
                return WorkerResult(False, f"timed out after {timeout_s:.0f} s", time.perf_counter() - self.t0,
                                    None, self.argv)
            except BaseException:
                self.kill()
                raise
            wall = time.perf_counter() - self.t0
            try:
                data: Any = json.loads(Path(self.result).read_text())
            except (OSError, ValueError):
                data = None
        finally:
            self.close()
        return judge(self.proc.returncode, stderr, data, wall, self.launch, self.argv)

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def judge(returncode: int, stderr: str, data: Any, wall: float, launch: Launch,
          argv: tuple[str, ...]) -> WorkerResult:
    """The parent's verdict on one ended worker (pure): its result file's content, or why there is none."""
    if data is None:
        why = _tail(stderr) or "no output"
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = "?"
            why = f"killed by signal {-returncode} ({name}); {why}"
        return WorkerResult(False, f"exit {returncode}, no result: {why}", wall, None, argv)
    try:
        got: Measurement | str = read_result(data)
    except BadInput as exc:
        return WorkerResult(False, str(exc), wall, None, argv)
    if isinstance(got, str):
        return WorkerResult(False, got, wall, None, argv)
    missing = missing_preloads(launch.expect_libraries, got.process.libraries)
    if missing:
        return WorkerResult(False, f"preload did not take: {', '.join(missing)} not mapped", wall, got, argv)
    return WorkerResult(True, "ok", wall, got, argv)


def run_worker(launch: Launch, job: Job, *, timeout_s: float = 1800.0) -> WorkerResult:
    """Run one worker process to its end (see WorkerProcess)."""
    return WorkerProcess(launch, job).wait(timeout_s)
