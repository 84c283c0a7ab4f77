"""`sdagent tune`'s core: the decision rule and the budgeted search over candidate plans.

Why measure at all: on a 2-core EPYC VM the demo's full recipe (jemalloc +
libiomp5 + pinning + KMP_BLOCKTIME=1) was ~20% *slower* than the stock
environment, while parts of it were faster. The topology plan is a hypothesis;
the host's own measurement decides.

Everything here is pure. Time comes in through an injected
``measure(candidate) -> seconds`` and ``clock() -> seconds``, so the search and
the rule are unit-tested with a fake timer; :mod:`sdagent.measuring.runner` is the real
one (a fresh child process per measurement).

The decision rule (stated once, used everywhere):

* A comparison runs ``rounds`` (3) interleaved rounds of the current best and
  the candidates of one axis, the order rotated each round (B C D, C D B,
  D B C) so drift hurts all alike; each candidate is judged against the
  best's figures of the same rounds.
* The candidate is **faster** only when its ranges over the rounds do not
  overlap: ``max(candidate) < min(best)``, with at least 3 rounds each. If
  the two were equally fast, that happens by chance with probability 1/20
  (3 against 3, exchangeable), so a false "faster" costs at most 5% per
  comparison.
* It is **slower** when ``min(candidate) > max(best)`` (checked after 2
  rounds too: a clear loser is dropped early to save budget); otherwise it
  is **within noise** and the best stays. Of several variants of one axis
  found faster, the lowest median wins (with k variants of equal speed, a
  false "faster" has up to k/20 odds; it would only swap in an equal plan,
  and the final check against stock still guards the choice).
* Stock is always measured first and is the fallback. When budget remains,
  the final best is compared against stock again; if stock is then faster
  beyond noise, stock is chosen. So the chosen plan is never slower than
  stock on this host beyond the measured noise.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from sdagent.measuring.stats import rotated, spread_or_none

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
    stock: bool = False  # run in the stock child environment, not under a plan
    warmup: bool = False  # needs one untimed run first (torch.compile's cache)

    @property
    def key(self) -> tuple[str, ...]:
        """Identity for de-duplication: two names for the same settings are measured once."""
        return tuple(f"{k}={v!r}" for k, v in sorted(self.settings.items()))


@dataclass(frozen=True)
class Axis:
    """One direction of the search: variants of the current best along one knob."""

    name: str
    variants: Callable[[Candidate], list[Candidate]]


@dataclass(frozen=True)
class Verdict:
    outcome: str  # faster | within-noise | slower | failed
    reason: str


@dataclass
class Comparison:
    """Interleaved rounds of the current best against one candidate."""

    best: str
    candidate: str
    axis: str
    best_s: list[float] = field(default_factory=list)
    candidate_s: list[float] = field(default_factory=list)
    order: list[list[str]] = field(default_factory=list)
    verdict: Verdict | None = None

    @property
    def ratios(self) -> list[float]:
        """Per-round candidate/best (adjacent in time, so drift cancels)."""
        return [c / b for b, c in zip(self.best_s, self.candidate_s) if b > 0]

    def to_dict(self) -> dict[str, Any]:
        r = self.ratios
        return {
            "best": self.best, "candidate": self.candidate, "axis": self.axis,
            "best_s": [round(x, 4) for x in self.best_s],
            "candidate_s": [round(x, 4) for x in self.candidate_s],
            "order": self.order,
            "ratio_median": round(statistics.median(r), 4) if r else None,
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

    def samples(self) -> dict[str, list[float]]:
        """Every measurement of every candidate, in the order taken."""
        return {k: list(v) for k, v in self.measured.items()}

    def to_dict(self) -> dict[str, Any]:
        samples = self.samples()
        return {
            "chosen": self.chosen.name,
            "reason": self.reason,
            "rule": self.rule,
            "budget_s": round(self.budget_s, 1),
            "spent_s": round(self.spent_s, 1),
            "candidates": [
                {"name": c.name, "axis": c.axis, "stock": c.stock, "overrides": dict(c.overrides),
                 "measured_s": [round(x, 4) for x in samples.get(c.name, [])],
                 "median_s": round(statistics.median(samples[c.name]), 4) if samples.get(c.name) else None}
                for c in self.candidates.values()
            ],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "skipped": [{"candidate": n, "why": w} for n, w in self.skipped],
        }


RULE = ("a candidate replaces the best only when its latencies over >= 3 interleaved rounds "
        "do not overlap the best's (max(candidate) < min(best); 1 in 20 by chance for equals); of "
        "several such variants of one axis the lowest median wins; stock is measured first, is the "
        "fallback, and is re-checked against the final choice when budget remains")


# ---------------------------------------------------------------------------
# Statistics and the rule
# ---------------------------------------------------------------------------


def decide(best_s: Sequence[float], cand_s: Sequence[float], min_rounds: int = 3) -> Verdict:
    """The decision rule on two sets of interleaved latencies (see the module docstring)."""
    n = min(len(best_s), len(cand_s))
    if n == 0:
        return Verdict("failed", "no measurements")
    bmin, bmax, cmin, cmax = min(best_s), max(best_s), min(cand_s), max(cand_s)
    med = statistics.median(c / b for b, c in zip(best_s, cand_s))
    desc = (f"candidate {cmin:.3g}-{cmax:.3g} s vs best {bmin:.3g}-{bmax:.3g} s over {n} round(s), "
            f"median ratio {med:.3f}")
    if cmax < bmin and n >= min_rounds:
        return Verdict("faster", f"faster beyond noise: {desc}")
    if cmin > bmax and n >= 2:
        return Verdict("slower", f"slower beyond noise: {desc}")
    if cmax < bmin:
        return Verdict("within-noise", f"faster in {n} round(s) but fewer than {min_rounds}: {desc}")
    return Verdict("within-noise", f"ranges overlap, within noise: {desc}")


# ---------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------


class MeasureFailed(Exception):
    """A candidate's measurement failed (its process crashed, a library refused...)."""


