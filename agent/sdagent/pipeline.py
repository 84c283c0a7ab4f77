"""Load a Stable Diffusion pipeline, prepare it for a backend, generate with timings.

The three steps are separate so bench, verify and tune can load once, prepare
once (IPEX and torch.compile are expensive) and generate many times:

    pipe = load_pipeline(model_dir, scheduler)
    prepared = prepare(pipe, BackendSettings.from_plan(plan), workload)
    result = prepared.generate(workload, seed=1)

Backends:
  ipex    the published demo's recipe: channels_last on unet, vae and text
          encoder; ipex.optimize(m.eval(), dtype, inplace=True), the UNet with
          a sample input of the real shapes; inference under bf16 autocast.
  native  upstream PyTorch: channels_last, bf16 autocast, optionally
          torch.compile of the UNet (inductor, freezing, persistent cache).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from sdagent.errors import BadInput
from sdagent.hostfacts import ipex_status
from sdagent.modeldir import check_model_dir
from sdagent.workload import SCHEDULERS, Workload, check_scheduler

BACKENDS = ("ipex", "native")
PRECISIONS = ("bf16", "fp32")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
IPEX_INSTALL_HINT = ("install it in a separate venv: pip install 'sdagent[ipex]' "
                     "(pins torch 2.8, IPEX 2.8, transformers<5, diffusers 0.39)")

#: (step_index, steps, seconds of that step) after each UNet step: for progress bars.
StepCallback = Callable[[int, int, float], None]


def default_compile_cache() -> Path:
    """A cold inductor compile of the SD-1.5 UNet takes minutes: keep its cache across runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sdagent" / "inductor"


def _torch():
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure means the same thing to the user
        raise BadInput(f"torch is not importable ({exc.__class__.__name__}: {exc}): "
                       "pip install 'sdagent[native]'") from None
    return torch


def quiet_libraries() -> None:
    """Loading bars and 'you should TRAIN this model' notices are noise on a CLI's stderr."""
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def scheduler_class(name: str):
    """The diffusers scheduler class for a CLI name (None for "default": keep the model's)."""
    check_scheduler(name)
    cls_name = SCHEDULERS[name]
    if cls_name is None:
        return None
    import diffusers

    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise BadInput(f"scheduler {name!r} ({cls_name}) is not in this diffusers version")
    return cls


def set_scheduler(pipe, name: str) -> str:
    """Swap the scheduler, keeping the model's noise schedule (the demo's DPM-Solver swap)."""
    cls = scheduler_class(name)
    if cls is not None:
        try:
            pipe.scheduler = cls.from_config(pipe.scheduler.config)
        except ImportError as exc:  # diffusers' stand-in classes raise this when a dependency is absent
            why = " ".join(str(exc).split())  # diffusers wraps its message over several lines
            raise BadInput(f"scheduler {name!r} is not usable here: {why}") from None
    return type(pipe.scheduler).__name__


def load_pipeline(model_dir: str | os.PathLike[str], scheduler: str = "default"):
    """StableDiffusionPipeline.from_pretrained(dir, local_files_only=True), with one-line failures.

    The safety checker is not loaded: it is not part of the latency being tuned.
    """
    check_scheduler(scheduler)
    md = check_model_dir(model_dir)
    _torch()
    quiet_libraries()  # before diffusers' import, which logs about optional packages
    try:
        from diffusers import StableDiffusionPipeline
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"diffusers is not importable ({exc.__class__.__name__}: {exc}): "
                       "pip install 'sdagent[native]'") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = StableDiffusionPipeline.from_pretrained(
                str(md.path), local_files_only=True, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False)
    except Exception as exc:  # noqa: BLE001 - whatever diffusers raised, the directory is the cause
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise BadInput(f"cannot load the pipeline in {md.path}: {exc.__class__.__name__}: {first}") from None
    check_text_encoder_loaded(pipe, md.path)
    pipe.set_progress_bar_config(disable=True)
    set_scheduler(pipe, scheduler)
    return pipe


