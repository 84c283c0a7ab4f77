"""The latency ladder: each tuning step measured against stock, PyTorch's launcher and the peak.

Why a ladder: a user deciding whether to roll the agent out asks how much
faster than a stock install, how much better than what PyTorch's own launcher
(`python -m torch.backends.xeon.run_cpu`) already gives for free, and how far
from what this CPU could do at best. Every rung runs the same worker
(:mod:`sdagent.measuring.worker`) on the same model and workload, each in a
fresh process, in interleaved rounds with rotated order (A B C, B C A, C A B)
so a drifting machine hurts all rungs alike; ratios are taken within a round.

Pure here: the rung records, the schedule, the run loop (with an injected
runner) and the summary statistics. The Markdown is ladder_report's, the plot
ladder_plot's; the files are written by the caller (:mod:`sdagent.cli.ladder_cmd`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from sdagent.measuring.flops import ModelFlops
from sdagent.measuring.stats import Summary, rotated, summarize as summary_of
from sdagent.planning.launch import Launch
from sdagent.planning.runspec import STOCK_RUN
from sdagent.workers.result import WorkerResult


class RungJob(Protocol):
    """What a rung hands its worker: sdagent's WorkerJob or a peer's job (peers.ovjob.OvJob)."""

    @property
    def precision(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

VANILLA, RUN_CPU, OPENVINO = "vanilla", "run_cpu", "openvino"


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: how the worker is launched and what it runs."""

    name: str
    description: str
    launch: Launch | None
    job: RungJob | None  # None only for a rung that cannot run here (`unavailable` says why)
    unavailable: str | None = None  # why it cannot run here (reported as failed, others go on)
    warm_cache: bool = False  # one untimed run before round 1 (torch.compile's cache)

    @property
    def precision(self) -> str:
        return self.job.precision if self.job is not None else STOCK_RUN.precision


@dataclass(frozen=True)
class Sample:
    """One rung's figures from one process (one round)."""

    round: int
    latency_s: float  # median over the process's timed calls: seconds per image
    step_s: float | None  # median UNet step (one guided evaluation)
    unet_evals: int | None
    wall_s: float
    libraries: tuple[str, ...] = ()
    torch_threads: int | None = None
    affinity: tuple[int, ...] = ()
    load_average: tuple[float, ...] = ()
    observed: Mapping[str, Any] | None = None
    steps: tuple[float, ...] = ()  # every timed UNet step of the process
    first_image_s: float | None = None  # process start to the end of its first whole image

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "latency_s": round(self.latency_s, 4), "first_image_s": self.first_image_s,
                "step_s": None if self.step_s is None else round(self.step_s, 4),
                "unet_evals": self.unet_evals, "wall_s": round(self.wall_s, 2),
                "libraries": list(self.libraries), "torch_threads": self.torch_threads,
                "affinity": list(self.affinity), "load_average": [round(x, 2) for x in self.load_average],
                "observed": dict(self.observed) if self.observed else None,
                "steps_s": [round(x, 4) for x in self.steps]}


@dataclass
class RungOutcome:
    rung: Rung
    samples: list[Sample] = field(default_factory=list)
    failed: str | None = None
    failed_round: int | None = None


def sample_from(result: WorkerResult, round_no: int) -> Sample:
    """The figures of one successful worker result (pure)."""
    m = result.measurement
    if m is None or m.latency_median_s is None:
        raise ValueError(f"no measurement to sample: {result.reason}")
    p = m.process
    return Sample(round_no, m.latency_median_s, m.unet_step_median_s, m.unet_evals, result.wall_s, p.libraries,
                  p.torch_threads, p.affinity, m.load_average, m.observed, m.unet_steps_s,
                  m.start_to_first_image_s)


def schedule(names: Sequence[str], rounds: int) -> list[list[str]]:
    """Round i runs the rungs rotated by i (stats.rotated): each leads equally often, neighbours vary."""
    return [rotated(names, i) for i in range(rounds)] if names else []


Runner = Callable[[Rung, int], WorkerResult]
Event = Callable[[str, dict[str, Any]], None]


def run_ladder(rungs: Sequence[Rung], rounds: int, runner: Runner, *, on_event: Event | None = None,
               warm: Callable[[Rung], WorkerResult] | None = None) -> dict[str, RungOutcome]:
    """Run every available rung once per round, interleaved; a failing rung is dropped with its reason."""
    emit = on_event or (lambda kind, data: None)
    out = {r.name: RungOutcome(r) for r in rungs}
    for r in rungs:
        if r.unavailable:
            out[r.name].failed = r.unavailable
    if warm is not None:
        for r in rungs:
            if r.warm_cache and not out[r.name].failed:
                emit("warmup", {"rung": r.name})
                res = warm(r)
                if not res.ok:
                    out[r.name].failed = f"cache warm-up failed: {res.reason}"
                    out[r.name].failed_round = 0
    live = [r.name for r in rungs if not out[r.name].failed]
    by_name = {r.name: r for r in rungs}
    for i, order in enumerate(schedule(live, rounds)):
        for name in order:
            o = out[name]
            if o.failed:
                continue
            emit("run", {"rung": name, "round": i + 1, "rounds": rounds})
            res = runner(by_name[name], i + 1)
            done: dict[str, Any] = {"rung": name, "round": i + 1, "rounds": rounds, "ok": res.ok,
                                    "reason": res.reason, "wall_s": res.wall_s}
            if res.ok:
                o.samples.append(sample_from(res, i + 1))
                done.update(latency_s=o.samples[-1].latency_s, step_s=o.samples[-1].step_s)
            else:
                o.failed, o.failed_round = res.reason, i + 1
            emit("done", done)
    return out


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def spread(xs: Sequence[float]) -> Summary | None:
    """Median and range of a series (stats.summarize), or None when empty."""
    return summary_of(xs) if xs else None


