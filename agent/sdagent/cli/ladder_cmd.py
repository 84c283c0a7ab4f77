"""`sdagent ladder`: the latency ladder (vanilla, run_cpu, tuned, +backend, +compile, +DPM) with its plot."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from sdagent import atomicio
from sdagent.cli import cli
from sdagent.cli.context import AgentContext
from sdagent.cli.options import (MeasureArgs, ModelArgs, command_line, measure_options, pass_agent,
                                 spill_on_write_failure)
from sdagent.errors import BadInput

#: The --quick profile: the tiny model's own size, one round, no per-step figure and no
#: compile rung (a cold inductor compile alone takes longer than the whole smoke test may).
QUICK = {"steps": 2, "height": 64, "width": 64, "rounds": 1, "warmup_steps": 1, "step_size": 0, "gemm_n": 512}


def apply_quick(m: MeasureArgs, rounds: int, step_size: int,
                given: set[str]) -> tuple[MeasureArgs, int, int]:
    """The --quick profile, except for what the user gave explicitly on the command line."""
    wl = {**m.wl, **{k: QUICK[k] for k in ("steps", "height", "width") if k not in given}}
    warm = m.warmup_steps if "warmup_steps" in given else QUICK["warmup_steps"]
    return (MeasureArgs(ModelArgs(m.model_dir, wl, m.model.default_steps), m.repeats, warm, m.timeout_s),
            rounds if "rounds" in given else QUICK["rounds"],
            step_size if "step_size" in given else QUICK["step_size"])


class LadderProgress:
    """Draws the ladder's progress on stderr; in a pipe or log, one line per measured process instead."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.interactive = sys.stderr.isatty()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "plan":
            self.bar = click.progressbar(length=data["processes"], label="ladder", file=sys.stderr,
                                         show_eta=False, show_percent=True, width=24)
            self.bar.__enter__()
            return
        if self.bar is None:
            return
        if kind == "flops":
            self.bar.label = "counting FLOPs, measuring GEMM peak"
            self.bar.render_progress()
        elif kind in ("flops_done", "warmed"):
            self.bar.update(1)
        elif kind == "run":
            self.bar.label = f"{data['rung']:<22} round {data['round']}/{data['rounds']}"
            self.bar.render_progress()
        elif kind == "export":
            self.bar.label = "exporting the model for OpenVINO (once)"
            self.bar.render_progress()
        elif kind == "warmup":
            self.bar.label = f"building or loading the compiled packages ({data['rung']})"
            self.bar.render_progress()
        elif kind == "throughput":
            self.bar.label = f"throughput {data['layout']}"
            self.bar.render_progress()
        elif kind == "throughput_done":
            self.bar.update(1)
            if not self.interactive:
                click.echo(f"ladder: throughput {data['layout']}: {data['images_per_min']} images/min", err=True)
        elif kind == "done":
            self.bar.update(1)
            if data["ok"] and not self.interactive:
                # Click draws no bar into a pipe or log: say each process's figure instead
                step = f", {data['step_s']:.3f} s/step" if data.get("step_s") else ""
                click.echo(f"ladder: {data['rung']} round {data['round']}/{data['rounds']}: "
                           f"{data['latency_s']:.3f} s{step} ({data['wall_s']:.0f} s wall)", err=True)
            if not data["ok"]:
                click.echo(f"\nsdagent: warning: rung {data['rung']} failed: {data['reason']}", err=True)


@cli.command("ladder")
@measure_options(steps=20, warmup_steps=None)
@click.option("--quick", is_flag=True,
              help="Smoke profile for the tiny model: 64x64, 2 steps, 1 round, no compile rung (seconds).")
@click.option("--rounds", type=int, default=3, show_default=True, help="Interleaved rounds (each rung once per round).")
@click.option("--compile/--no-compile", "with_compile", default=True, show_default=True,
              help="Include the compiled rung (its packages are built or loaded once, untimed, before round 1).")
@click.option("--openvino/--no-openvino", "with_openvino", default=None,
              help="Include the OpenVINO rungs: the peer and the openvino backend rungs (default: on where its venv "
                   "exists; off under --quick).")
@click.option("--step-size", type=int, default=512, show_default=True, metavar="PX",
              help="Also time single guided UNet calls at PX x PX for the eager fp32/bf16 rungs: a "
                   "per-step figure at the published size, too slow for whole images on a small host "
                   "(0 = off; off under --quick).")
@click.option("--step-calls", type=int, default=3, show_default=True,
              help="Timed UNet calls per process for --step-size.")
@click.option("--throughput", "throughput_images", type=click.IntRange(min=0), default=0, metavar="IMAGES",
              help="Also the throughput table: every instance split of this host (1 x all cores, 2 x half, ...), "
                   "eager and compiled, IMAGES images per instance (0 = off).")
@click.option("--rungs", "rungs_text", default=None, metavar="NAMES",
              help="Measure only these rungs, comma-separated (the others are reported as skipped): rung names "
                   "as in the table, or `shipped` for the plan's own rung; e.g. "
                   "--rungs 'vanilla,shipped,openvino' (default: all).")
@click.option("--out-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where ladder.md, ladder.json and ladder.png are written (atomically, at the end); created "
                   "when missing, checked before measuring.")