def check_text_encoder_loaded(pipe, model_dir: Path) -> None:
    """transformers keeps random weights, with only a log line, when the file's key names do not
    match its layout (e.g. a directory saved by transformers 5 read by 4.x): refuse that."""
    torch = _torch()
    from sdagent.modelgen import text_encoder_weight_files

    want = ("text_model.embeddings.token_embedding.weight", "embeddings.token_embedding.weight")
    try:
        from safetensors import safe_open
    except ImportError:
        return
    for f in text_encoder_weight_files(model_dir / "text_encoder"):
        if not f.is_file():
            return  # .bin weights: nothing cheap to compare against
        with safe_open(str(f), "pt") as fh:
            key = next((k for k in want if k in fh.keys()), None)
            if key is None:
                continue
            stored = fh.get_tensor(key)
        loaded = pipe.text_encoder.get_input_embeddings().weight.detach()
        if loaded.shape != stored.shape or not torch.equal(loaded.to(stored.dtype), stored):
            import transformers

            raise BadInput(f"the text encoder weights in {f} were not loaded by transformers "
                           f"{transformers.__version__} (their key names use another layout); "
                           f"re-create the directory with `sdagent model create`")
        return


# ---------------------------------------------------------------------------
# Preparing for a backend
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendSettings:
    """How to run: the plan's backend knobs (sdagent.plan is the source of their defaults)."""

    backend: str = "native"
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    weights_prepack: bool = True  # IPEX bf16 prepack; False where IPEX 2.8 would assert
    compile_cache_dir: str | None = None  # None: default_compile_cache()
    isa_flags: tuple[str, ...] = ()

    @classmethod
    def from_plan(cls, plan, isa_flags: tuple[str, ...] = (), compile_cache_dir: str | None = None,
                  **overrides: Any) -> "BackendSettings":
        s = cls(backend=plan.backend, precision=plan.precision, channels_last=bool(plan.channels_last),
                compile=bool(plan.compile), weights_prepack=bool(plan.weights_prepack),
                compile_cache_dir=compile_cache_dir, isa_flags=tuple(isa_flags))
        return replace(s, **overrides) if overrides else s

    @property
    def native_bf16(self) -> bool:
        return any(f in self.isa_flags for f in NATIVE_BF16_FLAGS)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["isa_flags"] = list(self.isa_flags)
        return d


def ipex_unusable_message(st) -> str:
    """One line: why IPEX cannot be used (from its metadata) and how to get it."""
    why = "intel-extension-for-pytorch is not installed" if st.version is None else st.reason
    return f"backend ipex is not usable here: {why}; {IPEX_INSTALL_HINT}"


def import_ipex():
    """intel_extension_for_pytorch, or BadInput saying why not and how to install it."""
    st = ipex_status()
    if not st.usable:
        raise BadInput(ipex_unusable_message(st))
    try:
        import intel_extension_for_pytorch as ipex  # slow (~8 s)
    except Exception as exc:  # noqa: BLE001 - on a wrong torch it raises AttributeError, not ImportError
        raise BadInput(f"backend ipex: importing intel_extension_for_pytorch failed "
                       f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                       f"{IPEX_INSTALL_HINT}") from None
    return ipex


