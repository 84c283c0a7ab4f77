"""`sdagent bench`: latency figures with the machine state beside them."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from sdagent.atomicio import check_parent, write_json
from sdagent.bench import check_counts, model_default_size, run_bench
from sdagent.cli import cli
from sdagent.cli.options import backend_options
from sdagent.errors import BadInput
from sdagent.modeldir import ModelDir, check_model_dir
from sdagent.workload import DEMO_PROMPT, SCHEDULERS, Workload, validate_workload


def workload_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--model and the workload's shape, shared by bench and verify; the command gets `model_dir` and `wl`."""

    @click.option("--model", "model_dir", required=True, type=click.Path(),
                  help="A diffusers StableDiffusionPipeline directory (`sdagent model create`, or a real SD-1.5).")
    @click.option("--prompt", default=DEMO_PROMPT, show_default=True, help="Text prompt.")
    @click.option("--steps", type=int, default=20, show_default=True, help="Denoising (UNet) steps.")
    @click.option("--height", type=int, default=None,
                  help="Image height, a multiple of 8 (default: the model's own, 512 for SD-1.5).")
    @click.option("--width", type=int, default=None, help="Image width (default: the model's own).")
    @click.option("--guidance", type=float, default=7.5, show_default=True,
                  help="Classifier-free guidance scale; above 1 the UNet runs at batch 2.")
    @click.option("--seed", type=int, default=0, show_default=True,
                  help="Seed of the initial noise; every run uses it, so every run does the same work.")
    @click.option("--scheduler", default="default", show_default=True,
                  help=f"One of: {', '.join(SCHEDULERS)} (default = the model's own).")
    @functools.wraps(func)
    def wrapper(*args: Any, model_dir: str, prompt: str, steps: int, height: int | None, width: int | None,
                guidance: float, seed: int, scheduler: str, **kwargs: Any) -> Any:
        kwargs["model_dir"] = model_dir
        kwargs["wl"] = dict(prompt=prompt, steps=steps, height=height, width=width, guidance=guidance,
                            seed=seed, scheduler=scheduler)
        return func(*args, **kwargs)

    return wrapper


def resolve_workload(md: ModelDir, wl: dict[str, Any]) -> Workload:
    """The validated workload; a missing height/width is the model's own resolution."""
    wl = dict(wl)
    if wl.get("height") is None or wl.get("width") is None:
        size = model_default_size(md.path)
        wl["height"] = wl["height"] if wl.get("height") is not None else size
        wl["width"] = wl["width"] if wl.get("width") is not None else size
    return validate_workload(Workload(**wl))


def model_name(md: ModelDir) -> str:
    """The name targets match on: the `sdagent model create` preset, else the directory's name."""
    return md.sdagent_preset or Path(md.path).resolve().name


def unet_calls(pipe: Any, steps: int) -> int:
    """UNet calls one generation makes (PNDM adds warm-up steps): the progress bar's unit."""
    try:
        pipe.scheduler.set_timesteps(steps)
        return max(1, len(pipe.scheduler.timesteps))
    except Exception:  # noqa: BLE001 - only the bar's length depends on it
        return steps


def timed_runs(prepared: Any, w: Workload, runs: int, warmup: int, plan: dict[str, Any], model: str,
               label: str):
    """run_bench with a progress bar on stderr (one tick per UNet step)."""
    total = (runs + warmup) * unet_calls(prepared.pipe, w.steps)
    with click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True) as bar:
        return run_bench(prepared, w, runs, warmup, progress=bar.update, plan=plan, model=model)


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
    md = check_model_dir(model_dir)
    w = resolve_workload(md, wl)

    from sdagent.cli.run_cmd import plan_overrides

    overrides = plan_overrides(backend, precision, compile_)
    if channels_last is not None:
        overrides["channels_last"] = channels_last
    plan = ctx.obj.plan(overrides=overrides)
    if plan.backend == "ipex" and compile_:
        raise BadInput("--compile is for the native backend (IPEX optimizes the graph itself): add --backend native")
    for msg in plan.warnings:
        click.echo(f"sdagent: warning: {msg}", err=True)

    from sdagent.pipeline import BackendSettings, load_pipeline, prepare

    settings = BackendSettings.from_plan(plan, isa_flags=tuple(ctx.obj.topology().flags),
                                         compile_cache_dir=compile_cache)
    prepared = prepare(load_pipeline(md.path, w.scheduler), settings, w)
    result = timed_runs(prepared, w, runs, warmup, plan.to_dict(), model_name(md), "bench")
    d = result.to_dict()
    d["model_dir"] = str(md.path)
    if output:
        write_json(output, d)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    from sdagent.report import bench_table

    click.echo(bench_table(result), nl=False)