def paired_speedups(base: Sequence[Sample], other: Sequence[Sample]) -> list[float]:
    """base/other per round where both ran: > 1 means `other` is faster (drift cancels within a round)."""
    b = {s.round: s.latency_s for s in base}
    return [b[s.round] / s.latency_s for s in other if s.round in b and s.latency_s > 0]


@dataclass(frozen=True)
class RungRow:
    name: str
    description: str
    precision: str
    latency: Summary | None
    step: Summary | None
    vs_vanilla: Summary | None
    vs_run_cpu: Summary | None
    image_flops: float | None  # achieved FLOP/s over the whole image (median latency)
    step_flops: float | None  # achieved FLOP/s in the UNet (median step)
    step_peak_fraction: float | None
    image_peak_fraction: float | None
    failed: str | None
    unet_evals: int | None
    first_image: Summary | None = None  # process start to first whole image
    vs_openvino: Summary | None = None  # the peer's time / this rung's, per round (> 1: faster than OpenVINO)
    #: its image against the vanilla rung's (measuring.fidelity.Fidelity.to_dict(); ladder_fidelity), or None
    fidelity: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        sd = lambda s: s.to_dict() if s else None  # noqa: E731
        return {"rung": self.name, "description": self.description, "precision": self.precision,
                "latency_s": sd(self.latency), "unet_step_s": sd(self.step), "first_image_s": sd(self.first_image),
                "speedup_vs_vanilla": sd(self.vs_vanilla), "speedup_vs_run_cpu": sd(self.vs_run_cpu),
                "speedup_vs_openvino": sd(self.vs_openvino),
                "achieved_flops_image": self.image_flops, "achieved_flops_unet_step": self.step_flops,
                "fraction_of_gemm_peak_unet_step": self.step_peak_fraction,
                "fraction_of_gemm_peak_image": self.image_peak_fraction,
                "unet_evals_per_image": self.unet_evals, "failed": self.failed,
                "fidelity_vs_vanilla": dict(self.fidelity) if self.fidelity else None}


def summarize(outcomes: Mapping[str, RungOutcome], flops: ModelFlops | None,
              peaks: Mapping[str, float]) -> list[RungRow]:
    """Rows of the ladder table; `peaks` maps precision -> peak GEMM FLOP/s."""
    van = outcomes.get(VANILLA)
    rc = outcomes.get(RUN_CPU)
    ov = outcomes.get(OPENVINO)
    rows = []
    for name, o in outcomes.items():
        lat = spread([s.latency_s for s in o.samples])
        step = spread([s.step_s for s in o.samples if s.step_s is not None])
        evals = next((s.unet_evals for s in o.samples if s.unet_evals), None)
        vv = spread(paired_speedups(van.samples, o.samples)) if van and name != VANILLA else None
        vr = spread(paired_speedups(rc.samples, o.samples)) if rc and name != RUN_CPU else None
        img_f = step_f = None
        if flops and lat and evals:
            img_f = flops.per_image(evals) / lat.median
        if flops and step:
            step_f = flops.unet_step / step.median
        peak = peaks.get(o.rung.precision)
        rows.append(RungRow(
            name, o.rung.description, o.rung.precision, lat, step, vv, vr, img_f, step_f,
            step_f / peak if step_f and peak else None, img_f / peak if img_f and peak else None,
            o.failed if not o.samples else (f"{o.failed} (round {o.failed_round}; "
                                             f"{len(o.samples)} round(s) kept)" if o.failed else None),
            evals, spread([s.first_image_s for s in o.samples if s.first_image_s is not None]),
            spread(paired_speedups(ov.samples, o.samples)) if ov and name != OPENVINO else None))
    return rows


def step_figure(outcomes: Mapping[str, RungOutcome], unet_step_flops: float | None,
                peaks: Mapping[str, float]) -> list[dict[str, Any]]:
    """Per-UNet-step rows (unet-only processes): median and range over every timed call of every round."""
    van = outcomes.get(VANILLA)
    vmed = statistics.median([x for s in van.samples for x in s.steps]) if van and van.samples else None
    rows = []
    for name, o in outcomes.items():
        xs = [x for s in o.samples for x in s.steps]
        sp = spread(xs)
        rate = unet_step_flops / sp.median if sp and unet_step_flops else None
        peak = peaks.get(o.rung.precision)
        rows.append({"rung": name, "precision": o.rung.precision, "step_s": sp.to_dict() if sp else None,
                     "speedup_vs_vanilla": vmed / sp.median if sp and vmed and name != VANILLA else None,
                     "achieved_flops": rate, "fraction_of_gemm_peak": rate / peak if rate and peak else None,
                     "failed": o.failed})
    return rows


def not_run(reason: str | None) -> str:
    """'skipped: ...' stays as is; anything else is a failure."""
    r = reason or "no result"
    return r if r.startswith("skipped") else f"failed: {r}"


__all__ = ["Rung", "RungJob", "RungOutcome", "RungRow", "Sample", "spread", "VANILLA", "RUN_CPU", "OPENVINO",
           "not_run", "paired_speedups", "run_ladder", "sample_from", "schedule", "step_figure", "summarize"]
