"""Prepare a loaded pipeline for a run record: the IPEX recipe or upstream PyTorch's.

Backends:
  openvino OpenVINO GenAI's Text2ImagePipeline on an export built ahead of time
          (pipeline.ov_backend; its own venv: the `openvino` extra).
  ipex    the published demo's recipe: channels_last on unet, vae and text
          encoder; ipex.optimize(m.eval(), dtype, inplace=True), the UNet with
          a sample input of the real shapes; inference under bf16 autocast.
  native  upstream PyTorch: channels_last, bf16 autocast; compiled: the UNet,
          the VAE decoder and the text encoder as AOTInductor packages
          (pipeline.artifacts), built once per model, shape, torch and CPU.

Loading, preparing and generating are separate so bench, verify and tune load
once, prepare once (IPEX and torch.compile are expensive) and generate many times:

    pipe = load_diffusers_pipeline(model_dir, scheduler)
    prepared = prepare(pipe, plan.run_spec, workload)
    result = prepared.generate(workload, seed=1)
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from typing import Any, Callable

from sdagent.errors import BadInput
from sdagent.host.software import ipex_status
from sdagent.pipeline.artifacts import ArtifactKey, ArtifactStore, build_error, check_store, model_fingerprint
from sdagent.pipeline.generate import PreparedPipeline
from sdagent.pipeline.quantize import QuantizeUnavailable
from sdagent.pipeline.stack import import_torch
from sdagent.pipeline.workload import Workload
from sdagent.planning.runspec import RunSpec

IPEX_INSTALL_HINT = ("install it in a separate venv: pip install 'sdagent[ipex]' "
                     "(pins torch 2.8, IPEX 2.8, transformers<5, diffusers 0.39)")


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
    """(latents, timestep, encoder_hidden_states) of the shapes the loop will feed the UNet (the text
    embeddings as wide as its cross-attention: SDXL's are both encoders' concatenated)."""
    torch = import_torch()
    dtype = dtype or torch.float32
    f = getattr(pipe, "vae_scale_factor", 8)
    latents = torch.randn(workload.batch, pipe.unet.config.in_channels,
                          workload.height // f, workload.width // f, dtype=dtype)
    timestep = torch.rand(1) * 999
    tokens = getattr(pipe.tokenizer, "model_max_length", 77)
    hidden = torch.randn(workload.batch, tokens, pipe.unet.config.cross_attention_dim, dtype=dtype)
    return latents, timestep, hidden


def unet_extra_examples(pipe, workload: Workload) -> tuple:
    """The family's further UNet inputs (pipeline.family.unet_extra_shapes), as example tensors."""
    from sdagent.pipeline.family import unet_extra_shapes

    torch = import_torch()
    return tuple(torch.randn(*shape) for shape in unet_extra_shapes(pipe.unet.config, workload.batch).values())


def ipex_sample_input(pipe, workload: Workload, dtype=None) -> tuple:
    """The UNet's sample input for ipex.optimize, positional as IPEX calls it (`module(*sample_input)`, IPEX
    2.8 nn/utils/_weight_prepack.py): (latents, timestep, text embeddings) and, where the family has them,
    its further inputs at their places in UNet2DConditionModel.forward: LCM's timestep_cond (5th) and
    SDXL's added_cond_kwargs dict (8th). Without them an SDXL or LCM UNet's forward raises there."""
    import inspect

    torch = import_torch()
    base = unet_sample_input(pipe, workload, dtype)
    extra = dict(zip(_extra_names(pipe, workload), unet_extra_examples(pipe, workload)))
    if not extra:
        return base
    dtype = dtype or torch.float32
    extra = {k: v.to(dtype) for k, v in extra.items()}
    names = list(inspect.signature(pipe.unet.forward).parameters)
    kw: dict[str, Any] = {}
    if "timestep_cond" in extra:
        kw["timestep_cond"] = extra["timestep_cond"]
    added = {k: extra[k] for k in ("text_embeds", "time_ids") if k in extra}
    if added:
        kw["added_cond_kwargs"] = added
    last = max(names.index(k) for k in kw)
    return (*base, *[kw.get(n) for n in names[len(base):last + 1]])


def _extra_names(pipe, workload: Workload) -> tuple[str, ...]:
    from sdagent.pipeline.family import unet_extra_shapes

    return tuple(unet_extra_shapes(pipe.unet.config, workload.batch))


