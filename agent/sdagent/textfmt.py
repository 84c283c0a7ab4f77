"""Small text helpers shared by the terminal tables (bench, verify): numbers, columns, one-liners."""

from __future__ import annotations

import math
from typing import Any, Iterable

from sdagent.host.topology import format_cpulist
from sdagent.planning.plan import summary_line


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def columns(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def plan_line(plan: dict[str, Any] | None) -> str:
    """`plan: SOURCE [FILE]: <summary_line>` of a Plan.to_dict()."""
    if not plan:
        return "plan: (none)"
    where = f" {plan['plan_file']}" if plan.get("plan_file") else ""
    return f"plan: {plan.get('source')}{where}: {summary_line(plan.get('settings', {}))}"


def workload_line(model: str, w: dict[str, Any]) -> str:
    return (f"workload: model {model}, {w['width']}x{w['height']}, {w['steps']} steps, guidance {w['guidance']:g}, "
            f"scheduler {w['scheduler']}, seed {w['seed']}")


def cpus(ids: Iterable[int]) -> str:
    return format_cpulist(ids)


def runs_with(plan: dict[str, Any] | None, libraries: Iterable[str]) -> dict[str, Any]:
    """What this process really runs with, read from its mapped libraries (/proc/self/maps), against what
    the plan preloads: {"allocator", "omp_runtime", "plan_in_effect", "missing"}.

    The allocator and the OpenMP runtime are the two settings a process cannot give itself after start:
    a plan that preloads them is in effect only when run under `sdagent exec` (or its rendered env).
    """
    names = [p.rsplit("/", 1)[-1] for p in libraries]
    alloc = next((a for a in ("jemalloc", "tcmalloc") if any(n.startswith(f"lib{a}") for n in names)), "glibc")
    omp = "intel" if any(n.startswith("libiomp5") for n in names) else "default"
    s = (plan or {}).get("settings", {})
    missing = []
    if s.get("allocator") in ("jemalloc", "tcmalloc") and alloc != s["allocator"]:
        missing.append(f"lib{s['allocator']}")
    if s.get("omp_runtime") == "intel" and omp != "intel":
        missing.append("libiomp5")
    return {"allocator": alloc, "omp_runtime": omp, "plan_in_effect": not missing, "missing": missing}


def runs_with_line(plan: dict[str, Any] | None, libraries: Iterable[str]) -> str:
    """`runs with: ...` for a header, and, when the plan's preloads are absent, how to apply it."""
    r = runs_with(plan, libraries)
    omp = "Intel OpenMP (libiomp5)" if r["omp_runtime"] == "intel" else "torch's own OpenMP"
    line = f"runs with: {r['allocator']} malloc, {omp} (this process's mapped libraries)"
    if not r["plan_in_effect"]:
        line += (f"; the plan's {' and '.join(r['missing'])} are NOT in effect here: apply the plan with "
                 f"`sdagent exec -- sdagent ...` (or its rendered env)")
    return line
