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
   After the first round the minimum (the floor and the final check) is
   estimated from it: when it does not fit the budget, the search stops with
   BudgetTooSmall (exit 2) and the estimate. Once the floor is measured, the
   axes that fit are said up front (``budget_plan``, the "budget" event).
2. **Axes.** Each axis's variants are screened together against the current
   best in interleaved rounds (B V1 V2, V1 V2 B, V2 B V1): every round adds one
   paired ratio per variant; a variant leaves the screen once decided. Of the
   variants found faster, the lowest mean ratio is **confirmed in a fresh
   comparison** before it becomes the best.
3. **The final check against stock**, always: its budget is reserved before
   any axis starts, and an axis that would eat into it is skipped. If stock
   turns out faster, stock is chosen; the plan written is then exactly the
   stock that was measured.

The budget is a hard ceiling on the time measured: a comparison's round that
would not fit is not started, and every measurement is handed the seconds it
may take (``measure(candidate, limit_s)``: up to the final check's reserve for
an axis, up to the ceiling for the final check), past which the caller stops
it and reports MeasureFailed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from sdagent.errors import BadInput
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
    budget_plan: list[dict[str, Any]] = field(default_factory=list)  # said up front: each axis, its cost, fits

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
            "budget_plan": [dict(x) for x in self.budget_plan],
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
    """A candidate's measurement failed (its process crashed, a library refused, the budget stopped it)."""


class MeasureStopped(MeasureFailed):
    """A measurement stopped at the limit the search gave it (the budget), not failed on its own."""


class BudgetTooSmall(BadInput):
    """Not even the minimum (the noise floor and the final check) fits the budget: exit 2, with the estimate."""


Event = Callable[[str, dict[str, Any]], None]
#: (candidate, seconds it may take) -> its latency; MeasureFailed when it fails or is stopped at the limit.
Measure = Callable[[Candidate, float], float]
Warm = Callable[[Candidate, float], None]


# ---------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------


@dataclass
class _State:
    """What the search has learnt so far: timings (for budget estimates), samples, noise."""

    clock: Callable[[], float]
    measure: Measure
    warm: Warm | None
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

    def timed(self, c: Candidate, limit_s: float) -> float:
        """One measurement of `c`, stopped by the caller after `limit_s` seconds (MeasureFailed then)."""
        start = self.clock()
        if limit_s <= 0:
            raise MeasureFailed("not started: the budget is spent")
        try:
            x = self.measure(c, limit_s)
        finally:
            self.durations.setdefault(c.name, []).append(self.clock() - start)
        self.measured.setdefault(c.name, []).append(x)
        return x

    def warm_up(self, c: Candidate, limit_s: float) -> str | None:
        """One untimed run of a candidate that needs it; the failure's reason, or None."""
        if not c.warmup or c.name in self.warmed or self.warm is None:
            return None
        self.emit("warmup", {"candidate": c.name})
        start = self.clock()
        try:
            if limit_s <= 0:
                raise MeasureFailed("not started: the budget is spent")
            self.warm(c, limit_s)
            self.warmed.add(c.name)
            return None
        except MeasureFailed as exc:
            return f"warm-up failed: {exc}"
        finally:
            self.durations.setdefault(c.name + "#warmup", []).append(self.clock() - start)


