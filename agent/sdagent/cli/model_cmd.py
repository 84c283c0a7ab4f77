"""`sdagent model create` (a random-weights pipeline directory) and `sdagent model compile` (its packages)."""

from __future__ import annotations

import json
import click

from sdagent.cli import cli
from sdagent.cli.context import AgentContext
from sdagent.cli.options import ModelArgs, check_backend_usable, check_vae, model_options, pass_agent, resolve_plan
from sdagent.errors import BadInput, Exit, SdagentError
from sdagent.pipeline.modelgen import PRESETS, STORAGE_DTYPES, WRITERS
from sdagent.pipeline.modelgen_tae import TAE_PRESETS  # registers the tiny autoencoders into WRITERS


def preset_help() -> str:
    """--preset's help, from the registries themselves (each preset's description, family and default size;
    the tiny autoencoders')."""
    return ("; ".join(f"{p.name}: {p.description} ({p.family}, {p.default_size}x{p.default_size})"
                      for p in PRESETS.values())
            + ". Tiny autoencoders (AutoencoderTiny, for `vae: tiny`; write them to MODEL/vae_tiny): "
            + "; ".join(f"{k}: {v[0]}" for k, v in TAE_PRESETS.items()) + ".")


@cli.group()
def model() -> None:
    """Model directories: create a random-weights pipeline to tune and test against.

    Every other command loads a model only with diffusers' from_pretrained on a
    local directory, with the class its model_index.json names (SD 1.x/2.x,
    SDXL, LCM; Turbo models are SD 2.1 / SDXL), so a real directory of any of
    these families works the same way.
    """


@model.command("create")
@click.option("--preset", required=True, type=click.Choice([*PRESETS, *WRITERS]), help=preset_help())
@click.option("--dtype", type=click.Choice(STORAGE_DTYPES), default=None,
              help="What the weights files hold (default: the preset's: fp16 for sd21, sd-turbo, sdxl and "
                   "sdxl-turbo, half the disk and write time; fp32 otherwise). Every command loads them as "
                   "fp32; the plan's precision applies from there.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random weights.")
@click.option("--force", is_flag=True, help="Replace DIR if it is a model `sdagent model create` wrote (its "
                                           "sdagent-model.json marker); any other non-empty directory is refused.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.argument("directory", type=click.Path(file_okay=False))
def create(preset: str, dtype: str | None, seed: int, force: bool, as_json: bool, directory: str) -> None:
    """Write a complete diffusers pipeline of the preset's family to DIRECTORY (random weights).

    \b
    The weights are random: images are noise, but the architecture, and so
    the latency, are the preset's: sd15, sd21 (SD 2.1 768-v), sd-turbo,
    sdxl and sdxl-turbo have the real models' exact configs (a
    StableDiffusionPipeline, or a StableDiffusionXLPipeline with its two
    text encoders); tiny, tiny-sd21, tiny-sdxl and tiny-lcm are each
    family's structure at tiny widths, for tests (seconds, 64x64). The
    tokenizer (vocab.json + merges.txt) is generated, so the directory
    loads under transformers 4 and 5 alike. Its sdagent-model.json names
    the preset and the family.
    The directory is built beside DIRECTORY and renamed into place: an
    interrupted run leaves nothing half-written.

    \b
    Examples:
      sdagent model create --preset tiny /tmp/sd-tiny
      sdagent model create --preset sd15 /var/lib/sdagent/sd15
      sdagent model create --preset sdxl-turbo /var/lib/sdagent/sdxl-turbo
      sdagent model create --preset taesd /var/lib/sdagent/sd15/vae_tiny
    """
    from sdagent.pipeline.modelgen import check_target, create_model

    check_target(directory, force)  # before the slow imports
    made = create_model(preset, directory, force=force, seed=seed, dtype=dtype)
    if as_json:
        click.echo(json.dumps(made.to_dict(), indent=2))
        return
    total = sum(made.params.values())
    parts = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in made.params.items())
    if made.preset in WRITERS:
        click.echo(f"wrote {made.preset} tiny autoencoder to {made.path} in {made.seconds:.1f} s: "
                   f"{total / 1e6:.2f}M parameters ({parts}), random weights, seed {made.seed}")
        return
    click.echo(f"wrote {made.preset} pipeline to {made.path} in {made.seconds:.1f} s: {made.family} family, "
               f"{total / 1e6:.2f}M parameters ({parts}), random weights stored in {made.storage_dtype}, "
               f"seed {made.seed}")


