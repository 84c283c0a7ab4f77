"""Start a measurement worker in a fresh process under a launch, read its result.

The I/O edge shared by `sdagent tune`, `sdagent ladder` and verify's stock run.
A *launch* (planning.launch) is the argv prefix and environment a
configuration needs (stock, a plan, PyTorch's run_cpu); a *job* is what the
worker measures: model, workload and the run record. The job crosses the
process border as one JSON file, and the result comes back as one, both in a
private directory (0700) that nobody else can read or replace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sdagent.errors import BadInput
from sdagent.pipeline.workload import Workload
from sdagent.planning.launch import Launch
from sdagent.planning.runspec import RunSpec

WORKER_MODULE = "sdagent.measuring.worker"


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process measures."""

    model: str
    workload: Workload
    run: RunSpec
    warmup: int = 1
    warmup_steps: int = 2
    repeats: int = 1
    compile_cache_dir: str | None = None
    unet_only: bool = False  # time single UNet calls instead of whole images

    def to_dict(self) -> dict[str, Any]:
        return {"format": "sdagent-job/1", "model": str(self.model), "workload": self.workload.to_dict(),
                "run": self.run.to_dict(), "warmup": self.warmup, "warmup_steps": self.warmup_steps,
                "repeats": self.repeats, "compile_cache_dir": self.compile_cache_dir,
                "unet_only": self.unet_only}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorkerJob":
        try:
            job = cls(str(d["model"]), Workload(**d["workload"]), RunSpec.from_dict(d["run"]),
                      int(d["warmup"]), int(d["warmup_steps"]), int(d["repeats"]), d.get("compile_cache_dir"),
                      bool(d.get("unet_only", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"not a worker job ({type(exc).__name__}: {exc})") from None
        if job.repeats < 0 or job.warmup < 0 or job.warmup_steps < 1:
            raise BadInput(f"invalid repeats/warmup ({job.repeats}/{job.warmup}/{job.warmup_steps})")
        return job


def worker_cmd(python: str | None = None) -> list[str]:
    """`python -m sdagent.measuring.worker`: the command every launch prefixes."""
    return [python or sys.executable, "-m", WORKER_MODULE]


def worker_file() -> str:
    """The worker's file path: PyTorch's run_cpu only accepts a `.py` program."""
    return str(Path(__file__).with_name("worker.py"))


@dataclass
class WorkerResult:
    ok: bool
    reason: str
    wall_s: float
    data: dict[str, Any] | None = None
    argv: list[str] = field(default_factory=list)

    @property
    def latency_s(self) -> float:
        """The median timed latency of the process."""
        assert self.data is not None
        return float(self.data["latency_median_s"])


def _tail(text: str, lines: int = 3) -> str:
    keep = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("[transformers]")]
    return " | ".join(keep[-lines:])[-500:]


def missing_preloads(expected: tuple[str, ...], mapped: list[str]) -> list[str]:
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


def _kill_group(proc: subprocess.Popen) -> None:
    """The worker and whatever it started (numactl's child, inductor's compile workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_worker(launch: Launch, job: WorkerJob, *, timeout_s: float = 1800.0) -> WorkerResult:
    """Run one worker process; a crash, a timeout or a preload that did not take is a failure with a reason.

    The worker runs in its own process group, so a timeout, or this process being
    interrupted, ends it and its children, never leaving one to run on the cores.
    """
    work = tempfile.mkdtemp(prefix="sdagent-measure-")  # 0700: private to this user
    job_file, result = os.path.join(work, "job.json"), os.path.join(work, "result.json")
    argv = list(launch.argv) + ["--job", job_file, "--result", result]
    t0 = time.perf_counter()
    try:
        Path(job_file).write_text(json.dumps(job.to_dict()))
        try:
            proc = subprocess.Popen(argv, env=dict(launch.env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        except OSError as exc:
            return WorkerResult(False, f"cannot start {argv[0]}: {exc.strerror}", time.perf_counter() - t0, None,
                                argv)
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return WorkerResult(False, f"timed out after {timeout_s:.0f} s", time.perf_counter() - t0, None, argv)
        except BaseException:
            _kill_group(proc)
            raise
        wall = time.perf_counter() - t0
        try:
            data = json.loads(Path(result).read_text())
        except (OSError, ValueError):
            data = None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if data is None:
        why = _tail(stderr) or "no output"
        if proc.returncode < 0:
            try:
                name = signal.Signals(-proc.returncode).name
            except ValueError:
                name = "?"
            why = f"killed by signal {-proc.returncode} ({name}); {why}"
        return WorkerResult(False, f"exit {proc.returncode}, no result: {why}", wall, None, argv)
    if not data.get("ok"):
        return WorkerResult(False, str(data.get("error", "failed")), wall, data, argv)
    missing = missing_preloads(launch.expect_libraries, data.get("process", {}).get("libraries", []))
    if missing:
        return WorkerResult(False, f"preload did not take: {', '.join(missing)} not mapped", wall, data, argv)
    return WorkerResult(True, "ok", wall, data, argv)
