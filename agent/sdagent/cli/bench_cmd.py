"""`sdagent bench`: latency figures with the machine state beside them."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from sdagent.atomicio import write_json
from sdagent.cli import cli
from sdagent.cli.context import AgentContext
from sdagent.cli.options import (FiniteFloat, ModelArgs, OutputFile, PlanArgs, backend_options, check_backend_usable,
                                 check_vae, layout_options, model_options, pass_agent, progress_bar,
                                 resolve_plan, run_overrides, spill_on_write_failure)
from sdagent.measuring.bench import bench_model, check_counts
from sdagent.textfmt import runs_with


@cli.command("bench")
@model_options()
@click.option("--runs", type=int, default=5, show_default=True,
              help="Timed runs (p90 is reported from 10 runs, p99 from 100).")
@click.option("--warmup", type=int, default=1, show_default=True,
              help="Untimed runs first (oneDNN kernel selection, allocator growth, compilation).")
@backend_options
@click.option("--channels-last/--no-channels-last", "channels_last", default=None,
              help="channels_last memory format. Default: the plan's.")
@layout_options
@click.option("--throughput", is_flag=True,
              help="Measure images/min: every instance of the plan (or of --instances N) at once, each its own "
                   "process on its own CPUs. Implied by --instances.")
@click.option("--images", type=click.IntRange(min=1), default=None,
              help="Throughput: images per instance after the window opens (default 3).")
@click.option("--window", "window_s", type=FiniteFloat(above=0), default=None, metavar="SECONDS",
              help="Throughput: a measuring window instead of a number of images.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Also write the JSON result to this file (atomically; checked before measuring).")
@pass_agent
def bench(agent: AgentContext, model: ModelArgs, runs: int, warmup: int, backend: str,
          precision: str, compile_: bool | None, vae: str, channels_last: bool | None, artifacts: str | None,
          plan_args: PlanArgs, throughput: bool, images: int | None, window_s: float | None, as_json: bool,
          output: str | None) -> None:
    """Measure latency: WARMUP untimed runs, then RUNS timed ones, same seed each.

    \b
    Reports per run: latency, mean UNet step, text encoding, VAE decode; over
    the runs: median, p90 (from 10 runs) and p99 (from 100, nearest rank),
    min/max, stdev, spread = (max-min)/median, images/s (1/median), and the
    median UNet step. Beside the figures: the plan in effect, the libraries
    actually mapped into this process (/proc/self/maps), threads, CPU
    affinity, load average before and after, versions.

    \b
    The process measures itself: run it under the plan to measure the plan,
      sdagent exec -- sdagent bench --model DIR --steps 20
    and without `exec` to measure the stock environment.

    \b
    Throughput (--throughput, or --instances N): each instance of the plan is
    started as its own process under its instance plan (binding, threads,
    memory node), warmed with one image; when all are warm one window opens
    for all; each then generates --images images (or for --window seconds).
    Reports images/min for the host (all images / the slowest instance's
    makespan) and per instance with bounds from each instance's median image
    time, the latency p50/p90 every image saw under that load, failed
    instances and stragglers (makespan > 1.25x the median instance's).
      sdagent bench --model DIR --instances 2 --images 3

    \b
    Example (tiny model, seconds):
      sdagent bench --model /tmp/sd-tiny --steps 2 --runs 5 --json
    """
    check_counts(runs, warmup)
    md, w = model.checked()
    plan = resolve_plan(agent, plan_args, extra=run_overrides(backend, precision, compile_, channels_last, vae))
    check_vae(plan, md.path)
    check_backend_usable(plan.backend)
    if throughput or plan_args.instances is not None or images is not None or window_s is not None:
        return _throughput(agent, md, w, plan, images, window_s, artifacts, as_json, output)
    with agent.bench_lock("bench"):
        result = bench_model(md, w, plan.run_spec, runs, warmup, plan=plan,
                             artifacts_dir=artifacts, bar=progress_bar("bench"))
    d = result.to_dict()
    d["model_dir"] = str(md.path)
    d["runs_with"] = runs_with(d["machine"].get("plan"), d["machine"]["libraries"])  # the maps, not the plan
    if output:
        spill_on_write_failure(d, lambda: write_json(output, d))
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    from sdagent.measuring.bench_report import bench_table

    click.echo(bench_table(result), nl=False)


def _throughput(agent: AgentContext, md: Any, w: Any, plan: Any, images: int | None, window_s: float | None,
                artifacts: str | None, as_json: bool, output: str | None) -> None:
    from sdagent.measuring import throughput as T

    images = images if images is not None or window_s is not None else 3
    T.check_request(plan, images, window_s)

    def event(kind: str, data: dict[str, Any]) -> None:
        if kind == "ready":
            click.echo(f"throughput: instance {data['instance']} warm ({data['image_s']:.2f} s per image)", err=True)
        elif kind == "window":
            click.echo("throughput: window open for every instance", err=True)
        elif kind == "done" and not data["ok"]:
            click.echo(f"sdagent: warning: instance {data['instance']} failed: {data['reason']}", err=True)

    with agent.bench_lock("bench --throughput"):
        figs = T.measure_plan(plan, str(md.path), w, environ=dict(os.environ), images=images, window_s=window_s,
                              artifacts_dir=artifacts, on_event=event)
    from sdagent.host.process import machine_state

    d = {"format": "sdagent-throughput/1", "model": str(md.path), "workload": w.to_dict(), "plan": plan.to_dict(),
         **figs.to_dict(), "machine": machine_state().to_dict()}
    if output:
        spill_on_write_failure(d, lambda: write_json(output, d))
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    from sdagent.measuring.bench_report import throughput_table

    click.echo(throughput_table(figs, w, plan.to_dict()), nl=False)
