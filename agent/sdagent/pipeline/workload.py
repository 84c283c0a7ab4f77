"""What one generation asks for, validated before any model is loaded.

Kept free of torch/diffusers imports so the CLI can reject bad input in
milliseconds, before the seconds-long import of the ML stack.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from sdagent.errors import BadInput
from sdagent.pipeline.family import Family, default_steps, guidance_warning, negative_prompt_warning, steps_warning

#: Scheduler names the CLI accepts -> diffusers class names. "default" keeps the
#: scheduler saved in the model directory (PNDM for SD-1.5).
SCHEDULERS: dict[str, str | None] = {
    "default": None,
    "dpm": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}

#: The published demo's prompt (HF blog "stable-diffusion-inference-intel").
DEMO_PROMPT = "sailing ship in storm by Rembrandt"


def check_scheduler(name: str) -> str:
    """The scheduler name, or BadInput listing the valid ones."""
    if name not in SCHEDULERS:
        raise BadInput(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
    return name


@dataclass(frozen=True)
class Workload:
    """One text-to-image request: the shape and settings that decide its cost."""

    prompt: str = DEMO_PROMPT
    steps: int = 20
    height: int = 512
    width: int = 512
    guidance: float = 7.5
    seed: int = 0
    scheduler: str = "default"
    negative_prompt: str | None = None
    cfg: bool = True  # the family runs classifier-free guidance above 1 (False: LCM's guidance embedding)

    @property
    def batch(self) -> int:
        """UNet batch per step: classifier-free guidance runs the prompt and the negative together (a
        guidance-embedding model, LCM, reads the scale in its UNet at batch 1)."""
        return 2 if self.cfg and self.guidance > 1.0 else 1

    def with_seed(self, seed: int) -> "Workload":
        return replace(self, seed=seed)

    def with_steps(self, steps: int) -> "Workload":
        return replace(self, steps=steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_default_size(fields: dict[str, Any], default_size: Callable[[], int]) -> Workload:
    """A workload from CLI fields; a missing height or width is the model's own resolution."""
    f = dict(fields)
    if f.get("height") is None or f.get("width") is None:
        size = default_size()
        f["height"] = size if f.get("height") is None else f["height"]
        f["width"] = size if f.get("width") is None else f["width"]
    return Workload(**{k: v for k, v in f.items() if v is not None or k == "negative_prompt"})


def with_model_defaults(fields: dict[str, Any], default_size: Callable[[], int], family: Family,
                        command_steps: int = 20) -> Workload:
    """A workload from CLI fields (None = not given): a missing size is the model's own resolution, missing
    steps the distilled family's (Turbo 1, LCM 4) else the command's, a missing guidance the family's
    (SD 7.5, SDXL 5, Turbo 0, LCM 8.5); the family decides whether guidance doubles the UNet's batch."""
    f = dict(fields)
    if f.get("steps") is None:
        f["steps"] = default_steps(family, command_steps)
    if f.get("guidance") is None:
        f["guidance"] = family.default_guidance
    f["cfg"] = family.cfg
    if not family.cfg:  # LCM's pipeline takes no negative prompt (negative_prompt_warning says so)
        f["negative_prompt"] = None
    return with_default_size(f, default_size)


def workload_warnings(family: Family, w: Workload, given: set[str]) -> list[str]:
    """The one-line warnings a workload earns on its family (pipeline.family's rules): a guidance scale
    the model ignores, steps above a distilled model's range. `given`: the fields the user gave."""
    notes = [guidance_warning(family, w.guidance, "guidance" in given),
             steps_warning(family, w.steps) if "steps" in given else None,
             negative_prompt_warning(family, w.guidance, "negative_prompt" in given)]
    return [n for n in notes if n]


#: SD's schedulers are trained on 1000 timesteps: more inference steps than that cannot be scheduled.
MAX_STEPS = 1000

#: The largest seed: torch's generators take 64 bits; the agent keeps to non-negative int64.
MAX_SEED = 2**63 - 1


