"""The candidates `sdagent tune` measures: stock, the topology plan, and variants along each axis.

Pure: what the host can try (HostChoices) and a `resolve(overrides, layout) ->
settings` function in, candidates out. Each candidate carries the overrides (and,
for throughput, the layout) that reproduce it through the planner, so the plan
written for a winner is exactly what was measured.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sdagent.planning.plan import LAYOUT_KEYS
from sdagent.planning.runspec import STOCK_SETTINGS
from sdagent.planning.settings import KMP_AFFINITY_COMPACT, OPENVINO_OFF
from sdagent.tuning.search import Axis, Candidate


#: (overrides, layout or None) -> the planner's resolved settings
Resolve = Callable[..., Mapping[str, Any]]


@dataclass(frozen=True)
class HostChoices:
    """What this host can try (from the plan's facts): pure data for the axes."""

    physical_cores: int
    bf16: bool  # AMX-BF16 / AVX512-BF16 present
    ipex: bool  # IPEX usable with this torch
    jemalloc: bool
    tcmalloc: bool
    iomp: bool
    pin: str | None  # "numactl" | "taskset" | None
    compile: bool = True  # torch.compile candidates allowed (native backend)
    openvino: bool = False  # backend openvino usable in this Python (OpenVINO GenAI + optimum-intel)
    #: the instance layouts to try (PlanRequest fields): throughput's splits; latency's one sub-NUMA node
    #: instead of the socket (SNC/NPS) and P+E-cores (hybrid), from planning.layout.latency_layouts
    layouts: tuple[Mapping[str, Any], ...] = ()
    vae_tiny: bool = False  # the model carries a tiny autoencoder that fits it (MODEL/vae_tiny; pipeline/vae.py)
    int8: bool = False  # the native UNet's PT2E int8 package can be built (torchao and a compiler: pipeline/quantize.py)


def _variant(best: Candidate, name: str, axis: str, change: Mapping[str, Any], resolve: Resolve,
             warmup: bool = False, layout: Mapping[str, Any] | None = None) -> Candidate:
    overrides = {**best.overrides, **change}
    lay = layout if layout is not None else best.layout
    return Candidate(name, overrides, resolve(overrides, lay), axis,
                     warmup=warmup or bool(overrides.get("compile")), layout=lay)


def layout_name(layout: Mapping[str, Any]) -> str:
    if layout.get("instances") is None and layout.get("cores_per_instance") is None:
        parts = (["one NUMA node (not the socket)"] if layout.get("sub_node") else []) + \
            (["P-cores + E-cores"] if layout.get("e_cores") else [])
        return "latency instance: " + (", ".join(parts) or "default")
    smt = " +SMT" if layout.get("use_smt") else ""
    return f"{layout.get('instances')} x {layout.get('cores_per_instance')} cores{smt}"


def precision_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """Every backend x precision this host can run (IPEX and OpenVINO without compile: they compile the
    graph themselves)."""
    out = []
    backends = ["native"] + (["ipex"] if host.ipex else []) + (["openvino"] if host.openvino else [])
    precs = ["fp32"] + (["bf16"] if host.bf16 else [])
    for be in backends:
        for pr in precs:
            chg: dict[str, Any] = {"backend": be, "precision": pr, **(_no_int8(best) if be != "native" else {})}
            if be in ("ipex", "openvino"):
                chg["compile"] = False
            if be != "openvino":
                chg.update(_no_openvino(best))
            if be == "openvino":  # no preload under openvino (planning.rules: OV_PRELOAD_WHY, OV_NO_OPENMP_WHY)
                chg.update({k: "default" for k in ("allocator", "omp_runtime")
                            if best.overrides.get(k, "default") != "default"})
            out.append(_variant(best, f"{be} {pr}", "precision/backend", chg, resolve))
    return out


def layout_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """Throughput: each instance split; the threads, binding and KMP_* of a layout are the planner's."""
    keep = {k: v for k, v in best.overrides.items() if k not in LAYOUT_KEYS}
    return [Candidate(layout_name(lay), keep, resolve(keep, lay), "layout",
                      warmup=bool(keep.get("compile")), layout=lay) for lay in host.layouts]


def preloads_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """The demo's first rung as one candidate: its preloads off when the best has some, or on (jemalloc +
    libiomp5, where the host has both) when the best has none, as the plan derived from the evidence
    does (planning/evidence.json measured them slower on every class measured; this host may differ)."""
    if _openvino(best):
        return []  # backend openvino takes no preload (planning.rules.OV_PRELOAD_WHY)
    if best.settings.get("allocator") == "default" and best.settings.get("omp_runtime") == "default":
        if not (host.jemalloc and host.iomp):
            return []
        return [_variant(best, "preloads (jemalloc + libiomp5)", "preloads",
                         {"allocator": "jemalloc", "omp_runtime": "intel"}, resolve)]
    return [_variant(best, "no preloads (glibc malloc, torch's own OpenMP)", "preloads",
                     {"allocator": "default", "omp_runtime": "default"}, resolve)]


def compile_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """compile on; or, when on, off and max-autotune (native backend only)."""
    if not host.compile or best.settings.get("backend") != "native":
        return []
    if not best.settings.get("compile"):
        return [_variant(best, "compile=on", "torch.compile", {"compile": True}, resolve, warmup=True)]
    return [_variant(best, "compile=off", "torch.compile", {"compile": False, "compile_autotune": False,
                                                            **_no_int8(best)}, resolve),
            _variant(best, "compile max-autotune", "torch.compile", {"compile_autotune": True}, resolve,
                     warmup=True)]


def channels_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """The other memory format (not for openvino: the IR's layout is OpenVINO's choice)."""
    if best.settings.get("backend") == "openvino":
        return []
    v = not best.settings.get("channels_last")
    return [_variant(best, f"channels_last={'on' if v else 'off'}", "memory format",
                     {"channels_last": v}, resolve)]


def allocator_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """glibc malloc, each jemalloc MALLOC_CONF profile, tcmalloc (those present); none for openvino."""
    if _openvino(best):
        return []
    out = [_variant(best, "allocator=default", "allocator", {"allocator": "default"}, resolve)]
    if host.jemalloc:
        for prof in ("short", "long", "demo"):
            out.append(_variant(best, f"jemalloc {prof}", "allocator",
                                {"allocator": "jemalloc", "malloc_conf": prof}, resolve))
    if host.tcmalloc:
        out.append(_variant(best, "tcmalloc", "allocator", {"allocator": "tcmalloc"}, resolve))
    return out


def omp_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """torch's own OpenMP, and libiomp5 when present (not for openvino: it threads with oneTBB)."""
    if _openvino(best):
        return []
    out = [_variant(best, "omp=torch's own", "OpenMP runtime", {"omp_runtime": "default"}, resolve)]
    if host.iomp:
        out.append(_variant(best, "omp=libiomp5", "OpenMP runtime", {"omp_runtime": "intel"}, resolve))
    return out


def blocktime_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """KMP_BLOCKTIME 0, 1, 200 ms and unset (Intel OpenMP only)."""
    if best.settings.get("omp_runtime") != "intel":
        return []
    return [_variant(best, f"KMP_BLOCKTIME={v}", "KMP_BLOCKTIME", {"kmp_blocktime": v}, resolve)
            for v in (0, 1, 200, "unset")]


def pinning_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """No pinning, and the host's pinning tool (KMP_AFFINITY unset: its own axis measures it)."""
    out = [_variant(best, "pinning=none", "pinning", {"binding": "none", "membind": False, "kmp_affinity": "unset"},
                    resolve)]
    if host.pin:
        # numactl: memory binding as the planner derives it for this layout (a given value is dropped)
        keep = Candidate(best.name, {k: v for k, v in best.overrides.items() if k != "membind"}, best.settings,
                         best.axis, layout=best.layout)
        change: dict[str, Any] = {"binding": host.pin, "kmp_affinity": "unset"}
        if host.pin != "numactl":
            change["membind"] = False
        out.append(_variant(keep, f"pinning={host.pin}", "pinning", change, resolve))
    return out


def kmp_affinity_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """Compact KMP_AFFINITY (PyTorch's launcher's) where Intel OpenMP runs pinned; the plan leaves it unset,
    since it confines every child process to one CPU (issue 19 item 8): kept only where measured faster."""
    if best.settings.get("omp_runtime") != "intel" or best.settings.get("binding") == "none":
        return []
    v = "unset" if best.settings.get("kmp_affinity") not in (None, "unset") else KMP_AFFINITY_COMPACT
    return [_variant(best, f"KMP_AFFINITY={v}", "KMP_AFFINITY", {"kmp_affinity": v}, resolve)]


def threads_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """All physical cores, one fewer (room for the OS), half."""
    n = host.physical_cores
    opts = sorted({n, max(1, n - 1), max(1, n // 2)}, reverse=True)
    return [_variant(best, f"threads={t}", "threads", {"omp_num_threads": t}, resolve) for t in opts]


def _openvino(best: Candidate) -> bool:
    return best.settings.get("backend") == "openvino"


def _no_openvino(best: Candidate) -> dict[str, Any]:
    """The change that leaves OpenVINO's own settings, for a variant on another backend: their values there
    (planning.settings.OPENVINO_OFF), the only ones the planner honours off backend openvino."""
    return {k: off for k, off in OPENVINO_OFF.items() if k in best.overrides and best.overrides[k] != off}


def _no_int8(best: Candidate) -> dict[str, Any]:
    """The change that leaves the int8 UNet, for a variant that leaves what it needs (compile, native)."""
    return {"quantize": "none"} if best.settings.get("quantize") == "int8" else {}


def int8_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """The native compiled UNet in int8 (PT2E: pipeline/quantize.py), the rest in the best's precision (bf16:
    int8-mixed-bf16, where bf16 won the precision axis); or, when the best has it, the model's own UNet. Lossy:
    the session puts it through the fidelity gate before measuring it."""
    if not host.int8 or best.settings.get("backend") != "native":
        return []
    if best.settings.get("quantize") == "int8":
        return [_variant(best, "UNet fp32 (not int8)", "UNet int8", {"quantize": "none"}, resolve)]
    mixed = ", int8-mixed-bf16" if best.settings.get("precision") == "bf16" else ""
    return [_variant(best, f"UNet int8 (PT2E{mixed})", "UNet int8", {"quantize": "int8", "compile": True},
                     resolve, warmup=True)]


def openvino_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """Backend openvino's own knobs: its thread pinning the other way (threads follow the threads axis)."""
    if not _openvino(best):
        return []
    v = not best.settings.get("ov_cpu_pinning")
    return [_variant(best, f"OpenVINO CPU pinning={'on' if v else 'off'}", "OpenVINO", {"ov_cpu_pinning": v},
                     resolve)]


def vae_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """The other VAE: the model's tiny autoencoder where it has one (not for openvino: its export decodes).
    A lossy variant: the session puts it through the fidelity gate before measuring it (tuning.gate)."""
    if not host.vae_tiny or _openvino(best):
        return []
    v = "full" if best.settings.get("vae") == "tiny" else "tiny"
    return [_variant(best, f"vae={v}", "VAE", {"vae": v}, resolve)]


def ov_weights_axis(host: HostChoices, resolve: Resolve, best: Candidate) -> list[Candidate]:
    """Backend openvino's int8 exports (lossy: each passes tuning.gate's fidelity gate before it is measured)."""
    if not _openvino(best):
        return []
    return [_variant(best, f"OpenVINO {w} weights", "OpenVINO weights", {"ov_weights": w}, resolve, warmup=True)
            for w in ("int8", "int8-hybrid") if w != best.settings.get("ov_weights", "full")]


#: The search directions, in the order expected to pay most first: precision and backend (bf16 on
#: AMX halves a step); the layout (throughput); the preloads as a whole (one cheap candidate); compile;
#: then the system knobs one at a time, which move both ways.
AXES: tuple[tuple[str, Callable[[HostChoices, Resolve, Candidate], list[Candidate]]], ...] = (
    ("precision/backend", precision_axis), ("layout", layout_axis), ("preloads", preloads_axis),
    ("torch.compile", compile_axis), ("memory format", channels_axis), ("allocator", allocator_axis),
    ("OpenMP runtime", omp_axis), ("KMP_BLOCKTIME", blocktime_axis), ("pinning", pinning_axis),
    ("KMP_AFFINITY", kmp_affinity_axis), ("threads", threads_axis), ("OpenVINO", openvino_axis),
    ("VAE", vae_axis), ("UNet int8", int8_axis),
    ("OpenVINO weights", ov_weights_axis),
)


#: Every axis's name (`sdagent tune --axis`).
AXIS_NAMES: tuple[str, ...] = tuple(name for name, _ in AXES)


def make_axes(host: HostChoices, resolve: Resolve) -> list[Axis]:
    """The axes of :data:`AXES`, bound to this host and resolver."""
    return [Axis(name, functools.partial(fn, host, resolve)) for name, fn in AXES]


def stock_candidate(resolve: Resolve) -> Candidate:
    return Candidate("stock", dict(STOCK_SETTINGS), resolve(STOCK_SETTINGS, None), "stock", stock=True)


def plan_candidate(resolve: Resolve) -> Candidate:
    """The topology plan, as derived (no overrides)."""
    settings = resolve({}, None)
    return Candidate("topology plan", {}, settings, "plan", warmup=bool(settings.get("compile")))
