"""Random-weights Stable Diffusion pipelines built from configs, saved as diffusers directories.

Why: the agent must be testable and its timings meaningful without a model hub.
`tiny` (and `tiny-sd21`, `tiny-sdxl`, `tiny-lcm`: each family's structure at
tiny widths) runs in seconds for tests; `sd15`, `sd21`/`sd-turbo` and
`sdxl`/`sdxl-turbo` have the real models' exact architectures (configs from
their public config.json files, cited beside each), so their latency is the
real model's (the weights do not change the FLOPs). Every consumer loads the
result with `from_pretrained(dir)`, the same call that loads a real directory
of that family (pipeline.family decides the class). The big presets are
stored in fp16 (half the disk and write time; loaded as fp32).

The directory must load under transformers 5 (native venv) and 4.57 (the
IPEX venv): transformers 5 saves only tokenizer.json, which 4.x cannot read,
so the CLIP tokenizer's vocab.json and merges.txt are always written too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from sdagent import atomicio
from sdagent.errors import BadInput, one_line
from sdagent.pipeline.modeldir import text_encoder_weight_files

MARKER = "sdagent-model.json"  # what made the directory (preset, seed, parameter counts)

# ---------------------------------------------------------------------------
# Presets: configs only (pure data)
# ---------------------------------------------------------------------------

#: SD-1.5's scheduler (runwayml/stable-diffusion-v1-5 scheduler_config.json).
SD15_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "clip_sample": False, "trained_betas": None,
}
_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
          "steps_offset": 1, "trained_betas": None}
#: SD 2.1 (768-v): stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json.
SD21_SCHEDULER: dict[str, Any] = {"_class_name": "DDIMScheduler", **_BETAS, "clip_sample": False,
                                  "set_alpha_to_one": False, "skip_prk_steps": True,
                                  "prediction_type": "v_prediction"}
#: SD-Turbo: stabilityai/sd-turbo scheduler/scheduler_config.json (Euler, trailing spacing, epsilon).
SD_TURBO_SCHEDULER: dict[str, Any] = {"_class_name": "EulerDiscreteScheduler", **_BETAS,
                                      "interpolation_type": "linear", "prediction_type": "epsilon",
                                      "timestep_spacing": "trailing", "use_karras_sigmas": False}
#: SDXL base: stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json.
SDXL_SCHEDULER: dict[str, Any] = {"_class_name": "EulerDiscreteScheduler", **_BETAS,
                                  "interpolation_type": "linear", "prediction_type": "epsilon",
                                  "timestep_spacing": "leading", "use_karras_sigmas": False}
#: SDXL-Turbo: stabilityai/sdxl-turbo scheduler/scheduler_config.json (Euler ancestral, trailing).
SDXL_TURBO_SCHEDULER: dict[str, Any] = {"_class_name": "EulerAncestralDiscreteScheduler", **_BETAS,
                                        "prediction_type": "epsilon", "timestep_spacing": "trailing"}
#: LCM: SimianLuo/LCM_Dreamshaper_v7 scheduler/scheduler_config.json.
LCM_SCHEDULER: dict[str, Any] = {"_class_name": "LCMScheduler", **_BETAS, "clip_sample": False,
                                 "set_alpha_to_one": True, "original_inference_steps": 50,
                                 "prediction_type": "epsilon", "timestep_scaling": 10.0,
                                 "timestep_spacing": "leading"}

#: What the weights files hold: fp16 halves the disk and the write time of the big presets (SDXL is
#: ~10 GB in fp32); the loader always loads fp32 (torch_dtype), which the plan's precision starts from.
STORAGE_DTYPES = ("fp32", "fp16")


@dataclass(frozen=True)
class Preset:
    """The architecture of one random-weights pipeline (configs only: pure data).

    family: the pipeline.family name the directory is (its marker says it; detect_family reads the same
    from the configs). text_2: the second text encoder (CLIPTextModelWithProjection kwargs) of SDXL.
    scheduler: the scheduler's config, with its `_class_name`. storage_dtype: what the files hold.
    """

    name: str
    description: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]  # CLIPTextConfig kwargs; vocab_size None = the generated tokenizer's size
    default_size: int  # the resolution the architecture was trained for
    family: str = "sd1"
    text_2: dict[str, Any] | None = None
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SD15_SCHEDULER))
    storage_dtype: str = "fp32"
    test_only: bool = False  # a tiny architecture for tests, not a real model's

    def variant(self, **changes: Any) -> "Preset":
        """The same architecture with other fields (a Turbo model is its base's architecture)."""
        return replace(self, **changes)


#: The registry `sdagent model create --preset` offers: another module adds its own with register_preset.
PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Add a preset to the registry (its name must be new)."""
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    if preset.storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"preset {preset.name!r}: storage dtype {preset.storage_dtype!r} not in {STORAGE_DTYPES}")
    PRESETS[preset.name] = preset
    return preset


#: SD-1.5's VAE (runwayml/stable-diffusion-v1-5 vae/config.json); SD 2.x's is the same (768 sample size).
SD15_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), norm_num_groups=32, sample_size=512,
    act_fn="silu", down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
#: The tiny presets' VAE: 4 blocks, so the latent is 1/8 of the image as in every SD family.
TINY_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
    block_out_channels=(16, 16, 32, 32), norm_num_groups=8, sample_size=64,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
#: openai/clip-vit-large-patch14 text_config: SD 1.x's encoder, and SDXL's first.
CLIP_L: dict[str, Any] = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu", vocab_size=49408,
)

TINY = register_preset(Preset(
    name="tiny",
    description="a few hundred thousand parameters, for tests (SD-1.5's block structure, tiny widths)",
    unet=dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=16, cross_attention_dim=32,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ),
    vae=TINY_VAE,
    text=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu", vocab_size=None,
    ),
    default_size=64, test_only=True,
))

SD15 = register_preset(Preset(
    name="sd15",
    description="SD-1.5's exact UNet (860M), VAE (84M) and CLIP ViT-L/14 text encoder (123M), random weights",
    # runwayml/stable-diffusion-v1-5 unet/config.json
    unet=dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32, norm_eps=1e-5,
        cross_attention_dim=768, attention_head_dim=8, act_fn="silu",
        center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
        mid_block_scale_factor=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    ),
    vae=SD15_VAE,
    text=CLIP_L,
    default_size=512,
))

SD21 = register_preset(Preset(
    name="sd21",
    description="SD 2.1 (768-v)'s exact UNet (866M, 1024-d cross-attention), VAE (84M) and OpenCLIP ViT-H "
                "text encoder (340M), random weights stored in fp16",
    # stabilityai/stable-diffusion-2-1 unet/config.json
    unet=dict(
        sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32, norm_eps=1e-5,
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        upcast_attention=True, act_fn="silu", center_input_sample=False, downsample_padding=1,
        flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    ),
    vae={**SD15_VAE, "sample_size": 768},  # stabilityai/stable-diffusion-2-1 vae/config.json
    # stabilityai/stable-diffusion-2-1 text_encoder/config.json: OpenCLIP ViT-H/14's text tower as a
    # CLIPTextModel (the last of its 24 layers dropped: SD 2 reads the penultimate layer)
    text=dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, projection_dim=512, hidden_act="gelu", vocab_size=49408,
    ),
    default_size=768, family="sd2-v", scheduler=SD21_SCHEDULER, storage_dtype="fp16",
))
# stabilityai/sd-turbo: SD 2.1's architecture at 512 (unet sample_size 64), Euler with trailing spacing.
register_preset(SD21.variant(
    name="sd-turbo", description="SD-Turbo: SD 2.1's exact architecture at 512x512 (1 step, no guidance), "
                                 "random weights stored in fp16",
    unet={**SD21.unet, "sample_size": 64, "upcast_attention": False}, vae={**SD15_VAE}, default_size=512,
    family="sd-turbo", scheduler=SD_TURBO_SCHEDULER,
))

SDXL = register_preset(Preset(
    name="sdxl",
    description="SDXL base's exact UNet (2.57B, added conditioning), VAE (84M), CLIP-L (123M) and OpenCLIP "
                "bigG (695M) text encoders, random weights stored in fp16 (~7 GB)",
    # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    unet=dict(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280), norm_num_groups=32, norm_eps=1e-5,
        cross_attention_dim=2048, attention_head_dim=(5, 10, 20), use_linear_projection=True,
        transformer_layers_per_block=(1, 2, 10), addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, act_fn="silu",
        center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
        mid_block_scale_factor=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    ),
    # stabilityai/stable-diffusion-xl-base-1.0 vae/config.json (SD's VAE, retrained; scaling 0.13025)
    vae={**SD15_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
    text=CLIP_L,  # stabilityai/stable-diffusion-xl-base-1.0 text_encoder/config.json
    # stabilityai/stable-diffusion-xl-base-1.0 text_encoder_2/config.json: OpenCLIP ViT-bigG/14's text tower
    text_2=dict(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
        max_position_embeddings=77, projection_dim=1280, hidden_act="gelu", vocab_size=49408,
    ),
    default_size=1024, family="sdxl", scheduler=SDXL_SCHEDULER, storage_dtype="fp16",
))
# stabilityai/sdxl-turbo: SDXL's architecture at 512 (unet sample_size 64), Euler ancestral, trailing.
register_preset(SDXL.variant(
    name="sdxl-turbo", description="SDXL-Turbo: SDXL base's exact architecture at 512x512 (1 step, no "
                                   "guidance), random weights stored in fp16 (~7 GB)",
    unet={**SDXL.unet, "sample_size": 64}, default_size=512, family="sdxl-turbo",
    scheduler=SDXL_TURBO_SCHEDULER,
))

# Tiny versions of each family, for tests (seconds, 64x64). Each keeps its family's distinguishing structure.
register_preset(TINY.variant(
    name="tiny-sd21",
    description="SD 2.1's structure at tiny widths, for tests: per-block head dims, linear projections, "
                "a gelu text encoder, v-prediction",
    unet={**TINY.unet, "attention_head_dim": (2, 4), "use_linear_projection": True},
    text={**TINY.text, "hidden_act": "gelu"}, family="sd2-v", scheduler=SD21_SCHEDULER,
))
# diffusers' tests/pipelines/stable_diffusion_xl/test_stable_diffusion_xl.py get_dummy_components, with
# TINY_VAE (a 1/8 latent as in SDXL) and a 2-layer text encoder: pooled 32 + 6 time ids x 8 = 80.
register_preset(TINY.variant(
    name="tiny-sdxl",
    description="SDXL's structure at tiny widths, for tests: two text encoders, added conditioning "
                "(text_time), transformer depth per block",
    unet=dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
        norm_num_groups=16, cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    ),
    vae={**TINY_VAE, "scaling_factor": 0.13025},
    text={**TINY.text, "hidden_act": "quick_gelu"}, text_2={**TINY.text, "hidden_act": "gelu"},
    family="sdxl", scheduler=SDXL_SCHEDULER,
))
# diffusers' tests/pipelines/latent_consistency_models/test_latent_consistency_models.py: the UNet with a
# guidance embedding (time_cond_proj_dim; 256 in SimianLuo/LCM_Dreamshaper_v7), LCMScheduler.
register_preset(TINY.variant(
    name="tiny-lcm",
    description="a Latent Consistency Model at tiny widths, for tests: SD-1.5's structure with a guidance "
                "embedding (time_cond_proj_dim), LCMScheduler, 4 steps",
    unet={**TINY.unet, "time_cond_proj_dim": 32}, family="lcm", scheduler=LCM_SCHEDULER,
))


# SimianLuo/LCM_Dreamshaper_v7 (the LCM FastSD CPU and diffusers' docs use): SD-1.5's exact UNet with a
# 256-d guidance embedding (unet/config.json time_cond_proj_dim 256), LCMScheduler; the few-step ladder's
# LCM workload (measuring/ladder_fewstep.py). Stored fp16 like the other big presets.
register_preset(SD15.variant(
    name="lcm",
    description="a Latent Consistency Model on SD-1.5's exact architecture (UNet with a 256-d guidance "
                "embedding, LCMScheduler; LCM_Dreamshaper_v7's configs), random weights, 4 steps",
    unet={**SD15.unet, "time_cond_proj_dim": 256}, family="lcm", scheduler=LCM_SCHEDULER, storage_dtype="fp16",
))

#: Presets that are not whole pipelines, by name -> writer(out_dir, *, force, seed) -> CreatedModel: the tiny
#: autoencoders (taesd, taesdxl, tiny-tae), registered by pipeline/modelgen_tae.py when it is imported.
WRITERS: dict[str, Callable[..., "CreatedModel"]] = {}


def get_preset(name: str) -> Preset:
    """The registered preset, or BadInput listing them."""
    if name not in PRESETS:
        raise BadInput(f"unknown preset {name!r}: choose one of {', '.join([*PRESETS, *WRITERS])}")
    return PRESETS[name]


# ---------------------------------------------------------------------------
# A small, valid CLIP BPE tokenizer (pure)
# ---------------------------------------------------------------------------

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

#: Words that get whole-word merges; anything else is spelled out byte by byte,
#: which the BPE handles too (every byte has a token).
TOKENIZER_WORDS = (
    "a an the of in on by with and at to from for under over near astronaut riding horse "
    "photo painting portrait landscape sailing ship storm rembrandt sea ocean sky cloud "
    "clouds mountain mountains city street night day sunset sunrise forest tree river lake "
    "cat dog bird man woman child house castle car road light dark red blue green yellow "
    "white black gold golden oil detailed high quality realistic style art digital"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode map (what vocab.json is keyed by)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def bpe(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: merge the best-ranked adjacent pair (all its occurrences) until none."""
    parts = list(parts)
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:]) if (a, b) in ranks}
        if not pairs:
            break
        best = min(pairs, key=ranks.__getitem__)
        out: list[str] = []
        i = 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                out.append(parts[i] + parts[i + 1])
                i += 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return parts


