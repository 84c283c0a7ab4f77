"""What one generation asks for, validated before any model is loaded.

Kept free of torch/diffusers imports so the CLI can reject bad input in
milliseconds, before the seconds-long import of the ML stack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

from sdagent.errors import BadInput

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

    @property
    def batch(self) -> int:
        """UNet batch per step: classifier-free guidance runs the prompt and the negative together."""
        return 2 if self.guidance > 1.0 else 1

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
    return Workload(**f)


def validate_workload(w: Workload, latent_factor: int = 8) -> Workload:
    """Reject values the pipeline would fail on (or silently round) with a one-line BadInput."""
    if not w.prompt or not w.prompt.strip():
        raise BadInput("empty prompt: give --prompt TEXT")
    if w.steps < 1:
        raise BadInput(f"invalid steps {w.steps}: must be at least 1")
    for name, v in (("height", w.height), ("width", w.width)):
        if v < latent_factor or v % latent_factor:
            raise BadInput(f"invalid {name} {v}: must be a positive multiple of {latent_factor}")
    if w.guidance < 0:
        raise BadInput(f"invalid guidance {w.guidance}: must be >= 0")
    if w.seed < 0:
        raise BadInput(f"invalid seed {w.seed}: must be >= 0")
    check_scheduler(w.scheduler)
    return w
