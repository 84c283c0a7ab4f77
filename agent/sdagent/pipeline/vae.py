"""The tiny autoencoder (diffusers' ``AutoencoderTiny``, TAESD/TAESDXL) as the pipeline's VAE: where it
lives, whether it fits the model, and the swap.

Why: at one or few steps the VAE decode is most of an image's cost, and TAESD decodes the same
latents with a ~1M-parameter decoder instead of the full VAE's ~50M. It changes pixels, so a plan
says ``vae: tiny`` only when asked (``--set vae=tiny``) or when ``sdagent tune`` measured it faster
*and* it passed the fidelity gate (measuring/fidelity.py).

Where it lives: in the model directory, ``MODEL/vae_tiny/`` (``config.json`` with
``_class_name: AutoencoderTiny`` and ``diffusion_pytorch_model.safetensors``), beside the model's own
``vae/``: a plan is host-wide and names no model, so the tiny autoencoder goes with the model it
decodes for. ``sdagent model create --preset taesd MODEL/vae_tiny`` writes one with random weights; a
real one (madebyollin/taesd, taesdxl) is copied or linked there.

Fit (checked from the configs, before any weight loads): its ``latent_channels`` must equal the
UNet's ``in_channels`` and the full VAE's ``latent_channels``, and its decoder must upsample by the
model's VAE scale factor (2^(blocks-1) on both sides); otherwise one line, exit 2.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from sdagent.errors import BadInput
from sdagent.pipeline.modeldir import read_config
from sdagent.planning.settings import VAES

VAE_CHOICES: tuple[str, ...] = VAES
#: The tiny autoencoder's place inside a model directory.
TINY_SUBDIR = "vae_tiny"
TINY_CLASS = "AutoencoderTiny"
TINY_WEIGHTS = "diffusion_pytorch_model.safetensors"


def tiny_dir(model_dir: str | os.PathLike[str]) -> Path:
    return Path(model_dir) / TINY_SUBDIR


def tiny_available(model_dir: str | os.PathLike[str]) -> bool:
    """Whether the model directory carries a tiny autoencoder (its config and weights): the vae axis's
    condition in `sdagent tune`."""
    d = tiny_dir(model_dir)
    return (d / "config.json").is_file() and (d / TINY_WEIGHTS).is_file()


def upscale_of_tiny(cfg: Mapping[str, Any]) -> int:
    """AutoencoderTiny's decoder upsamples once between blocks: 2^(len(decoder_block_out_channels) - 1)
    (by upsampling_scaling_factor, 2 in TAESD)."""
    return int(cfg.get("upsampling_scaling_factor", 2)) ** (len(cfg.get("decoder_block_out_channels", ())) - 1)


def fit_problem(tiny: Mapping[str, Any], vae: Mapping[str, Any], unet: Mapping[str, Any]) -> str | None:
    """Why a tiny autoencoder's config does not fit the model's (its full VAE's and UNet's configs), or None.

    Pure. Rules: the class is AutoencoderTiny; latent channels equal the UNet's input channels (what the
    denoising loop hands the decoder) and the full VAE's; the decoder's upscale equals the full VAE's
    2^(len(block_out_channels) - 1) (diffusers' vae_scale_factor), else the image is another size.
    """
    if tiny.get("_class_name") != TINY_CLASS:
        return f"its class is {tiny.get('_class_name')!r}, not {TINY_CLASS}"
    lat = tiny.get("latent_channels")
    want = unet.get("in_channels", vae.get("latent_channels"))
    if lat != want or lat != vae.get("latent_channels", lat):
        return (f"its latent_channels {lat} do not fit the model's {want} (UNet in_channels, the VAE's "
                f"latent_channels {vae.get('latent_channels')})")
    full = 2 ** (len(vae.get("block_out_channels", ())) - 1)
    if upscale_of_tiny(tiny) != full:
        return f"its decoder upsamples {upscale_of_tiny(tiny)}x, the model's VAE {full}x"
    return None


def check_tiny(model_dir: str | os.PathLike[str]) -> Path:
    """The model's tiny autoencoder directory, checked (files present, fits the model); BadInput otherwise."""
    root = Path(model_dir)
    d = tiny_dir(root)
    if not (d / "config.json").is_file():
        raise BadInput(f"vae tiny: {d}/config.json is missing (a tiny autoencoder goes in MODEL/{TINY_SUBDIR}/: "
                       f"`sdagent model create --preset taesd {d}`, or copy madebyollin/taesd there)")
    if not (d / TINY_WEIGHTS).is_file():
        raise BadInput(f"vae tiny: {d}/{TINY_WEIGHTS} is missing")
    why = fit_problem(read_config(d / "config.json", "tiny autoencoder config"),
                      read_config(root / "vae" / "config.json", "VAE config"),
                      read_config(root / "unet" / "config.json", "UNet config"))
    if why:
        raise BadInput(f"vae tiny: the tiny autoencoder in {d} does not fit this model: {why}")
    return d


def tiny_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """SHA-256 of the tiny autoencoder's config and weights (a few MB: hashed whole), 12 hex: what a
    compiled decoder package of it is keyed on beside the model's own fingerprint."""
    h = hashlib.sha256()
    d = tiny_dir(model_dir)
    for name in ("config.json", TINY_WEIGHTS):
        with (d / name).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:12]


def use_tiny_vae(pipe: Any, model_dir: str | os.PathLike[str]) -> str:
    """Replace ``pipe.vae`` by the model's tiny autoencoder (checked first); returns the note for the run.

    The pipeline's ``vae_scale_factor`` and image processor stay the full VAE's (the fit check made them
    equal); AutoencoderTiny's ``scaling_factor`` 1.0 makes the pipeline's ``latents / scaling_factor`` a
    no-op, as TAESD expects (it takes the UNet's latents unscaled).
    """
    from diffusers import AutoencoderTiny

    d = check_tiny(model_dir)
    tiny = AutoencoderTiny.from_pretrained(str(d), local_files_only=True).eval()
    pipe.vae = tiny
    params = sum(p.numel() for p in tiny.parameters())
    return f"vae tiny: AutoencoderTiny from {d} ({params / 1e6:.2f}M parameters) replaces the model's VAE"
