"""The knobs a plan fixes: their names, types, legal values, and how a raw value is checked.

One table (:data:`KNOBS`) is the source of every setting's name, type and
choices: `sdagent plan --list-settings`, `--set`, override files, plan files,
the Ansible roles (through the agent) and the run record all read it.

Why strict character sets: settings end up in rendered files (an
EnvironmentFile, a systemd drop-in, a shell snippet, comments in them). A
newline or a quote in a value would let whoever controls an override write
their own lines into a unit that root loads; so each string setting accepts
only the characters its program reads, and library paths must be absolute,
owned by root (or the user running the agent) and writable by nobody else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sdagent.atomicio import read_yaml
from sdagent.errors import BadInput
from sdagent.host.software import unsafe_library

#: Compute precisions, and backends, the pipeline knows.
PRECISIONS: tuple[str, ...] = ("bf16", "fp32")
BACKENDS: tuple[str, ...] = ("ipex", "native", "openvino")
#: The VAE that decodes the latents: the model's own (full) or its tiny autoencoder (MODEL/vae_tiny/,
#: diffusers' AutoencoderTiny: TAESD/TAESDXL; pipeline/vae.py). Tiny changes pixels: a lossy choice.
VAES: tuple[str, ...] = ("full", "tiny")
#: OpenVINO's PERFORMANCE_HINT values, lower-case as settings are (sent upper-case).
OV_PERFORMANCE_HINTS: tuple[str, ...] = ("latency", "throughput")
#: The OpenVINO export's weights: the model's own ("full"), int8 weight compression (data-free, NNCF) or
#: NNCF's hybrid quantization (the UNet's weights and activations int8, calibrated; the rest int8 weights).
#: Both int8 forms are lossy: pipeline.ov_export builds them, tune ships one only through the fidelity gate.
OV_WEIGHTS: tuple[str, ...] = ("full", "int8", "int8-hybrid")
#: The native backend's UNet: as the model has it ("none"), or quantized to int8 by PyTorch's PT2E flow
#: (torchao's X86InductorQuantizer: int8 weights per channel, int8 activations, static, calibrated on fixed
#: prompts) inside its AOTInductor package (pipeline/quantize.py); under precision bf16 the rest of the UNet
#: runs in bf16 (PyTorch's "int8-mixed-bf16"). Lossy: tune ships it only through the gate.
QUANTIZE: tuple[str, ...] = ("none", "int8")

#: MALLOC_CONF profiles. "demo" is the published HF demo's string; "short" is
#: PyTorch's launcher's; "long" is IPEX's tuning guide's (can OOM on long runs).
MALLOC_CONF_PROFILES: dict[str, str] = {
    "demo": "oversize_threshold:1,background_thread:true,metadata_thp:auto,"
            "dirty_decay_ms:60000,muzzy_decay_ms:60000",
    "short": "oversize_threshold:1,background_thread:true,metadata_thp:auto",
    "long": "oversize_threshold:1,background_thread:true,metadata_thp:auto,"
            "dirty_decay_ms:9000000000,muzzy_decay_ms:9000000000",
}
KMP_AFFINITY_COMPACT = "granularity=fine,compact,1,0"
UNSET = "unset"
#: Each OpenVINO setting's value on the other backends (what its rule gives there): the only value the planner
#: honours there (planning.rules.openvino_only_honour), and what a non-openvino RunSpec records.
OPENVINO_OFF: dict[str, Any] = {"ov_num_threads": UNSET, "ov_num_streams": UNSET, "ov_performance_hint": "latency",
                                "ov_cpu_pinning": False, "ov_weights": "full"}

#: Characters each free-form string setting may hold (what jemalloc's and Intel
#: OpenMP's own option parsers read); anything else is refused, never escaped.
_MALLOC_CONF_RE = re.compile(r"[A-Za-z0-9_.:,\-]+")
_KMP_AFFINITY_RE = re.compile(r"[A-Za-z0-9_.,=\-]+")
#: The same character sets, published (`sdagent plan --list-settings --json`) as the regex a whole value
#: must match: the Ansible role checks overrides against these before they reach the agent, and
#: tests/test_ansible_setting_patterns.py pins the role's copies to them.
SETTING_PATTERNS: dict[str, str] = {"malloc_conf": _MALLOC_CONF_RE.pattern, "kmp_affinity": _KMP_AFFINITY_RE.pattern}

LIBRARY_KNOBS: dict[str, str] = {"jemalloc": "jemalloc_path", "tcmalloc": "tcmalloc_path", "iomp": "iomp_path"}


@dataclass(frozen=True)
class Knob:
    name: str
    kind: str  # choice | int | bool | int_or_unset | malloc_conf | kmp_affinity | path
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None


KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("allocator", "choice", "memory allocator preloaded", ("jemalloc", "tcmalloc", "default")),
    Knob("malloc_conf", "malloc_conf", "jemalloc MALLOC_CONF: a profile (demo, short, long), a literal "
         "option string ([A-Za-z0-9_.:,-]), or 'unset'"),
    Knob("omp_runtime", "choice", "OpenMP runtime: intel (libiomp5 preloaded) or torch's own", ("intel", "default")),
    Knob("omp_num_threads", "int", "OpenMP threads per instance", minimum=1),
    Knob("kmp_affinity", "kmp_affinity", "KMP_AFFINITY (Intel OpenMP only; [A-Za-z0-9_.,=-]), or 'unset'"),
    Knob("kmp_blocktime", "int_or_unset", "KMP_BLOCKTIME in ms (Intel OpenMP only), or 'unset'", minimum=0),
    Knob("binding", "choice", "how the instance is pinned to its cores", ("numactl", "taskset", "none")),
    Knob("membind", "bool", "bind memory to the instance's NUMA node (numactl -m)"),
    Knob("precision", "choice", "compute precision", PRECISIONS),
    Knob("backend", "choice", "inference backend", BACKENDS),
    Knob("vae", "choice", "the VAE decoding the latents: full (the model's own) or tiny (its AutoencoderTiny in "
         "MODEL/vae_tiny/, TAESD: a lossy speedup, which `sdagent tune` keeps only past the fidelity gate)", VAES),
    Knob("channels_last", "bool", "channels_last memory format for the UNet and VAE"),
    Knob("compile", "bool", "run the UNet, VAE decoder and text encoder as compiled AOTInductor packages (native)"),
    Knob("quantize", "choice", "the native backend's UNet: none, or int8 (PT2E: torchao's X86InductorQuantizer, "
         "int8 weights and activations calibrated on fixed prompts, in its AOTInductor package; needs compile; "
         "under precision bf16 the rest of the UNet runs in bf16: int8-mixed-bf16); int8 is lossy", QUANTIZE),
    Knob("compile_autotune", "bool", "build the packages with inductor's max-autotune (longer builds; tune measures)"),
    Knob("weights_prepack", "bool", "IPEX bf16 weight prepacking"),
    Knob("ov_num_threads", "int_or_unset", "OpenVINO INFERENCE_NUM_THREADS (backend openvino), or 'unset' "
         "(OpenVINO's choice)", minimum=1),
    Knob("ov_num_streams", "int_or_unset", "OpenVINO NUM_STREAMS (backend openvino; parallel inference "
         "requests in one process), or 'unset' (the performance hint's choice)", minimum=1),
    Knob("ov_performance_hint", "choice", "OpenVINO PERFORMANCE_HINT (backend openvino)",
         OV_PERFORMANCE_HINTS),
    Knob("ov_cpu_pinning", "bool", "OpenVINO ENABLE_CPU_PINNING: pin its threads to the process's CPUs "
         "(backend openvino)"),
    Knob("ov_weights", "choice", "the OpenVINO export's weights (backend openvino): full (the model's own), int8 "
         "(NNCF weight compression, data-free) or int8-hybrid (the UNet's weights and activations int8, "
         "calibrated on fixed prompts); int8 forms are lossy", OV_WEIGHTS),
    Knob("jemalloc_path", "path", "path of libjemalloc to preload (absolute, root-owned, not writable by others)"),
    Knob("tcmalloc_path", "path", "path of libtcmalloc to preload (absolute, root-owned, not writable by others)"),
    Knob("iomp_path", "path", "path of libiomp5 to preload (absolute, root-owned, not writable by others)"),
)}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_setting(key: str, raw: Any) -> Any:
    """Validate one setting; strings from `--set KEY=VALUE` are converted to the knob's type."""
    knob = KNOBS.get(key)
    if knob is None:
        raise BadInput(f"unknown plan setting {key!r} (valid: {', '.join(sorted(KNOBS))})")
    bad = f"invalid value {raw!r} for plan setting {key!r}"
    if knob.kind == "choice":
        val = str(raw).strip().lower()
        if val not in knob.choices:
            raise BadInput(f"{bad}: choose one of {', '.join(knob.choices)}")
        return val
    if knob.kind == "bool":
        if isinstance(raw, bool):
            return raw
        val = str(raw).strip().lower()
        if val in _TRUE:
            return True
        if val in _FALSE:
            return False
        raise BadInput(f"{bad}: expected true or false")
    if knob.kind in ("int", "int_or_unset"):
        if knob.kind == "int_or_unset" and (raw is None or str(raw).strip().lower() == UNSET):
            return UNSET
        if isinstance(raw, bool) or isinstance(raw, float) and not raw.is_integer():
            raise BadInput(f"{bad}: expected an integer")
        try:
            val = int(str(raw).strip()) if not isinstance(raw, float) else int(raw)
        except ValueError:
            raise BadInput(f"{bad}: expected an integer") from None
        if knob.minimum is not None and val < knob.minimum:
            raise BadInput(f"{bad}: must be >= {knob.minimum}")
        return val
    if knob.kind in ("malloc_conf", "kmp_affinity"):
        val = "" if raw is None else str(raw)
        if val.strip().lower() in ("", UNSET):
            return UNSET
        if knob.kind == "malloc_conf" and val in MALLOC_CONF_PROFILES:
            return val
        pattern = _MALLOC_CONF_RE if knob.kind == "malloc_conf" else _KMP_AFFINITY_RE
        if not pattern.fullmatch(val):
            raise BadInput(f"{bad}: only the characters {pattern.pattern} are allowed")
        return val
    # path
    p = "" if raw is None else str(raw)
    why = unsafe_library(p)
    if why:
        raise BadInput(f"{bad}: {why}")
    return p


