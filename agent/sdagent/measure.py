"""Start a measurement worker in a fresh process under a given launch, read its result.

The I/O edge shared by `sdagent tune` and `sdagent ladder`. A *launch* is the
argv prefix and environment a configuration needs (stock, a plan through
`sdagent exec` or its pure `build_exec`, PyTorch's run_cpu); a *job* is what
the worker measures (model, workload, backend knobs). Keeping them apart lets
every rung and candidate run the very same measurement code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sdagent.workload import Workload

WORKER_MODULE = "sdagent.measure_worker"


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process measures."""

    model: str
    workload: Workload
    backend: str = "native"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    weights_prepack: bool = True
    warmup: int = 1
    warmup_steps: int = 2
    repeats: int = 1
    compile_cache_dir: str | None = None
    unet_only: bool = False  # time single UNet calls instead of whole images

    def args(self, result: str) -> list[str]:
        """The worker's own arguments (after `python -m sdagent.measure_worker`)."""
        w = self.workload
        out = ["--model", str(self.model), "--result", result, "--steps", str(w.steps),
               "--height", str(w.height), "--width", str(w.width), "--guidance", str(w.guidance),
               "--scheduler", w.scheduler, "--prompt", w.prompt, "--backend", self.backend,
               "--precision", self.precision, "--warmup", str(self.warmup),
               "--warmup-steps", str(self.warmup_steps), "--repeats", str(self.repeats)]
        if self.channels_last:
            out.append("--channels-last")
        if self.compile:
            out.append("--compile")
        if not self.weights_prepack:
            out.append("--no-prepack")
        if self.compile_cache_dir:
            out += ["--compile-cache-dir", self.compile_cache_dir]
        if self.unet_only:
            out.append("--unet-only")
        return out

    @classmethod
    def from_settings(cls, model: str, workload: Workload, settings: Mapping[str, Any], **kw: Any) -> "WorkerJob":
        """The backend knobs of a plan's resolved settings."""
        return cls(model, workload, backend=str(settings.get("backend", "native")),
                   precision=str(settings.get("precision", "fp32")),
                   channels_last=bool(settings.get("channels_last")), compile=bool(settings.get("compile")),
                   weights_prepack=bool(settings.get("weights_prepack", True)), **kw)


def worker_cmd(python: str | None = None, as_file: bool = False) -> list[str]:
    """`python -m sdagent.measure_worker`, or the module's file path (for run_cpu, which wants a .py)."""
    py = python or sys.executable
    if as_file:
        return [str(Path(__file__).with_name("measure_worker.py"))]
    return [py, "-m", WORKER_MODULE]


@dataclass(frozen=True)
class Launch:
    """How a worker is started: the full argv up to the worker's arguments, and its environment."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    expect_libraries: tuple[str, ...] = ()  # preloads that must show up in the worker's maps


@dataclass
class WorkerResult:
    ok: bool
    reason: str
    wall_s: float
    data: dict[str, Any] | None = None
    argv: list[str] = field(default_factory=list)

    @property
    def latency_s(self) -> float:
        """The median timed latency of the process (what tune's measure() returns)."""
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


def run_worker(launch: Launch, job: WorkerJob, *, timeout_s: float = 1800.0,
               workdir: str | None = None) -> WorkerResult:
    """Run one worker process; a crash, a timeout or a preload that did not take is a failure with a reason."""
    fd, result = tempfile.mkstemp(prefix="sdagent-measure-", suffix=".json", dir=workdir)
    os.close(fd)
    os.unlink(result)
    argv = list(launch.argv) + job.args(result)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, env=dict(launch.env), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return WorkerResult(False, f"timed out after {timeout_s:.0f} s", time.perf_counter() - t0, None, argv)
    except OSError as exc:
        return WorkerResult(False, f"cannot start {argv[0]}: {exc.strerror}", time.perf_counter() - t0, None, argv)
    wall = time.perf_counter() - t0
    try:
        data = json.loads(Path(result).read_text())
    except (OSError, ValueError):
        data = None
    finally:
        Path(result).unlink(missing_ok=True)
    if data is None:
        why = _tail(proc.stderr) or _tail(proc.stdout) or "no output"
        return WorkerResult(False, f"exit {proc.returncode}, no result: {why}", wall, None, argv)
    if not data.get("ok"):
        return WorkerResult(False, str(data.get("error", "failed")), wall, data, argv)
    missing = missing_preloads(launch.expect_libraries, data.get("process", {}).get("libraries", []))
    if missing:
        return WorkerResult(False, f"preload did not take: {', '.join(missing)} not mapped", wall, data, argv)
    return WorkerResult(True, "ok", wall, data, argv)