@model.command("compile")
@model_options()
@click.option("--artifacts", type=click.Path(file_okay=False), default=None,
              help="Where the packages are kept (default ~/.cache/sdagent/artifacts).")
@click.option("--json", "as_json", is_flag=True, help="Print what was built or found as JSON (`built` lists the "
                                                       "parts built now; empty when every package was there).")
@pass_agent
def compile_(agent: AgentContext, model: ModelArgs, artifacts: str | None, as_json: bool) -> None:
    """Build the compiled packages of the plan in force, ahead of time, once.

    \b
    The UNet, the VAE decoder and the text encoder become AOTInductor packages
    (inductor with freezing: frozen, prepacked weights), one per model, image
    size, guided batch, precision, memory format, torch version and CPU ISA. A
    fresh process then loads them in seconds instead of compiling for minutes.
    A package built for another torch or CPU is reported stale, never loaded,
    and replaced. Precision and memory format are the plan's (--plan-file, or
    derived). A plan with compile false gets them built too (a note says so):
    they are what the same plan with compile true loads.

    \b
    For a plan with backend openvino it builds the OpenVINO export instead:
    optimum-intel's IR and the CPU plugin's compiled blobs for the static
    shape and precision hint, one per model content, OpenVINO toolchain,
    shape, precision and CPU, in <artifacts>/openvino/<key digest> (built in a
    temporary directory and renamed; a stale one is never loaded).

    \b
    It takes the same workload options as `verify` and `bench` (only the size
    and the guidance shape a package), so the arguments a service verifies
    with build exactly the packages it loads. The Ansible role runs this as the
    agent's user at provision time, with the periodic verify's workload.

    \b
    Exit 7, one line naming the compiler, when the host's C++ compiler
    cannot build inductor's code (a test build with inductor's flags, as
    `sdagent plan` shows under cxx_error) or a package build fails.

    \b
    Example:
      sdagent model compile --model /var/lib/sdagent/models/sd15 --height 512 --width 512
    """
    from sdagent.pipeline.backends import CompileUnavailable, build_artifacts

    md, w = model.checked()
    plan = resolve_plan(agent)
    if plan.backend not in ("native", "openvino"):
        raise BadInput(f"the plan's backend is {plan.backend}: compiled packages are for the native and "
                       "openvino backends")
    check_backend_usable(plan.backend)
    check_vae(plan, md.path)
    if plan.backend == "native":
        facts = agent.facts()
        check_compiler(facts.cxx, facts.cxx_error)
        if not plan.settings.get("compile"):
            click.echo("sdagent: note: the plan in force does not compile (compile: false): building the packages "
                       "the same plan with compile: true loads", err=True)
    try:
        prepared = build_artifacts(md, plan.run_spec, w, artifacts)
    except CompileUnavailable as exc:
        raise SdagentError(f"model compile: {exc}", Exit.ERROR) from None
    built = [part for part in prepared.artifacts if any(n.startswith(f"{part}: built") for n in prepared.notes)]
    d = {"model": str(md.path), "backend": plan.backend, "height": w.height, "width": w.width, "batch": w.batch,
         "precision": plan.precision, "artifacts": prepared.artifacts, "built": built, "notes": prepared.notes,
         "seconds": round(prepared.prepare_s, 1)}
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for n in prepared.notes:
        if n.startswith(("unet", "vae_decoder", "text_encoder", "openvino")):
            click.echo(n)
    click.echo(f"ready: {len(prepared.artifacts)} package(s) for {w.width}x{w.height}, batch {w.batch}, "
               f"{plan.precision}, in {prepared.prepare_s:.0f} s ({len(built)} built now)")


def check_compiler(cxx: str | None, cxx_error: str | None) -> None:
    """Exit 7 before loading anything when the host's compiler cannot build inductor's code (host.cxx's
    test build), naming the compiler: minutes of export would end in the same error."""
    if cxx is None:
        raise SdagentError("model compile: no C++ compiler ($CXX, g++, c++, clang++) to build the packages",
                           Exit.ERROR)
    if cxx_error:
        raise SdagentError(f"model compile: {cxx_error}", Exit.ERROR)
