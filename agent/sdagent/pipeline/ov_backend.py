"""backend: openvino — OpenVINO GenAI's Text2ImagePipeline on an export built ahead of time.

The API: `openvino_genai.Text2ImagePipeline` (GenAI's C++ pipeline: tokenizer, text
encoder, denoising loop, VAE decoder, none of it in Python) on optimum-intel's IR,
reshaped to the workload's static shape and compiled for the CPU with the plan's
precision hint. That is the fast path OpenVINO's own docs run SD-1.5 with, and
what the ladder's OpenVINO peer measures (sdagent.peers); here it runs in the
agent's own process, from the plan, and is verified like any other backend.

The export (IR + compiled blobs) is an artifact (pipeline.ov_artifacts): found by
its key, built once when missing (`sdagent model compile` does it ahead), never
loaded stale.

What a caller gets (`ready()`): an :class:`OvPrepared` with the same generate() /
describe() as pipeline.generate.PreparedPipeline, so run, bench, verify, tune's
workers and the ladder need no branch; `sdagent.load_pipeline` returns its
:class:`OvPipeline`, a diffusers-style callable (`pipe(prompt, ...).images[0]`)
whose `.genai` is the Text2ImagePipeline itself.

Needs the `openvino` extra, in a venv of its own (optimum-intel pins transformers<5.6):
scripts/lib.sh `venv_openvino`, or pip install 'sdagent[openvino]'.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from sdagent.errors import BadInput, Exit, SdagentError, one_line
from sdagent.pipeline.artifacts import host_cpu
from sdagent.pipeline.generate import Generation, StepCallback, to_pil
from sdagent.pipeline.observe import Observed
from sdagent.pipeline.ov_artifacts import OvArtifact, OvKey, OvStore, ov_model_fingerprint, store_root, \
    toolchain_versions
from sdagent.pipeline.workload import Workload
from sdagent.planning.runspec import RunSpec

OV_INSTALL_HINT = ("install it in a venv of its own: pip install 'sdagent[openvino]' (optimum-intel pins "
                   "transformers<5.6), or scripts/lib.sh venv_openvino")
DEVICE = "CPU"
#: sdagent's precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
PRECISION_HINTS: dict[str, str] = {"bf16": "bf16", "fp32": "f32"}
#: OpenVINO's element type names -> the torch dtype names the verify checks read (Observed.out_dtype).
OBSERVED_DTYPES: dict[str, str] = {"bf16": "bfloat16", "f32": "float32", "f16": "float16"}
#: diffusers' default for num_inference_steps, kept by OvPipeline.__call__ so a server's call means the same.
DIFFUSERS_DEFAULT_STEPS = 50


@dataclass(frozen=True)
class OpenvinoStatus:
    usable: bool
    version: str | None
    genai: str | None
    reason: str


def openvino_status() -> OpenvinoStatus:
    """Whether backend openvino can run in this process: OpenVINO, GenAI and optimum-intel installed
    (from their metadata; nothing imported)."""
    def ver(n: str) -> str | None:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            return None

    ov, genai, oi = ver("openvino"), ver("openvino-genai"), ver("optimum-intel")
    if ov is None or genai is None or importlib.util.find_spec("openvino_genai") is None:
        return OpenvinoStatus(False, ov, genai, "openvino-genai is not installed in this Python")
    if oi is None:
        return OpenvinoStatus(False, ov, genai, "optimum-intel (the exporter) is not installed in this Python")
    return OpenvinoStatus(True, ov, genai, f"OpenVINO {ov}, GenAI {genai}, optimum-intel {oi}")


def openvino_unusable_message(st: OpenvinoStatus) -> str:
    return f"backend openvino is not usable here ({sys.executable}): {st.reason}; {OV_INSTALL_HINT}"


def require_openvino() -> Any:
    """openvino_genai, or BadInput saying why not and how to get it."""
    st = openvino_status()
    if not st.usable:
        raise BadInput(openvino_unusable_message(st))
    try:
        import openvino_genai
    except Exception as exc:  # noqa: BLE001 - a broken binary install raises more than ImportError
        raise BadInput(f"backend openvino: importing openvino_genai failed ({one_line(exc)}); {OV_INSTALL_HINT}") \
            from None
    return openvino_genai


# ---------------------------------------------------------------------------
# Keys and config (pure but for reading the model and the CPU)
# ---------------------------------------------------------------------------


def ov_key(model_dir: str | os.PathLike[str], spec: RunSpec, workload: Workload) -> OvKey:
    """The export a run of `spec` on `workload` calls for, on this CPU with this toolchain."""
    return OvKey(ov_model_fingerprint(model_dir), workload.height, workload.width, workload.batch, spec.precision,
                 toolchain_versions(), host_cpu(), weights=_weights_key(spec.ov_weights))


def _weights_key(weights: str) -> str:
    """The key's weights: int8-hybrid with its recipe's version (ov_export.HYBRID_RECIPE), as its cache key."""
    from sdagent.pipeline.ov_export import HYBRID_RECIPE

    return f"{weights}/{HYBRID_RECIPE}" if weights == "int8-hybrid" else weights


def compile_config(spec: RunSpec, cache_dir: str | os.PathLike[str] | None) -> dict[str, str]:
    """The CPU plugin's properties, from the plan: the precision hint always (OpenVINO defaults to bf16
    wherever the CPU has bf16 instructions), PERFORMANCE_HINT, ENABLE_CPU_PINNING, INFERENCE_NUM_THREADS and
    NUM_STREAMS where set, and the export's blob cache. Values as strings: what the CPU plugin parses."""
    cfg = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[spec.precision],
           "PERFORMANCE_HINT": spec.ov_performance_hint.upper(),
           "ENABLE_CPU_PINNING": "YES" if spec.ov_cpu_pinning else "NO"}
    if spec.ov_num_threads != "unset":
        cfg["INFERENCE_NUM_THREADS"] = str(spec.ov_num_threads)
    if spec.ov_num_streams != "unset":
        cfg["NUM_STREAMS"] = str(spec.ov_num_streams)
    if cache_dir is not None:
        cfg["CACHE_DIR"] = str(cache_dir)
    return cfg