def _text_encoders(pipe) -> tuple[str, ...]:
    """The pipeline's text encoders by attribute: SDXL has a second (OpenCLIP bigG), the others one."""
    return ("text_encoder", "text_encoder_2") if getattr(pipe, "text_encoder_2", None) is not None \
        else ("text_encoder",)


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
    encoders = _text_encoders(pipe)
    parts = ("unet", "vae", *encoders)
    rest = "vae and " + ("both text encoders" if len(encoders) > 1 else "text encoder")
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
        for n in parts:
            getattr(pipe, n).to(torch.bfloat16)
        kw["weights_prepack"] = False
        sample_dtype = torch.bfloat16
        notes.append("bf16 weight prepack off (this CPU lacks AVX512-BW/VL/DQ and AVX-NE-CONVERT); "
                     f"unet, {rest} cast to bf16 so oneDNN LayerNorm accepts them")
    sample = ipex_sample_input(pipe, workload, sample_dtype)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.unet = ipex.optimize(pipe.unet.eval(), dtype=dtype, inplace=True, sample_input=sample, **kw)
        for n in ("vae", *encoders):
            setattr(pipe, n, ipex.optimize(getattr(pipe, n).eval(), dtype=dtype, inplace=True, **kw))
    shape = "x".join(str(d) for d in sample[0].shape)
    extra = _extra_names(pipe, workload)
    notes.append(f"ipex.optimize(dtype={'bfloat16' if bf16 else 'float32'}, inplace=True) on unet "
                 f"(sample input latents {shape}{' + ' + ', '.join(extra) if extra else ''}), {rest}"
                 + ("" if kw else "; weights prepacked"))
    if bf16:
        notes.append("inference under torch.autocast('cpu', dtype=torch.bfloat16), inside each part")


def _prepare_native(pipe, s: RunSpec, notes: list[str]) -> None:
    torch = import_torch()
    notes.append(f"upstream PyTorch {torch.__version__}")
    if s.channels_last:
        _channels_last(pipe, ("unet", "vae"))
        notes.append("channels_last on unet and vae")
    if s.precision == "bf16":
        notes.append("bf16 autocast inside the UNet, the VAE decoder and the text encoder (weights stay fp32)")


@functools.lru_cache(maxsize=None)
def host_isa() -> tuple[str, ...]:
    """The CPU this process runs on (not an injected topology's), as the compiled kernels depend on it:
    inductor builds with -march=native, so vendor, family, model and every flag (artifacts.cpu_identity)."""
    from sdagent.pipeline.artifacts import host_cpu

    return host_cpu()


def artifact_keys(model_dir: str | os.PathLike[str], spec: RunSpec, workload: Workload,
                  fingerprint: str | None = None) -> dict[str, ArtifactKey]:
    """The package keys of a run: one per part, for this model, shape, precision, torch and CPU."""
    torch = import_torch()
    fp = fingerprint or model_fingerprint(model_dir)
    opts = {"freezing": True, "max_autotune": spec.compile_autotune}

    def key(part: str, batch: int, quantize: str = "none") -> ArtifactKey:
        return ArtifactKey(fp, part, workload.height, workload.width, batch, spec.precision, spec.channels_last,
                           opts, torch.__version__, host_isa(), quantize=quantize)

    from sdagent.pipeline.quantize import INT8_KEY

    keys = {"unet": key("unet", workload.batch, INT8_KEY if spec.int8_unet else "none"),
            "vae_decoder": key("vae_decoder", 1), "text_encoder": key("text_encoder", 1)}
    if spec.vae == "tiny":  # the decoder package is the tiny autoencoder's: keyed on its weights too
        from dataclasses import replace as _replace

        from sdagent.pipeline.vae import tiny_fingerprint

        keys["vae_decoder"] = _replace(keys["vae_decoder"], model=f"{fp}+tae{tiny_fingerprint(model_dir)}")
    return keys