def clip_tokenizer_files(words: tuple[str, ...] | list[str] = TOKENIZER_WORDS) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) in CLIP's layout: bytes, bytes + '</w>', merge results, then BOS/EOS.

    Each word is first split by the merges made so far, then its pieces are
    joined left to right by new (lower-priority) merges, so every listed word
    becomes exactly one token.
    """
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base]
    known = set(tokens)
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        pieces = bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        cur = pieces[0]
        for nxt in pieces[1:]:
            ranks.setdefault((cur, nxt), len(ranks))
            cur += nxt
            if cur not in known:
                known.add(cur)
                tokens.append(cur)
    tokens += [BOS, EOS]
    merges = [f"{a} {b}" for (a, b), _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer_files(tok_dir: Path, vocab: dict[str, int], merges: list[str]) -> None:
    """vocab.json + merges.txt (+ configs): what both transformers 4 and 5 load a CLIPTokenizer from."""
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    cfg.update({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
                "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS,
                "do_lower_case": True, "errors": "replace", "clean_up_tokenization_spaces": True})
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    stm = tok_dir / "special_tokens_map.json"
    if not stm.is_file():
        stm.write_text(json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS,
                                   "pad_token": EOS}, indent=2), encoding="utf-8")


# ---------------------------------------------------------------------------
# Building (torch) and saving
# ---------------------------------------------------------------------------


def text_config_kwargs(preset: Preset, vocab: dict[str, int], second: bool = False) -> dict[str, Any]:
    """CLIPTextConfig kwargs (`second`: SDXL's second encoder's): special-token ids must be the tokenizer's
    (pooling finds EOS by id)."""
    if second and preset.text_2 is None:
        raise ValueError(f"preset {preset.name!r} has one text encoder")
    kw = dict(preset.text_2 if second else preset.text)
    if kw.get("vocab_size") is None:
        kw["vocab_size"] = len(vocab)
    kw.update(bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    return kw


def build_unet(preset: Preset, device: str = "cpu"):
    """The preset's UNet with random weights (device="meta" to inspect the architecture for free)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel(**preset.unet)