@dataclass
class _Search:
    """One search's state and its three phases (noise floor and plan, one axis, the final check)."""

    st: _State
    rule: Rule
    budget_s: float
    stock: Candidate
    best: Candidate
    cap: int
    comparisons: list[Comparison] = field(default_factory=list)
    candidates: dict[str, Candidate] = field(default_factory=dict)
    seen: dict[tuple[str, ...], str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    budget_plan: list[dict[str, Any]] = field(default_factory=list)

    # -- the budget ----------------------------------------------------------------------------

    def reserve(self) -> float:
        """Budget kept back for the final check against stock: its minimum rounds of stock and the best
        so far, and half as many again. Sized on both sides' own cost: a fast best (bf16, compiled) beside a
        slow fp32 stock needs far less than twice stock's, and an over-sized reserve starves every axis."""
        return 1.5 * self.rule.min_rounds * max(self.st.est(self.stock) + self.st.est(self.best), 1e-9)

    def left(self) -> float:
        """Seconds an axis may still use: the ceiling less what is spent and the final check's reserve."""
        return self.budget_s - self.st.spent() - self.reserve()

    def to_ceiling(self) -> float:
        return self.budget_s - self.st.spent()

    def limit(self, kind: str) -> float:
        """How long one measurement of a comparison of `kind` may run before it is stopped: an axis's up to
        the final check's reserve; the plan's (the minimum, checked to fit) and the final check's up to
        the ceiling."""
        return self.to_ceiling() if kind in ("final", "plan") else self.left()

    def fresh(self, cands: Iterable[Candidate]) -> list[Candidate]:
        """The candidates not measured yet (nor identical in settings to one that was), registered."""
        out = []
        for c in cands:
            if c.key in self.seen:
                continue
            self.seen[c.key] = c.name
            self.candidates[c.name] = c
            out.append(c)
        return out

    def become_best(self, c: Candidate) -> None:
        self.best = c
        self.path.append(c.name)
        self.st.emit("best", {"candidate": c.name})

    # -- interleaved rounds --------------------------------------------------------------------

    def _stop_all(self, comps: Mapping[str, Comparison], live: Sequence[Candidate]) -> None:
        """The budget ends the comparisons in progress: each is decided on the rounds it has."""
        for c in live:
            comp = comps[c.name]
            v = decide(comp.best_s, comp.candidate_s, self.st.noise.sigma, self.rule, final=True)
            comp.verdict = replace(v, reason=v.reason + " (stopped early: the budget)")
            self.st.emit("compared", {"comparison": comp})

    def _one_round(self, best: Candidate, comps: dict[str, Comparison], cands: Mapping[str, Candidate],
                   live: list[Candidate], i: int, kind: str) -> tuple[list[str], dict[str, float]] | None:
        """One round in rotated order: the order and the latencies got, or None when the best itself failed."""
        order = rotated([best.name] + [c.name for c in live], i)
        got: dict[str, float] = {}
        for name in order:
            comp = comps[live[0].name] if name == best.name else comps[name]
            self.st.emit("measure", {"candidate": name, "round": len(comp.best_s) + 1, "rounds": self.cap,
                                     "vs": comp})
            c = best if name == best.name else cands[name]
            try:
                got[name] = self.st.timed(c, self.limit(kind))
            except MeasureFailed as exc:
                if name == best.name:
                    for x in live:
                        comps[x.name].verdict = Decision(FAILED, f"the best ({best.name}) failed: {exc}")
                        self.st.emit("compared", {"comparison": comps[x.name]})
                    return None
                comps[name].verdict = Decision(FAILED, f"{name} failed: {exc}")
                self.st.emit("compared", {"comparison": comps[name]})
        return order, got

    def rounds(self, best: Candidate, comps: dict[str, Comparison], cands: Mapping[str, Candidate],
               may_continue: Callable[[list[Candidate]], bool], kind: str, first_round: int = 0) -> None:
        """Interleaved rounds of `best` with the comparisons' candidates until each is decided (or capped)."""
        live = [c for c in cands.values() if comps[c.name].verdict is None]
        i = first_round
        while live:
            if len(comps[live[0].name].best_s) >= self.rule.min_rounds and not may_continue(live):
                return self._stop_all(comps, live)
            done = self._one_round(best, comps, cands, live, i, kind)
            if done is None:
                return
            order, got = done
            still = []
            for c in live:
                comp = comps[c.name]
                if comp.verdict is not None:
                    continue
                comp.order.append(order)
                comp.best_s.append(got[best.name])
                comp.candidate_s.append(got[c.name])
                sigma = self.st.noise.with_pairs([math.log(x) for x in comp.ratios]).sigma
                v = decide(comp.best_s, comp.candidate_s, sigma, replace(self.rule, max_rounds=self.cap))
                if v.outcome == UNDECIDED:
                    still.append(c)
                else:
                    comp.verdict = v
                    self.st.emit("compared", {"comparison": comp})
            live = still
            i += 1

    def compare(self, cands: list[Candidate], axis: str, kind: str) -> list[Comparison]:
        """The best so far against each of `cands` (warmed first where needed), interleaved."""
        best = self.best
        comps: dict[str, Comparison] = {}
        live: dict[str, Candidate] = {}
        for c in cands:
            comp = Comparison(best.name, c.name, axis, kind)
            comps[c.name] = comp
            self.comparisons.append(comp)
            why = self.st.warm_up(c, self.limit(kind))
            if why:
                comp.verdict = Decision(FAILED, why)
                self.st.emit("compared", {"comparison": comp})
                continue
            live[c.name] = c

        def may_continue(still: list[Candidate]) -> bool:
            cost = self.st.est(best) + sum(self.st.est(c) for c in still)
            return cost <= (self.to_ceiling() if kind == "final" else self.left())  # the reserve is the final's

        self.rounds(best, comps, live, may_continue, kind)
        for c in live.values():
            self.st.noise.add_pairs([math.log(x) for x in comps[c.name].ratios])
        return list(comps.values())

    # -- 1. the noise floor and the plan -------------------------------------------------------

    def check_minimum(self, plan: Candidate) -> None:
        """After the first round: the floor's other rounds and the final check must fit, or BudgetTooSmall."""
        per_round = self.st.est(self.stock) + self.st.est(plan)
        need = self.st.spent() + (self.rule.min_rounds - 1) * per_round + 1.5 * self.rule.min_rounds * per_round
        if need > self.budget_s:
            raise BudgetTooSmall(
                f"invalid --budget {self.budget_s / 60:g} min: not even the minimum fits (the noise floor, "
                f"{self.rule.min_rounds} rounds of stock and {plan.name}, and the final check against stock "
                f"needs ~{need / 60:.1f} min here: {self.st.est(self.stock):.0f} s per stock process, "
                f"{self.st.est(plan):.0f} s per plan process); give --budget {math.ceil(need / 60)} or more")

    def noise_floor(self, p: Candidate) -> Comparison:
        """`min_rounds` rounds of stock and the plan: their repeated latencies are the host's noise floor."""
        comp = Comparison(self.stock.name, p.name, "plan", "plan")
        self.comparisons.append(comp)
        why = self.st.warm_up(p, self.limit("plan"))
        if why:
            comp.verdict = Decision(FAILED, why)
            return comp
        for i in range(self.rule.min_rounds):
            order = rotated([self.stock.name, p.name], i)
            got = {}
            try:
                for name in order:
                    self.st.emit("measure", {"candidate": name, "round": i + 1, "rounds": self.rule.min_rounds,
                                             "vs": comp})
                    got[name] = self.st.timed(self.stock if name == self.stock.name else p, self.limit("plan"))
            except MeasureStopped as exc:
                if i == 0:  # not even one round fits: the minimum cannot
                    raise BudgetTooSmall(
                        f"invalid --budget {self.budget_s / 60:g} min: not even the first round of stock and "
                        f"{p.name} finished within it ({exc}); give a larger --budget") from None
                comp.verdict = Decision(FAILED, f"{exc}")
                return comp
            except MeasureFailed as exc:
                comp.verdict = Decision(FAILED, f"{exc}")
                return comp
            comp.order.append(order)
            comp.best_s.append(got[self.stock.name])
            comp.candidate_s.append(got[p.name])
            if i == 0:
                self.check_minimum(p)
        return comp

    def first_plan(self, p: Candidate) -> None:
        """The plan against stock: the noise floor, the round cap it sizes, then rounds until decided."""
        comp = self.noise_floor(p)
        if comp.verdict is None:
            self.st.noise.add_floor([comp.best_s, comp.candidate_s])
            self.cap = rounds_for(self.rule, self.st.noise.sigma)
            self.st.emit("noise", {"sigma": self.st.noise.sigma, "cap": self.cap})
            v = decide(comp.best_s, comp.candidate_s, self.st.noise.sigma, replace(self.rule, max_rounds=self.cap))
            if v.outcome == UNDECIDED:
                self.rounds(self.stock, {p.name: comp}, {p.name: p},
                            lambda still: self.st.est(self.stock) + self.st.est(p) <= self.left(), "plan",
                            first_round=self.rule.min_rounds)
            else:
                comp.verdict = v
        self.st.emit("compared", {"comparison": comp})
        if comp.verdict is not None and comp.verdict.outcome == FASTER:
            self.become_best(p)

    # -- 2. the axes ---------------------------------------------------------------------------

    def axis_cost(self, todo: Sequence[Candidate]) -> float:
        """Seconds the minimum rounds of one axis take: the best and each variant (warm-ups counted)."""
        return self.rule.min_rounds * (self.st.est(self.best) + sum(self.st.est(c) for c in todo))

    def plan_axes(self, axes: Sequence[Axis]) -> None:
        """Say up front which axes fit the budget, in order, from the estimates the floor gave.

        An estimate: each axis's variants are taken from the best now, and its minimum rounds counted.
        """
        room = max(self.left(), 0.0)
        used = 0.0
        for axis in axes:
            todo = [c for c in axis.variants(self.best) if c.key not in self.seen]
            cost = self.axis_cost(todo)
            fits = bool(todo) and used + cost <= room
            used += cost if fits else 0.0
            self.budget_plan.append({"axis": axis.name, "variants": len(todo), "estimate_s": round(cost, 1),
                                     "fits": fits})
        self.st.emit("budget", {"axes": list(self.budget_plan), "left_s": room,
                                "reserve_s": self.reserve(), "budget_s": self.budget_s})

    def one_axis(self, axis: Axis) -> None:
        """Screen the axis's variants against the best; confirm the best-looking winner on fresh rounds."""
        todo = self.fresh(axis.variants(self.best))
        if not todo:
            return
        cost = self.axis_cost(todo)
        if self.st.durations and cost > self.left():
            for c in todo:
                self.skipped.append((c.name, f"budget: the {axis.name} axis needs ~{cost:.0f} s, "
                                             f"{max(self.left(), 0):.0f} s left after the final check's reserve"))
                self.st.emit("skipped", {"candidate": c.name})
            return
        screened = self.compare(todo, axis.name, "screen")
        winners = [c for c in screened if c.verdict and c.verdict.outcome == FASTER]
        if not winners:
            return
        win = min(winners, key=lambda c: c.mean_log_ratio)
        if len(screened) > 1:
            # several variants: the best-looking one is biased towards luck; confirm it on fresh rounds
            win = self.compare([self.candidates[win.candidate]], axis.name, "confirm")[0]
        if win.verdict is not None and win.verdict.outcome == FASTER:
            self.become_best(self.candidates[win.candidate])

    # -- 3. the final check --------------------------------------------------------------------

    def final_check(self) -> str:
        """The best against stock, always; stock is chosen when it is faster or the check fails. The reason."""
        steps = " -> ".join(self.path)
        if self.best is self.stock:
            return "no candidate was faster than stock beyond noise: stock is the choice"
        check = self.compare([self.stock], "final check against stock", "final")[0]
        v = check.verdict
        if v is not None and v.outcome == FASTER:
            reason = f"the final check found stock faster than {self.best.name}: stock chosen ({v.reason})"
        elif v is not None and v.outcome == FAILED:
            reason = f"the final check against stock failed ({v.reason}): stock chosen"
        else:
            return (f"{self.best.name} won each step of {steps}, and stock was not faster in the final check "
                    f"({v.reason if v else 'no verdict'})")
        self.best = self.stock
        return reason


def search(
    stock: Candidate,
    first: Sequence[Candidate],
    axes: Sequence[Axis],
    measure: Measure,
    *,
    budget_s: float,
    clock: Callable[[], float],
    warm: Warm | None = None,
    rule: Rule = Rule(),
    on_event: Event | None = None,
) -> TuneResult:
    """Greedy, budgeted search (see the module docstring); never chooses a plan slower than stock beyond noise.

    BudgetTooSmall (exit 2) after the first round when not even the minimum fits `budget_s`.
    """
    st = _State(clock, measure, warm, on_event or (lambda kind, data: None))
    st.t0 = clock()
    s = _Search(st, rule, budget_s, stock, stock, rule.max_rounds, candidates={stock.name: stock},
                seen={stock.key: stock.name}, path=[stock.name])
    plan = s.fresh(first)
    if plan:
        s.first_plan(plan[0])
    if st.durations:
        s.plan_axes(axes)
    for axis in axes:
        s.one_axis(axis)
    reason = s.final_check()
    return TuneResult(s.best, stock, s.comparisons, s.candidates, s.skipped, reason, budget_s, st.spent(),
                      rule.describe(), st.measured, st.noise.to_dict(), s.cap, s.path, s.budget_plan)
