"""Timed generation on a prepared pipeline: one image and where its time went.

The split (text encoder, each UNet step, VAE decode) comes from hooks around
one ordinary pipeline call, so the figure is the pipeline's own latency, not a
re-implementation of its loop.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from sdagent.errors import Exit, SdagentError
from sdagent.pipeline.loader import set_scheduler
from sdagent.pipeline.stack import import_torch
from sdagent.pipeline.workload import SCHEDULERS, Workload
from sdagent.planning.runspec import RunSpec

#: (step_index, steps, seconds of that step) after each UNet step: for progress bars.
StepCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Generation:
    """One image and where its time went."""

    image: Any  # PIL.Image.Image
    array: Any  # numpy float32 HxWx3 in [0, 1], every value finite (generate() raises NonFiniteOutput)
    workload: Workload
    total_s: float
    step_s: tuple[float, ...]
    text_encode_s: float | None
    vae_decode_s: float | None

    @property
    def unet_s(self) -> float:
        return sum(self.step_s)

    @property
    def step_mean_s(self) -> float:
        return self.unet_s / len(self.step_s) if self.step_s else math.nan

    def timings(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, 6)  # noqa: E731
        return {
            "total_s": r(self.total_s), "text_encode_s": r(self.text_encode_s),
            "unet_s": r(self.unet_s), "unet_step_mean_s": r(self.step_mean_s),
            "unet_steps_s": [r(v) for v in self.step_s], "vae_decode_s": r(self.vae_decode_s),
        }


class NonFiniteOutput(SdagentError):
    """A part of the pipeline produced NaN or Inf: the image would be black (exit 7, no image written)."""

    exit_code = Exit.ERROR


def first_tensor(out: Any) -> Any:
    """The tensor a part returned: itself, or the first field of its tuple or ModelOutput."""
    torch = import_torch()
    if torch.is_tensor(out):
        return out
    try:
        return out[0]
    except (TypeError, IndexError, KeyError):
        return None


def check_finite(where: str, out: Any) -> None:
    """Raise NonFiniteOutput naming `where` when the tensor `out` (or its first field) holds NaN or Inf.

    One isfinite() over a part's output: ~0.1 ms for SD-1.5's latents, nothing beside a UNet step.
    """
    torch = import_torch()
    t = first_tensor(out)
    if t is None or not torch.is_tensor(t) or not t.is_floating_point():
        return
    ok = torch.isfinite(t)
    if bool(ok.all()):
        return
    raise NonFiniteOutput(f"the image is not finite: {where} produced NaN/Inf first ({int((~ok).sum())} of "
                          f"{t.numel()} values): a bad checkpoint, or an overflow in reduced precision")


class _Timer:
    """Wall-clock split of one pipeline call: text encoder, each UNet step, VAE decode; and the first
    part whose output is not finite (NonFiniteOutput, raised where it happens: the call stops there)."""

    def __init__(self, steps: int, step_callback: StepCallback | None) -> None:
        self.steps = steps
        self.cb = step_callback
        self.text_s = 0.0
        self.text_seen = False
        self.vae_s: float | None = None
        self.mark = 0.0
        self.step_s: list[float] = []

    def on_step_end(self, pipe, i: int, t, kwargs: dict) -> dict:
        now = time.perf_counter()
        self.step_s.append(now - self.mark)
        self.mark = now
        check_finite(f"the scheduler's step {i + 1} of {self.steps} (the UNet's output was finite)",
                     kwargs.get("latents"))
        if self.cb:
            self.cb(i, self.steps, self.step_s[-1])
        return kwargs

    @contextlib.contextmanager
    def hooks(self, pipe):
        start: list[float] = []

        def pre(_m, _a):
            start.append(time.perf_counter())

        def post(_m, _a, out):
            now = time.perf_counter()
            self.text_s += now - start.pop()
            self.text_seen = True
            self.mark = now  # the denoising loop starts after the last text-encoder call
            check_finite("the text encoder", out)

        def unet_post(_m, _a, out):
            check_finite(f"the UNet at step {len(self.step_s) + 1} of {self.steps}", out)

        encoders = [pipe.text_encoder] + [e for e in (getattr(pipe, "text_encoder_2", None),) if e is not None]
        handles = [h for e in encoders  # SDXL's second encoder's time counts as text encoding too
                   for h in (e.register_forward_pre_hook(pre), e.register_forward_hook(post))]
        handles.append(pipe.unet.register_forward_hook(unet_post))
        installed = vars(pipe.vae).get("decode")  # a compiled decoder installed on the instance, if any
        orig_decode = pipe.vae.decode

        def timed_decode(*a, **k):
            t0 = time.perf_counter()
            try:
                out = orig_decode(*a, **k)
            finally:
                self.vae_s = (self.vae_s or 0.0) + time.perf_counter() - t0
            check_finite("the VAE decoder", out)
            return out

        pipe.vae.decode = timed_decode  # instance attribute shadows the method for this call only
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            if installed is not None:
                pipe.vae.decode = installed
            else:
                del pipe.vae.decode


@dataclass
class PreparedPipeline:
    """A pipeline made ready for one backend; generate() as many times as needed."""

    pipe: Any
    spec: RunSpec
    notes: list[str] = field(default_factory=list)
    prepare_s: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)  # part -> loaded package's key digest
    compile_error: str | None = None  # why the planned compile fell back to eager

    def generate(self, workload: Workload, seed: int | None = None,
                 step_callback: StepCallback | None = None) -> Generation:
        """Run the pipeline once; seed (else workload.seed) fixes the initial noise.

        Raises NonFiniteOutput (exit 7) at the first part whose output holds NaN or Inf (text encoder,
        UNet step, scheduler step, VAE decoder), naming it: a black image is never returned.
        """
        torch = import_torch()
        import numpy as np

        w = workload if seed is None else workload.with_seed(seed)
        if w.scheduler != "default" and SCHEDULERS[w.scheduler] != type(self.pipe.scheduler).__name__:
            set_scheduler(self.pipe, w.scheduler)
        gen = torch.Generator("cpu").manual_seed(w.seed)
        latents = initial_latents(self.pipe, w, gen)
        timer = _Timer(w.steps, step_callback)
        t0 = time.perf_counter()
        timer.mark = t0
        kw = {} if w.negative_prompt is None else {"negative_prompt": w.negative_prompt}
        with timer.hooks(self.pipe), torch.no_grad():  # the precision is applied inside each part
            out = self.pipe(
                prompt=w.prompt, num_inference_steps=w.steps, **kw,
                height=w.height, width=w.width, guidance_scale=w.guidance, generator=gen,
                latents=latents, output_type="np", callback_on_step_end=timer.on_step_end,
            )
        total = time.perf_counter() - t0
        arr = np.asarray(out.images[0], dtype=np.float32)
        if not np.isfinite(arr).all():
            raise NonFiniteOutput("the image is not finite: the image post-processing produced NaN/Inf "
                                  f"({int((~np.isfinite(arr)).sum())} of {arr.size} values)")
        img = to_pil(arr)
        return Generation(img, arr, w, total, tuple(timer.step_s),
                          timer.text_s if timer.text_seen else None, timer.vae_s)

    @property
    def compiled(self) -> bool:
        """Whether the compiled packages really run (the plan may have asked and fallen back)."""
        return self.spec.compile and self.spec.backend == "native" and bool(self.artifacts) \
            and not self.compile_error

    def ran(self) -> str:
        """What really runs, for every header: the spec's description, with "eager (compile unavailable:
        why)" where the plan asked for compiled packages and the pipeline fell back."""
        if not self.spec.compile or self.compiled:
            return self.spec.describe()
        eager = replace(self.spec, compile=False, compile_autotune=False).describe()
        if self.spec.backend != "native":
            return f"{eager} (compile ignored: IPEX optimizes the graph itself)"
        return f"{eager} (compile unavailable: {self.compile_error or 'no package loaded'})"

    def describe(self) -> dict[str, Any]:
        return {"run": self.spec.to_dict(), "ran": self.ran(), "compiled": self.compiled,
                "notes": list(self.notes), "artifacts": dict(self.artifacts),
                "compile_error": self.compile_error,
                "prepare_s": round(self.prepare_s, 3),
                "scheduler": type(self.pipe.scheduler).__name__}


def initial_latents(pipe, w: Workload, generator):
    """The seed's noise drawn in fp32, then cast to the pipeline's dtype.

    diffusers draws it in the text encoder's dtype, and torch.randn in bf16 gives
    other numbers than in fp32: IPEX's bf16 modules would turn the same seed into
    another image, and verify's bf16-vs-fp32 comparison into noise.
    """
    torch = import_torch()
    f = getattr(pipe, "vae_scale_factor", 8)
    shape = (1, pipe.unet.config.in_channels, w.height // f, w.width // f)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(pipe.text_encoder.dtype)


def to_pil(arr):
    """float [0, 1] HxWx3 -> 8-bit RGB image (NaN written as black; the array keeps it)."""
    import numpy as np
    from PIL import Image

    a = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    return Image.fromarray((np.clip(a, 0.0, 1.0) * 255).round().astype("uint8"))


