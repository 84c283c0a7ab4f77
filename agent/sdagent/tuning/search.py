"""`sdagent tune`'s search: stock, the plan, then one axis at a time, each decided by tuning.rule.

Pure: time comes in through an injected ``measure(candidate) -> seconds`` and
``clock() -> seconds``, so the search is unit-tested (and its operating
characteristics simulated) with a fake timer; tuning.session runs it with real
processes.

The order of work:

1. **The noise floor and the plan.** Stock and the first candidate (the
   topology plan, or the plan file given) run ``min_rounds`` interleaved rounds;
   their repeated latencies are the host's noise floor, which sizes the round
   cap (tuning.rule.rounds_for). The comparison then goes on until decided.
2. **Axes.** Each axis's variants are screened together against the current
   best in interleaved rounds (B V1 V2, V1 V2 B, V2 B V1): every round adds one
   paired ratio per variant; a variant leaves the screen once decided. Of the
   variants found faster, the lowest mean ratio is **confirmed in a fresh
   comparison** before it becomes the best.
3. **The final check against stock**, always: its budget is reserved before
   any axis starts, and an axis that would eat into it is skipped. If stock
   turns out faster, stock is chosen; the plan written is then exactly the
   stock that was measured.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from sdagent.measuring.stats import rotated, spread_or_none
from sdagent.tuning.rule import FAILED, FASTER, UNDECIDED, Decision, Noise, Rule, decide, rounds_for

# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One configuration to measure.

    `overrides` are what `make_plan(..., overrides=...)` needs to reproduce it;
    `settings` are the resolved settings (used to skip duplicates and to show).
    """

    name: str
    overrides: Mapping[str, Any]
    settings: Mapping[str, Any]
    axis: str = ""
    stock: bool = False  # the baseline: stock's settings on the plan's CPUs
    warmup: bool = False  # needs one untimed run first (torch.compile's cache)
    layout: Mapping[str, Any] | None = None  # PlanRequest fields; None: the session's own layout

    @property
    def key(self) -> tuple[str, ...]:
        """Identity for de-duplication: two names for the same settings and layout are measured once."""
        return tuple(f"{k}={v!r}" for k, v in sorted({**self.settings, **(self.layout or {})}.items()))


@dataclass(frozen=True)
class Axis:
    """One direction of the search: variants of the current best along one knob."""

    name: str
    variants: Callable[[Candidate], list[Candidate]]


@dataclass
class Comparison:
    """Interleaved paired rounds of the current best against one candidate."""

    best: str
    candidate: str
    axis: str
    kind: str = "screen"  # plan | screen | confirm | final
    best_s: list[float] = field(default_factory=list)
    candidate_s: list[float] = field(default_factory=list)
    order: list[list[str]] = field(default_factory=list)
    verdict: Decision | None = None

    @property
    def ratios(self) -> list[float]:
        """Per-round candidate/best (adjacent in time, so drift cancels)."""
        return [c / b for b, c in zip(self.best_s, self.candidate_s) if b > 0]

    @property
    def mean_log_ratio(self) -> float:
        r = self.ratios
        return statistics.fmean(math.log(x) for x in r) if r else 0.0

    def to_dict(self) -> dict[str, Any]:
        r = self.ratios
        return {
            "best": self.best, "candidate": self.candidate, "axis": self.axis, "kind": self.kind,
            "best_s": [round(x, 4) for x in self.best_s],
            "candidate_s": [round(x, 4) for x in self.candidate_s],
            "order": self.order,
            "ratio_geomean": round(math.exp(self.mean_log_ratio), 4) if r else None,
            "ratio_min": round(min(r), 4) if r else None,
            "ratio_max": round(max(r), 4) if r else None,
            "best_spread": spread_or_none(self.best_s),
            "candidate_spread": spread_or_none(self.candidate_s),
            "verdict": self.verdict.outcome if self.verdict else None,
            "reason": self.verdict.reason if self.verdict else None,
        }