Event = Callable[[str, dict[str, Any]], None]


def search(
    stock: Candidate,
    first: Sequence[Candidate],
    axes: Sequence[Axis],
    measure: Callable[[Candidate], float],
    *,
    budget_s: float,
    clock: Callable[[], float],
    warm: Callable[[Candidate], None] | None = None,
    rounds: int = 3,
    on_event: Event | None = None,
) -> TuneResult:
    """Greedy, budgeted search: one axis at a time from the best so far.

    `first` (the topology plan) are compared with stock before the axes. An
    axis's variants are measured together with the current best in interleaved
    rounds (B V1 V2, V1 V2 B, V2 B V1): the best's measurements are shared,
    each variant is judged against them round by round, and a variant slower
    beyond noise after 2 rounds is dropped. Of the variants found faster, the
    lowest median becomes the new best. Variants are only started when their
    estimated cost (from the durations seen so far) fits the budget left,
    keeping back enough for the final check against stock.
    """
    emit = on_event or (lambda kind, data: None)
    t0 = clock()
    durations: dict[str, list[float]] = {}
    comparisons: list[Comparison] = []
    candidates: dict[str, Candidate] = {stock.name: stock}
    seen: dict[tuple, str] = {stock.key: stock.name}
    skipped: list[tuple[str, str]] = []
    warmed: set[str] = set()

    def spent() -> float:
        return clock() - t0

    def est(c: Candidate) -> float:
        own = durations.get(c.name)
        if own:
            return statistics.median(own)
        allv = [x for k, v in durations.items() if not k.endswith("#warmup") for x in v]
        base = statistics.median(allv) if allv else 0.0
        if c.warmup and c.name not in warmed:
            base *= 4  # a cold compile costs several measurements
        return base

    measured: dict[str, list[float]] = {}

    def timed(c: Candidate) -> float:
        start = clock()
        try:
            x = measure(c)
        finally:
            durations.setdefault(c.name, []).append(clock() - start)
        measured.setdefault(c.name, []).append(x)
        return x

    def joint(best: Candidate, cands: list[Candidate], axis: str) -> list[Comparison]:
        comps = {c.name: Comparison(best.name, c.name, axis) for c in cands}
        comparisons.extend(comps.values())
        live = []
        for c in cands:
            if c.warmup and c.name not in warmed and warm is not None:
                emit("warmup", {"candidate": c.name})
                start = clock()
                try:
                    warm(c)
                    warmed.add(c.name)
                except MeasureFailed as exc:
                    comps[c.name].verdict = Verdict("failed", f"warm-up failed: {exc}")
                    emit("compared", {"comparison": comps[c.name]})
                    continue
                finally:
                    durations.setdefault(c.name + "#warmup", []).append(clock() - start)
            live.append(c)
        by_name = {c.name: c for c in [best, *live]}
        best_failed = False
        for i in range(rounds):
            if not live or best_failed:
                break
            order = rotated([best.name] + [c.name for c in live], i)
            got: dict[str, float] = {}
            for name in order:
                emit("measure", {"candidate": name, "round": i + 1, "rounds": rounds,
                                 "vs": comps[live[0].name] if name == best.name else comps[name]})
                try:
                    got[name] = timed(by_name[name])
                except MeasureFailed as exc:
                    if name == best.name:
                        best_failed = True
                        for c in live:
                            comps[c.name].verdict = Verdict("failed", f"the best ({best.name}) failed: {exc}")
                        break
                    comps[name].verdict = Verdict("failed", f"{name} failed: {exc}")
                    emit("compared", {"comparison": comps[name]})
            if best_failed:
                break
            still = []
            for c in live:
                comp = comps[c.name]
                if comp.verdict is not None:  # failed this round
                    continue
                comp.order.append(order)
                comp.best_s.append(got[best.name])
                comp.candidate_s.append(got[c.name])
                if i + 1 >= 2 and i + 1 < rounds:
                    v = decide(comp.best_s, comp.candidate_s)
                    if v.outcome == "slower":
                        comp.verdict = Verdict("slower", v.reason + " (dropped after this round)")
                        emit("compared", {"comparison": comp})
                        continue
                still.append(c)
            live = still
        for c in live:
            comp = comps[c.name]
            if comp.verdict is None:
                comp.verdict = decide(comp.best_s, comp.candidate_s)
                emit("compared", {"comparison": comp})
        return list(comps.values())

    def fit(best: Candidate, cands: list[Candidate]) -> list[Candidate]:
        """The leading variants whose joint comparison fits the budget left (the rest are skipped)."""
        left = budget_s - spent() - (rounds * 2 * est(best) if best is not stock else 0.0)
        keep: list[Candidate] = []
        cost = rounds * est(best)
        for c in cands:
            extra = rounds * est(c)
            if durations and cost + extra > left:
                skipped.append((c.name, f"budget: needs ~{extra:.0f} s more, {max(left - cost, 0):.0f} s left"))
                emit("skipped", {"candidate": c.name})
                continue
            keep.append(c)
            cost += extra
        return keep

    def fresh(cands: Iterable[Candidate]) -> list[Candidate]:
        out = []
        for c in cands:
            if c.key in seen:
                continue  # already measured (or identical settings to one that was)
            seen[c.key] = c.name
            candidates[c.name] = c
            out.append(c)
        return out

    def step(best: Candidate, cands: list[Candidate], axis: str) -> Candidate:
        todo = fit(best, fresh(cands))
        if not todo:
            return best
        comps = joint(best, todo, axis)
        winners = [c for c in comps if c.verdict and c.verdict.outcome == "faster"]
        if not winners:
            return best
        win = min(winners, key=lambda c: statistics.median(c.candidate_s))
        emit("best", {"candidate": win.candidate})
        return candidates[win.candidate]

    best = step(stock, list(first), "plan")
    for axis in axes:
        best = step(best, axis.variants(best), axis.name)

    chain_steps: list[str] = []
    cur = best.name
    while cur != stock.name:
        w = next((c for c in comparisons if c.candidate == cur and c.verdict and c.verdict.outcome == "faster"),
                 None)
        if w is None:
            break
        chain_steps.append(cur)
        cur = w.best
    chain = " -> ".join([stock.name] + chain_steps[::-1])
    reason: str
    if best is stock:
        reason = "no candidate was faster than stock beyond noise: stock is the fallback"
    elif rounds * 2 * est(best) <= budget_s - spent():
        check = joint(best, [stock], "final check against stock")[0]
        v = check.verdict
        if v is not None and v.outcome == "faster":
            reason = f"the final check found stock faster than {best.name} beyond noise: stock chosen"
            best = stock
        elif v is not None and v.outcome == "failed":
            reason = f"the final check against stock failed ({v.reason}): stock chosen"
            best = stock
        else:
            reason = (f"{best.name} won each step of {chain} beyond noise, and stock was not "
                      f"faster in the final check ({v.reason if v else 'no verdict'})")
    else:
        reason = f"{best.name} won each step of {chain} beyond noise (no budget left for a final check)"
    return TuneResult(best, stock, comparisons, candidates, skipped, reason, budget_s, spent(), RULE, measured)