def _guidance_for(batch: int) -> float:
    """GenAI's reshape takes a guidance scale only to choose the UNet batch (2 above 1.0)."""
    return 7.5 if batch == 2 else 1.0


# ---------------------------------------------------------------------------
# Building the export
# ---------------------------------------------------------------------------


def build_export(model_dir: Path, tmp: Path, key: OvKey) -> tuple[str | None, dict[str, Any]]:
    """optimum-cli's IR into tmp/ir (a subprocess of this Python: pipeline.ov_export), then one compile
    for the key's shape and hint into tmp/blobs; returns the hint the CPU plugin resolved for the UNet."""
    from sdagent.pipeline.ov_export import export_model, probe_precision

    ov_genai = require_openvino()
    from sdagent.pipeline.modeldir import check_model_dir

    exported = export_model(model_dir, tmp / "ir", python=sys.executable, weights=key.weights.split("/")[0],
                            family=check_model_dir(model_dir).family.name)
    spec = RunSpec("openvino", key.precision, False, False, True)
    cfg = compile_config(spec, tmp / "blobs")
    pipe = ov_genai.Text2ImagePipeline(str(tmp / "ir"))
    pipe.reshape(1, key.height, key.width, _guidance_for(key.batch))
    t0 = time.perf_counter()
    pipe.compile(DEVICE, **cfg)
    compile_s = time.perf_counter() - t0
    del pipe
    w = Workload(height=key.height, width=key.width, guidance=_guidance_for(key.batch))
    probe = probe_precision(tmp / "ir", {k: v for k, v in cfg.items() if k != "CACHE_DIR"}, w)
    return probe["inference_precision_hint"], {
        "export": exported.to_dict(), "compile_s": round(compile_s, 3), "config": cfg,
        "probe": {k: probe[k] for k in ("inference_precision_hint", "execution_devices", "compute_primitives")}}


