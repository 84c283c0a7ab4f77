"""`sdagent tune`: measure candidate plans on this host, keep the fastest, never one slower than stock."""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import click

from sdagent import atomicio
from sdagent.cli import cli
from sdagent.errors import BadInput
from sdagent.workload import DEMO_PROMPT, Workload, validate_workload


def measure_options(steps: int, size: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--model, the workload and the per-process measurement knobs (tune and ladder share them)."""

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--model", "model_dir", required=True, type=click.Path(),
                      help="A diffusers StableDiffusionPipeline directory (`sdagent model create`).")
        @click.option("--steps", type=int, default=steps, show_default=True, help="Denoising steps per image.")
        @click.option("--height", type=int, default=size, show_default=True, help="Image height (multiple of 8).")
        @click.option("--width", type=int, default=size, show_default=True, help="Image width (multiple of 8).")
        @click.option("--guidance", type=float, default=7.5, show_default=True,
                      help="Guidance scale; above 1 the UNet runs at batch 2.")
        @click.option("--prompt", default=DEMO_PROMPT, show_default=True)
        @click.option("--repeats", type=int, default=1, show_default=True,
                      help="Timed calls per process (the process's median counts).")
        @click.option("--warmup-steps", type=int, default=2, show_default=True,
                      help="Steps of the one untimed warm-up call in each process.")
        @click.option("--timeout", "timeout_s", type=float, default=1800, show_default=True,
                      help="Seconds before one measurement process is killed and counted as failed.")
        @functools.wraps(func)
        def wrapper(*args: Any, model_dir: str, steps: int, height: int, width: int, guidance: float,
                    prompt: str, repeats: int, warmup_steps: int, timeout_s: float, **kw: Any) -> Any:
            kw["m"] = MeasureArgs(model_dir, dict(prompt=prompt, steps=steps, height=height, width=width,
                                                   guidance=guidance), repeats, warmup_steps, timeout_s)
            return func(*args, **kw)

        return wrapper

    return deco


@dataclass(frozen=True)
class MeasureArgs:
    model_dir: str
    wl: dict[str, Any]
    repeats: int
    warmup_steps: int
    timeout_s: float

    def workload(self, scheduler: str = "default") -> Workload:
        return validate_workload(Workload(**self.wl, scheduler=scheduler))

    def check(self) -> None:
        if self.repeats < 1:
            raise BadInput(f"invalid --repeats {self.repeats}: at least 1 timed call per process")
        if self.warmup_steps < 1:
            raise BadInput(f"invalid --warmup-steps {self.warmup_steps}: must be >= 1")
        if self.timeout_s <= 0:
            raise BadInput(f"invalid --timeout {self.timeout_s}: must be > 0")


def command_line() -> str:
    return "sdagent " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0] else "sdagent"


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


def tune_table(result: Any, samples: dict[str, list[float]]) -> str:
    """The per-candidate table: median and range of every measurement, its verdict, its settings."""
    from sdagent.tune import describe, summarize

    verdict: dict[str, str] = {}
    for c in result.comparisons:
        if c.verdict:
            verdict[c.candidate] = f"{c.verdict.outcome} vs {c.best}"
    names = list(result.candidates)
    rows = summarize(names, samples)
    lines = [f"  {'candidate':<26} {'n':>2} {'median s':>9} {'min-max s':>15} {'spread':>7}  verdict",
             "-" * 94]
    for r in rows:
        if r["n"] == 0:
            why = next((w for n, w in result.skipped if n == r["name"]), "not measured")
            lines.append(f"  {r['name'][:26]:<26} {0:>2} {'-':>9} {'-':>15} {'-':>7}  skipped ({why})")
            continue
        mark = "*" if r["name"] == result.chosen.name else " "
        spread = f"{100 * r['spread']:>6.1f}%" if r["spread"] is not None else f"{'-':>7}"
        lines.append(f"{mark} {r['name'][:26]:<26} {r['n']:>2} {r['median_s']:>9.3f} "
                     f"{r['min_s']:>7.3f}-{r['max_s']:<7.3f} {spread}  "
                     f"{verdict.get(r['name'], 'baseline' if r['name'] == result.stock.name else '')}")
    lines.append("(* = chosen; spread = (max-min)/median; verdicts per the rule below)")
    lines.append("")
    lines.append(f"chosen: {result.chosen.name}: {describe(result.chosen.settings)}")
    lines.append(f"why:    {result.reason}")
    lines.append(f"rule:   {result.rule}")
    lines.append(f"budget: {result.spent_s:.0f} s of {result.budget_s:.0f} s")
    return "\n".join(lines) + "\n"


@cli.command("tune")
@measure_options(steps=4, size=256)
@click.option("--budget", "budget_min", type=float, default=15.0, show_default=True,
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
    from sdagent.modeldir import check_model_dir

    m.check()
    if budget_min <= 0:
        raise BadInput(f"invalid --budget {budget_min}: must be > 0 minutes")
    if rounds < 3:
        raise BadInput(f"invalid --rounds {rounds}: at least 3 (fewer cannot show a difference beyond noise)")
    if output:
        atomicio.check_parent(output)
    md = check_model_dir(m.model_dir)
    w = m.workload()

    from sdagent import tune as T
    from sdagent.launches import plan_launch, stock_launch
    from sdagent.measure import WorkerJob, run_worker
    from sdagent.plan import PlanRequest, has_native_bf16, make_plan
    from sdagent.procstate import machine_state, read_load_average

    topo, facts = ctx.obj.topology(), ctx.obj.facts()
    request = PlanRequest()

    def plan_for(overrides: dict[str, Any], **kw: Any):
        return make_plan(topo, facts, request, overrides=overrides, **kw)

    def resolve(overrides: Any) -> dict[str, Any]:
        return dict(plan_for(dict(overrides)).settings)

    derived = plan_for({})
    host = T.HostChoices(
        physical_cores=derived.settings["omp_num_threads"], bf16=has_native_bf16(topo) is not None,
        ipex=facts.ipex.usable, jemalloc=bool(facts.libraries.get("jemalloc")),
        tcmalloc=bool(facts.libraries.get("tcmalloc")), iomp=bool(facts.libraries.get("iomp")),
        pin=("numactl" if facts.numactl else "taskset" if facts.taskset else None), compile=allow_compile)
    stock = T.stock_candidate(resolve)
    first = [T.plan_candidate(resolve)]
    if not allow_compile and first[0].settings.get("compile"):
        first = [T.Candidate(first[0].name, {"compile": False}, resolve({"compile": False}), "plan")]
    axes = T.make_axes(host, resolve)
    env = dict(os.environ)
    details: dict[str, list[dict[str, Any]]] = {}

    def launch_for(c: T.Candidate):
        return stock_launch(env) if c.stock else plan_launch(plan_for(dict(c.overrides)), env, name=c.name)

    def run(c: T.Candidate, repeats: int):
        job = WorkerJob.from_settings(str(md.path), w, c.settings, repeats=repeats, warmup=1,
                                      warmup_steps=m.warmup_steps)
        res = run_worker(launch_for(c), job, timeout_s=m.timeout_s)
        if res.data and res.data.get("ok"):
            d = res.data
            details.setdefault(c.name, []).append({
                "latency_s": d["latency_s"], "wall_s": round(res.wall_s, 2),
                "unet_step_median_s": _step_median(d), "libraries": d["process"]["libraries"],
                "torch_threads": d["process"]["torch_threads"], "affinity": d["process"]["affinity"],
                "observed": d.get("observed"), "load_average": d.get("load_average")})
        if not res.ok:
            raise T.MeasureFailed(res.reason)
        return res

    def measure(c: T.Candidate) -> float:
        return run(c, m.repeats).latency_s

    def warm(c: T.Candidate) -> None:
        run(c, 0)

    load_before = list(read_load_average())
    started = time.time()
    with BudgetBar(budget_min * 60) as bar:
        result = T.search(stock, first, axes, measure, budget_s=budget_min * 60, clock=time.monotonic,
                          warm=warm, rounds=rounds, on_event=bar.event)
    state = machine_state().to_dict()
    samples = result.samples()
    record = result.to_dict()
    record.update({
        "format": "sdagent-tune/1",
        "command": command_line(),
        "model": str(md.path), "model_preset": md.sdagent_preset,
        "workload": w.to_dict(), "repeats": m.repeats, "warmup_steps": m.warmup_steps, "rounds": rounds,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "chosen_settings": T.describe(result.chosen.settings),
        "machine": {"cpu_model": state["cpu_model"], "topology": topo.summary(),
                    "load_before": load_before, "load_after": list(read_load_average()),
                    "versions": state["versions"], "governor": state["governor"]},
        "processes": details,
    })
    for c in record["candidates"]:
        c["description"] = T.describe(result.candidates[c["name"]].settings)
    # The winner is the tuned plan itself, not overrides on top of one.
    plan = make_plan(topo, facts, request, file_settings=dict(result.chosen.overrides), source="tuned",
                     tuning=record, plan_file=os.path.abspath(output) if output else None)
    if output:
        atomicio.write_json(output, plan.to_dict())
    if as_json:
        click.echo(json.dumps({"tuning": record, "plan": plan.to_dict()}, indent=2))
        return
    click.echo(tune_table(result, samples), nl=False)
    if output:
        click.echo(f"plan:   {output} (use: sdagent --plan-file {shlex.quote(output)} env|exec|verify)")
    else:
        click.echo("plan:   not written (give -o PLAN_FILE)")


def _step_median(d: dict[str, Any]) -> float | None:
    import statistics

    steps = [s for r in d.get("runs", []) for s in r.get("unet_steps_s", [])]
    return round(statistics.median(steps), 5) if steps else None


__all__ = ["MeasureArgs", "measure_options", "tune", "tune_table", "command_line"]