def check_text(name: str, text: str | None) -> None:
    """A prompt the tokenizer can read: valid Unicode (a non-UTF-8 argv byte arrives as a lone
    surrogate, which fails only inside the tokenizer, after the model has loaded)."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInput(f"invalid {name}: byte {text[exc.start].encode('utf-8', 'surrogateescape')!r} at "
                       f"position {exc.start} is not UTF-8") from None


def validate_workload(w: Workload, latent_factor: int = 8) -> Workload:
    """Reject values the pipeline would fail on (or silently round) with a one-line BadInput."""
    if not w.prompt or not w.prompt.strip():
        raise BadInput("empty prompt: give --prompt TEXT")
    if not 1 <= w.steps <= MAX_STEPS:
        raise BadInput(f"invalid steps {w.steps}: must be 1..{MAX_STEPS} (the schedulers' trained timesteps)")
    if not math.isfinite(w.guidance):
        raise BadInput(f"invalid guidance {w.guidance}: must be a finite number")
    for name, v in (("height", w.height), ("width", w.width)):
        if v < latent_factor or v % latent_factor:
            raise BadInput(f"invalid {name} {v}: must be a positive multiple of {latent_factor}")
    if w.guidance < 0:
        raise BadInput(f"invalid guidance {w.guidance}: must be >= 0")
    if isinstance(w.seed, bool) or not isinstance(w.seed, int) or not 0 <= w.seed <= MAX_SEED:
        raise BadInput(f"invalid seed {w.seed}: must be an integer 0..{MAX_SEED}")
    check_text("prompt", w.prompt)
    check_text("negative prompt", w.negative_prompt)
    check_scheduler(w.scheduler)
    return w


#: Calibrated on the sd15 preset (docs/results/memory.md: peak RSS of `sdagent run`, one step, eager,
#: fp32 and bf16 at 256, 512 and 768 px): the weights are held about twice (the loaded tensors and the
#: safetensors file mapping; bf16 adds a cast copy), and activations grow with the image area: live
#: tensors per output pixel of the VAE decoder's widest stage and per latent pixel of the UNet's
#: first stage (4-byte elements). The estimate is an upper bound there by 3-15%.
WEIGHT_COPIES = 2.15
#: The same for 16-bit files (the fp16 presets), relative to their loaded fp32 size: the fp32 tensors plus the
#: 16-bit file's mapping (half as large), 1.5. Measured (docs/results/memory.md, 16-bit files: peak RSS after
#: loading, one step at 512 and 1024 px, eager fp32, on sd-turbo, lcm and sdxl-turbo): 1.06-1.42x; 2.15 there
#: refused SDXL-Turbo at 512x512 on a 23 GiB host (28.6 GiB estimated, 14.9 GiB measured).
WEIGHT_COPIES_16BIT = 1.5
VAE_LIVE_TENSORS = 6
UNET_LIVE_TENSORS = 10


def is_16bit_file(f: Path) -> bool:
    """Whether every tensor of a safetensors file is 16-bit (F16/BF16), from its header (modeldir checked it);
    False where the header cannot be read."""
    try:
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        dtypes = {v.get("dtype") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        return False
    return bool(dtypes) and dtypes <= {"F16", "BF16"}


def loaded_weight_bytes(f: Path) -> int:
    """Bytes a safetensors file's tensors take once loaded as fp32 (the loader's dtype): its size, doubled
    for a 16-bit file (the fp16 presets)."""
    size = f.stat().st_size
    return 2 * size if is_16bit_file(f) else size


def held_weight_bytes(f: Path) -> int:
    """Bytes a process holds for a weight file at its peak: its loaded fp32 size times WEIGHT_COPIES, or
    WEIGHT_COPIES_16BIT for a 16-bit file (one read of its header)."""
    size = f.stat().st_size
    return int(2 * size * WEIGHT_COPIES_16BIT) if is_16bit_file(f) else int(size * WEIGHT_COPIES)


def memory_estimate_bytes(md, w: Workload) -> int:
    """Peak memory of one generation, eager (see the constants above for where the figures come from).
    Every part the loader loads counts (SDXL's second text encoder too), at fp32."""
    weights = sum(held_weight_bytes(f) for sub in ("unet", "vae", "text_encoder", "text_encoder_2")
                  for f in (Path(md.path) / sub).glob("*.safetensors"))

    def first_width(sub: str) -> int:
        try:
            return int(json.loads((Path(md.path) / sub / "config.json").read_text())["block_out_channels"][0])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return 320
    pixels = w.height * w.width
    vae = pixels * first_width("vae") * 4 * VAE_LIVE_TENSORS
    unet = (pixels // 64) * w.batch * first_width("unet") * 4 * UNET_LIVE_TENSORS
    return weights + vae + unet


def check_fits_in_memory(md, w: Workload, available: int | None = None) -> None:
    """Refuse up front a workload the host's memory cannot hold (instead of an OOM kill minutes in)."""
    if available is None:
        from sdagent.host.process import read_memory_available_kb

        kb = read_memory_available_kb()
        if kb is None:
            return
        available = kb * 1024
    need = memory_estimate_bytes(md, w)
    if need > available:
        raise BadInput(f"invalid size {w.height}x{w.width}: one image of it needs about {need / 2**30:.1f} GiB, "
                       f"this host has {available / 2**30:.1f} GiB available")
