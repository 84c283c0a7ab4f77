"""The run record: what the pipeline computes with, decided once from the plan and the topology.

Every path that runs the model (run, bench, verify and its stock and reference
runs, tune's candidates, the ladder's rungs, a measurement worker in another
process) receives a :class:`RunSpec`; none re-derives a field. It crosses a
process border one way only: ``to_dict()`` as JSON, ``from_dict()`` back.

Why the ISA flags travel with it: "is bf16 native here?" is answered from the
topology the plan was made for, which a worker started under
``--topology-file`` must not re-detect differently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from sdagent.errors import BadInput
from sdagent.host.topology import native_bf16_flag
from sdagent.planning.settings import BACKENDS, OPENVINO_OFF, OV_WEIGHTS, PRECISIONS, QUANTIZE, VAES

#: The plan settings a RunSpec is made of (the rest of a plan is the process environment).
RUN_KEYS: tuple[str, ...] = ("backend", "precision", "channels_last", "compile", "compile_autotune",
                             "weights_prepack", "ov_num_threads", "ov_num_streams", "ov_performance_hint",
                             "ov_cpu_pinning", "ov_weights", "vae", "quantize")
#: Backend openvino's settings when a record has none (a plan file written before they existed): OpenVINO's
#: own defaults, but for the LATENCY hint the peer and the backend always state.
OV_DEFAULTS: dict[str, Any] = {"ov_num_threads": "unset", "ov_num_streams": "unset", "ov_performance_hint": "latency",
                               "ov_cpu_pinning": True, "ov_weights": "full"}


@dataclass(frozen=True)
class RunSpec:
    """How the pipeline runs: backend, precision, memory format, compilation, IPEX prepack."""

    backend: str
    precision: str
    channels_last: bool
    compile: bool
    weights_prepack: bool
    isa_flags: tuple[str, ...] = ()
    compile_autotune: bool = False
    ov_num_threads: int | str = "unset"  # INFERENCE_NUM_THREADS, or "unset"
    ov_num_streams: int | str = "unset"  # NUM_STREAMS, or "unset"
    ov_performance_hint: str = "latency"  # PERFORMANCE_HINT
    ov_cpu_pinning: bool = True  # ENABLE_CPU_PINNING
    ov_weights: str = "full"  # the export's weights: full | int8 | int8-hybrid (planning.settings.OV_WEIGHTS)
    vae: str = "full"  # full | tiny (the model's AutoencoderTiny, MODEL/vae_tiny: pipeline/vae.py)
    quantize: str = "none"  # the native UNet: none | int8 (PT2E, in its AOTInductor package: pipeline/quantize.py)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise BadInput(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise BadInput(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.ov_weights not in OV_WEIGHTS:
            raise BadInput(f"unknown ov_weights {self.ov_weights!r}: choose one of {', '.join(OV_WEIGHTS)}")
        if self.vae not in VAES:
            raise BadInput(f"unknown vae {self.vae!r}: choose one of {', '.join(VAES)}")
        if self.quantize not in QUANTIZE:
            raise BadInput(f"unknown quantize {self.quantize!r}: choose one of {', '.join(QUANTIZE)}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], isa_flags: tuple[str, ...] | list[str]) -> "RunSpec":
        """The run part of a plan's resolved settings, for the host whose ISA flags are given."""
        return cls(backend=str(settings["backend"]), precision=str(settings["precision"]),
                   channels_last=bool(settings["channels_last"]), compile=bool(settings["compile"]),
                   weights_prepack=bool(settings["weights_prepack"]), isa_flags=tuple(isa_flags),
                   compile_autotune=bool(settings.get("compile_autotune", False)),
                   vae=str(settings.get("vae", "full")), quantize=str(settings.get("quantize", "none")),
                   **_ov_fields(settings))

    @property
    def lossy(self) -> bool:
        """Whether this run changes pixels beyond precision (the tiny VAE, OpenVINO's int8 weights, the native
        int8 UNet): its images face the fidelity gate (tuning.gate.lossy says why for a candidate's settings)."""
        return self.vae == "tiny" or (self.backend == "openvino" and self.ov_weights != "full") or self.int8_unet

    @property
    def int8_unet(self) -> bool:
        """The native backend's compiled UNet quantized to int8 (PT2E): only a compiled native run builds it."""
        return self.backend == "native" and self.compile and self.quantize == "int8"

    @property
    def native_bf16(self) -> bool:
        return native_bf16_flag(self.isa_flags) is not None

    def on_host(self, isa_flags: tuple[str, ...] | list[str]) -> "RunSpec":
        """The same run, decided for another host's ISA (the named constants carry none)."""
        return replace(self, isa_flags=tuple(isa_flags))

    def settings(self) -> dict[str, Any]:
        """As plan settings (for a plan file that records this run): OpenVINO's own as the planner has them
        off backend openvino (planning.settings.OPENVINO_OFF), since no other backend reads them."""
        out = {k: getattr(self, k) for k in RUN_KEYS}
        return out if self.backend == "openvino" else {**out, **OPENVINO_OFF}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["isa_flags"] = list(self.isa_flags)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        try:
            return cls(backend=str(d["backend"]), precision=str(d["precision"]),
                       channels_last=bool(d["channels_last"]), compile=bool(d["compile"]),
                       weights_prepack=bool(d["weights_prepack"]),
                       isa_flags=tuple(str(f) for f in d.get("isa_flags") or ()),
                       compile_autotune=bool(d.get("compile_autotune", False)), vae=str(d.get("vae", "full")),
                       quantize=str(d.get("quantize", "none")), **_ov_fields(d))
        except (KeyError, TypeError) as exc:
            raise BadInput(f"not a run record ({type(exc).__name__}: {exc})") from None

    def describe(self) -> str:
        if self.backend == "openvino":
            weights = "" if self.ov_weights == "full" else f" {self.ov_weights} weights"
            return f"openvino {self.precision}{weights}, the export compiled by OpenVINO's CPU plugin"
        comp = ("compiled (max-autotune)" if self.compile_autotune else "compiled") if self.compile else "eager"
        tiny = ", tiny VAE" if self.vae == "tiny" else ""
        int8 = (", UNet int8 (PT2E" + (", int8-mixed-bf16)" if self.precision == "bf16" else ")")
                if self.int8_unet else "")
        return (f"{self.backend} {self.precision}, {'channels_last' if self.channels_last else 'contiguous'}, "
                f"{comp}{int8}{tiny}")


