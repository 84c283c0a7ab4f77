"""`sdagent run`: one image, generated the way the plan says, with where the time went."""

from __future__ import annotations

import io
import json
import sys

import click

from sdagent.atomicio import check_parent, write_bytes
from sdagent.cli import cli
from sdagent.cli.options import (FiniteFloat, backend_options, check_compile_flag, model_and_workload, resolve_plan,
                                 run_overrides)
from sdagent.errors import BadInput
from sdagent.host.software import ipex_status, package_versions
from sdagent.pipeline.backends import ipex_unusable_message
from sdagent.pipeline.workload import SCHEDULERS, Workload, validate_workload


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _progress(step: int, steps: int, seconds: float) -> None:
    click.echo(f"\rstep {step + 1}/{steps} ({seconds:.2f} s)", err=True, nl=step + 1 == steps)


@cli.command("run")
@click.option("--model", "model_dir", required=True, type=click.Path(),
              help="A diffusers StableDiffusionPipeline directory (`sdagent model create`, or a real SD-1.5).")
@click.option("--prompt", required=True, help="Text prompt.")
@click.option("--negative-prompt", default=None, help="What the image should not show.")
@click.option("--steps", type=int, default=20, show_default=True, help="Denoising (UNet) steps.")
@click.option("--height", type=int, default=512, show_default=True, help="Image height, a multiple of 8.")
@click.option("--width", type=int, default=512, show_default=True, help="Image width, a multiple of 8.")
@click.option("--guidance", type=FiniteFloat(at_least=0), default=7.5, show_default=True,
              help="Classifier-free guidance scale; above 1 the UNet runs at batch 2.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial noise.")
@click.option("--scheduler", default="default", show_default=True,
              help=f"One of: {', '.join(SCHEDULERS)}. default = the model's own (PNDM for SD-1.5); "
                   "dpm = DPM-Solver++ (the demo's last step).")
@backend_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, readable=False),
              help="Where to write the image (PNG), atomically.")
@click.option("--json", "as_json", is_flag=True, help="Print settings, notes and timings as JSON.")
@click.pass_context
def run(ctx: click.Context, model_dir: str, prompt: str, negative_prompt: str | None, steps: int,
        height: int, width: int, guidance: float, seed: int, scheduler: str, backend: str,
        precision: str, compile_: bool | None, artifacts: str | None, output: str,
        as_json: bool) -> None:
    """Generate one image from PROMPT with the tuned backend and write it to OUTPUT.

    \b
    Backends:
      ipex    the published demo's recipe: channels_last on unet, vae and text
              encoder, ipex.optimize(bf16 or fp32) with the UNet's real input
              shapes, bf16 autocast. Needs the `ipex` extra (torch 2.8).
      native  upstream PyTorch: channels_last, bf16 autocast, --compile.
    Timings: total, text encoding, each UNet step, VAE decode. The first call in
    a process pays one-off costs (oneDNN kernel selection, compilation): use
    `sdagent bench` for latency figures.

    \b
    Example:
      sdagent run --model /tmp/sd-tiny --prompt "sailing ship in storm by Rembrandt" \\
          --steps 2 --height 64 --width 64 -o ship.png
    """
    # Everything that can be wrong with the request is checked before any work.
    w = validate_workload(Workload(prompt=prompt, steps=steps, height=height, width=width,
                                   guidance=guidance, seed=seed, scheduler=scheduler,
                                   negative_prompt=negative_prompt))
    out = check_parent(output)
    md, w = model_and_workload(model_dir, w)
    if backend == "ipex":
        st = ipex_status()
        if not st.usable:
            raise BadInput(ipex_unusable_message(st))
    plan = resolve_plan(ctx, extra=run_overrides(backend, precision, compile_))
    check_compile_flag(plan, compile_)
    spec = plan.run_spec

    from sdagent.pipeline.backends import ready

    prepared = ready(md.path, spec, w, artifacts)
    show = _progress if sys.stderr.isatty() and not as_json else None
    result = prepared.generate(w, step_callback=show)
    write_bytes(out, png_bytes(result.image))

    if as_json:
        click.echo(json.dumps({
            "output": str(out), "model": str(md.path), "preset": md.sdagent_preset,
            "workload": w.to_dict(), **prepared.describe(), "timings": result.timings(),
            "plan_source": plan.source, "warnings": list(plan.warnings), "versions": package_versions(),
        }, indent=2))
        return
    t = result.timings()
    split = [f"UNet {len(result.step_s)} x {t['unet_step_mean_s']:.3f} s"]
    if t["text_encode_s"] is not None:
        split.insert(0, f"text {t['text_encode_s']:.3f} s")
    if t["vae_decode_s"] is not None:
        split.append(f"VAE {t['vae_decode_s']:.3f} s")
    click.echo(f"wrote {out} ({w.width}x{w.height}) in {t['total_s']:.2f} s: {', '.join(split)}")
    click.echo(f"{prepared.ran()}, scheduler {prepared.describe()['scheduler']}")
    for n in prepared.notes:
        click.echo(f"  - {n}")
