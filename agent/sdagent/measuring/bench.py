"""Timed generations on a prepared pipeline: warm-up, several runs, figures with the machine state.

Why this shape: the first calls of a pipeline pay for oneDNN primitive creation,
allocator growth and (with torch.compile) compilation, so they are run and
discarded (warm-up); the timed runs all use the same seed, so every run does
the same work and differences between them are the machine's noise, which the
spread then reports. The machine state is captured after the warm-up (so the
OpenMP pool exists) and the load average again after the runs, so a reader can
tell a busy machine from a slow configuration.

Shared by `sdagent bench`, `sdagent verify`, tune and the ladder.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from sdagent.errors import BadInput
from sdagent.host.process import MachineState, machine_state, process_start_time, read_load_average
from sdagent.measuring.stats import Summary, images_per_second, summarize
from sdagent.pipeline.modeldir import ModelDir
from sdagent.pipeline.observe import Observed, observe_unet
from sdagent.pipeline.workload import Workload
from sdagent.planning.plan import Plan
from sdagent.planning.runspec import RunSpec

#: Called with the number of UNet steps just completed (for a progress bar).
Progress = Callable[[int], None]


@dataclass(frozen=True)
class RunRecord:
    """One timed generation."""

    index: int
    latency_s: float
    step_s: tuple[float, ...]
    text_encode_s: float | None
    vae_decode_s: float | None

    def to_dict(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, 6)  # noqa: E731
        return {"index": self.index, "latency_s": r(self.latency_s), "step_s": [r(x) for x in self.step_s],
                "text_encode_s": r(self.text_encode_s), "vae_decode_s": r(self.vae_decode_s)}


@dataclass(frozen=True)
class BenchResult:
    """Figures of one benchmark, the setup that produced them and the machine they ran on."""

    workload: Workload
    warmup: int
    runs: tuple[RunRecord, ...]
    latency: Summary
    step: Summary | None  # every UNet step of every timed run, pooled
    images_per_s: float
    warmup_s: tuple[float, ...]
    setup: dict[str, Any]  # the prepared pipeline's describe(): backend settings and notes
    machine: MachineState
    load_after: tuple[float, float, float]
    observed: Observed | None
    model: str
    duration_s: float
    startup_s: float | None = None  # process start to the end of the first (warm-up) image, less lock_wait_s
    lock_wait_s: float | None = None  # of the process's life before it: waiting for the host benchmark lock
    last_image: Any = field(default=None, repr=False, compare=False)  # numpy HxWx3 of the last run
    plan: Plan | None = None  # the plan in effect, recorded beside the machine state

    @property
    def latencies(self) -> list[float]:
        return [r.latency_s for r in self.runs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "sdagent-bench/1",
            "model": self.model,
            "workload": self.workload.to_dict(),
            "warmup": self.warmup,
            "warmup_s": [round(x, 6) for x in self.warmup_s],
            "runs": [r.to_dict() for r in self.runs],
            "latency_s": self.latency.to_dict(),
            "unet_step_s": self.step.to_dict() if self.step else None,
            "images_per_s": round(self.images_per_s, 6),
            "setup": self.setup,
            "observed": self.observed.to_dict() if self.observed else None,
            "machine": {**self.machine.to_dict(), "plan": self.plan.to_dict() if self.plan else None},
            "load_average_after": list(self.load_after),
            "duration_s": round(self.duration_s, 3),
            "startup_s": None if self.startup_s is None else round(self.startup_s, 3),
            "lock_wait_s": None if self.lock_wait_s is None else round(self.lock_wait_s, 3),
        }


def check_counts(runs: int, warmup: int) -> None:
    """Reject run counts that cannot give figures, before any model is loaded."""
    if runs < 1:
        raise BadInput(f"invalid --runs {runs}: at least 1 timed run is needed (5 or more to see the noise)")
    if warmup < 0:
        raise BadInput(f"invalid --warmup {warmup}: must be >= 0")


def run_bench(prepared, workload: Workload, runs: int = 5, warmup: int = 1, *,
              progress: Progress | None = None, plan: Plan | None = None,
              model: str = "", lock_wait_s: float | None = None) -> BenchResult:
    """`warmup` untimed then `runs` timed generations of `workload` (same seed each time).

    `prepared` is a pipeline.PreparedPipeline (or anything with generate()/describe()/pipe).
    `lock_wait_s`: seconds this process waited for the host lock before loading; the start-up
    figure (process start to the first image) leaves them out, and they are reported on their own.
    """
    check_counts(runs, warmup)
    t0 = time.perf_counter()
    tick = (lambda i, n, s: progress(1)) if progress else None
    get_observed, unhook = observe_unet(prepared.pipe)
    warm: list[float] = []
    try:
        for _ in range(warmup):
            warm.append(prepared.generate(workload, step_callback=tick).total_s)
        started = process_start_time()
        startup = time.time() - started - (lock_wait_s or 0.0) if started is not None and warmup else None
        state = machine_state()
        records: list[RunRecord] = []
        last = None
        for i in range(runs):
            g = prepared.generate(workload, step_callback=tick)
            records.append(RunRecord(i, g.total_s, tuple(g.step_s), g.text_encode_s, g.vae_decode_s))
            last = g
    finally:
        unhook()
    latency = summarize(r.latency_s for r in records)
    steps = [s for r in records for s in r.step_s]
    return BenchResult(
        workload=workload, warmup=warmup, runs=tuple(records), latency=latency,
        step=summarize(steps) if steps else None,
        images_per_s=images_per_second(latency.median) if latency.median > 0 else 0.0,
        warmup_s=tuple(warm), setup=prepared.describe(), machine=state,
        load_after=tuple(read_load_average()),  # type: ignore[arg-type]
        observed=get_observed(), model=model, duration_s=time.perf_counter() - t0, startup_s=startup,
        lock_wait_s=lock_wait_s,
        last_image=None if last is None else last.array, plan=plan,
    )


def unet_calls(pipe: Any, steps: int) -> int:
    """UNet calls one generation makes (PNDM adds warm-up steps): a progress bar's unit."""
    try:
        pipe.scheduler.set_timesteps(steps)
        return max(1, len(pipe.scheduler.timesteps))
    except Exception:  # noqa: BLE001 - only the bar's length depends on it
        return steps


#: Given the number of UNet steps to come, a context that yields a Progress (a progress bar).
ProgressBar = Callable[[int], ContextManager[Progress]]


def no_bar(total: int) -> ContextManager[Progress]:
    return contextlib.nullcontext(lambda n: None)


def bench_model(md: ModelDir, workload: Workload, spec: RunSpec, runs: int, warmup: int, *,
                plan: Plan | None = None, artifacts_dir: str | None = None,
                bar: ProgressBar = no_bar, lock_wait_s: float | None = None) -> BenchResult:
    """Load the model, prepare it for `spec`, and benchmark it in this process (`sdagent bench`)."""
    from sdagent.pipeline.backends import ready

    check_counts(runs, warmup)
    prepared = ready(md.path, spec, workload, artifacts_dir)
    with bar((runs + warmup) * unet_calls(prepared.pipe, workload.steps)) as progress:
        result = run_bench(prepared, workload, runs, warmup, progress=progress, plan=plan, model=md.name,
                           lock_wait_s=lock_wait_s)
    del prepared
    return result
