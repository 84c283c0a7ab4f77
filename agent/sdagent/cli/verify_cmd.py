"""`sdagent verify`: prove, inside the serving process's own conditions, that this host meets its target."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

import click

from sdagent import __version__
from sdagent.atomicio import check_parent
from sdagent.bench import check_counts
from sdagent.cli import cli
from sdagent.cli.bench_cmd import model_name, resolve_workload, timed_runs, workload_options
from sdagent.cli.options import plan_options, resolve_plan
from sdagent.errors import Exit, SdagentError
from sdagent.modeldir import check_model_dir
from sdagent.procstate import process_state
from sdagent.targets import HostKey, load_targets, select_target
from sdagent.verify import (
    Check, StockFigures, VerifyResult, check_bf16_diff, check_observed, check_stock, check_target,
    decide_exit, image_checks, latency_checks, mean_abs_diff, process_checks, skip_measured, skipped,
    stock_figures_from_tuning,
)
from sdagent.workload import Workload

VERIFY_EPILOG = """\b
Checks, and the exit code each category gives when it fails:
  tuning    3  planned allocator and libiomp5 mapped (/proc/self/maps, realpaths),
               torch threads = plan, CPU affinity = plan, backend and precision
               as seen inside the UNet's call = plan
  target    4  an entry of --targets matches this host and workload
  latency   1  median <= p50_s; p90 <= p90_s (nearest rank; below 10 runs the
               slowest run, which bounds the p90)
  quality   1  image finite and not blank; bf16 plans: mean |bf16 - fp32| pixel
               difference (same seed, [0,1] scale) <= bf16_max_diff
  stock     6  the plan is slower than stock beyond noise (its fastest run slower
               than stock's slowest): from the plan file's tune results, and with
               --against-stock (or stock_check: true) from a fresh stock process
  validity  5  at least min_runs timed runs; (max-min)/median <= max_spread
               (inconclusive is never a pass)
\b
When several fail, the most fundamental wins: 2 > 3 > 4 > 1 > 6 > 5 > 0.
  0 pass, 1 latency or quality target missed, 2 usage or bad input,
  3 tuning not in effect, 4 no target matches this host, 5 inconclusive,
  6 the plan in effect is slower than stock.
Once the tuning is not in effect (3) or no target matches (4), the costly
steps (benchmark, fp32 reference, stock run) are skipped: they cannot change
the answer.
"""


def instance_physical_cores(topo: Any, cpus: tuple[int, ...]) -> int:
    """Distinct physical cores among an instance's CPUs (what targets' core bounds mean)."""
    cores = set()
    for c in cpus:
        try:
            cpu = topo.cpu(c)
            cores.add((cpu.socket, cpu.core))
        except Exception:  # noqa: BLE001 - a CPU the topology does not describe counts as its own core
            cores.add((-1, c))
    return len(cores)


def stock_command(model_dir: str, w: Workload, runs: int, warmup: int) -> list[str]:
    """`sdagent bench` in stock settings (tune.STOCK_SETTINGS: native fp32, contiguous, eager)."""
    argv = [sys.executable, "-m", "sdagent", "bench", "--model", str(model_dir), "--json",
            "--runs", str(runs), "--warmup", str(warmup), "--steps", str(w.steps), "--height", str(w.height),
            "--width", str(w.width), "--guidance", repr(w.guidance), "--seed", str(w.seed),
            "--scheduler", w.scheduler, "--prompt", w.prompt,
            "--backend", "native", "--precision", "fp32", "--no-channels-last", "--no-compile"]
    return argv


def measure_stock(model_dir: str, w: Workload, runs: int, warmup: int, plan_s: list[float]) \
        -> tuple[StockFigures | str, dict[str, Any] | None]:
    """Run the same workload in a fresh stock process (no preloads, no OpenMP/KMP variables,
    torch's own threads; same CPUs as this process, so the comparison is per instance)."""
    from sdagent.launches import stock_child_env

    argv = stock_command(model_dir, w, runs, warmup)
    try:
        proc = subprocess.run(argv, env=stock_child_env(os.environ), stdout=subprocess.PIPE, text=True)
    except OSError as exc:
        return f"the stock process could not start: {exc}", None
    if proc.returncode != 0:
        return f"the stock process failed (exit {proc.returncode})", None
    try:
        data = json.loads(proc.stdout)
        stock_s = [float(r["latency_s"]) for r in data["runs"]]
    except (ValueError, KeyError, TypeError):
        return "the stock process printed no bench JSON", None
    return StockFigures(tuple(plan_s), tuple(stock_s), "fresh stock process, measured after the plan"), data


def fp32_reference(model_path: str, w: Workload) -> tuple[Any, dict[str, Any]]:
    """The same seed through plain fp32 (native, contiguous, eager): the quality yardstick."""
    from sdagent.pipeline import BackendSettings, load_pipeline, prepare

    ref = prepare(load_pipeline(model_path, w.scheduler),
                  BackendSettings(backend="native", precision="fp32", channels_last=False, compile=False), w)
    g = ref.generate(w)
    return g.array, {"settings": ref.settings.to_dict(), "seed": w.seed, "latency_s": round(g.total_s, 6)}


@cli.command("verify", epilog=VERIFY_EPILOG)
@workload_options
@plan_options
@click.option("--targets", "targets_file", required=True, type=click.Path(),
              help="YAML targets file (see examples/targets.yml); the first matching entry applies.")
@click.option("--runs", type=int, default=None,
              help="Timed runs (default: the matching target's min_runs; fewer makes the result inconclusive).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed runs first.")
@click.option("--instance", type=int, default=0, envvar="SDAGENT_INSTANCE", show_default=True,
              help="Which instance of the plan this process is (`sdagent exec --instance` sets SDAGENT_INSTANCE).")
@click.option("--against-stock", is_flag=True,
              help="Also run the workload in a fresh stock process and fail (6) if the plan is slower beyond noise.")
@click.option("--compile-cache", type=click.Path(file_okay=False), default=None,
              help="Inductor cache directory (default ~/.cache/sdagent/inductor).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON report to this file (atomically).")
@click.option("--prometheus", type=click.Path(dir_okay=False), default=None,
              help="Write a node_exporter textfile-collector file (*.prom), atomically.")
@click.pass_context
def verify(ctx: click.Context, model_dir: str, wl: dict[str, Any], plan_args: dict, targets_file: str,
           runs: int | None, warmup: int, instance: int, against_stock: bool, compile_cache: str | None,
           as_json: bool, report: str | None, prometheus: str | None) -> int:
    """Check that the tuning is in effect in this process, that the output is sane,
    and that latency meets the target entry matching this host.

    \b
    Run it the way the service runs, so that it sees what the service gets:
      sdagent exec -- sdagent verify --model DIR --targets targets.yml
    Without `exec` (or the rendered env) the preloads are missing: exit 3.

    \b
    Outputs: a table (or --json) on stdout, --report JSON, --prometheus
    textfile (sdagent_verify_exit_code, sdagent_check_ok{check=...},
    sdagent_latency_seconds{quantile=...}, ...). All files are written
    atomically; on bad input met after the outputs were checked, the files
    still record exit 2 so a fleet never keeps a stale pass.
    """
    started = time.time()
    t0 = time.perf_counter()
    # Everything that can be wrong with the request, before any long work.
    for path in (report, prometheus):
        if path:
            check_parent(path)
    checks: list[Check] = []
    bench = reference = stock = target = key = None
    selection = name = ""
    plan_dict: dict[str, Any] = {}

    def result(code: Exit | None = None) -> VerifyResult:
        return VerifyResult(
            exit_code=code if code is not None else decide_exit(checks), checks=tuple(checks), target=target,
            host_key=key, selection=selection, plan=plan_dict, instance=instance, model=name, bench=bench,
            reference=reference, stock=stock, started_at=started, duration_s=time.perf_counter() - t0,
            version=__version__)

    try:
        targets = load_targets(targets_file)
        check_counts(runs if runs is not None else 1, warmup)
        md = check_model_dir(model_dir)
        w = resolve_workload(md, wl)
        name = model_name(md)
        plan = resolve_plan(ctx, plan_args)
        plan.instance(instance)  # BadInput when out of range
        plan_dict = plan.to_dict()

        topo = ctx.obj.topology()
        state = process_state()
        checks += process_checks(plan.settings, state, plan.expected_affinity(instance, topo.allowed_cpus))
        key = HostKey(flags=tuple(topo.flags), cpu_model=topo.model_name,
                      physical_cores=instance_physical_cores(topo, plan.instance(instance).cpus),
                      model=name, height=w.height, width=w.width, steps=w.steps,
                      precision=plan.precision, backend=plan.backend)
        sel = select_target(targets, key)
        target, selection = sel.target, sel.explain()
        checks.append(check_target(target, selection))
        checks.append(check_stock("stock_tune", stock_figures_from_tuning(plan.tuning)))

        early = decide_exit(checks)
        if early in (Exit.TUNING_NOT_IN_EFFECT, Exit.NO_TARGET) or target is None:
            why = "skipped: " + ("the tuning is not in effect" if early == Exit.TUNING_NOT_IN_EFFECT
                                 else "no target matches")
            checks += skip_measured(why)
        else:
            out: dict[str, Any] = {}
            checks += _measure(ctx, md, w, plan, plan_dict, target, runs, warmup, compile_cache, name,
                               against_stock, out)
            bench, reference, stock = out.get("bench"), out.get("reference"), out.get("stock")
    except SdagentError as exc:
        if exc.exit_code == Exit.USAGE:
            checks.append(Check("input", "usage", "fail", str(exc)))
            _write(result(Exit.USAGE), report, prometheus)
        raise

    res = result()
    _write(res, report, prometheus)
    from sdagent.report import verify_table

    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
    else:
        click.echo(verify_table(res), nl=False)
    return int(res.exit_code)


def _measure(ctx: click.Context, md: Any, w: Workload, plan: Any, plan_dict: dict[str, Any], target: Any,
             runs: int | None, warmup: int, compile_cache: str | None, name: str, against_stock: bool,
             out: dict[str, Any]) -> list[Check]:
    """Load, prepare, benchmark; then output quality and, if asked, the stock comparison."""
    from sdagent.pipeline import BackendSettings, load_pipeline, prepare

    checks: list[Check] = []
    n = runs if runs is not None else target.min_runs
    settings = BackendSettings.from_plan(plan, isa_flags=tuple(ctx.obj.topology().flags),
                                         compile_cache_dir=compile_cache)
    prepared = prepare(load_pipeline(md.path, w.scheduler), settings, w)
    bench = timed_runs(prepared, w, n, warmup, plan_dict, name, "verify")
    out["bench"] = bench
    obs = bench.observed
    how = ("autocast {}, UNet weights {}".format(obs.autocast_dtype or "off", obs.param_dtype) if obs else "")
    checks.append(check_observed("backend", plan.backend, obs.backend if obs else None,
                                 f"{obs.ipex_modules} IPEX modules in the UNet" if obs else ""))
    checks.append(check_observed("precision", plan.precision, obs.precision if obs else None, how))
    tuned = not any(c.failed for c in checks)
    checks += latency_checks(bench.latencies, target)
    checks += image_checks(bench.last_image)
    del prepared
    gc.collect()
    if not tuned:
        checks.append(skipped("bf16_vs_fp32", "quality", "skipped: the tuning is not in effect"))
        checks.append(skipped("stock_measured", "stock", "skipped: the tuning is not in effect"))
        return checks
    if plan.precision == "bf16":
        ref, out["reference"] = fp32_reference(str(md.path), w)
        diff = mean_abs_diff(bench.last_image, ref)
        out["reference"]["mean_abs_diff"] = None if diff != diff else round(diff, 6)
        checks.append(check_bf16_diff(diff, target.bf16_max_diff))
    else:
        checks.append(skipped("bf16_vs_fp32", "quality", "precision is fp32: nothing to compare"))
    if against_stock or target.stock_check:
        figures, data = measure_stock(str(md.path), w, n, warmup, bench.latencies)
        out["stock"] = {"figures": figures.to_dict() if isinstance(figures, StockFigures) else None,
                        "note": figures if isinstance(figures, str) else None,
                        "bench": data}
        if isinstance(figures, str):
            checks.append(Check("stock_measured", "stock", "inconclusive", figures))
        else:
            checks.append(check_stock("stock_measured", figures))
    else:
        checks.append(skipped("stock_measured", "stock", "not asked (--against-stock or stock_check: true)"))
    return checks


def _write(res: VerifyResult, report: str | None, prometheus: str | None) -> None:
    from sdagent.report import write_json_report, write_prometheus

    if report:
        write_json_report(report, res)
    if prometheus:
        write_prometheus(prometheus, res)

