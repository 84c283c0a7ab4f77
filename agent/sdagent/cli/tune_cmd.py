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
from sdagent.cli.options import FiniteFloat, MeasureArgs, command_line, measure_options
from sdagent.errors import BadInput


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
        if kind == "measure":
            comp = data["vs"]
            self.bar.label = (f"{comp.candidate[:28]:<28} vs {comp.best[:16]:<16} "
                              f"round {data['round']}/{data['rounds']}")
        elif kind == "warmup":
            self.bar.label = f"warming {data['candidate'][:28]} (compile cache)"
        elapsed = int(min(time.monotonic() - self.t0, self.budget_s))
        if elapsed > self.shown:
            self.bar.update(elapsed - self.shown)
            self.shown = elapsed
        else:
            self.bar.render_progress()


@cli.command("tune")
@measure_options(steps=4, size=256)
@click.option("--budget", "budget_min", type=FiniteFloat(above=0), default=15.0, show_default=True,
              help="Minutes to spend measuring (the search stops starting comparisons that would not fit).")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Interleaved rounds per comparison (3 is the fewest the rule accepts for 'faster').")
@click.option("--compile/--no-compile", "allow_compile", default=True, show_default=True,
              help="Try torch.compile (a cold cache costs minutes once; the warm-up is counted).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the chosen plan here (atomically; an interrupted tune leaves the old file).")
@click.option("--json", "as_json", is_flag=True, help="Print the tuning record and the plan as JSON.")
@click.pass_context
def tune(ctx: click.Context, m: MeasureArgs, budget_min: float, rounds: int, allow_compile: bool,
         output: str | None, as_json: bool) -> None:
    """Measure candidate plans on this host and keep the fastest; stock is the fallback.

    \b
    Candidates: the stock environment (no preload, torch's own OpenMP, no
    pinning, fp32 eager), the topology plan, then one axis at a time from the
    best so far: precision/backend, no preloads (jemalloc and libiomp5 off
    together), torch.compile, channels_last, allocator
    (glibc, jemalloc short/long/demo MALLOC_CONF, tcmalloc), OpenMP runtime,
    KMP_BLOCKTIME 0/1/200, pinning, threads. Each measurement is a fresh
    process; each comparison interleaves the candidate with the current best.
    \b
    Rule: a candidate replaces the best only when its latencies over 3 rounds
    do not overlap the best's. The chosen plan is written with every
    measurement and the reason for the choice; `sdagent --plan-file F
    env/exec/verify` use it.
    \b
    Example (tiny model, about a minute):
      sdagent tune --model /tmp/sd-tiny --steps 2 --height 64 --width 64 --budget 1 -o tuned.json
    """
    from sdagent.pipeline.modeldir import check_model_dir
    from sdagent.tuning.report import tune_table
    from sdagent.tuning.session import TuneRequest, tune as run_tune

    m.check()
    if rounds < 3:
        raise BadInput(f"invalid --rounds {rounds}: at least 3 (fewer cannot show a difference beyond noise)")
    if output:
        atomicio.check_parent(output)
    md = check_model_dir(m.model_dir)
    req = TuneRequest(md, m.workload(), budget_min * 60, rounds, m.repeats, m.warmup_steps, m.timeout_s,
                      allow_compile, output, command_line(), start=ctx.obj.plan())
    with BudgetBar(req.budget_s) as bar:
        out = run_tune(ctx.obj.topology(), ctx.obj.facts(), req, environ=dict(os.environ), on_event=bar.event)
    if output:
        atomicio.write_json(output, out.plan.to_dict())
    if as_json:
        click.echo(json.dumps({"tuning": out.record, "plan": out.plan.to_dict()}, indent=2))
        return
    click.echo(tune_table(out.result, out.result.samples()), nl=False)
    if output:
        click.echo(f"plan:   {output} (use: sdagent --plan-file {shlex.quote(output)} env|exec|verify)")
    else:
        click.echo("plan:   not written (give -o PLAN_FILE)")