def find_or_build(model_dir: Path, key: OvKey, store_dir: str | None, build: bool,
                  notes: list[str], builder: Callable[..., Any] = build_export) -> OvArtifact:
    """The export for `key`: found, or built now (once); a stale one is reported, never loaded, and removed."""
    store = OvStore(store_root(store_dir))
    found = store.lookup(key)
    if found.artifact is not None:
        return found.artifact
    if found.stale:
        notes.append(f"openvino: stale export(s) not loaded ({'; '.join(found.stale)}): rebuilt")
    if not build:
        stale = f"; stale, not loaded: {'; '.join(found.stale)}" if found.stale else ""
        raise SdagentError(f"no {key.label()} of {model_dir} in {store.root} "
                           f"(`sdagent model compile` builds it){stale}", Exit.ERROR)
    art = store.build(key, model_dir, builder)
    store.remove_stale(key)
    notes.append(f"openvino: built the export once ({art.built_s:.0f} s) into {art.path}")
    return art


# ---------------------------------------------------------------------------
# The pipeline a caller gets
# ---------------------------------------------------------------------------


def _generator(ov_genai: Any, seed: int) -> Any:
    """torch's noise for the seed (GenAI's TorchGenerator: the same initial latents as the torch backends,
    so images compare across backends), or GenAI's own generator where torch is absent."""
    if importlib.util.find_spec("torch") is not None:
        return ov_genai.TorchGenerator(seed)
    return ov_genai.CppStdGenerator(seed)


class OvPipeline:
    """A diffusers-style pipeline over GenAI's Text2ImagePipeline (`.genai`), compiled for one static shape.

        image = pipe("sailing ship in storm by Rembrandt", num_inference_steps=20).images[0]

    Accepts prompt, negative_prompt, num_inference_steps (default 50, as diffusers), guidance_scale
    (default: the guidance it was loaded for, the family's unless given: 0 for Turbo), height, width,
    generator (a seed, or a torch.Generator whose initial seed is used) and output_type
    ("pil" or "np": float32 HxWx3 in [0, 1]). A height, width or guidance of another UNet batch than
    the compiled one is refused (BadInput): the shapes are static.
    """

    def __init__(self, genai: Any, ov_genai: Any, ir: Path, key: OvKey, resolved_precision: str | None,
                 scheduler: str, cfg: bool = True, guidance: float = 7.5) -> None:
        self.genai, self._ov, self.ir, self.key = genai, ov_genai, ir, key
        self.cfg = cfg  # the family's: whether a guidance scale above 1 doubles the UNet batch (LCM's does not)
        self.default_guidance = guidance  # what it was loaded (and its UNet batch compiled) for
        self.resolved_precision = resolved_precision
        self.scheduler_name = scheduler
        self.exported_scheduler = scheduler  # the export's own (scheduler/scheduler_config.json)
        self.calls = 0
        self.sdagent: dict[str, Any] = {}

    def check_shape(self, height: int, width: int, guidance: float) -> None:
        batch = 2 if guidance > 1.0 and self.cfg else 1
        if (height, width, batch) != (self.key.height, self.key.width, self.key.batch):
            raise BadInput(f"this OpenVINO pipeline is compiled for {self.key.width}x{self.key.height} with UNet "
                           f"batch {self.key.batch} (static shapes); asked {width}x{height}, guidance {guidance} "
                           f"(batch {batch}): load it for that size")

    def run(self, prompt: str, negative_prompt: str | None, steps: int, guidance: float, height: int, width: int,
            seed: int, on_step: Callable[[int, int], None] | None = None) -> Any:
        """One image as GenAI's uint8 tensor (1, H, W, 3)."""
        self.check_shape(height, width, guidance)
        kw: dict[str, Any] = dict(num_inference_steps=steps, height=height, width=width, guidance_scale=guidance,
                                  num_images_per_prompt=1, generator=_generator(self._ov, seed))
        if negative_prompt:  # GenAI refuses None
            kw["negative_prompt"] = negative_prompt
        if on_step is not None:
            kw["callback"] = lambda step, n, _latent: bool(on_step(step, n))
        out = self.genai.generate(prompt, **kw)
        self.calls += 1
        return out

    def __call__(self, prompt: str, negative_prompt: str | None = None,
                 num_inference_steps: int = DIFFUSERS_DEFAULT_STEPS, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, generator: Any = None,
                 output_type: str = "pil", **unused: Any) -> SimpleNamespace:
        if unused:
            raise BadInput(f"the OpenVINO pipeline does not take {', '.join(sorted(unused))}")
        if output_type not in ("pil", "np"):
            raise BadInput(f"invalid output_type {output_type!r}: pil or np")
        seed = generator if isinstance(generator, int) else (
            generator.initial_seed() if generator is not None else int.from_bytes(os.urandom(4), "little"))
        guidance = self.default_guidance if guidance_scale is None else guidance_scale
        t = self.run(prompt, negative_prompt, num_inference_steps, guidance, height or self.key.height,
                     width or self.key.width, seed)
        arr = t.data[0].astype("float32") / 255.0
        return SimpleNamespace(images=[to_pil(arr) if output_type == "pil" else arr])

    def observed(self, artifact: str) -> Observed:
        """What the UNet ran with, as verify's checks read it: backend openvino, the hint the CPU plugin
        resolved for this export (recorded when it was built for this CPU), the export's key digest."""
        dtype = OBSERVED_DTYPES.get(self.resolved_precision or "", self.resolved_precision)
        return Observed(dtype, dtype, 0, "intel_extension_for_pytorch" in sys.modules, "openvino", artifact)

    def observe_unet(self) -> tuple[Callable[[], Observed | None], Callable[[], None]]:
        """pipeline.observe.observe_unet's contract: an Observed once the pipeline ran after this call."""
        start = self.calls
        return (lambda: self.observed(self.key.digest) if self.calls > start else None), (lambda: None)


