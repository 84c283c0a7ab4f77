"""`sdagent ladder`: the latency ladder (vanilla, run_cpu, tuned, +backend, +compile, +DPM) with its plot."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from sdagent import atomicio
from sdagent.cli import cli
from sdagent.cli.tune_cmd import MeasureArgs, command_line, measure_options
from sdagent.errors import BadInput

#: The --quick profile: the tiny model's own size, one round, no per-step figure and no
#: compile rung (a cold inductor compile alone takes longer than the whole smoke test may).
QUICK = {"steps": 2, "height": 64, "width": 64, "rounds": 1, "warmup_steps": 1, "step_size": 0, "gemm_n": 512}


def apply_quick(m: MeasureArgs, rounds: int, step_size: int,
                given: set[str]) -> tuple[MeasureArgs, int, int]:
    """The --quick profile, except for what the user gave explicitly on the command line."""
    wl = {**m.wl, **{k: QUICK[k] for k in ("steps", "height", "width") if k not in given}}
    warm = m.warmup_steps if "warmup_steps" in given else QUICK["warmup_steps"]
    return (MeasureArgs(m.model_dir, wl, m.repeats, warm, m.timeout_s),
            rounds if "rounds" in given else QUICK["rounds"],
            step_size if "step_size" in given else QUICK["step_size"])


def build_rungs(plan: Any, plan_file: str, model: str, m: MeasureArgs, *, with_compile: bool,
                environ: dict[str, str], compile_why: str = "") -> list:
    """The rungs on this host, from the plan in force (pure apart from reading the plan)."""
    from sdagent.ladder import RUN_CPU, VANILLA, Rung
    from sdagent.launches import exec_launch, run_cpu_launch, stock_launch
    from sdagent.measure import WorkerJob

    w = m.workload()
    base = WorkerJob(model, w, repeats=m.repeats, warmup=1, warmup_steps=m.warmup_steps)
    s = plan.settings
    backend = replace(base, backend=s["backend"], precision=s["precision"],
                      channels_last=bool(s["channels_last"]), weights_prepack=bool(s["weights_prepack"]))
    tuned = exec_launch(plan, plan_file, environ)
    be = f"{s['backend']} {s['precision']}{', channels_last' if s['channels_last'] else ''}"
    rungs = [
        Rung(VANILLA, "stock environment (no preload, torch's own OpenMP and threads, no pinning), "
             "fp32 eager, the model's scheduler", stock_launch(environ, name=VANILLA), base),
        Rung(RUN_CPU, "`python -m torch.backends.xeon.run_cpu --enable-jemalloc` with its defaults, "
             "same fp32 eager script", run_cpu_launch(environ), base),
        Rung("tuned", "`sdagent exec` (the plan's preloads, threads, KMP_*, pinning), fp32 eager",
             replace(tuned, name="tuned"), base),
        Rung("tuned+backend", f"the plan's backend and precision ({be}), eager",
             replace(tuned, name="tuned+backend"), backend),
    ]
    if s["backend"] == "native":
        comp = replace(backend, compile=True)
        rungs.append(Rung("tuned+backend+compile", f"{be}, torch.compile (inductor, freezing) with a warm cache",
                          replace(tuned, name="tuned+backend+compile"), comp,
                          unavailable=None if with_compile else compile_why, warm_cache=True))
    dpm = replace(backend, workload=replace(w, scheduler="dpm"))
    rungs.append(Rung("tuned+backend+dpm", f"{be}, eager, DPMSolverMultistepScheduler at the same step count",
                      replace(tuned, name="tuned+backend+dpm"), dpm))
    return rungs


def runtime_note(libraries: list[str] | tuple[str, ...]) -> str:
    """What allocator and OpenMP a process really had, from its mapped libraries."""
    names = [Path(p).name for p in libraries]
    alloc = ("jemalloc" if any(n.startswith("libjemalloc") for n in names) else
             "tcmalloc" if any(n.startswith("libtcmalloc") for n in names) else "glibc malloc")
    omp = "libiomp5" if any(n.startswith("libiomp5") for n in names) else "libgomp"
    return f"{alloc} + {omp}"


def count_flops(model: str, m: MeasureArgs, environ: dict[str, str], gemm_n: int, timeout_s: float,
                size: int | None = None, peak: bool = True) -> dict:
    """FLOPs (and GEMM peaks) from `python -m sdagent.flops` in a fresh stock process."""
    from sdagent.launches import stock_child_env

    w = m.workload()
    argv = [sys.executable, "-m", "sdagent.flops", "--model", model, "--height", str(size or w.height),
            "--width", str(size or w.width), "--gemm-n", str(gemm_n), "--json"]
    if w.guidance <= 1.0:
        argv.append("--no-guidance")
    if not peak:
        argv.append("--no-peak")
    try:
        p = subprocess.run(argv, env=stock_child_env(environ), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"FLOP counting timed out after {timeout_s:.0f} s"}
    if p.returncode != 0:
        tail = [ln for ln in p.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return {"error": f"FLOP counting failed: {tail[0][:300]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def plot_png(rows: list, title: str) -> bytes:
    """A horizontal bar per rung: median seconds per image, min-max whiskers, speedup vs vanilla."""
    import matplotlib

    from sdagent.ladder import not_run

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.latency is not None]
    failed = [r for r in rows if r.latency is None]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * (len(ok) + len(failed))))
    names = [r.name for r in ok] + [f"{r.name} ({not_run(r.failed).split(':')[0]})" for r in failed]
    y = list(range(len(names)))[::-1]
    med = [r.latency.median for r in ok]
    lo = [r.latency.median - r.latency.min for r in ok]
    hi = [r.latency.max - r.latency.median for r in ok]
    colors = ["#888888" if r.name in ("vanilla", "run_cpu") else "#1f77b4" for r in ok]
    ax.barh(y[:len(ok)], med, xerr=[lo, hi], color=colors, capsize=4)
    for yy, r in zip(y, ok):
        label = f" {r.latency.median:.2f} s"
        if r.vs_vanilla:
            label += f"  {r.vs_vanilla.median:.2f}× vs vanilla"
        ax.text(r.latency.max, yy, label, va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.set_xlabel("seconds per image (median, min–max over rounds)")
    ax.set_title(title, fontsize=9)
    if med:
        ax.set_xlim(0, max(r.latency.max for r in ok) * 1.45)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


@cli.command("ladder")
@measure_options(steps=4, size=256)
@click.option("--quick", is_flag=True,
              help="Smoke profile for the tiny model: 64x64, 2 steps, 1 round, no compile rung (seconds).")
@click.option("--rounds", type=int, default=3, show_default=True, help="Interleaved rounds (each rung once per round).")
@click.option("--compile/--no-compile", "with_compile", default=True, show_default=True,
              help="Include the torch.compile rung (its cache is warmed once, untimed, before round 1).")
@click.option("--step-size", type=int, default=512, show_default=True, metavar="PX",
              help="Also time single guided UNet calls at PX x PX for the eager fp32/bf16 rungs: a "
                   "per-step figure at the published size, too slow for whole images on a small host "
                   "(0 = off; off under --quick).")
@click.option("--step-calls", type=int, default=3, show_default=True,
              help="Timed UNet calls per process for --step-size.")
@click.option("--out-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where ladder.md, ladder.json and ladder.png are written (atomically, at the end).")
@click.option("--json", "as_json", is_flag=True, help="Print ladder.json's content instead of the table.")
@click.pass_context
def ladder(ctx: click.Context, m: MeasureArgs, quick: bool, rounds: int, with_compile: bool, step_size: int,
           step_calls: int, out_dir: str, as_json: bool) -> None:
    """Measure the latency ladder: each tuning step against stock, run_cpu and this CPU's peak.

    \b
    Rungs, each a fresh process per round, rounds interleaved with rotated order:
      vanilla                stock environment, fp32 eager
      run_cpu                python -m torch.backends.xeon.run_cpu --enable-jemalloc
      tuned                  sdagent exec (the plan), fp32 eager
      tuned+backend          the plan's backend/precision (bf16 where AMX/AVX512-BF16)
      tuned+backend+compile  + torch.compile, warm cache (native backend)
      tuned+backend+dpm      + DPM-Solver at the same step count
    A rung that fails is reported with its reason; the others go on. The plan
    is the one in force (--plan-file, e.g. from `sdagent tune`, or derived).
    \b
    Default workload: 256x256, 4 steps, 3 rounds (18 processes), then one
    guided UNet step at 512x512 per eager rung (4 processes). On the sd15
    preset it took 17 minutes on an idle 2-core AMX VM; 6 on a 16-core one
    without the compile rung and the step figure. --quick proves the
    machinery on the tiny model in about a minute:
      sdagent ladder --model /tmp/sd-tiny --quick --out-dir /tmp/ladder
    """
    from sdagent import ladder as L
    from sdagent.modeldir import check_model_dir
    from sdagent.procstate import machine_state, read_load_average

    if quick:
        given = {p.name for p in ctx.command.params
                 if ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE}
        m, rounds, step_size = apply_quick(m, rounds, step_size, given)
    m.check()
    if rounds < 1:
        raise BadInput(f"invalid --rounds {rounds}: at least 1")
    if step_size < 0 or step_size % 8:
        raise BadInput(f"invalid --step-size {step_size}: a positive multiple of 8 (or 0 for none)")
    if step_calls < 1:
        raise BadInput(f"invalid --step-calls {step_calls}: at least 1")
    out = Path(out_dir)
    if not out.is_dir():
        raise BadInput(f"output directory does not exist: {out}")
    md = check_model_dir(m.model_dir)
    m.workload()  # validate before any process starts

    plan = ctx.obj.plan()
    environ = dict(os.environ)
    started = time.time()
    load_before = list(read_load_average())
    with tempfile.TemporaryDirectory(prefix="sdagent-ladder-") as td:
        plan_file = ctx.obj.plan_file or os.path.join(td, "plan.json")
        if not ctx.obj.plan_file:
            atomicio.write_json(plan_file, plan.to_dict())
        compile_why = "skipped: --quick (a cold compile takes minutes)" if quick else "skipped: --no-compile"
        rungs = build_rungs(plan, plan_file, str(md.path), m, with_compile=with_compile and not quick,
                            environ=environ, compile_why=compile_why)
        from sdagent.measure import run_worker

        live = [r for r in rungs if not r.unavailable]
        step_rungs = [replace(r, job=replace(r.job, workload=replace(r.job.workload, height=step_size,
                                                                      width=step_size, scheduler="default"),
                                              unet_only=True, repeats=step_calls, warmup=1))
                      for r in live if step_size and not r.job.compile and r.job.workload.scheduler == "default"]
        total = len(live) * rounds + sum(1 for r in live if r.warm_cache) + 1 + len(step_rungs)
        with click.progressbar(length=total, label="ladder", file=sys.stderr, show_eta=False,
                               show_percent=True, width=24) as bar:
            interactive = sys.stderr.isatty()
            bar.label = "counting FLOPs, measuring GEMM peak"
            bar.render_progress()
            fl = count_flops(str(md.path), m, environ, QUICK["gemm_n"] if quick else 2048, m.timeout_s)
            bar.update(1)

            def event(kind: str, data: dict[str, Any]) -> None:
                if kind == "run":
                    bar.label = f"{data['rung']:<22} round {data['round']}/{data['rounds']}"
                    bar.render_progress()
                elif kind == "warmup":
                    bar.label = f"warming the compile cache ({data['rung']})"
                    bar.render_progress()
                elif kind == "done":
                    bar.update(1)
                    if data["ok"] and not interactive:
                        # Click draws no bar into a pipe or log: say each process's figure instead
                        step = f", {data['step_s']:.3f} s/step" if data.get("step_s") else ""
                        click.echo(f"ladder: {data['rung']} round {data['round']}/{data['rounds']}: "
                                   f"{data['latency_s']:.3f} s{step} ({data['wall_s']:.0f} s wall)", err=True)
                    if not data["ok"]:
                        click.echo(f"\nsdagent: warning: rung {data['rung']} failed: {data['reason']}", err=True)

            def warm(r):
                res = run_worker(r.launch, replace(r.job, repeats=0), timeout_s=max(m.timeout_s, 3600))
                bar.update(1)
                return res

            def runner(r, i):
                return run_worker(r.launch, r.job, timeout_s=m.timeout_s)

            outcomes = L.run_ladder(rungs, rounds, runner, on_event=event, warm=warm)
            step_out = L.run_ladder(step_rungs, 1, runner, on_event=event) if step_rungs else {}
            step_fl = (count_flops(str(md.path), m, environ, 0, m.timeout_s, size=step_size, peak=False)
                       if step_rungs else {})
    flops = fl.get("flops")
    peaks = {k: v["peak_flops"] for k, v in (fl.get("gemm_peak") or {}).items()}
    rows = L.summarize(outcomes, flops, peaks)
    state = machine_state().to_dict()
    topo = ctx.obj.topology()
    report: dict[str, Any] = {
        "format": "sdagent-ladder/1",
        "command": command_line(),
        "model": str(md.path), "model_preset": md.sdagent_preset,
        "workload": m.workload().to_dict(), "rounds": rounds, "repeats": m.repeats, "warmup": 1,
        "warmup_steps": m.warmup_steps, "quick": quick,
        "flops": flops, "gemm_peak": fl.get("gemm_peak") or {}, "flops_error": fl.get("error"),
        "plan": plan.to_dict(),
        "rungs": [r.to_dict() for r in rows],
        "samples": {n: [s.to_dict() for s in o.samples] for n, o in outcomes.items()},
        "runtime": {n: runtime_note(o.samples[0].libraries) for n, o in outcomes.items() if o.samples},
        "machine": {"cpu_model": state["cpu_model"], "topology": topo.summary(), "load_before": load_before,
                    "load_after": list(read_load_average()), "versions": state["versions"],
                    "governor": state["governor"], "hostname": state["hostname"],
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))},
        "duration_s": round(time.time() - started, 1),
    }
    if step_rungs:
        sflops = (step_fl.get("flops") or {}).get("unet_step")
        report["step_figure"] = {
            "height": step_size, "width": step_size, "calls": step_calls, "unet_step_flops": sflops or 0,
            "unet_batch": (step_fl.get("flops") or {}).get("unet_batch", 2), "flops_error": step_fl.get("error"),
            "rows": L.step_figure(step_out, sflops, peaks),
            "samples": {n: [s.to_dict() for s in o.samples] for n, o in step_out.items()}}
    # say what each process really ran with (run_cpu may not find jemalloc)
    rows = [replace(r, description=f"{r.description}; ran with {report['runtime'][r.name]}")
            if r.name in report["runtime"] else r for r in rows]
    md_text = L.markdown(report, rows)
    title = (f"{report['model_preset'] or 'model'} {m.wl['height']}x{m.wl['width']}, {m.wl['steps']} steps, "
             f"{rounds} round(s) — {state['cpu_model']}")
    png = plot_png(rows, title)
    atomicio.write_json(out / "ladder.json", report)
    atomicio.write_text(out / "ladder.md", md_text)
    atomicio.write_bytes(out / "ladder.png", png)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(md_text)
        click.echo(f"wrote {out / 'ladder.md'}, {out / 'ladder.json'}, {out / 'ladder.png'}")
