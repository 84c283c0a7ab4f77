"""`sdagent tune`: measure candidate plans on this host, keep the fastest, never one slower than stock."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import click

from sdagent import atomicio
from sdagent.cli import cli
from sdagent.cli.context import AgentContext
from sdagent.cli.options import (FiniteFloat, MeasureArgs, OutputFile, PlanArgs, command_line, layout_options,
                                 measure_options, pass_agent, resolve_plan, spill_on_write_failure)
from sdagent.measuring.fidelity import BOUND_HELP, parse_bound
from sdagent.tuning.axes import AXIS_NAMES
from sdagent.tuning.rule import Rule


@dataclass
class BudgetBar:
    """A progress bar on stderr over the time budget, labelled with what is being measured."""

    budget_s: float
    t0: float = field(default_factory=time.monotonic)
    bar: Any = None
    shown: int = 0

    def __enter__(self) -> "BudgetBar":
        self.bar = click.progressbar(length=max(1, int(self.budget_s)), label="tune", file=sys.stderr,
                                     show_eta=False, show_percent=True, width=24)
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "budget":  # said up front, whether or not a bar is drawn
            from sdagent.tuning.report import budget_plan_line

            click.echo(f"\ntune: axes by expected effect; {budget_plan_line(data['axes'])}", err=True)
        if not sys.stderr.isatty():
            # Click draws no bar into a pipe or log: say each decision instead
            if kind == "compared" and data["comparison"].verdict is not None:
                c = data["comparison"]
                click.echo(f"tune: {c.candidate} vs {c.best} ({c.kind}): {c.verdict.reason}", err=True)
            elif kind == "noise":
                click.echo(f"tune: noise floor {100 * data['sigma']:.1f}% per pair; round cap {data['cap']}",
                           err=True)
        if kind == "measure":
            comp = data["vs"]
            self.bar.label = (f"{comp.candidate[:28]:<28} vs {comp.best[:16]:<16} "
                              f"round {data['round']}/{data['rounds']}")
        elif kind == "warmup":
            self.bar.label = f"warming {data['candidate'][:28]} (compiled packages)"
        elapsed = int(min(time.monotonic() - self.t0, self.budget_s))
        if elapsed > self.shown:
            self.bar.update(elapsed - self.shown)
            self.shown = elapsed
        else:
            self.bar.render_progress()


@cli.command("tune")
@measure_options(steps=4, repeats=3)
@layout_options
@click.option("--budget", "budget_min", type=FiniteFloat(above=0), default=15.0, show_default=True,
              help="Minutes to spend measuring, a hard ceiling: a round that would not fit is not started, a "
                   "process still running at the ceiling is stopped; the axes that fit are said once the noise "
                   "floor is measured; exit 2 with the estimate when not even stock, the plan and the final "
                   "check fit.")
@click.option("--objective", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True,
              help="latency: one image's time (instance 0); throughput: the host's images/min, every instance "
                   "at once, with the instance split (instances x cores, SMT) as an axis of its own.")
@click.option("--max-rounds", type=click.IntRange(min=6), default=Rule.max_rounds, show_default=True,
              help="The most paired rounds one comparison may take (the cap used is sized from the host's "
                   "noise floor, up to this).")
@click.option("--axis", "only_axes", multiple=True, type=click.Choice(AXIS_NAMES),
              help="Search only this axis (repeatable; default: every axis), e.g. --axis precision/backend "
                   "to measure the backends alone: stock, the plan and the final check are always measured.")
@click.option("--fidelity-bound", "fidelity_bound", default=None, metavar="KEY=VALUE[,...]",
              callback=lambda ctx, param, v: None if v is None else parse_bound(v),
              help="What a lossy candidate's images (OpenVINO int8 weights, the int8 UNet, the tiny VAE) must "
                   "reach against the fp32 reference's, at seeds 0 and 1 of this workload, before it is measured; "
                   "one that fails is reported with its figures and never chosen. " + BOUND_HELP)
@click.option("--compile/--no-compile", "allow_compile", default=True, show_default=True,
              help="Try the torch.compile axis: the UNet, the VAE decoder and the text encoder as AOTInductor "
                   "packages (a missing package costs minutes to build once; the warm-up is counted).")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Write the chosen plan here (atomically, checked before measuring; an interrupted tune leaves "
                   "the old file; a write that fails prints the plan and the record on stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print the tuning record and the plan as JSON.")
@pass_agent
def tune(agent: AgentContext, m: MeasureArgs, plan_args: PlanArgs, budget_min: float, objective: str,
         max_rounds: int, only_axes: tuple[str, ...], fidelity_bound: Any, allow_compile: bool,
         output: str | None, as_json: bool) -> None:
    """Measure candidate plans on this host and keep the fastest; stock is the fallback.

    \b
    Candidates: stock (no preload, torch's own OpenMP, fp32 eager, on the
    plan's CPUs and thread count), the plan in force (--plan-file) or the
    topology plan, then one axis at a time from the best so far, in order of
    expected effect (so a short budget covers what matters first):
    precision/backend (native, ipex and openvino where their stack is in this
    Python), torch.compile (AOTInductor packages of the UNet, VAE decoder and
    text encoder), OpenVINO weights (int8, int8-hybrid: lossy, each
    first through the fidelity gate, --fidelity-bound), UNet int8 (the native
    compiled UNet quantized by PT2E, where torchao is installed: lossy, gated
    the same way), VAE (the model's tiny
    autoencoder, MODEL/vae_tiny, where it has one: lossy, gated the same
    way), no preloads (jemalloc
    and libiomp5 off together), channels_last, threads, pinning, OpenMP
    runtime, KMP_BLOCKTIME 0/1/200, allocator (glibc, jemalloc short/long/demo
    MALLOC_CONF, tcmalloc); --axis keeps only the named ones. Each measurement
    is a fresh process taking the median of --repeats timed calls. The layout
    options measure instance 0 of that layout. The record says which backend
    won and by how much (vs stock and the runner-up backend) and each lossy
    candidate's fidelity.
    \b
    --objective throughput measures the host's seconds per image with every
    instance running at once (--repeats images each), starts from one
    instance per NUMA node (or the layout given) and adds an axis of instance
    splits (instances x cores per instance, SMT on/off); the plan written
    records the objective and the layout, which exec --instance, the env files
    and the units follow.
    \b
    Rule: paired rounds (the candidate and the best back to back, order
    rotated), decided sequentially: a sequential probability ratio test on
    ln(candidate/best) between "equal" and a 10% gain (or loss), alpha 0.05,
    with the noise measured on this host first (stock and the plan, 3 rounds)
    and pooled over every comparison; "faster" also needs a measured gain of
    3%. Rounds go on while undecided, up to a cap sized from that noise. An
    axis's best variant is confirmed in fresh rounds before it replaces the
    best; stock is re-checked against the final choice, with budget reserved
    for it. The chosen plan is written with every measurement and the reason;
    `sdagent --plan-file F env/exec/verify` use it. Simulated operating
    characteristics: `python -m sdagent.tuning.simulation`.
    \b
    Example (tiny model, a few minutes on 2 cores):
      sdagent tune --model /tmp/sd-tiny --steps 2 --height 64 --width 64 --budget 5 -o tuned.json
    """
    from sdagent.tuning.report import tune_table
    from sdagent.tuning.session import TuneRequest, tune as run_tune

    m.check()
    md, w = m.model.checked()
    req = TuneRequest(md, w, budget_min * 60, Rule(max_rounds=max_rounds), m.repeats, m.warmup_for(w),
                      m.timeout_s, allow_compile, output, command_line(), start=resolve_plan(agent, plan_args),
                      objective=objective, only_axes=tuple(only_axes), fidelity_bound=fidelity_bound)
    with agent.bench_lock("tune"), BudgetBar(req.budget_s) as bar:
        out = run_tune(agent.topology(), agent.facts(), req, environ=dict(os.environ), on_event=bar.event)
    if output:
        spill_on_write_failure({"tuning": out.record, "plan": out.plan.to_dict()},
                               lambda: atomicio.write_json(output, out.plan.to_dict()))
    if as_json:
        click.echo(json.dumps({"tuning": out.record, "plan": out.plan.to_dict()}, indent=2))
        return
    click.echo(tune_table(out.result, out.result.samples(), out.record.get("fidelity")), nl=False)
    if output:
        click.echo(f"plan:   {output} (use: sdagent --plan-file {shlex.quote(output)} env|exec|verify)")
    else:
        click.echo("plan:   not written (give -o PLAN_FILE)")