@dataclass
class TuneResult:
    chosen: Candidate
    stock: Candidate
    comparisons: list[Comparison]
    candidates: dict[str, Candidate]
    skipped: list[tuple[str, str]]  # (candidate, why it was not measured)
    reason: str
    budget_s: float
    spent_s: float
    rule: str
    measured: dict[str, list[float]] = field(default_factory=dict)
    noise: dict[str, Any] = field(default_factory=dict)
    round_cap: int = 0
    path: list[str] = field(default_factory=list)  # stock, then each candidate that became the best

    def samples(self) -> dict[str, list[float]]:
        """Every measurement of every candidate, in the order taken."""
        return {k: list(v) for k, v in self.measured.items()}

    def to_dict(self) -> dict[str, Any]:
        samples = self.samples()
        return {
            "chosen": self.chosen.name,
            "reason": self.reason,
            "rule": self.rule,
            "noise": self.noise,
            "round_cap": self.round_cap,
            "path": list(self.path),
            "budget_s": round(self.budget_s, 1),
            "spent_s": round(self.spent_s, 1),
            "candidates": [
                {"name": c.name, "axis": c.axis, "stock": c.stock, "overrides": dict(c.overrides),
                 "layout": dict(c.layout) if c.layout else None,
                 "measured_s": [round(x, 4) for x in samples.get(c.name, [])],
                 "median_s": round(statistics.median(samples[c.name]), 4) if samples.get(c.name) else None}
                for c in self.candidates.values()
            ],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "skipped": [{"candidate": n, "why": w} for n, w in self.skipped],
        }


class MeasureFailed(Exception):
    """A candidate's measurement failed (its process crashed, a library refused...)."""


Event = Callable[[str, dict[str, Any]], None]


# ---------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------


@dataclass
class _State:
    """What the search has learnt so far: timings (for budget estimates), samples, noise."""

    clock: Callable[[], float]
    measure: Callable[[Candidate], float]
    warm: Callable[[Candidate], None] | None
    emit: Event
    t0: float = 0.0
    durations: dict[str, list[float]] = field(default_factory=dict)
    measured: dict[str, list[float]] = field(default_factory=dict)
    warmed: set[str] = field(default_factory=set)
    noise: Noise = field(default_factory=Noise)

    def spent(self) -> float:
        return self.clock() - self.t0

    def est(self, c: Candidate) -> float:
        """Seconds one measurement of `c` takes (a cold compile costs several)."""
        own = self.durations.get(c.name)
        if own:
            return statistics.median(own)
        allv = [x for k, v in self.durations.items() if not k.endswith("#warmup") for x in v]
        base = statistics.median(allv) if allv else 0.0
        if c.warmup and c.name not in self.warmed:
            base *= 4
        return base

    def timed(self, c: Candidate) -> float:
        start = self.clock()
        try:
            x = self.measure(c)
        finally:
            self.durations.setdefault(c.name, []).append(self.clock() - start)
        self.measured.setdefault(c.name, []).append(x)
        return x

    def warm_up(self, c: Candidate) -> str | None:
        """One untimed run of a candidate that needs it; the failure's reason, or None."""
        if not c.warmup or c.name in self.warmed or self.warm is None:
            return None
        self.emit("warmup", {"candidate": c.name})
        start = self.clock()
        try:
            self.warm(c)
            self.warmed.add(c.name)
            return None
        except MeasureFailed as exc:
            return f"warm-up failed: {exc}"
        finally:
            self.durations.setdefault(c.name + "#warmup", []).append(self.clock() - start)


