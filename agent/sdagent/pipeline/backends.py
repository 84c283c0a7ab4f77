"""Prepare a loaded pipeline for a run record: the IPEX recipe or upstream PyTorch's.

Backends:
  ipex    the published demo's recipe: channels_last on unet, vae and text
          encoder; ipex.optimize(m.eval(), dtype, inplace=True), the UNet with
          a sample input of the real shapes; inference under bf16 autocast.
  native  upstream PyTorch: channels_last, bf16 autocast, optionally
          torch.compile of the UNet (inductor, freezing, persistent cache).

Loading, preparing and generating are separate so bench, verify and tune load
once, prepare once (IPEX and torch.compile are expensive) and generate many times:

    pipe = load_pipeline(model_dir, scheduler)
    prepared = prepare(pipe, RunSpec.from_plan(plan), workload)
    result = prepared.generate(workload, seed=1)
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

from sdagent.errors import BadInput
from sdagent.host.software import ipex_status
from sdagent.pipeline.generate import PreparedPipeline
from sdagent.pipeline.stack import import_torch
from sdagent.pipeline.workload import Workload
from sdagent.planning.runspec import RunSpec

IPEX_INSTALL_HINT = ("install it in a separate venv: pip install 'sdagent[ipex]' "
                     "(pins torch 2.8, IPEX 2.8, transformers<5, diffusers 0.39)")


def default_compile_cache() -> Path:
    """A cold inductor compile of the SD-1.5 UNet takes minutes: keep its cache across runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sdagent" / "inductor"


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
    torch = import_torch()
    dtype = dtype or torch.float32
    f = getattr(pipe, "vae_scale_factor", 8)
    latents = torch.randn(workload.batch, pipe.unet.config.in_channels,
                          workload.height // f, workload.width // f, dtype=dtype)
    timestep = torch.rand(1) * 999
    tokens = getattr(pipe.tokenizer, "model_max_length", 77)
    hidden = torch.randn(workload.batch, tokens, pipe.text_encoder.config.hidden_size, dtype=dtype)
    return latents, timestep, hidden


def _channels_last(pipe, names: tuple[str, ...]) -> None:
    torch = import_torch()
    for n in names:
        getattr(pipe, n).to(memory_format=torch.channels_last)


def _prepare_ipex(pipe, s: RunSpec, workload: Workload, notes: list[str]) -> None:
    torch = import_torch()
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


def _prepare_native(pipe, s: RunSpec, cache_dir: str | None, notes: list[str]) -> None:
    torch = import_torch()
    notes.append(f"upstream PyTorch {torch.__version__}")
    if s.channels_last:
        _channels_last(pipe, ("unet", "vae"))
        notes.append("channels_last on unet and vae")
    if s.precision == "bf16":
        notes.append("bf16 autocast at inference (weights stay fp32)")
    if s.compile:
        cache = Path(cache_dir) if cache_dir else default_compile_cache()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create the compile cache directory {cache}: {exc.strerror}") from None
        configure_inductor(cache)
        pipe.unet = torch.compile(pipe.unet, backend="inductor")
        notes.append(f"torch.compile(unet, inductor) with freezing; kernel cache {cache}; the first call "
                     "compiles (minutes cold; freezing bypasses the FX-graph cache, so a warm cache "
                     "saves the kernel builds only)")


def prepare(pipe, spec: RunSpec, workload: Workload | None = None,
            compile_cache_dir: str | None = None) -> PreparedPipeline:
    """Apply the run record's recipe to a loaded pipeline (in place) and say what was done.

    `workload` gives IPEX the UNet's real input shapes (resolution, guidance batch);
    `compile_cache_dir` is where inductor keeps its kernels (default: default_compile_cache()).
    """
    workload = workload or Workload()
    t0 = time.perf_counter()
    notes: list[str] = []
    for n in ("unet", "vae", "text_encoder"):
        getattr(pipe, n).eval()
    if spec.precision == "bf16" and spec.isa_flags and not spec.native_bf16:
        notes.append("bf16 without AMX-BF16/AVX512-BF16: emulated, expect it slower than fp32")
    if spec.backend == "ipex":
        _prepare_ipex(pipe, spec, workload, notes)
    else:
        _prepare_native(pipe, spec, compile_cache_dir, notes)
    return PreparedPipeline(pipe, spec, notes, time.perf_counter() - t0)




def ready(model_dir: str | os.PathLike[str], spec: RunSpec, workload: Workload,
          compile_cache_dir: str | None = None) -> PreparedPipeline:
    """Load the pipeline from `model_dir` and prepare it for `spec`: what every caller that runs it does."""
    from sdagent.pipeline.loader import load_pipeline

    return prepare(load_pipeline(model_dir, workload.scheduler), spec, workload, compile_cache_dir)
