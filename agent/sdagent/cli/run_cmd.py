"""`sdagent run`: one image, generated the way the plan says, with where the time went."""

from __future__ import annotations

import io
import json
import sys

import click

from sdagent.atomicio import write_bytes
from sdagent.cli import cli
from sdagent.cli.context import AgentContext
from sdagent.cli.options import (ModelArgs, OutputFile, backend_options, check_backend_usable,
                                 check_vae,
                                 model_options, pass_agent, resolve_plan, run_overrides, spill_on_write_failure)
from sdagent.errors import BadInput
from sdagent.host.software import ipex_status, package_versions
from sdagent.pipeline.backends import ipex_unusable_message


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _progress(step: int, steps: int, seconds: float) -> None:
    click.echo(f"\rstep {step + 1}/{steps} ({seconds:.2f} s)", err=True, nl=step + 1 == steps)


@cli.command("run")
@model_options(prompt_required=True, negative_prompt=True)
@backend_options
@click.option("-o", "--output", required=True, type=OutputFile(),
              help="Where to write the image (PNG), atomically.")
@click.option("--json", "as_json", is_flag=True, help="Print settings, notes and timings as JSON.")
@pass_agent
def run(agent: AgentContext, model: ModelArgs, backend: str, precision: str, compile_: bool | None,
        vae: str, artifacts: str | None, output: str, as_json: bool) -> None:
    """Generate one image from PROMPT with the tuned backend and write it to OUTPUT.

    \b
    Backends:
      ipex    the published demo's recipe: channels_last on unet, vae and text
              encoder, ipex.optimize(bf16 or fp32) with the UNet's real input
              shapes, bf16 autocast. Needs the `ipex` extra (torch 2.8).
      native  upstream PyTorch: channels_last, bf16 autocast, --compile.
      openvino  OpenVINO GenAI's Text2ImagePipeline on optimum-intel's IR,
              static shapes, the precision as INFERENCE_PRECISION_HINT; the
              export is built once per model, shape, precision, OpenVINO and
              CPU (`sdagent model compile`). Needs the `openvino` extra's venv.
    Timings: total, text encoding, each UNet step, VAE decode. The first call in
    a process pays one-off costs (oneDNN kernel selection, compilation): use
    `sdagent bench` for latency figures.

    \b
    Example:
      sdagent run --model /tmp/sd-tiny --prompt "sailing ship in storm by Rembrandt" \\
          --steps 2 --height 64 --width 64 -o ship.png
    """
    # Everything that can be wrong with the request is checked before any work (the output: by its type).
    md, w = model.checked()
    if backend == "ipex":
        st = ipex_status()
        if not st.usable:
            raise BadInput(ipex_unusable_message(st))
    check_backend_usable(backend)
    plan = resolve_plan(agent, extra=run_overrides(backend, precision, compile_, vae=vae))
    check_vae(plan, md.path)
    check_backend_usable(plan.backend)
    spec = plan.run_spec

    from sdagent.pipeline.backends import ready

    prepared = ready(md, spec, w, artifacts)
    show = _progress if sys.stderr.isatty() and not as_json else None
    result = prepared.generate(w, step_callback=show)
    out = output
    record = {"output": str(out), "model": str(md.path), "preset": md.sdagent_preset,
              "workload": w.to_dict(), **prepared.describe(), "timings": result.timings(),
              "plan_source": plan.source, "warnings": list(plan.warnings), "versions": package_versions()}
    spill_on_write_failure({**record, "output": None}, lambda: write_bytes(out, png_bytes(result.image)))

    if as_json:
        click.echo(json.dumps(record, indent=2))
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