def build_scheduler(preset: Preset):
    """The preset's scheduler, from its config's `_class_name`."""
    import diffusers

    cfg = dict(preset.scheduler)
    return getattr(diffusers, cfg.pop("_class_name")).from_config(cfg)


def build_pipeline(preset: Preset, seed: int = 0, dtype: str | None = None):
    """The preset's family's diffusers pipeline with random weights, the tokenizer generated, no safety
    checker. `dtype` (fp32 | fp16; default the preset's storage dtype): each part is cast as soon as it is
    built, so the fp32 copy of only one part is alive at a time (SDXL's UNet is 10 GB in fp32)."""
    from sdagent.pipeline.family import FAMILIES, SDXL
    from sdagent.pipeline.stack import quiet_libraries

    quiet_libraries()
    import torch
    import diffusers
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16}[check_storage_dtype(dtype or preset.storage_dtype)]
    vocab, merges = clip_tokenizer_files()
    torch.manual_seed(seed)

    def part(module):
        return module.to(torch_dtype).eval()

    unet = part(build_unet(preset))
    vae = part(AutoencoderKL(**preset.vae))
    text_encoder = part(CLIPTextModel(CLIPTextConfig(**text_config_kwargs(preset, vocab))))
    with tempfile.TemporaryDirectory() as td:
        write_tokenizer_files(Path(td), vocab, merges)
        tokenizer = CLIPTokenizer.from_pretrained(td, local_files_only=True)
    family = FAMILIES[preset.family]
    kw = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=build_scheduler(preset))
    cls = getattr(diffusers, family.pipeline_class)
    if family.pipeline_class == SDXL:
        te2 = part(CLIPTextModelWithProjection(CLIPTextConfig(**text_config_kwargs(preset, vocab, second=True))))
        return cls(**kw, text_encoder_2=te2, tokenizer_2=tokenizer, force_zeros_for_empty_prompt=True,
                   add_watermarker=False)
    return cls(**kw, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def check_storage_dtype(dtype: str) -> str:
    if dtype not in STORAGE_DTYPES:
        raise BadInput(f"unknown storage dtype {dtype!r}: choose one of {', '.join(STORAGE_DTYPES)}")
    return dtype


TEXT_PREFIX = "text_model."


def use_transformers4_key_layout(text_dir: Path) -> bool:
    """Rename the CLIP text encoder's tensors to 'text_model.*' (SD-1.5's and transformers 4's layout).

    transformers 5 saves them without the prefix; transformers 4.57 then finds
    none of its keys and silently keeps random weights. transformers 5 loads the
    prefixed layout (it is what real SD-1.5 directories hold). True if rewritten.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    changed = False
    for f in text_encoder_weight_files(text_dir):
        with safe_open(str(f), "pt") as fh:
            keys = list(fh.keys())
            meta = fh.metadata() or {"format": "pt"}
        if all(k.startswith(TEXT_PREFIX) for k in keys):
            continue
        tensors = load_file(str(f))
        save_file({k if k.startswith(TEXT_PREFIX) else TEXT_PREFIX + k: v for k, v in tensors.items()},
                  str(f), metadata=meta)
        changed = True
    index = text_dir / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {k if k.startswith(TEXT_PREFIX) else TEXT_PREFIX + k: v
                              for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))
    return changed


def param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class CreatedModel:
    """What `create_model` wrote: the record `sdagent model create --json` prints."""

    path: str
    preset: str
    seed: int
    params: dict[str, int]
    seconds: float
    files: list[str] = field(default_factory=list)
    family: str = "sd1"
    storage_dtype: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def made_by_sdagent(directory: Path) -> bool:
    """Whether `sdagent model create` wrote this directory: its marker file names the model format."""
    try:
        return json.loads((directory / MARKER).read_text()).get("format", "").startswith("sdagent-model/")
    except (OSError, ValueError, AttributeError):
        return False


def check_target(directory: str | os.PathLike[str], force: bool) -> Path:
    """Refuse, before any work, an empty path, a missing or unwritable parent, a file, and a non-empty
    directory; with `force`, a non-empty directory only when sdagent itself created it (its marker
    file): never anything else, whatever the path (an empty $DIR, ".", $HOME)."""
    if not str(directory).strip():
        raise BadInput("empty model directory path (an unset variable?): give a directory")
    out_dir = Path(directory).absolute()
    parent = out_dir.parent
    if not parent.is_dir():
        raise BadInput(f"parent directory does not exist: {parent} (for {out_dir})")
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"model path exists and is not a directory: {out_dir}")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise BadInput(f"model directory is not empty: {out_dir} (use --force to replace a model "
                           f"sdagent created)")
        if not made_by_sdagent(out_dir):
            raise BadInput(f"refusing to replace {out_dir}: not empty and not created by `sdagent model create` "
                           f"(no {MARKER}); --force replaces only sdagent's own models")
    why = atomicio.dir_problem(parent)
    if why:
        raise BadInput(f"cannot create the model in {parent}: it is {why}")
    return out_dir


def write_model_dir(out: Path, fill: Callable[[Path], dict[str, Any]]) -> list[str]:
    """Build a model directory in a temporary sibling of `out`, then rename it into place.

    fill(tmp) writes the model's files into tmp and returns its marker record (MARKER, written last). Every
    file is made readable by the services (0644, directories 0755: save_pretrained leaves some 0600).
    Returns the files written, relative to `out`, the marker last. Errors: atomicio.OutputError naming
    `out` when a write fails (a full disk, a filesystem gone read-only: OSError, or safetensors' own
    SafetensorError wrapping one); nothing half-written stays, and `out` keeps what it held.
    """
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise atomicio.OutputError(f"cannot write the model to {out}: {exc.strerror or exc}") from None
    try:
        marker = fill(tmp)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        for f in [tmp, *tmp.rglob("*")]:
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        atomicio.replace_dir(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception):  # this phase only writes
            why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else one_line(exc)
            raise atomicio.OutputError(f"cannot write the model to {out}: {why}") from None
        raise
    return files + [MARKER]


def create_model(preset_name: str, out_dir: str | os.PathLike[str], *, force: bool = False,
                 seed: int = 0, dtype: str | None = None) -> CreatedModel:
    """Write a complete pipeline directory: built in a temp sibling, then renamed into place.

    dtype: what the weights files hold (fp32 | fp16; default the preset's storage dtype)."""
    if preset_name in WRITERS:
        return WRITERS[preset_name](out_dir, force=force, seed=seed)
    preset = get_preset(preset_name)
    dtype = check_storage_dtype(dtype or preset.storage_dtype)
    out = check_target(out_dir, force)
    t0 = time.perf_counter()
    pipe = build_pipeline(preset, seed, dtype)
    params = {"unet": param_count(pipe.unet), "vae": param_count(pipe.vae),
              "text_encoder": param_count(pipe.text_encoder)}
    if getattr(pipe, "text_encoder_2", None) is not None:
        params["text_encoder_2"] = param_count(pipe.text_encoder_2)

    def fill(tmp: Path) -> dict[str, Any]:
        pipe.save_pretrained(tmp, safe_serialization=True)
        use_transformers4_key_layout(tmp / "text_encoder")
        vocab, merges = clip_tokenizer_files()
        for tok in ("tokenizer", "tokenizer_2"):
            if (tmp / tok).is_dir():
                write_tokenizer_files(tmp / tok, vocab, merges)
        return {"format": "sdagent-model/1", "preset": preset.name, "family": preset.family, "seed": seed,
                "description": preset.description, "params": params, "storage_dtype": dtype,
                "random_weights": True}

    files = write_model_dir(out, fill)
    return CreatedModel(str(out), preset.name, seed, params, round(time.perf_counter() - t0, 3), files,
                        preset.family, dtype)