@dataclass
class OvPrepared:
    """A loaded, compiled OpenVINO pipeline; generate() and describe() as PreparedPipeline's."""

    pipe: OvPipeline
    spec: RunSpec
    notes: list[str] = field(default_factory=list)
    prepare_s: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)
    compile_error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def generate(self, workload: Workload, seed: int | None = None,
                 step_callback: StepCallback | None = None) -> Generation:
        """One image; the step times are GenAI's own per-iteration durations (UNet + scheduler step, as
        the peer records them); `step_callback` gets each step as it ends (a progress bar)."""
        w = workload if seed is None else workload.with_seed(seed)
        set_scheduler(self.pipe, w.scheduler)
        t0 = time.perf_counter()
        mark, shown = [t0], [0]

        def on_step(i: int, n: int) -> bool:
            # GenAI's callback counts its own iterations (i of n, 0-based), which can be more than the steps
            # asked (PNDM: steps + 1); the callback here gets the steps asked, spread over them, so a bar sized
            # by steps (measuring.bench.unet_calls: this pipeline has no diffusers scheduler) ends at its end.
            now = time.perf_counter()
            due = min(w.steps, (i + 1) * w.steps // max(n, 1))
            while step_callback and shown[0] < due:
                step_callback(shown[0], w.steps, now - mark[0])
                shown[0] += 1
            mark[0] = now
            return False  # False: go on

        t = self.pipe.run(w.prompt, w.negative_prompt, w.steps, w.guidance, w.height, w.width, w.seed,
                          on_step if step_callback else None)
        total = time.perf_counter() - t0
        m = self.pipe.genai.get_performance_metrics()
        steps = [us / 1e6 for us in m.raw_metrics.iteration_durations]
        if len(steps) < w.steps:
            raise SdagentError(f"OpenVINO ran {len(steps)} denoising steps for a request of {w.steps}", Exit.ERROR)
        text_ms = m.get_text_encoder_infer_duration()
        arr = t.data[0].astype("float32") / 255.0
        return Generation(to_pil(arr), arr, w, total, tuple(steps),
                          sum(text_ms.values()) / 1e3 if text_ms else None,
                          m.get_vae_decoder_infer_duration() / 1e3)

    @property
    def compiled(self) -> bool:
        """The export is always compiled (by OpenVINO's CPU plugin): there is no eager fallback."""
        return bool(self.artifacts)

    def ran(self) -> str:
        """What really runs, for every header (PreparedPipeline.ran's contract)."""
        return f"{self.spec.describe()}, export {self.artifacts.get('openvino', '?')}"

    def describe(self) -> dict[str, Any]:
        return {"run": self.spec.to_dict(), "ran": self.ran(), "compiled": self.compiled,
                "notes": list(self.notes), "artifacts": dict(self.artifacts),
                "compile_error": self.compile_error, "prepare_s": round(self.prepare_s, 3),
                "scheduler": self.pipe.scheduler_name, "openvino": dict(self.details)}


def set_scheduler(pipe: OvPipeline, name: str) -> None:
    """GenAI's scheduler for a workload's name ("default": the exported one); BadInput where GenAI has none."""
    from sdagent.pipeline.ov_export import genai_scheduler

    kind = genai_scheduler(name)
    exported = pipe.exported_scheduler
    if (kind or exported) == pipe.scheduler_name:
        return
    config = str(pipe.ir / "scheduler" / "scheduler_config.json")
    Scheduler = pipe._ov.Scheduler
    sched = Scheduler.from_config(config, getattr(Scheduler.Type, kind)) if kind else Scheduler.from_config(config)
    pipe.genai.set_scheduler(sched)
    pipe.scheduler_name = kind or exported


def ready_openvino(model_dir: str | os.PathLike[str], spec: RunSpec, workload: Workload,
                   store_dir: str | None = None, build: bool = True,
                   builder: Callable[..., Any] = build_export) -> OvPrepared:
    """Find (or build) the export for this run, load it, reshape to the workload, compile for the CPU."""
    from sdagent.pipeline.ov_export import check_model_dir as check_exportable
    from sdagent.pipeline.ov_export import genai_scheduler, ov_class_for, scheduler_name
    from sdagent.pipeline.modeldir import check_model_dir

    md = check_model_dir(model_dir)
    ov_class_for(md.family.name)  # a family the backend cannot run: one line, before any export
    ov_genai = require_openvino()
    check_exportable(md.path)
    genai_scheduler(workload.scheduler)  # dpm/unipc: refused before minutes of export
    notes: list[str] = []
    if os.environ.get("KMP_AFFINITY"):
        notes.append(f"KMP_AFFINITY={os.environ['KMP_AFFINITY']} is set in this process: an OpenVINO process "
                     "must not inherit it (it then runs on one core); plans with backend openvino never set it")
    if spec.compile:
        notes.append("compile ignored: the openvino backend runs the export compiled by OpenVINO's CPU plugin")
    t0 = time.perf_counter()
    key = ov_key(md.path, spec, workload)
    art = find_or_build(md.path, key, store_dir, build, notes, builder)
    t1 = time.perf_counter()
    try:
        genai = ov_genai.Text2ImagePipeline(str(art.ir))
    except Exception as exc:  # noqa: BLE001 - a corrupt IR: one line, no traceback
        raise BadInput(f"the OpenVINO export {art.path} cannot be loaded ({one_line(exc)}): remove it and run "
                       f"`sdagent model compile`") from None
    load_s = time.perf_counter() - t1
    exported = scheduler_name(art.ir, None)
    pipe = OvPipeline(genai, ov_genai, art.ir, key, art.resolved_precision, exported, cfg=md.family.cfg,
                      guidance=workload.guidance)
    set_scheduler(pipe, workload.scheduler)
    _generator(ov_genai, 0)  # TorchGenerator imports torch (seconds): here, not in the first image
    cfg = compile_config(spec, art.blobs)
    t2 = time.perf_counter()
    genai.reshape(1, key.height, key.width, _guidance_for(key.batch))
    genai.compile(DEVICE, **cfg)
    compile_s = time.perf_counter() - t2
    notes += [f"OpenVINO GenAI Text2ImagePipeline on {DEVICE}: export {art.id} ({art.path})",
              f"static shapes {key.width}x{key.height}, UNet batch {key.batch}; INFERENCE_PRECISION_HINT "
              f"{cfg['INFERENCE_PRECISION_HINT']} (the CPU plugin resolved {art.resolved_precision}), "
              + ", ".join(f"{k} {v}" for k, v in cfg.items() if k not in ("INFERENCE_PRECISION_HINT", "CACHE_DIR")),
              f"loaded in {load_s:.2f} s, compiled in {compile_s:.2f} s (blobs cached in {art.blobs})"]
    startup = {"find_or_build": round(t1 - t0, 3), "ir_load": round(load_s, 3), "cpu_compile": round(compile_s, 3)}
    details = {"export": str(art.path), "key": key.to_dict(), "config": cfg, "startup_s": startup,
               "resolved_precision": art.resolved_precision}
    return OvPrepared(pipe, spec, notes, time.perf_counter() - t0, {"openvino": art.id}, None, details)