@click.option("--json", "as_json", is_flag=True, help="Print ladder.json's content instead of the table.")
@pass_agent
def ladder(agent: AgentContext, m: MeasureArgs, quick: bool, rounds: int, with_compile: bool,
           with_openvino: bool | None, step_size: int,
           step_calls: int, throughput_images: int, rungs_text: str | None, out_dir: str, as_json: bool) -> None:
    """Measure the latency ladder: each tuning step against stock, run_cpu and this CPU's peak.

    \b
    Rungs, each a fresh process per round, rounds interleaved with rotated order:
      vanilla                stock environment, fp32 eager
      run_cpu                python -m torch.backends.xeon.run_cpu --enable-jemalloc
      tuned                  sdagent exec (the plan), fp32 eager
      tuned+backend          the plan's backend/precision (bf16 where AMX/AVX512-BF16), eager
      tuned+backend+compile  + the compiled packages (UNet, VAE decoder, text encoder)
      tuned+backend+dpm      + DPM-Solver at the same step count
      openvino               the peer: OpenVINO GenAI on the same model (its own venv)
      backend: native eager / native compiled / native int8 /
      native int8-mixed-bf16 / openvino fp32 / openvino bf16 / openvino int8 /
      openvino int8-hybrid
                             each backend as the plan in force would run it
                             (the bf16 ones where the CPU has native bf16;
                             native int8: the PT2E UNet, where torchao is in)
    Each rung's image (seed 0) is compared with vanilla's, the fp32
    reference: PSNR and SSIM in the table's last column, the images in
    --out-dir's images/. A rung that fails is reported with its reason; the
    others go on. The plan is the one in force (--plan-file, e.g. from
    `sdagent tune`, or derived).
    Each row also says how long a fresh process takes to its first whole image.
    \b
    Default workload: the published one for SD-1.5 (the model's own size,
    512x512, 20 steps), whole images, 3 rounds, plus one guided UNet step per
    eager rung. The quick ladder:
      sdagent ladder --model DIR --height 256 --width 256 --steps 4
    --throughput N adds every instance split of this host, eager and compiled.
    --quick proves the machinery on the tiny model in about a minute:
      sdagent ladder --model /tmp/sd-tiny --quick --out-dir /tmp/ladder
    FastSD CPU's few-step workloads (SD-Turbo and SDXL-Turbo 1 step with
    the tiny autoencoder, LCM 4 steps), one ladder each, and their table:
      bash scripts/ladder.sh --few-step
    """
    from sdagent.measuring.ladder_report import markdown
    from sdagent.measuring.ladder_plot import plot_png
    from sdagent.measuring.ladder_run import LadderRequest, parse_rungs, run as run_ladder
    from sdagent.planning.layout import PlanRequest, throughput_layouts

    if quick:
        ctx = click.get_current_context()
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
    only = parse_rungs(rungs_text) if rungs_text is not None else ()
    md, w = m.model.checked()
    out = atomicio.check_output_dir(out_dir, "--out-dir")
    req = LadderRequest(md, w, rounds, m.repeats, m.warmup_for(w), m.timeout_s,
                        with_compile=with_compile and not quick,
                        compile_why="skipped: --quick (a cold compile takes minutes)" if quick else "skipped: --no-compile",
                        step_size=step_size, step_calls=step_calls, gemm_n=QUICK["gemm_n"] if quick else 2048,
                        quick=quick, command=command_line(), throughput_images=throughput_images,
                        with_openvino=with_openvino if with_openvino is not None else not quick,
                        only=only)
    plan = agent.plan()
    progress = LadderProgress()
    try:
        with agent.bench_lock("ladder"), tempfile.TemporaryDirectory(prefix="sdagent-ladder-") as td:
            plan_file = agent.plan_file or os.path.join(td, "plan.json")
            if not agent.plan_file:
                atomicio.write_json(plan_file, plan.to_dict())
            images = os.path.join(td, "images")
            os.mkdir(images)
            report, rows = run_ladder(plan, plan_file, dataclasses.replace(req, image_dir=images),
                                      environ=dict(os.environ), on_event=progress.event,
                                      plan_for=lambda lay: agent.plan(PlanRequest.from_dict(lay)),
                                      plan_with=lambda overrides: agent.plan(overrides=overrides),
                                      layouts=throughput_layouts(agent.topology()) if throughput_images else ())
            pngs = {p.name: p.read_bytes() for p in sorted(Path(images).glob("*.png"))}
    finally:
        progress.close()
    md_text = markdown(report, rows)
    title = (f"{md.sdagent_preset or 'model'} {req.workload.height}x{req.workload.width}, {req.workload.steps} steps, "
             f"{rounds} round(s) — {report['machine']['cpu_model']}")

    def write_all() -> None:
        atomicio.write_json(out / "ladder.json", report)
        atomicio.write_text(out / "ladder.md", md_text)
        atomicio.write_bytes(out / "ladder.png", plot_png(rows, title))
        if pngs:
            try:
                (out / "images").mkdir(exist_ok=True)
            except OSError as exc:
                raise atomicio.OutputError(f"cannot write {out / 'images'}: {exc.strerror or exc}") from None
        for name, data in pngs.items():  # each rung's image, which the fidelity column compares
            atomicio.write_bytes(out / "images" / name, data)

    spill_on_write_failure(report, write_all)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(md_text)
        click.echo(f"wrote {out / 'ladder.md'}, {out / 'ladder.json'}, {out / 'ladder.png'}")