def _ov_fields(d: Mapping[str, Any]) -> dict[str, Any]:
    """Backend openvino's five settings from a plan's settings or a run record (OV_DEFAULTS where absent)."""
    def count(v: Any) -> int | str:
        return "unset" if v in (None, "unset") else int(v)

    g = {**OV_DEFAULTS, **{k: d[k] for k in OV_DEFAULTS if k in d}}
    return {"ov_num_threads": count(g["ov_num_threads"]), "ov_num_streams": count(g["ov_num_streams"]),
            "ov_performance_hint": str(g["ov_performance_hint"]), "ov_cpu_pinning": bool(g["ov_cpu_pinning"]),
            "ov_weights": str(g["ov_weights"])}


#: What a user gets with no tuning: upstream PyTorch, fp32, contiguous tensors, eager.
STOCK_RUN = RunSpec(backend="native", precision="fp32", channels_last=False, compile=False,
                    weights_prepack=True)

#: The yardstick of output quality: stock's own compute path, so a bf16 plan's
#: image difference measures the change of precision (and recipe), nothing else.
FP32_REFERENCE = STOCK_RUN

#: The process-environment half of "stock": no preload, torch's own OpenMP, no KMP_*. The
#: binding and thread count are not stock's to choose: they follow the layout, so that stock is
#: measured on the very CPUs the plan runs on. With STOCK_RUN's settings this is the plan a
#: stock-winning tune records, exactly as it was measured.
STOCK_ENV_SETTINGS: dict[str, Any] = {
    "allocator": "default",
    "omp_runtime": "default",
    "kmp_affinity": "unset",
    "kmp_blocktime": "unset",
}
STOCK_SETTINGS: dict[str, Any] = {**STOCK_ENV_SETTINGS, **STOCK_RUN.settings()}
