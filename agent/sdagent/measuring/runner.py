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
from typing import Any, Callable, Mapping

from sdagent import atomicio
from sdagent.errors import BadInput, Exit, SdagentError, one_line
from sdagent.pipeline.workload import Workload
from sdagent.planning.launch import Launch
from sdagent.planning.runspec import RunSpec

WORKER_MODULE = "sdagent.measuring.worker"


@dataclass(frozen=True)
class ThroughputSpec:
    """A worker's part in a throughput run: wait at a barrier, then generate images back to back.

    `barrier` is a directory the parent owns: the worker writes ready-<index>.json there once
    warm, and starts when go.json appears (its start time and window; or an abort reason).
    """

    barrier: str
    index: int
    images: int | None = None  # a fixed number of images ...
    window_s: float | None = None  # ... or as many as a window holds

    def to_dict(self) -> dict[str, Any]:
        return {"barrier": self.barrier, "index": self.index, "images": self.images, "window_s": self.window_s}


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process measures."""

    model: str
    workload: Workload
    run: RunSpec
    warmup: int = 1
    warmup_steps: int = 2
    repeats: int = 1
    artifacts_dir: str | None = None
    unet_only: bool = False  # time single UNet calls instead of whole images
    throughput: ThroughputSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": "sdagent-job/1", "model": str(self.model), "workload": self.workload.to_dict(),
                "run": self.run.to_dict(), "warmup": self.warmup, "warmup_steps": self.warmup_steps,
                "repeats": self.repeats, "artifacts_dir": self.artifacts_dir,
                "unet_only": self.unet_only,
                "throughput": self.throughput.to_dict() if self.throughput else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorkerJob":
        try:
            tp = d.get("throughput")
            job = cls(str(d["model"]), Workload(**d["workload"]), RunSpec.from_dict(d["run"]),
                      int(d["warmup"]), int(d["warmup_steps"]), int(d["repeats"]), d.get("artifacts_dir"),
                      bool(d.get("unet_only", False)), ThroughputSpec(**tp) if tp else None)
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


class WorkerProcess:
    """One worker started under a launch (in its own process group), to be waited for later.

    Several can run at once (throughput: one per instance). The job and the result
    live in a private directory (0700) that nobody else can read or replace.
    """

    def __init__(self, launch: Launch, job: WorkerJob) -> None:
        self.launch, self.job = launch, job
        self.work = tempfile.mkdtemp(prefix="sdagent-measure-")
        self.job_file, self.result = os.path.join(self.work, "job.json"), os.path.join(self.work, "result.json")
        self.argv = list(launch.argv) + ["--job", self.job_file, "--result", self.result]
        self.proc: subprocess.Popen | None = None
        self.t0 = time.perf_counter()
        self.start_error: str | None = None
        Path(self.job_file).write_text(json.dumps(job.to_dict()))
        try:
            self.proc = subprocess.Popen(self.argv, env=dict(launch.env), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         start_new_session=True)
        except OSError as exc:
            self.start_error = f"cannot start {self.argv[0]}: {exc.strerror}"

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
                data = json.loads(Path(self.result).read_text())
            except (OSError, ValueError):
                data = None
        finally:
            self.close()
        return _result(self.proc.returncode, stderr, data, wall, self.launch, self.argv)

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _result(returncode: int, stderr: str, data: dict[str, Any] | None, wall: float, launch: Launch,
            argv: list[str]) -> WorkerResult:
    if data is None:
        why = _tail(stderr) or "no output"
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = "?"
            why = f"killed by signal {-returncode} ({name}); {why}"
        return WorkerResult(False, f"exit {returncode}, no result: {why}", wall, None, argv)
    if not data.get("ok"):
        return WorkerResult(False, str(data.get("error", "failed")), wall, data, argv)
    missing = missing_preloads(launch.expect_libraries, data.get("process", {}).get("libraries", []))
    if missing:
        return WorkerResult(False, f"preload did not take: {', '.join(missing)} not mapped", wall, data, argv)
    return WorkerResult(True, "ok", wall, data, argv)


def run_worker(launch: Launch, job: WorkerJob, *, timeout_s: float = 1800.0) -> WorkerResult:
    """Run one worker process to its end (see WorkerProcess)."""
    return WorkerProcess(launch, job).wait(timeout_s)


def worker_main(prog: str, job_path: str, result_path: str, measure: Callable[[Any], dict[str, Any]],
                parse: Callable[[Any], Any], summary: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """A worker process's life, the same for every kind of worker: read the job, measure, write the result
    (an error result on any failure, never a traceback), say one line, return the exit code."""
    try:
        data = measure(parse(atomicio.read_json(job_path, "job")))
        code = 0
    except SdagentError as exc:
        data, code = {"ok": False, "error": str(exc)}, exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a crash is a failed measurement with its reason
        data, code = {"ok": False, "error": one_line(exc, 400)}, int(Exit.ERROR)
    try:
        atomicio.write_json(result_path, data)
    except SdagentError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not data["ok"]:
        print(f"{prog}: error: {data['error']}", file=sys.stderr)
    else:
        print(json.dumps(summary(data)))
    return code