def unet_sample_input(pipe, workload: Workload, dtype=None) -> tuple:
    """(latents, timestep, encoder_hidden_states) of the shapes the loop will feed the UNet."""
    torch = _torch()
    dtype = dtype or torch.float32
    f = getattr(pipe, "vae_scale_factor", 8)
    latents = torch.randn(workload.batch, pipe.unet.config.in_channels,
                          workload.height // f, workload.width // f, dtype=dtype)
    timestep = torch.rand(1) * 999
    tokens = getattr(pipe.tokenizer, "model_max_length", 77)
    hidden = torch.randn(workload.batch, tokens, pipe.text_encoder.config.hidden_size, dtype=dtype)
    return latents, timestep, hidden


def _channels_last(pipe, names: tuple[str, ...]) -> None:
    torch = _torch()
    for n in names:
        getattr(pipe, n).to(memory_format=torch.channels_last)


def _prepare_ipex(pipe, s: BackendSettings, workload: Workload, notes: list[str]) -> None:
    torch = _torch()
    ipex = import_ipex()
    notes.append(f"IPEX {getattr(ipex, '__version__', '?')} on torch {torch.__version__}")
    if s.compile:
        notes.append("compile ignored: on the ipex backend IPEX optimizes the graph itself")
    if s.channels_last:
        _channels_last(pipe, ("unet", "vae", "text_encoder"))
        notes.append("channels_last on unet, vae and text encoder")
    bf16 = s.precision == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    kw: dict[str, Any] = {}
    sample_dtype = torch.float32
    if bf16 and not s.weights_prepack:
        # IPEX 2.8's bf16 prepack asserts without AVX512-BW/VL/DQ or AVX-NE-CONVERT; without
        # prepack, oneDNN's LayerNorm rejects fp32 weights beside bf16 activations: cast them.
        for n in ("unet", "vae", "text_encoder"):
            getattr(pipe, n).to(torch.bfloat16)
        kw["weights_prepack"] = False
        sample_dtype = torch.bfloat16
        notes.append("bf16 weight prepack off (this CPU lacks AVX512-BW/VL/DQ and AVX-NE-CONVERT); "
                     "unet, vae and text encoder cast to bf16 so oneDNN LayerNorm accepts them")
    sample = unet_sample_input(pipe, workload, sample_dtype)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.unet = ipex.optimize(pipe.unet.eval(), dtype=dtype, inplace=True, sample_input=sample, **kw)
        pipe.vae = ipex.optimize(pipe.vae.eval(), dtype=dtype, inplace=True, **kw)
        pipe.text_encoder = ipex.optimize(pipe.text_encoder.eval(), dtype=dtype, inplace=True, **kw)
    shape = "x".join(str(d) for d in sample[0].shape)
    notes.append(f"ipex.optimize(dtype={'bfloat16' if bf16 else 'float32'}, inplace=True) on unet "
                 f"(sample input latents {shape}), vae and text encoder"
                 + ("" if kw else "; weights prepacked"))
    if bf16:
        notes.append("inference under torch.autocast('cpu', dtype=torch.bfloat16)")


def configure_inductor(cache_dir: Path) -> None:
    """Freezing (weights become constants) and a persistent FX-graph cache, before compiling."""
    os.environ["TORCHINDUCTOR_FREEZING"] = "1"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    import torch._inductor.config as icfg  # read its env vars at import: set the config too

    icfg.freezing = True
    if hasattr(icfg, "fx_graph_cache"):
        icfg.fx_graph_cache = True


def _prepare_native(pipe, s: BackendSettings, notes: list[str]) -> None:
    torch = _torch()
    notes.append(f"upstream PyTorch {torch.__version__}")
    if s.channels_last:
        _channels_last(pipe, ("unet", "vae"))
        notes.append("channels_last on unet and vae")
    if s.precision == "bf16":
        notes.append("bf16 autocast at inference (weights stay fp32)")
    if s.compile:
        cache = Path(s.compile_cache_dir) if s.compile_cache_dir else default_compile_cache()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create the compile cache directory {cache}: {exc.strerror}") from None
        configure_inductor(cache)
        pipe.unet = torch.compile(pipe.unet, backend="inductor")
        notes.append(f"torch.compile(unet, inductor) with freezing; kernel cache {cache}; the first call "
                     "compiles (minutes cold; freezing bypasses the FX-graph cache, so a warm cache "
                     "saves the kernel builds only)")


@dataclass(frozen=True)
class Generation:
    """One image and where its time went."""

    image: Any  # PIL.Image.Image
    array: Any  # numpy float32 HxWx3 in [0, 1] (NaN kept: verify checks it)
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


class _Timer:
    """Wall-clock split of one pipeline call: text encoder, each UNet step, VAE decode."""

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
        if self.cb:
            self.cb(i, self.steps, self.step_s[-1])
        return kwargs

    @contextlib.contextmanager
    def hooks(self, pipe):
        start: list[float] = []

        def pre(_m, _a):
            start.append(time.perf_counter())

        def post(_m, _a, _o):
            now = time.perf_counter()
            self.text_s += now - start.pop()
            self.text_seen = True
            self.mark = now  # the denoising loop starts after the last text-encoder call

        handles = [pipe.text_encoder.register_forward_pre_hook(pre),
                   pipe.text_encoder.register_forward_hook(post)]
        orig_decode = pipe.vae.decode

        def timed_decode(*a, **k):
            t0 = time.perf_counter()
            try:
                return orig_decode(*a, **k)
            finally:
                self.vae_s = (self.vae_s or 0.0) + time.perf_counter() - t0

        pipe.vae.decode = timed_decode  # instance attribute shadows the method for this call only
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            del pipe.vae.decode


@dataclass
class PreparedPipeline:
    """A pipeline made ready for one backend; generate() as many times as needed."""

    pipe: Any
    settings: BackendSettings
    notes: list[str] = field(default_factory=list)
    prepare_s: float = 0.0

    def autocast(self):
        torch = _torch()
        if self.settings.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def generate(self, workload: Workload, seed: int | None = None,
                 step_callback: StepCallback | None = None) -> Generation:
        """Run the pipeline once; seed (else workload.seed) fixes the initial noise."""
        torch = _torch()
        import numpy as np

        w = workload if seed is None else workload.with_seed(seed)
        if w.scheduler != "default" and SCHEDULERS[w.scheduler] != type(self.pipe.scheduler).__name__:
            set_scheduler(self.pipe, w.scheduler)
        gen = torch.Generator("cpu").manual_seed(w.seed)
        latents = initial_latents(self.pipe, w, gen)
        timer = _Timer(w.steps, step_callback)
        t0 = time.perf_counter()
        timer.mark = t0
        with timer.hooks(self.pipe), torch.no_grad(), self.autocast():
            out = self.pipe(
                prompt=w.prompt, negative_prompt=w.negative_prompt, num_inference_steps=w.steps,
                height=w.height, width=w.width, guidance_scale=w.guidance, generator=gen,
                latents=latents, output_type="np", callback_on_step_end=timer.on_step_end,
            )
        total = time.perf_counter() - t0
        arr = np.asarray(out.images[0], dtype=np.float32)
        img = to_pil(arr)
        return Generation(img, arr, w, total, tuple(timer.step_s),
                          timer.text_s if timer.text_seen else None, timer.vae_s)

    def describe(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict(), "notes": list(self.notes),
                "prepare_s": round(self.prepare_s, 3),
                "scheduler": type(self.pipe.scheduler).__name__}


def initial_latents(pipe, w: Workload, generator):
    """The seed's noise drawn in fp32, then cast to the pipeline's dtype.

    diffusers draws it in the text encoder's dtype, and torch.randn in bf16 gives
    other numbers than in fp32: IPEX's bf16 modules would turn the same seed into
    another image, and verify's bf16-vs-fp32 comparison into noise.
    """
    torch = _torch()
    f = getattr(pipe, "vae_scale_factor", 8)
    shape = (1, pipe.unet.config.in_channels, w.height // f, w.width // f)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(pipe.text_encoder.dtype)


def to_pil(arr):
    """float [0, 1] HxWx3 -> 8-bit RGB image (NaN written as black; the array keeps it)."""
    import numpy as np
    from PIL import Image

    a = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    return Image.fromarray((np.clip(a, 0.0, 1.0) * 255).round().astype("uint8"))


def prepare(pipe, settings: BackendSettings, workload: Workload | None = None) -> PreparedPipeline:
    """Apply the backend's recipe to a loaded pipeline (in place) and say what was done.

    `workload` gives IPEX the UNet's real input shapes (resolution, guidance batch).
    """
    if settings.backend not in BACKENDS:
        raise BadInput(f"unknown backend {settings.backend!r}: choose one of {', '.join(BACKENDS)}")
    if settings.precision not in PRECISIONS:
        raise BadInput(f"unknown precision {settings.precision!r}: choose one of {', '.join(PRECISIONS)}")
    workload = workload or Workload()
    t0 = time.perf_counter()
    notes: list[str] = []
    for n in ("unet", "vae", "text_encoder"):
        getattr(pipe, n).eval()
    if settings.precision == "bf16" and settings.isa_flags and not settings.native_bf16:
        notes.append("bf16 without AMX-BF16/AVX512-BF16: emulated, expect it slower than fp32")
    if settings.backend == "ipex":
        _prepare_ipex(pipe, settings, workload, notes)
    else:
        _prepare_native(pipe, settings, notes)
    return PreparedPipeline(pipe, settings, notes, time.perf_counter() - t0)


def stack_versions() -> dict[str, str | None]:
    """Versions of the ML stack in this process (for reports beside the figures)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("torch", "intel-extension-for-pytorch", "diffusers", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