def _rounds(st: _State, best: Candidate, comps: dict[str, Comparison], cands: dict[str, Candidate], rule: Rule,
            cap: int, may_continue: Callable[[list[Candidate]], bool], first_round: int = 0) -> None:
    """Interleaved rounds of `best` with the comparisons' candidates until each is decided (or capped)."""
    live = [c for c in cands.values() if comps[c.name].verdict is None]
    i = first_round
    while live:
        n_done = len(comps[live[0].name].best_s)
        if n_done >= rule.min_rounds and not may_continue(live):
            for c in live:
                comp = comps[c.name]
                v = decide(comp.best_s, comp.candidate_s, st.noise.sigma, rule, final=True)
                comp.verdict = replace(v, reason=v.reason + " (stopped early: the budget)")
                st.emit("compared", {"comparison": comp})
            return
        order = rotated([best.name] + [c.name for c in live], i)
        got: dict[str, float] = {}
        for name in order:
            comp = comps[live[0].name] if name == best.name else comps[name]
            st.emit("measure", {"candidate": name, "round": len(comp.best_s) + 1, "rounds": cap, "vs": comp})
            c = best if name == best.name else cands[name]
            try:
                got[name] = st.timed(c)
            except MeasureFailed as exc:
                if name == best.name:
                    for x in live:
                        comps[x.name].verdict = Decision(FAILED, f"the best ({best.name}) failed: {exc}")
                        st.emit("compared", {"comparison": comps[x.name]})
                    return
                comps[name].verdict = Decision(FAILED, f"{name} failed: {exc}")
                st.emit("compared", {"comparison": comps[name]})
        still = []
        for c in live:
            comp = comps[c.name]
            if comp.verdict is not None:
                continue
            comp.order.append(order)
            comp.best_s.append(got[best.name])
            comp.candidate_s.append(got[c.name])
            sigma = st.noise.with_pairs([math.log(x) for x in comp.ratios]).sigma
            v = decide(comp.best_s, comp.candidate_s, sigma, replace(rule, max_rounds=cap))
            if v.outcome == UNDECIDED:
                still.append(c)
            else:
                comp.verdict = v
                st.emit("compared", {"comparison": comp})
        live = still
        i += 1


