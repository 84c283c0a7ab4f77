"""Random-weights Stable Diffusion pipelines built from configs, saved as diffusers directories.

Why: the agent must be testable and its timings meaningful without a model hub.
`tiny` runs in seconds for tests; `sd15` has SD-1.5's exact UNet/VAE/CLIP-L
architecture, so its latency is the real model's (the weights do not change
the FLOPs). Every consumer loads the result with `from_pretrained(dir)`, the
same call that loads a real SD-1.5 directory.

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
from dataclasses import asdict, dataclass, field
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
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "clip_sample": False, "trained_betas": None,
}


@dataclass(frozen=True)
class Preset:
    """The architecture of one random-weights pipeline."""

    name: str
    description: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]  # CLIPTextConfig kwargs; vocab_size None = the generated tokenizer's size
    default_size: int  # the resolution the architecture was trained for


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="a few hundred thousand parameters, for tests (SD-1.5's block structure, tiny widths)",
        unet=dict(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), norm_num_groups=16, cross_attention_dim=32,
            attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            block_out_channels=(16, 16, 32, 32), norm_num_groups=8, sample_size=64,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        ),
        text=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu", vocab_size=None,
        ),
        default_size=64,
    ),
    "sd15": Preset(
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
        # runwayml/stable-diffusion-v1-5 vae/config.json
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
            block_out_channels=(128, 256, 512, 512), norm_num_groups=32, sample_size=512,
            act_fn="silu", down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        ),
        # openai/clip-vit-large-patch14 text_config
        text=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu", vocab_size=49408,
        ),
        default_size=512,
    ),
}


#: Presets that are not whole pipelines, by name -> writer(out_dir, *, force, seed) -> CreatedModel: the tiny
#: autoencoders (taesd, taesdxl, tiny-tae), registered by pipeline/modelgen_tae.py when it is imported.
WRITERS: dict[str, Callable[..., "CreatedModel"]] = {}


def get_preset(name: str) -> Preset:
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


def text_config_kwargs(preset: Preset, vocab: dict[str, int]) -> dict[str, Any]:
    """CLIPTextConfig kwargs: special-token ids must be the tokenizer's (pooling finds EOS by id)."""
    kw = dict(preset.text)
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


def build_pipeline(preset: Preset, seed: int = 0):
    """A StableDiffusionPipeline with random weights, the tokenizer generated, no safety checker."""
    from sdagent.pipeline.stack import quiet_libraries

    quiet_libraries()
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = clip_tokenizer_files()
    torch.manual_seed(seed)
    unet = build_unet(preset)
    vae = AutoencoderKL(**preset.vae)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config_kwargs(preset, vocab)))
    with tempfile.TemporaryDirectory() as td:
        write_tokenizer_files(Path(td), vocab, merges)
        tokenizer = CLIPTokenizer.from_pretrained(td, local_files_only=True)
    for m in (unet, vae, text_encoder):
        m.eval()
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


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


def create_model(preset_name: str, out_dir: str | os.PathLike[str], *, force: bool = False,
                 seed: int = 0) -> CreatedModel:
    """Write a complete pipeline directory: built in a temp sibling, then renamed into place."""
    if preset_name in WRITERS:
        return WRITERS[preset_name](out_dir, force=force, seed=seed)
    preset = get_preset(preset_name)
    out = check_target(out_dir, force)
    t0 = time.perf_counter()
    pipe = build_pipeline(preset, seed)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise atomicio.OutputError(f"cannot write the model to {out}: {exc.strerror or exc}") from None
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        use_transformers4_key_layout(tmp / "text_encoder")
        vocab, merges = clip_tokenizer_files()
        write_tokenizer_files(tmp / "tokenizer", vocab, merges)
        params = {"unet": param_count(pipe.unet), "vae": param_count(pipe.vae),
                  "text_encoder": param_count(pipe.text_encoder)}
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        (tmp / MARKER).write_text(json.dumps({
            "format": "sdagent-model/1", "preset": preset.name, "seed": seed,
            "description": preset.description, "params": params, "random_weights": True,
        }, indent=2) + "\n")
        for f in [tmp, *tmp.rglob("*")]:  # save_pretrained leaves some files 0600; services read them
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        atomicio.replace_dir(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception):  # this phase only writes: a full disk, a filesystem gone read-only
            # (OSError, or safetensors' own SafetensorError wrapping one); nothing half-written stays
            why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else one_line(exc)
            raise atomicio.OutputError(f"cannot write the model to {out}: {why}") from None
        raise
    return CreatedModel(str(out), preset.name, seed, params, round(time.perf_counter() - t0, 3),
                        files + [MARKER])
