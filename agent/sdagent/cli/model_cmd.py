"""`sdagent model create`: write a random-weights Stable Diffusion pipeline directory."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sdagent.cli import cli
from sdagent.pipeline.modelgen import PRESETS


@cli.group()
def model() -> None:
    """Model directories: create a random-weights pipeline to tune and test against.

    Every other command loads a model only with diffusers' from_pretrained on a
    local directory, so a real SD-1.5 directory works the same way.
    """


@model.command("create")
@click.option("--preset", required=True, type=click.Choice(list(PRESETS)),
              help="tiny: for tests, seconds, 64x64. sd15: SD-1.5's exact UNet/VAE/CLIP-L "
                   "architecture (~1.6 TFLOP per UNet step at 512x512 with guidance; ~4 GB, "
                   "a minute to write), so its latency is the real model's.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random weights.")
@click.option("--force", is_flag=True, help="Replace DIR if it exists and is not empty.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.argument("directory", type=click.Path(file_okay=False))
def create(preset: str, seed: int, force: bool, as_json: bool, directory: str) -> None:
    """Write a complete diffusers StableDiffusionPipeline to DIRECTORY (random weights).

    \b
    The weights are random: images are noise, but the architecture, and so
    the latency, are the preset's. The tokenizer (vocab.json + merges.txt) is
    generated, so the directory loads under transformers 4 and 5 alike.
    The directory is built beside DIRECTORY and renamed into place: an
    interrupted run leaves nothing half-written.

    \b
    Examples:
      sdagent model create --preset tiny /tmp/sd-tiny
      sdagent model create --preset sd15 /var/lib/sdagent/sd15
    """
    from sdagent.pipeline.modelgen import check_target, create_model

    check_target(Path(directory).absolute(), force)  # before the slow imports
    made = create_model(preset, directory, force=force, seed=seed)
    if as_json:
        click.echo(json.dumps(made.to_dict(), indent=2))
        return
    total = sum(made.params.values())
    parts = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in made.params.items())
    click.echo(f"wrote {made.preset} pipeline to {made.path} in {made.seconds:.1f} s: "
               f"{total / 1e6:.2f}M parameters ({parts}), random weights, seed {made.seed}")