def parse_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: parse_setting(k, v) for k, v in raw.items()}


def parse_assignments(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (from `--set`) into validated settings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"invalid --set {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_setting(key.strip(), val)
    return out


def load_overrides_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML or JSON mapping of settings."""
    p = Path(path)
    data = read_yaml(p, "overrides file")  # a key given twice is refused, not silently the last
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"overrides file {p} must hold a mapping of settings, not {type(data).__name__}")
    try:
        return parse_settings(data)
    except BadInput as exc:
        raise BadInput(f"overrides file {p}: {exc}") from None


def settings_table() -> list[dict[str, Any]]:
    """Every knob as a record, for `sdagent plan --list-settings --json`.

    Shape: [{name, kind, choices, minimum, help, pattern}]; `pattern` is the regex a whole free-form
    value must match (SETTING_PATTERNS), None for typed knobs (choices, ints, bools, paths).
    """
    return [{"name": k.name, "kind": k.kind, "choices": list(k.choices), "minimum": k.minimum, "help": k.help,
             "pattern": SETTING_PATTERNS.get(k.name)} for k in KNOBS.values()]


def list_settings() -> list[str]:
    """One line per knob, for `sdagent plan --list-settings`."""
    out = []
    for k in KNOBS.values():
        choices = f" ({'|'.join(k.choices)})" if k.choices else ""
        out.append(f"{k.name:16} {k.kind}{choices}: {k.help}")
    return out
