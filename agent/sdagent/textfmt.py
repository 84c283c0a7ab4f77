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
