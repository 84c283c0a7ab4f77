"""`sdagent bench`: latency figures with the machine state beside them."""

from __future__ import annotations

import json
from typing import Any

import click

from sdagent.atomicio import check_parent, write_json
from sdagent.cli import cli
from sdagent.cli.options import (backend_options, check_compile_flag, model_and_workload, progress_bar,
                                 resolve_plan, run_overrides, workload_options)
from sdagent.measuring.bench import bench_model, check_counts
from sdagent.planning.runspec import RunSpec


@cli.command("bench")
@workload_options
@click.option("--runs", type=int, default=5, show_default=True,
              help="Timed runs (p90 is reported from 10 runs, p99 from 100).")
@click.option("--warmup", type=int, default=1, show_default=True,
              help="Untimed runs first (oneDNN kernel selection, allocator growth, compilation).")
@backend_options
@click.option("--channels-last/--no-channels-last", "channels_last", default=None,
              help="channels_last memory format. Default: the plan's.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the JSON result to this file (atomically).")
@click.pass_context
def bench(ctx: click.Context, model_dir: str, wl: dict[str, Any], runs: int, warmup: int, backend: str,
          precision: str, compile_: bool | None, channels_last: bool | None, compile_cache: str | None,
          as_json: bool, output: str | None) -> None:
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
    Example (tiny model, seconds):
      sdagent bench --model /tmp/sd-tiny --steps 2 --runs 5 --json
    """
    check_counts(runs, warmup)
    if output:
        check_parent(output)
    md, w = model_and_workload(model_dir, wl)
    plan = resolve_plan(ctx, extra=run_overrides(backend, precision, compile_, channels_last))
    check_compile_flag(plan, compile_)
    with ctx.obj.bench_lock("bench"):
        result = bench_model(md, w, RunSpec.from_plan(plan), runs, warmup, plan=plan.to_dict(),
                             compile_cache_dir=compile_cache, bar=progress_bar("bench"))
    d = result.to_dict()
    d["model_dir"] = str(md.path)
    if output:
        write_json(output, d)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    from sdagent.measuring.bench_report import bench_table

    click.echo(bench_table(result), nl=False)
