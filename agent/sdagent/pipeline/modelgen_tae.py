"""Tiny autoencoder presets (diffusers' ``AutoencoderTiny``) with random weights: ``taesd``, ``taesdxl``,
``tiny-tae``.

``sdagent model create --preset taesd MODEL/vae_tiny`` writes an AutoencoderTiny directory
(``config.json`` + ``diffusion_pytorch_model.safetensors`` + the marker) where the pipeline looks for
it (pipeline/vae.py). Random weights, exact architecture: the decode's FLOPs and latency are the real
TAESD's, its pixels are not (an image decoded by it is noise; the fidelity gate says so).

Sources of the architectures:

* ``taesd``: madebyollin/taesd ``config.json`` (diffusers format): encoder/decoder_block_out_channels
  (64, 64, 64, 64), num_encoder_blocks (1, 3, 3, 3), num_decoder_blocks (3, 3, 3, 1), latent_channels 4,
  act_fn relu, upsample_fn nearest, upsampling_scaling_factor 2, latent_magnitude 3, latent_shift 0.5,
  scaling_factor 1.0, shift_factor 0.0, force_upcast false: also diffusers' own ``AutoencoderTiny``
  defaults (0.42).
* ``taesdxl``: madebyollin/taesdxl ``config.json``: the same architecture (SDXL's latents are 4
  channels, scale 8 too), trained for SDXL's VAE; the weights differ, not the shapes.
* ``tiny-tae``: for tests, the same block structure at widths 8 with one block per level, fitting the
  ``tiny`` pipeline preset (4 latent channels, 8x upscale).

Registered into :data:`sdagent.pipeline.modelgen.WRITERS` on import (the CLI imports this module).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sdagent.pipeline import modelgen
from sdagent.pipeline.modelgen import CreatedModel, check_target, write_model_dir

#: madebyollin/taesd config.json (see the module's sources).
TAESD_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3,
    "encoder_block_out_channels": (64, 64, 64, 64), "decoder_block_out_channels": (64, 64, 64, 64),
    "act_fn": "relu", "upsample_fn": "nearest", "latent_channels": 4, "upsampling_scaling_factor": 2,
    "num_encoder_blocks": (1, 3, 3, 3), "num_decoder_blocks": (3, 3, 3, 1),
    "latent_magnitude": 3, "latent_shift": 0.5, "force_upcast": False, "scaling_factor": 1.0, "shift_factor": 0.0,
}

TAE_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "taesd": ("TAESD's exact AutoencoderTiny (SD 1.x/2.x latents), random weights", TAESD_CONFIG),
    "taesdxl": ("TAESDXL's exact AutoencoderTiny (SDXL latents; TAESD's architecture), random weights",
                TAESD_CONFIG),
    "tiny-tae": ("an AutoencoderTiny for tests (TAESD's structure, widths 8, one block per level), fits `tiny`",
                 {**TAESD_CONFIG, "encoder_block_out_channels": (8, 8, 8, 8), "decoder_block_out_channels": (8, 8, 8, 8),
                  "num_encoder_blocks": (1, 1, 1, 1), "num_decoder_blocks": (1, 1, 1, 1)}),
}


def create_tae(preset_name: str, out_dir: str | os.PathLike[str], *, force: bool = False,
               seed: int = 0) -> CreatedModel:
    """Write an AutoencoderTiny directory: built in a temporary sibling, then renamed into place (the same
    guarantees as a pipeline: never over a directory sdagent did not write)."""
    description, config = TAE_PRESETS[preset_name]
    out = check_target(out_dir, force)
    t0 = time.perf_counter()
    from sdagent.pipeline.stack import quiet_libraries

    quiet_libraries()
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    vae = AutoencoderTiny(**config).eval()
    params = {"vae_tiny": sum(p.numel() for p in vae.parameters())}

    def fill(tmp: Path) -> dict[str, Any]:
        vae.save_pretrained(tmp, safe_serialization=True)
        return {"format": "sdagent-model/1", "preset": preset_name, "seed": seed, "description": description,
                "params": params, "random_weights": True, "kind": "AutoencoderTiny"}

    files = write_model_dir(out, fill)
    return CreatedModel(str(out), preset_name, seed, params, round(time.perf_counter() - t0, 3), files)


for _name in TAE_PRESETS:
    modelgen.WRITERS[_name] = lambda out_dir, *, force=False, seed=0, _n=_name: create_tae(_n, out_dir,
                                                                                            force=force, seed=seed)
