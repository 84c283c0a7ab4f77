"""The candidates `sdagent tune` measures: stock, the topology plan, and variants along each axis.

Pure: what the host can try (HostChoices) and a `resolve(overrides, layout) ->
settings` function in, candidates out. Each candidate carries the overrides (and,
for throughput, the layout) that reproduce it through the planner, so the plan
written for a winner is exactly what was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sdagent.planning.runspec import STOCK_SETTINGS
from sdagent.planning.settings import KMP_AFFINITY_COMPACT
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
    layouts: tuple[Mapping[str, Any], ...] = ()  # throughput: the instance splits to try (PlanRequest fields)


def _variant(best: Candidate, name: str, axis: str, change: Mapping[str, Any], resolve: Resolve,
             warmup: bool = False, layout: Mapping[str, Any] | None = None) -> Candidate:
    overrides = {**best.overrides, **change}
    lay = layout if layout is not None else best.layout
    return Candidate(name, overrides, resolve(overrides, lay), axis,
                     warmup=warmup or bool(overrides.get("compile")), layout=lay)


def layout_name(layout: Mapping[str, Any]) -> str:
    smt = " +SMT" if layout.get("use_smt") else ""
    return f"{layout.get('instances')} x {layout.get('cores_per_instance')} cores{smt}"


def make_axes(host: HostChoices, resolve: Resolve) -> list[Axis]:
    """The search directions, in the order expected to pay most first.

    Precision and backend first (bf16 on AMX halves a step); then the preloads
    as a whole, one cheap candidate for the demo's first rung (jemalloc +
    libiomp5), which the ladder measured *slower* than stock on two AMX VMs;
    then compile, then the system knobs one at a time, which move both ways.
    """

    def precision(best: Candidate) -> list[Candidate]:
        out = []
        backends = ["native"] + (["ipex"] if host.ipex else []) + (["openvino"] if host.openvino else [])
        precs = ["fp32"] + (["bf16"] if host.bf16 else [])
        for be in backends:
            for pr in precs:
                chg: dict[str, Any] = {"backend": be, "precision": pr}
                if be in ("ipex", "openvino"):  # they compile the graph themselves
                    chg["compile"] = False
                out.append(_variant(best, f"{be} {pr}", "precision/backend", chg, resolve))
        return out

    def layout(best: Candidate) -> list[Candidate]:
        # the threads, binding and KMP_* of a layout are the planner's: drop what the best pinned for its own
        keep = {k: v for k, v in best.overrides.items()
                if k not in ("omp_num_threads", "binding", "membind", "kmp_affinity", "kmp_blocktime")}
        return [Candidate(layout_name(lay), keep, resolve(keep, lay), "layout",
                          warmup=bool(keep.get("compile")), layout=lay) for lay in host.layouts]

    def preloads(best: Candidate) -> list[Candidate]:
        if best.settings.get("allocator") == "default" and best.settings.get("omp_runtime") == "default":
            return []
        return [_variant(best, "no preloads (glibc malloc, torch's own OpenMP)", "preloads",
                         {"allocator": "default", "omp_runtime": "default"}, resolve)]

    def compile_(best: Candidate) -> list[Candidate]:
        if not host.compile or best.settings.get("backend") != "native":
            return []
        if not best.settings.get("compile"):
            return [_variant(best, "compile=on", "torch.compile", {"compile": True}, resolve, warmup=True)]
        return [_variant(best, "compile=off", "torch.compile", {"compile": False, "compile_autotune": False},
                         resolve),
                _variant(best, "compile max-autotune", "torch.compile", {"compile_autotune": True}, resolve,
                         warmup=True)]

    def channels(best: Candidate) -> list[Candidate]:
        if best.settings.get("backend") == "openvino":
            return []  # the IR's layout is OpenVINO's choice
        v = not best.settings.get("channels_last")
        return [_variant(best, f"channels_last={'on' if v else 'off'}", "memory format",
                         {"channels_last": v}, resolve)]

    def allocator(best: Candidate) -> list[Candidate]:
        out = [_variant(best, "allocator=default", "allocator", {"allocator": "default"}, resolve)]
        if host.jemalloc:
            for prof in ("short", "long", "demo"):
                out.append(_variant(best, f"jemalloc {prof}", "allocator",
                                    {"allocator": "jemalloc", "malloc_conf": prof}, resolve))
        if host.tcmalloc:
            out.append(_variant(best, "tcmalloc", "allocator", {"allocator": "tcmalloc"}, resolve))
        return out

    def omp(best: Candidate) -> list[Candidate]:
        out = [_variant(best, "omp=torch's own", "OpenMP runtime", {"omp_runtime": "default"}, resolve)]
        if host.iomp:
            out.append(_variant(best, "omp=libiomp5", "OpenMP runtime", {"omp_runtime": "intel"}, resolve))
        return out

    def blocktime(best: Candidate) -> list[Candidate]:
        if best.settings.get("omp_runtime") != "intel":
            return []
        return [_variant(best, f"KMP_BLOCKTIME={v}", "KMP_BLOCKTIME", {"kmp_blocktime": v}, resolve)
                for v in (0, 1, 200, "unset")]

    def pinning(best: Candidate) -> list[Candidate]:
        out = [_variant(best, "pinning=none", "pinning", {"binding": "none", "kmp_affinity": "unset"}, resolve)]
        if host.pin:
            aff = KMP_AFFINITY_COMPACT if best.settings.get("omp_runtime") == "intel" else "unset"
            out.append(_variant(best, f"pinning={host.pin}", "pinning",
                                {"binding": host.pin, "kmp_affinity": aff}, resolve))
        return out

    def threads(best: Candidate) -> list[Candidate]:
        n = host.physical_cores
        opts = sorted({n, max(1, n - 1), max(1, n // 2)}, reverse=True)
        return [_variant(best, f"threads={t}", "threads", {"omp_num_threads": t}, resolve) for t in opts]

    return [Axis("precision/backend", precision), Axis("layout", layout), Axis("preloads", preloads),
            Axis("torch.compile", compile_),
            Axis("memory format", channels), Axis("allocator", allocator), Axis("OpenMP runtime", omp),
            Axis("KMP_BLOCKTIME", blocktime), Axis("pinning", pinning), Axis("threads", threads)]


def stock_candidate(resolve: Resolve) -> Candidate:
    return Candidate("stock", dict(STOCK_SETTINGS), resolve(STOCK_SETTINGS, None), "stock", stock=True)


def plan_candidate(resolve: Resolve) -> Candidate:
    """The topology plan, as derived (no overrides)."""
    settings = resolve({}, None)
    return Candidate("topology plan", {}, settings, "plan", warmup=bool(settings.get("compile")))
