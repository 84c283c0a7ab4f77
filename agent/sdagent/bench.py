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

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sdagent.errors import BadInput
from sdagent.procstate import MachineState, machine_state, read_load_average
from sdagent.stats import Summary, images_per_second, summarize
from sdagent.workload import Workload

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
class Observed:
    """What the UNet actually ran with, seen from a hook on its first call (not what was asked)."""

    autocast_dtype: str | None  # e.g. "bfloat16" when CPU autocast was on, else None
    param_dtype: str | None  # dtype of the UNet's first parameter
    ipex_modules: int  # UNet submodules whose class comes from intel_extension_for_pytorch
    ipex_imported: bool
    compiled: bool  # the UNet is a torch.compile wrapper

    @property
    def precision(self) -> str:
        """bf16 when the UNet computed in bf16 (autocast or bf16 weights), else fp32."""
        if self.autocast_dtype == "bfloat16" or self.param_dtype == "bfloat16":
            return "bf16"
        return "fp32"

    @property
    def backend(self) -> str:
        """ipex when IPEX is loaded and touched the UNet (optimized modules or a bf16 cast), else native."""
        return "ipex" if self.ipex_imported and (self.ipex_modules > 0 or self.param_dtype == "bfloat16") \
            else "native"

    def to_dict(self) -> dict[str, Any]:
        return {"autocast_dtype": self.autocast_dtype, "param_dtype": self.param_dtype,
                "ipex_modules": self.ipex_modules, "ipex_imported": self.ipex_imported,
                "compiled": self.compiled, "precision": self.precision, "backend": self.backend}


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
    last_image: Any = field(default=None, repr=False, compare=False)  # numpy HxWx3 of the last run

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
            "machine": self.machine.to_dict(),
            "load_average_after": list(self.load_after),
            "duration_s": round(self.duration_s, 3),
        }


def check_counts(runs: int, warmup: int) -> None:
    """Reject run counts that cannot give figures, before any model is loaded."""
    if runs < 1:
        raise BadInput(f"invalid --runs {runs}: at least 1 timed run is needed (5 or more to see the noise)")
    if warmup < 0:
        raise BadInput(f"invalid --warmup {warmup}: must be >= 0")


def model_default_size(model_dir: str | os.PathLike[str]) -> int:
    """The resolution the model was built for (diffusers' default): UNet sample size x VAE scale."""
    d = Path(model_dir)
    try:
        unet = json.loads((d / "unet" / "config.json").read_text())
        vae = json.loads((d / "vae" / "config.json").read_text())
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"cannot read the default resolution from {d}/unet and vae config.json "
                       f"({exc.__class__.__name__}): give --height and --width") from None


def observe_unet(pipe) -> tuple[Callable[[], Observed | None], Callable[[], None]]:
    """Hook the UNet's next call; returns (result getter, remover)."""
    import sys

    import torch

    seen: list[Observed] = []
    unet = pipe.unet

    def pre(module, _args):
        if seen:
            return
        autocast = None
        if torch.is_autocast_enabled("cpu"):
            autocast = str(torch.get_autocast_dtype("cpu")).replace("torch.", "")
        inner = getattr(module, "_orig_mod", module)
        p = next(iter(inner.parameters()), None)
        ipex_mods = sum(1 for m in inner.modules() if type(m).__module__.startswith("intel_extension_for_pytorch"))
        seen.append(Observed(autocast, str(p.dtype).replace("torch.", "") if p is not None else None,
                             ipex_mods, "intel_extension_for_pytorch" in sys.modules,
                             inner is not module))

    handle = unet.register_forward_pre_hook(pre)
    return (lambda: seen[0] if seen else None), handle.remove


def run_bench(prepared, workload: Workload, runs: int = 5, warmup: int = 1, *,
              progress: Progress | None = None, plan: dict[str, Any] | None = None,
              model: str = "") -> BenchResult:
    """`warmup` untimed then `runs` timed generations of `workload` (same seed each time).

    `prepared` is a pipeline.PreparedPipeline (or anything with generate()/describe()/pipe).
    """
    check_counts(runs, warmup)
    t0 = time.perf_counter()
    tick = (lambda i, n, s: progress(1)) if progress else None
    get_observed, unhook = observe_unet(prepared.pipe)
    warm: list[float] = []
    try:
        for _ in range(warmup):
            warm.append(prepared.generate(workload, step_callback=tick).total_s)
        state = machine_state(plan)
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
        observed=get_observed(), model=model, duration_s=time.perf_counter() - t0,
        last_image=None if last is None else last.array,
    )


def step_median(result: BenchResult) -> float | None:
    """Median UNet step time over all timed runs (None when the pipeline reported no steps)."""
    steps = [s for r in result.runs for s in r.step_s]
    return statistics.median(steps) if steps else None