def search(
    stock: Candidate,
    first: Sequence[Candidate],
    axes: Sequence[Axis],
    measure: Callable[[Candidate], float],
    *,
    budget_s: float,
    clock: Callable[[], float],
    warm: Callable[[Candidate], None] | None = None,
    rule: Rule = Rule(),
    on_event: Event | None = None,
) -> TuneResult:
    """Greedy, budgeted search (see the module docstring); never chooses a plan slower than stock beyond noise."""
    st = _State(clock, measure, warm, on_event or (lambda kind, data: None))
    st.t0 = clock()
    comparisons: list[Comparison] = []
    candidates: dict[str, Candidate] = {stock.name: stock}
    seen: dict[tuple, str] = {stock.key: stock.name}
    skipped: list[tuple[str, str]] = []
    cap = rule.max_rounds

    def fresh(cands: Iterable[Candidate]) -> list[Candidate]:
        out = []
        for c in cands:
            if c.key in seen:
                continue  # already measured (or identical settings to one that was)
            seen[c.key] = c.name
            candidates[c.name] = c
            out.append(c)
        return out

    def reserve() -> float:
        """Budget kept back for the final check against stock: its minimum rounds of stock and the best
        so far, and half as many again. Sized on both sides' own cost: a fast best (bf16, compiled) beside a
        slow fp32 stock needs far less than twice stock's, and an over-sized reserve starves every axis."""
        return 1.5 * rule.min_rounds * max(st.est(stock) + st.est(best), 1e-9)

    def left() -> float:
        return budget_s - st.spent() - reserve()

    def compare(best: Candidate, cands: list[Candidate], axis: str, kind: str) -> list[Comparison]:
        comps: dict[str, Comparison] = {}
        live: dict[str, Candidate] = {}
        for c in cands:
            comp = Comparison(best.name, c.name, axis, kind)
            comps[c.name] = comp
            comparisons.append(comp)
            why = st.warm_up(c)
            if why:
                comp.verdict = Decision(FAILED, why)
                st.emit("compared", {"comparison": comp})
                continue
            live[c.name] = c

        def may_continue(still: list[Candidate]) -> bool:
            cost = st.est(best) + sum(st.est(c) for c in still)
            if kind == "final":  # the reserve is its own: it may use it, and no more
                return cost <= budget_s - st.spent()
            return cost <= left()

        _rounds(st, best, comps, live, rule, cap, may_continue)
        for c in live.values():
            st.noise.add_pairs([math.log(x) for x in comps[c.name].ratios])
        return list(comps.values())

    # 1. The noise floor and the plan: the first rounds of stock against the plan.
    best = stock
    path = [stock.name]  # each candidate that became the best, in order
    plan = fresh(first)
    if plan:
        p = plan[0]
        comp = Comparison(stock.name, p.name, "plan", "plan")
        comparisons.append(comp)
        why = st.warm_up(p)
        if why:
            comp.verdict = Decision(FAILED, why)
        else:
            # the floor: min_rounds rounds, then the noise they show sizes the cap
            for i in range(rule.min_rounds):
                order = rotated([stock.name, p.name], i)
                got = {}
                try:
                    for name in order:
                        st.emit("measure", {"candidate": name, "round": i + 1, "rounds": rule.min_rounds,
                                            "vs": comp})
                        got[name] = st.timed(stock if name == stock.name else p)
                except MeasureFailed as exc:
                    comp.verdict = Decision(FAILED, f"{exc}")
                    break
                comp.order.append(order)
                comp.best_s.append(got[stock.name])
                comp.candidate_s.append(got[p.name])
            if comp.verdict is None:
                st.noise.add_floor([comp.best_s, comp.candidate_s])
                cap = rounds_for(rule, st.noise.sigma)
                st.emit("noise", {"sigma": st.noise.sigma, "cap": cap})
                v = decide(comp.best_s, comp.candidate_s, st.noise.sigma, replace(rule, max_rounds=cap))
                if v.outcome == UNDECIDED:
                    _rounds(st, stock, {p.name: comp}, {p.name: p}, rule, cap,
                            lambda still: st.est(stock) + st.est(p) <= left(), first_round=rule.min_rounds)
                else:
                    comp.verdict = v
            st.emit("compared", {"comparison": comp})
            if comp.verdict is not None and comp.verdict.outcome == FASTER:
                best = p
                path.append(p.name)
                st.emit("best", {"candidate": p.name})

    # 2. One axis at a time.
    for axis in axes:
        todo = fresh(axis.variants(best))
        if not todo:
            continue
        cost = rule.min_rounds * (st.est(best) + sum(st.est(c) for c in todo))
        if st.durations and cost > left():
            for c in todo:
                skipped.append((c.name, f"budget: the {axis.name} axis needs ~{cost:.0f} s, "
                                        f"{max(left(), 0):.0f} s left after the final check's reserve"))
                st.emit("skipped", {"candidate": c.name})
            continue
        screened = compare(best, todo, axis.name, "screen")
        winners = [c for c in screened if c.verdict and c.verdict.outcome == FASTER]
        if not winners:
            continue
        win = min(winners, key=lambda c: c.mean_log_ratio)
        if len(screened) > 1:
            # several variants: the best-looking one is biased towards luck; confirm it on fresh rounds
            win = compare(best, [candidates[win.candidate]], axis.name, "confirm")[0]
        if win.verdict is not None and win.verdict.outcome == FASTER:
            best = candidates[win.candidate]
            path.append(best.name)
            st.emit("best", {"candidate": best.name})

    # 3. The final check against stock, always.
    steps = " -> ".join(path)
    if best is stock:
        reason = "no candidate was faster than stock beyond noise: stock is the choice"
    else:
        check = compare(best, [stock], "final check against stock", "final")[0]
        v = check.verdict
        if v is not None and v.outcome == FASTER:
            reason = f"the final check found stock faster than {best.name}: stock chosen ({v.reason})"
            best = stock
        elif v is not None and v.outcome == FAILED:
            reason = f"the final check against stock failed ({v.reason}): stock chosen"
            best = stock
        else:
            reason = (f"{best.name} won each step of {steps}, and stock was not faster in the final check "
                      f"({v.reason if v else 'no verdict'})")
    return TuneResult(best, stock, comparisons, candidates, skipped, reason, budget_s, st.spent(),
                      rule.describe(), st.measured, st.noise.to_dict(), cap, path)
