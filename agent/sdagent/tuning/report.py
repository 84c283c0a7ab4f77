"""The terminal view of a tune: every candidate's figures, its verdict, the choice and why."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sdagent.measuring.stats import summarize
from sdagent.planning.plan import summary_line
from sdagent.tuning.backends import backend_outcome
from sdagent.tuning.search import TuneResult


def tune_table(result: TuneResult, samples: Mapping[str, list[float]],
               fidelity: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Median and range of every measurement per candidate, its verdict, and the chosen plan; `fidelity`
    (the record's, per lossy candidate: measuring.fidelity.GateDecision.to_dict()) adds the gate's lines."""
    verdict: dict[str, str] = {}
    for c in result.comparisons:
        if c.verdict:
            verdict[c.candidate] = f"{c.verdict.outcome} vs {c.best}"
    lines = [f"  {'candidate':<26} {'n':>2} {'median s':>9} {'min-max s':>15} {'spread':>7}  verdict",
             "-" * 94]
    for name in result.candidates:
        xs = samples.get(name) or []
        if not xs:
            why = next((w for n, w in result.skipped if n == name), "not measured")
            lines.append(f"  {name[:26]:<26} {0:>2} {'-':>9} {'-':>15} {'-':>7}  skipped ({why})")
            continue
        s = summarize(xs)
        mark = "*" if name == result.chosen.name else " "
        spread = f"{100 * s.spread:>6.1f}%" if s.spread is not None else f"{'-':>7}"
        lines.append(f"{mark} {name[:26]:<26} {s.n:>2} {s.median:>9.3f} {s.min:>7.3f}-{s.max:<7.3f} {spread}  "
                     f"{verdict.get(name, 'baseline' if name == result.stock.name else '')}")
    lines.append("(* = chosen; spread = (max-min)/median; verdicts per the rule below)")
    lines.append("")
    lines.append(f"chosen: {result.chosen.name}: {summary_line(result.chosen.settings)}")
    lines.append(f"why:    {result.reason}")
    lines.append(f"        {backend_outcome(result).line()}")
    for name, gate in (fidelity or {}).items():
        lines.append(f"gate:   {name}: {gate.get('reason')}")
    lines.append(f"rule:   {result.rule}")
    lines.append(f"budget: {result.spent_s:.0f} s of {result.budget_s:.0f} s (a hard ceiling)")
    if result.budget_plan:
        lines.append(f"axes:   {budget_plan_line(result.budget_plan)}")
    return "\n".join(lines) + "\n"


def budget_plan_line(plan: Sequence[Mapping[str, Any]]) -> str:
    """What fits the budget, said up front (tuning.search's budget_plan): 'fit: a ~60 s, b ~90 s; not: c ~400 s'."""
    def part(rows: list[Mapping[str, Any]]) -> str:
        return ", ".join(f"{r['axis']} ~{r['estimate_s']:.0f} s" for r in rows) or "none"

    live = [r for r in plan if r.get("variants")]
    fit = [r for r in live if r.get("fits")]
    miss = [r for r in live if not r.get("fits")]
    return f"fit the budget, in this order: {part(fit)}" + (f"; do not fit: {part(miss)}" if miss else "")
