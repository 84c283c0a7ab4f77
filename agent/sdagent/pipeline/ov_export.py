"""Offline export of a diffusers directory to OpenVINO IR, cached per model and toolchain, written atomically.

Why cached: exporting SD-1.5 traces three PyTorch models and takes minutes; the
IR only changes when the model's files or the exporter's versions do, so those
make the cache key. Why atomic: a killed export leaves half an IR that OpenVINO
would load and fail on (or, worse, run); the export is written into a temp
sibling, checked, stamped with a marker, and only then renamed into place, so
a directory without a matching marker is never reused.

The export runs `optimum-cli export openvino --task text-to-image` in the OpenVINO
venv (its python is SDAGENT_OPENVINO_PYTHON, else <cache>/venv-openvino/bin/python),
so this module can be called from any venv: it needs neither torch nor OpenVINO.

Also here, shared by the OpenVINO peer (sdagent.peers) and backend openvino (pipeline.ov_backend),
both torch-free: GenAI's scheduler names, the precision hints, and what the CPU plugin makes of an
export (probe_precision). (Moved from sdagent.peers, which re-exports them: pipeline sits below peers.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sdagent import atomicio
from sdagent.envvars import stock_env
from sdagent.errors import BadInput, Exit, SdagentError
from sdagent.host.probecache import cache_base
from sdagent.pipeline.workload import Workload

PYTHON_ENV = "SDAGENT_OPENVINO_PYTHON"
MARKER = "sdagent-ov-export.json"
EXPORT_FORMAT = "sdagent-ov-export/1"
TASK = "text-to-image"

#: Packages whose versions change the IR (the exporter, its converters and the traced code): part of the key.
KEY_PACKAGES: tuple[str, ...] = ("openvino", "openvino-tokenizers", "optimum", "optimum-intel", "nncf",
                                 "transformers", "diffusers", "torch")
#: Without these the venv cannot export at all.
REQUIRED_PACKAGES: tuple[str, ...] = ("openvino", "openvino-tokenizers", "optimum-intel")

#: What Text2ImagePipeline needs from an export (the VAE encoder is written too, but text-to-image skips it).
REQUIRED_FILES: tuple[str, ...] = (
    "model_index.json", "scheduler/scheduler_config.json",
    "text_encoder/openvino_model.xml", "text_encoder/openvino_model.bin",
    "unet/openvino_model.xml", "unet/openvino_model.bin",
    "vae_decoder/openvino_model.xml", "vae_decoder/openvino_model.bin",
    "tokenizer/openvino_tokenizer.xml", "tokenizer/openvino_tokenizer.bin",
)
#: optimum-intel's pipeline class per family: what `optimum-cli export openvino --task text-to-image` exports
#: a directory of that family as (it reads model_index.json's class; optimum.intel's OVStableDiffusionPipeline,
#: OVStableDiffusionXLPipeline, OVLatentConsistencyModelPipeline), and what OpenVINO GenAI's Text2ImagePipeline
#: runs (SD 1.5, SD 2.x, SDXL, LCM: its supported-models list; Turbo is the SD 2.1 / SDXL architecture).
#: lcm-sdxl is absent: an LCM-distilled SDXL UNet takes a guidance embedding (timestep_cond) that sdagent has
#: not checked GenAI's SDXL pipeline feeds, so backend openvino refuses it rather than run it wrongly.
OV_CLASSES: dict[str, str] = {
    "sd1": "OVStableDiffusionPipeline", "sd2": "OVStableDiffusionPipeline", "sd2-v": "OVStableDiffusionPipeline",
    "sd-turbo": "OVStableDiffusionPipeline",
    "sdxl": "OVStableDiffusionXLPipeline", "sdxl-turbo": "OVStableDiffusionXLPipeline",
    "lcm": "OVLatentConsistencyModelPipeline",
}
#: What an SDXL export has beside REQUIRED_FILES: the second text encoder and its tokenizer.
SDXL_REQUIRED_FILES: tuple[str, ...] = (
    "text_encoder_2/openvino_model.xml", "text_encoder_2/openvino_model.bin",
    "tokenizer_2/openvino_tokenizer.xml", "tokenizer_2/openvino_tokenizer.bin",
)


def ov_class_for(family: str) -> str:
    """optimum-intel's pipeline class for a family (pipeline.family name), or BadInput in one line naming the
    family and the ones backend openvino runs."""
    if family not in OV_CLASSES:
        raise BadInput(f"backend openvino cannot run the {family} family: its export and OpenVINO GenAI's "
                       f"Text2ImagePipeline run {', '.join(OV_CLASSES)}")
    return OV_CLASSES[family]


def required_files(family: str | None = None) -> tuple[str, ...]:
    """The files an export of this family must hold (None: SD 1.x/2.x's, REQUIRED_FILES)."""
    return REQUIRED_FILES + (SDXL_REQUIRED_FILES if family is not None and "XL" in ov_class_for(family) else ())


#: The export's weights (planning.settings.OV_WEIGHTS) -> what the exporter is told. "full": optimum-cli's
#: defaults, as the peer exports (no compression below optimum-intel's 1e9-parameter threshold: SD-1.5's
#: largest model, the UNet, has 0.86e9); "int8": `--weight-format int8`, NNCF's data-free int8 weight
#: compression of every model; "int8-hybrid": pipeline/ov_hybrid.py (the UNet's weights and activations
#: int8, calibrated on its fixed prompts; the rest int8 weights).
WEIGHT_ARGS: dict[str, tuple[str, ...]] = {"full": (), "int8": ("--weight-format", "int8")}
HYBRID_SCRIPT = Path(__file__).with_name("ov_hybrid.py")
#: Runs a script with nothing of its directory (sdagent/pipeline, whose module names are generic: loader,
#: stack, components) nor the working directory on sys.path, on every Python the agent supports (-P is 3.11+).
_RUN_SCRIPT = "import runpy, sys; del sys.path[0]; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
#: Bump when ov_hybrid.py's recipe (prompts, samples, config) changes: part of an int8-hybrid export's key.
HYBRID_RECIPE = 1

#: openvino-tokenizers converts the CLIP tokenizer from these (transformers 5 alone writes only tokenizer.json).
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer/vocab.json", "tokenizer/merges.txt")


# ---------------------------------------------------------------------------
# Where things are
# ---------------------------------------------------------------------------


def default_export_root(environ: Mapping[str, str] | None = None) -> Path:
    return cache_base(environ) / "openvino"


def openvino_python(environ: Mapping[str, str] | None = None) -> str | None:
    """The OpenVINO venv's python: $SDAGENT_OPENVINO_PYTHON (must exist), else the default venv's if present."""
    env = os.environ if environ is None else environ
    given = env.get(PYTHON_ENV)
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise BadInput(f"invalid {PYTHON_ENV} {given!r}: not an executable file")
        return given
    default = cache_base(env) / "venv-openvino" / "bin" / "python"
    return str(default) if os.access(default, os.X_OK) else None


def require_openvino_python(environ: Mapping[str, str] | None = None) -> str:
    py = openvino_python(environ)
    if py is None:
        raise BadInput(f"no OpenVINO venv: set {PYTHON_ENV} to its python, or create "
                       f"{cache_base(environ) / 'venv-openvino'} with scripts/lib.sh's venv_openvino")
    return py


# ---------------------------------------------------------------------------
# The cache key (pure once the stamps and versions are read)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileStamp:
    """One file of the model as the key sees it: a changed size or mtime means a changed model."""

    path: str  # relative to the model directory, '/'-separated
    size: int
    mtime_ns: int


def check_model_dir(model_dir: str | os.PathLike[str]) -> Path:
    """The model directory, absolute; BadInput when it is not a diffusers directory the exporter can read."""
    md = Path(model_dir).absolute()
    if not md.is_dir():
        raise BadInput(f"model directory does not exist: {md}")
    if not (md / "model_index.json").is_file():
        raise BadInput(f"not a diffusers model directory (no model_index.json): {md}")
    missing = [f for f in TOKENIZER_FILES if not (md / f).is_file()]
    if missing:
        raise BadInput(f"model {md} lacks {', '.join(missing)}: openvino-tokenizers converts the CLIP "
                       "tokenizer from them (sdagent model create writes them)")
    return md


def model_stamps(model_dir: Path) -> tuple[FileStamp, ...]:
    """Every file under the model directory, sorted by path (hidden temp files of a writer included)."""
    out = []
    for p in sorted(model_dir.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append(FileStamp(p.relative_to(model_dir).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


def check_weights(weights: str) -> str:
    """`weights` when it is one the exporter knows (WEIGHT_ARGS or int8-hybrid), else BadInput naming them."""
    known = (*WEIGHT_ARGS, "int8-hybrid")
    if weights not in known:
        raise BadInput(f"invalid OpenVINO export weights {weights!r}: choose one of {', '.join(known)}")
    return weights


def export_key(stamps: tuple[FileStamp, ...], versions: Mapping[str, str | None], task: str = TASK,
               weights: str = "full") -> str:
    """12 hex digits of a hash of the model's files (path, size, mtime), the toolchain's versions, the task
    and, for an int8 export, the weights (with the hybrid recipe's version); a full export's key is unchanged."""
    doc: dict[str, Any] = {"format": EXPORT_FORMAT, "task": task, "files": [asdict(s) for s in stamps],
                           "versions": {k: versions.get(k) for k in sorted(versions)}}
    if weights != "full":
        doc["weights"] = weights if weights != "int8-hybrid" else f"{weights}/{HYBRID_RECIPE}"
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def export_dirname(model_dir: Path, key: str) -> str:
    return f"{model_dir.name}-{key}"


def export_argv(python: str, model_dir: Path, out: Path, task: str = TASK, weights: str = "full") -> list[str]:
    """optimum-cli, run as a module of the OpenVINO venv's python (no reliance on its bin/ being on PATH), with
    the weights' arguments; for int8-hybrid, pipeline/ov_hybrid.py run as a script by that python (the output
    directory is the last argument either way)."""
    if check_weights(weights) == "int8-hybrid":
        return [python, "-c", _RUN_SCRIPT, str(HYBRID_SCRIPT), "--model", str(model_dir), "--out", str(out)]
    return [python, "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(model_dir),
            "--task", task, *WEIGHT_ARGS[weights], str(out)]


# ---------------------------------------------------------------------------
# Reading an export's state
# ---------------------------------------------------------------------------


def read_marker(export_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((export_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == EXPORT_FORMAT else None


def missing_files(export_dir: Path, family: str | None = None) -> list[str]:
    """Required files (required_files(family)) absent or empty (an interrupted writer leaves zero-length .bin
    files)."""
    out = []
    for f in required_files(family):
        p = export_dir / f
        if not p.is_file() or p.stat().st_size == 0:
            out.append(f)
    return out


def is_complete(export_dir: Path, key: str, family: str | None = None) -> bool:
    """Reusable: the marker names this key and every required file (of the family's export) is there."""
    marker = read_marker(export_dir)
    return marker is not None and marker.get("key") == key and not missing_files(export_dir, family)


# ---------------------------------------------------------------------------
# Doing it
# ---------------------------------------------------------------------------

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class ExportResult:
    """Where the IR is, and whether this call made it."""

    path: str
    key: str
    reused: bool
    export_s: float | None  # seconds this call spent exporting (None when reused)
    versions: dict[str, str | None] = field(default_factory=dict)
    weights: str = "full"  # WEIGHT_ARGS' names or int8-hybrid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_VERSIONS_SCRIPT = """
import importlib.metadata as m, json, sys
out = {}
for n in sys.argv[1:]:
    try:
        out[n] = m.version(n)
    except m.PackageNotFoundError:
        out[n] = None
print(json.dumps(out))
"""


def query_versions(python: str, run: Runner = subprocess.run) -> dict[str, str | None]:
    """The key packages' versions in the OpenVINO venv (a subprocess: this venv may be another)."""
    try:
        p = run([python, "-c", _VERSIONS_SCRIPT, *KEY_PACKAGES], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SdagentError(f"cannot query the OpenVINO venv's versions with {python}: {exc}", Exit.ERROR) from None
    try:
        versions = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SdagentError(f"cannot query the OpenVINO venv's versions with {python}: "
                           f"{_tail(p.stderr) or 'no output'}", Exit.ERROR) from None
    absent = [n for n in REQUIRED_PACKAGES if not versions.get(n)]
    if absent:
        raise BadInput(f"the OpenVINO venv of {python} lacks {', '.join(absent)}: "
                       "create it with scripts/lib.sh's venv_openvino")
    return versions


def _tail(text: str, lines: int = 3) -> str:
    keep = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and "Warning" not in ln]
    return " | ".join(keep[-lines:])[-600:]


def superseded_exports(root: Path, model_dir: Path, keep: str, weights: str = "full") -> list[Path]:
    """Earlier exports of the same model directory and weights in the cache (another key): a re-created
    model's old IR (3.3 GB for sd15) would otherwise stay forever. Another weights' export is kept."""
    out = []
    for p in root.glob(f"{model_dir.name}-*"):
        marker = read_marker(p)
        if p.is_dir() and p.name != keep and marker is not None and marker.get("model") == str(model_dir) \
                and marker.get("weights", "full") == weights:
            out.append(p)
    return out


#: The exporter's time limit, a guard against a hung exporter (not a budget: tune's ceiling stops its worker,
#: the role bounds `model compile`). Source: measured on the project's 2-core AVX2 VM, sd15 512x512:
#: `optimum-cli export openvino` ~105 s (full and data-free int8 weights: 1 h is 30x that); the int8-hybrid
#: export calibrates on 200 UNet calls and ran past 1 h there (killed at 3600 s, 2026-12-01), so 6 h.
EXPORT_TIMEOUT_S = {"full": 3600.0, "int8": 3600.0, "int8-hybrid": 6 * 3600.0}


def export_timeout_s(weights: str) -> float:
    """The exporter's time limit for these weights, s (:data:`EXPORT_TIMEOUT_S`)."""
    return EXPORT_TIMEOUT_S[weights]


def export_model(model_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 python: str | None = None, root: str | os.PathLike[str] | None = None,
                 environ: Mapping[str, str] | None = None, run: Runner = subprocess.run,
                 timeout_s: float | None = None, weights: str = "full", family: str | None = None) -> ExportResult:
    """The model's OpenVINO IR: reused when a complete export with this key exists, else exported now.

    `out` names the directory (a non-empty one that is not an sdagent export is refused);
    by default it is <cache>/openvino/<model-dir-name>-<key>, and earlier keys' exports of the
    same model are removed there once the new one is in place. `weights` (full, int8, int8-hybrid) is
    part of the key and of the default directory's name (<name>-<weights>-<key> for an int8 export).
    `family` (pipeline.family name, None: not checked): a family backend openvino cannot run is refused
    before anything runs (ov_class_for), and an SDXL export must hold its second text encoder too.
    `timeout_s`: the exporter's limit (None: :func:`export_timeout_s` of the weights).
    """
    env = dict(os.environ if environ is None else environ)
    check_weights(weights)
    timeout_s = export_timeout_s(weights) if timeout_s is None else timeout_s
    if family is not None:
        ov_class_for(family)
    md = check_model_dir(model_dir)
    py = python or require_openvino_python(env)
    versions = query_versions(py, run)
    stamps = model_stamps(md)
    key = export_key(stamps, versions, weights=weights)
    if out is None:
        base = Path(root) if root is not None else default_export_root(env)
        base.mkdir(parents=True, exist_ok=True)
        target = base / export_dirname(md, key if weights == "full" else f"{weights}-{key}")
    else:
        target = atomicio.check_parent(Path(out).absolute())
    if is_complete(target, key, family):
        return ExportResult(str(target), key, True, None, versions, weights)
    # one exporter per target (a second waits, then finds the first's export); a killed one's temp dirs go
    with atomicio.building(target.parent, target.name):
        if is_complete(target, key, family):  # another process finished it while we waited
            return ExportResult(str(target), key, True, None, versions, weights)
        if target.exists() and not target.is_dir():
            raise BadInput(f"export path exists and is not a directory: {target}")
        if target.is_dir() and any(target.iterdir()) and read_marker(target) is None and out is not None:
            raise BadInput(f"export directory is not empty and not an sdagent export: {target}")
        seconds = _export_into_place(py, md, target, key, stamps, versions, env, run, timeout_s, weights, family)
    if out is None:
        for old in superseded_exports(target.parent, md, target.name, weights):
            shutil.rmtree(old, ignore_errors=True)
    return ExportResult(str(target), key, False, round(seconds, 3), versions, weights)


def _export_into_place(py: str, md: Path, target: Path, key: str, stamps: tuple[FileStamp, ...],
                       versions: dict[str, str | None], env: dict[str, str], run: Runner,
                       timeout_s: float, weights: str = "full", family: str | None = None) -> float:
    from sdagent.workers.parent import child_options  # the parent's side only: the worker never exports

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        argv = export_argv(py, md, tmp, weights=weights)
        child_env = {**stock_env(env), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        t0 = time.perf_counter()
        try:
            p = run(argv, capture_output=True, text=True, env=child_env, timeout=timeout_s,
                    stdin=subprocess.DEVNULL, **child_options())  # dies with the agent
        except subprocess.TimeoutExpired:
            raise SdagentError(f"export of {md} timed out after {timeout_s:.0f} s", Exit.ERROR) from None
        seconds = time.perf_counter() - t0
        if p.returncode != 0:
            raise SdagentError(f"export of {md} failed (exit {p.returncode}): "
                               f"{_tail(p.stderr) or _tail(p.stdout) or 'no output'}", Exit.ERROR)
        missing = missing_files(tmp, family)
        if missing:
            raise SdagentError(f"export of {md} is incomplete: no {', '.join(missing)}", Exit.ERROR)
        if model_stamps(md) != stamps:
            raise SdagentError(f"model {md} changed during its export: run it again", Exit.ERROR)
        atomicio.write_json(tmp / MARKER, {
            "format": EXPORT_FORMAT, "key": key, "model": str(md), "task": TASK, "versions": versions,
            "weights": weights, "family": family, "ov_class": ov_class_for(family) if family else None,
            "argv": [str(a) for a in argv[1:-1]], "export_s": round(seconds, 3), "created": time.time(),
        })
        for f in [tmp, *tmp.rglob("*")]:  # mkdtemp is 0700; other users' workers read the cache too
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        atomicio.replace_dir(tmp, target)
        return seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# Schedulers, hints and the CPU plugin's view of an export (shared by the peer and the backend)
# ---------------------------------------------------------------------------

#: sdagent's precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
PRECISION_HINTS: dict[str, str] = {"bf16": "bf16", "fp32": "f32"}

#: sdagent's scheduler names -> openvino_genai.Scheduler.Type members. None: no GenAI scheduler of
#: that kind (2026.4 has PNDM, DDIM, Euler, Euler ancestral, LMS, LCM, flow-match Euler; no DPM-Solver
#: or UniPC), so such a job fails with a reason instead of timing another scheduler.
GENAI_SCHEDULERS: dict[str, str | None] = {
    "default": None,  # the scheduler the export wrote (scheduler/scheduler_config.json)
    "pndm": "PNDM",
    "ddim": "DDIM",
    "euler": "EULER_DISCRETE",
    "euler_a": "EULER_ANCESTRAL_DISCRETE",
    "lms": "LMS_DISCRETE",
    "dpm": None,
    "unipc": None,
}

#: The device the peer runs on: the comparison is CPU against CPU.
DEVICE = "CPU"


def genai_scheduler(name: str) -> str | None:
    """The GenAI scheduler type for a workload's scheduler; None keeps the exported one.

    BadInput for a scheduler GenAI cannot run, naming the ones it can.
    """
    if name not in GENAI_SCHEDULERS:
        raise BadInput(f"unknown scheduler {name!r}: choose one of {', '.join(GENAI_SCHEDULERS)}")
    kind = GENAI_SCHEDULERS[name]
    if kind is None and name != "default":
        ok = ", ".join(k for k, v in GENAI_SCHEDULERS.items() if v is not None or k == "default")
        raise BadInput(f"scheduler {name!r} is not available in OpenVINO GenAI's Text2ImagePipeline: "
                       f"choose one of {ok}")
    return kind


#: Layers whose primitive tells which ISA runs the FLOPs (brgconv_avx512_bf16, ..._amx_..., jit_..._f32).
COMPUTE_LAYERS: tuple[str, ...] = ("Convolution", "MatMul", "FullyConnected", "ScaledDotProductAttention",
                                   "Deconvolution")


def scheduler_name(ov_model: Path, kind: str | None) -> str:
    """What the pipeline denoises with: the exported scheduler's class, or the GenAI type set."""
    if kind is not None:
        return kind
    try:
        return str(json.loads((ov_model / "scheduler" / "scheduler_config.json").read_text())["_class_name"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def unet_shapes(model: Any, w: Workload, latent_factor: int = 8) -> dict[str, list[int]]:
    """Static input shapes of the exported UNet for one image of `w` (what GenAI's reshape sets)."""
    batch = 2 if w.guidance > 1.0 else 1
    shapes = {}
    for inp in model.inputs:
        name = inp.get_any_name()
        ps = inp.get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in ps]
        if name == "sample":
            dims = [batch, dims[1], w.height // latent_factor, w.width // latent_factor]
        elif name == "timestep":
            dims = [1]
        else:
            dims = [batch if i == 0 and d is None else d for i, d in enumerate(dims)]
        if any(d is None for d in dims):
            continue  # leave an unknown input dynamic
        shapes[name] = dims
    return shapes


def probe_precision(ov_model: Path, config: dict[str, str], w: Workload | None) -> dict[str, Any]:
    """Compile the UNet alone with the pipeline's config; report what the plugin resolved and what
    its compute layers really run in (runtime precision and oneDNN primitive, e.g. brgconv_avx512_bf16)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(ov_model / "unet" / "openvino_model.xml"))
    if w is not None:
        model.reshape(unet_shapes(model, w))
    t0 = time.perf_counter()
    cm = core.compile_model(model, DEVICE, config)
    compile_s = time.perf_counter() - t0
    precisions: Counter[str] = Counter()
    primitives: Counter[str] = Counter()
    for op in cm.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
        precisions[prec] += 1
        layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if layer in COMPUTE_LAYERS:
            prim = info["primitiveType"].astype(str) if "primitiveType" in info else "?"
            primitives[f"{layer} {prim} {prec}"] += 1
    return {"model": "unet", "static_shapes": w is not None, "config": dict(config),
            "inference_precision_hint": _type_name(cm.get_property("INFERENCE_PRECISION_HINT")),
            "execution_devices": list(cm.get_property("EXECUTION_DEVICES")),
            "inference_num_threads": int(cm.get_property("INFERENCE_NUM_THREADS")),
            "compile_s": round(compile_s, 3), "runtime_precisions": dict(precisions.most_common()),
            "compute_primitives": dict(primitives.most_common())}


def _type_name(v: Any) -> str:
    """An OpenVINO element type as its short name (bf16, f32), anything else as str()."""
    to_string = getattr(v, "to_string", None)
    return str(to_string()) if callable(to_string) else str(v)