def _examples(pipe, workload: Workload, channels_last: bool) -> dict[str, tuple]:
    torch = import_torch()
    lat, t, hid = unet_sample_input(pipe, workload)
    t = torch.tensor(999.0)
    f = getattr(pipe, "vae_scale_factor", 8)
    z = torch.randn(1, pipe.vae.config.latent_channels, workload.height // f, workload.width // f)
    if channels_last:
        lat, z = lat.contiguous(memory_format=torch.channels_last), z.contiguous(memory_format=torch.channels_last)
    ids = torch.zeros(1, getattr(pipe.tokenizer, "model_max_length", 77), dtype=torch.long)
    return {"unet": (lat, t, hid, *unet_extra_examples(pipe, workload)), "vae_decoder": (z,),
            "text_encoder": (ids,)}


def _load_or_build(store: ArtifactStore, keys: dict[str, ArtifactKey], modules: dict[str, Callable[[], Any]],
                   examples: dict[str, tuple], build: bool, notes: list[str]) -> dict[str, Any]:
    """Each part's package: loaded when built for exactly this run, else built now (once), never a stale one.
    `modules[part]()` makes the module a build exports (the int8 UNet is calibrated then, only if built)."""
    torch = import_torch()
    loaded: dict[str, Any] = {}
    for part, key in keys.items():
        found = store.lookup(key)
        art = found.artifact
        if art is None:
            if found.stale:
                notes.append(f"{part}: stale package(s) not loaded ({'; '.join(found.stale)}): rebuilt")
            if not build:
                raise CompileUnavailable(f"no package of the {key.label()} in {store.root} "
                                         f"(`sdagent model compile` builds it)")
            art = store.build(key, modules[part], examples[part])
            store.remove_stale(key)
            notes.append(f"{part}: built the package once ({art.built_s:.0f} s) into {art.path.parent}")
        t0 = time.perf_counter()
        loaded[part] = (torch._inductor.aoti_load_package(str(art.path)), art)
        notes.append(f"{part}: package {art.id} loaded in {time.perf_counter() - t0:.1f} s")
    return loaded


def _same(module: Any) -> Any:
    return module


class CompileUnavailable(Exception):
    """The planned compiled path cannot be had here (no package and no build, no compiler, an export
    that fails): the part runs eager, and the reason is recorded."""


def _install(pipe, spec: RunSpec, workload: Workload, notes: list[str], store_dir: str | None,
             build: bool) -> tuple[dict[str, str], str | None]:
    """Replace the UNet, the VAE's decode and the text encoder by runners (pipeline.components)."""
    from sdagent.pipeline.components import (DecodeCall, DecoderRunner, TextCall, TextEncoderRunner, UNetCall,
                                             UNetRunner)

    extra_names = _extra_names(pipe, workload)
    calls = {"unet": UNetCall(pipe.unet, spec.precision, extra_names),
             "vae_decoder": DecodeCall(pipe.vae, spec.precision),
             "text_encoder": TextCall(pipe.text_encoder, spec.precision)}
    examples = _examples(pipe, workload, spec.channels_last)
    shapes = {p: tuple(tuple(x.shape) for x in ex if x.dim() > 0) for p, ex in examples.items()}
    fast: dict[str, Any] = {}
    ids: dict[str, str] = {}
    error = None
    mode = "ipex" if spec.backend == "ipex" else "eager"
    if spec.compile and spec.backend == "native":
        modules: dict[str, Callable[[], Any]] = {p: functools.partial(_same, c) for p, c in calls.items()}
        if spec.int8_unet:
            from sdagent.pipeline.quantize import int8_unet

            modules["unet"] = functools.partial(int8_unet, pipe, UNetCall(pipe.unet, "fp32", extra_names),
                                                examples["unet"], workload, extra_names, spec.channels_last,
                                                spec.precision)
        try:
            store = ArtifactStore(check_store(store_dir) if store_dir else None)
            loaded = _load_or_build(store, artifact_keys(pipe.name_or_path, spec, workload), modules, examples,
                                    build, notes)
            fast = {p: fn for p, (fn, _) in loaded.items()}
            ids = {p: art.id for p, (_, art) in loaded.items()}
            mode = "aot"
            notes.append("the UNet, the VAE decoder and the text encoder run as AOTInductor packages "
                         "(inductor, freezing, prepacked oneDNN weights)")
        except (BadInput, CompileUnavailable, QuantizeUnavailable) as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - no compiler, an unsupported op: eager, with the reason
            error = build_error(exc)
        if error:
            notes.append(f"compile fell back to eager: {error}")
    unet_shapes = shapes["unet"]  # (latents, text embeddings, *extra); the 0-d timestep is left out
    u = UNetRunner(pipe.unet, fast.get("unet", calls["unet"]), pipe.unet, mode if "unet" in fast or mode == "ipex"
                   else "eager", spec.precision, unet_shapes if "unet" in fast else None, ids.get("unet"))
    u.channels_last = spec.channels_last and "unet" in fast
    u.extra_names = extra_names
    t = TextEncoderRunner(pipe.text_encoder, fast.get("text_encoder", calls["text_encoder"]), pipe.text_encoder,
                          u.mode, spec.precision, shapes["text_encoder"] if "text_encoder" in fast else None,
                          ids.get("text_encoder"))
    d = DecoderRunner(pipe.vae, fast.get("vae_decoder", calls["vae_decoder"]), calls["vae_decoder"], u.mode,
                      spec.precision, shapes["vae_decoder"] if "vae_decoder" in fast else None, ids.get("vae_decoder"))
    d.channels_last = spec.channels_last and "vae_decoder" in fast
    pipe.unet, pipe.text_encoder = u, t
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL's bigG: eager in the run's precision (the
        # pipeline asks it for its hidden states, which no package returns)
        pipe.text_encoder_2 = TextEncoderRunner(pipe.text_encoder_2, None, pipe.text_encoder_2,
                                                "ipex" if mode == "ipex" else "eager", spec.precision, None, None)
    pipe.vae.decode = d.__call__  # the VAE stays (diffusers reads its config); its decode is the runner
    return ids, error


def prepare(pipe, spec: RunSpec, workload: Workload | None = None, store_dir: str | None = None,
            build: bool = True) -> PreparedPipeline:
    """Apply the run record's recipe to a loaded pipeline (in place) and say what was done.

    `workload` gives IPEX and the compiled packages the real input shapes (resolution, guided
    batch); `store_dir` holds the packages (default: pipeline.artifacts.default_store()); with
    `build` False a missing package is not built here: the part runs eager, and says why.
    """
    workload = workload or Workload()
    if spec.backend == "openvino":
        raise BadInput("backend openvino loads its export, not a diffusers pipeline: use ready(model_dir, ...)")
    t0 = time.perf_counter()
    notes: list[str] = []
    if spec.vae == "tiny":  # before channels_last, IPEX and the packages: they apply to the VAE in use
        from sdagent.pipeline.vae import use_tiny_vae

        notes.append(use_tiny_vae(pipe, pipe.name_or_path))
    for n in ("unet", "vae", "text_encoder"):
        getattr(pipe, n).eval()
    if spec.precision == "bf16" and spec.isa_flags and not spec.native_bf16:
        notes.append("bf16 without AMX-BF16/AVX512-BF16: emulated, expect it slower than fp32")
    if spec.backend == "ipex":
        _prepare_ipex(pipe, spec, workload, notes)
    else:
        _prepare_native(pipe, spec, notes)
    ids, error = _install(pipe, spec, workload, notes, store_dir, build)
    return PreparedPipeline(pipe, spec, notes, time.perf_counter() - t0, ids, error)


def ready(model_dir: str | os.PathLike[str], spec: RunSpec, workload: Workload,
          store_dir: str | None = None, build: bool = True) -> PreparedPipeline:
    """Load the pipeline from `model_dir` and prepare it for `spec`: what every caller that runs it does.

    Backend openvino: its export (found, or built once) in OpenVINO GenAI (pipeline.ov_backend.OvPrepared,
    the same generate()/describe())."""
    if spec.backend == "openvino":
        if spec.vae == "tiny":
            raise BadInput("vae tiny: backend openvino decodes with its export's own VAE (vae tiny is for the "
                           "native and ipex backends)")
        from sdagent.pipeline.ov_backend import ready_openvino

        return ready_openvino(model_dir, spec, workload, store_dir, build)
    from sdagent.pipeline.loader import load_diffusers_pipeline

    return prepare(load_diffusers_pipeline(model_dir, workload.scheduler), spec, workload, store_dir, build)


def build_artifacts(model_dir: str | os.PathLike[str], spec: RunSpec, workload: Workload,
                    store_dir: str | None = None) -> PreparedPipeline:
    """Build (or find) every package a run of `spec` on `workload` needs, and load them once to prove it
    (`sdagent model compile`: the role runs it at provision time, so the first verify starts warm).
    Backend openvino: its export (IR + compiled blobs) instead."""
    from dataclasses import replace as _replace

    if spec.backend == "openvino":
        return ready(model_dir, spec, workload, store_dir, build=True)  # type: ignore[return-value]

    prepared = ready(model_dir, _replace(spec, compile=True), workload, store_dir, build=True)
    if prepared.compile_error:
        raise CompileUnavailable(prepared.compile_error)
    return prepared
