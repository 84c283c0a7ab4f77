"""The decision rule of `sdagent tune`: paired rounds, decided sequentially, with stated error rates.

Why paired and sequential: on a VM whose speed drifts 25-30% between sittings,
two configurations measured far apart disagree for reasons of their own. In a
round the candidate and the current best run back to back (order rotated
between rounds), so the per-round log-ratio ``d = ln(candidate / best)``
cancels what the two share; and rounds are added only while the evidence is
undecided, up to a cap, so a clear case costs three rounds and a close one is
not cut off at three.

The test (Wald's sequential probability ratio test, one per direction):

* ``d`` is modelled as normal with unknown mean and a standard deviation
  ``sigma`` estimated from this host: the noise floor measured before the
  search, pooled with every comparison's own rounds (see :class:`Noise`).
* *faster* tests "equal" (mean 0) against "the design gain" (mean
  ``ln(1 - design_gain)``, 10% by default). It accepts *faster* when the
  log-likelihood ratio reaches ``ln((1 - beta) / alpha)`` and the measured gain
  is at least ``min_gain`` (3%, the least worth switching for); by Wald's bound
  an equal candidate is called faster with probability <= alpha (5%).
* *slower* is the mirror test (a loss of the design size): a clear loser is
  dropped as soon as it is clearly slower, and only then; an equal candidate
  is called slower with probability <= alpha too.
* when both tests accept "equal", or the round cap is reached undecided, the
  verdict is *within noise* and the best stays.
* Several variants of one axis are screened against the same best; the
  lowest-mean winner is then confirmed in a fresh comparison (new rounds,
  same rule) before it replaces the best, which bounds a false switch per axis
  by alpha whatever the number of variants (selection bias stays in the screen).

The operating characteristics (acceptance of a true 10% gain, false "faster"
per axis, under iid noise, drift between rounds and outliers) are pinned by a
seeded simulation (tuning.simulation; tests/test_tune_rule.py; the README).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

FASTER, SLOWER, WITHIN, UNDECIDED, FAILED = "faster", "slower", "within-noise", "undecided", "failed"


@dataclass(frozen=True)
class Rule:
    """The rule's parameters (defaults are what `sdagent tune` uses)."""

    alpha: float = 0.05  # false "faster" (and false "slower") for an equal candidate, per comparison
    beta: float = 0.05  # a gain of design size missed, per comparison
    design_gain: float = 0.10  # the gain the test is powered for
    min_gain: float = 0.03  # the smallest measured gain worth switching for
    min_rounds: int = 3
    max_rounds: int = 20  # the highest cap; the cap used is sized from the noise floor by rounds_for()

    @property
    def upper(self) -> float:
        return math.log((1 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        return math.log(self.beta / (1 - self.alpha))

    def describe(self) -> str:
        return (f"paired rounds (candidate and best back to back, order rotated), decided sequentially: "
                f"a sequential probability ratio test on ln(candidate/best) between 'equal' and a "
                f"{100 * self.design_gain:.0f}% gain (and a {100 * self.design_gain:.0f}% loss), "
                f"alpha {self.alpha:g}, beta {self.beta:g}, noise from this host's floor pooled with every "
                f"comparison; 'faster' also needs a measured gain >= {100 * self.min_gain:.0f}%; "
                f"{self.min_rounds} to {self.max_rounds} rounds; an axis's winner is confirmed in a fresh "
                f"comparison; stock is re-checked against the final choice")


@dataclass
class Noise:
    """The host's noise: the spread of paired log-ratios, pooled over everything measured so far.

    The floor (before the search) gives the first estimate; each comparison's
    rounds add their within-comparison deviations (n - 1 degrees of freedom each).
    """

    ss: float = 0.0  # sum of squared deviations of d
    df: int = 0
    minimum: float = 0.005  # below half a percent per pair the host is quieter than the clock

    def add_floor(self, series: Sequence[Sequence[float]]) -> None:
        """Repeated latencies of the same configurations: their log spread, doubled for a pair's difference."""
        for xs in series:
            if len(xs) >= 2:
                logs = [math.log(x) for x in xs]
                m = statistics.fmean(logs)
                self.ss += 2 * sum((v - m) ** 2 for v in logs)
                self.df += len(xs) - 1

    def add_pairs(self, d: Sequence[float]) -> None:
        if len(d) >= 2:
            m = statistics.fmean(d)
            self.ss += sum((v - m) ** 2 for v in d)
            self.df += len(d) - 1

    def with_pairs(self, d: Sequence[float]) -> "Noise":
        """This estimate pooled with a comparison in progress (its rounds so far)."""
        n = Noise(self.ss, self.df, self.minimum)
        n.add_pairs(d)
        return n

    @property
    def estimate(self) -> float:
        """The pooled standard deviation of a pair's log-ratio (0.10 before any evidence: a noisy VM)."""
        if self.df == 0:
            return 0.10
        return max(self.minimum, math.sqrt(self.ss / self.df))

    @property
    def sigma(self) -> float:
        """What the test uses: the estimate's upper 80% confidence bound (chi-square, Wilson-Hilferty).

        A spread estimated from a few processes is often too small, and a too-small sigma
        makes the test overconfident; the bound shrinks towards the estimate as evidence grows.
        """
        if self.df == 0:
            return self.estimate
        k = self.df
        z = -0.8416  # the 20% quantile of the normal
        chi2 = k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3
        return self.estimate * math.sqrt(k / max(chi2, 1e-9))

    def to_dict(self) -> dict[str, float]:
        return {"sigma_pair_estimate": round(self.estimate, 5), "sigma_pair_used": round(self.sigma, 5),
                "df": self.df}


def rounds_for(rule: Rule, sigma: float) -> int:
    """The round cap at this noise: twice the fixed-sample size that gives the design gain its power
    (a sequential test stops at about half of it on average, and rarely needs twice), within
    [2 x min_rounds, max_rounds]."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    m = -math.log(1 - rule.design_gain)
    n = ((z(1 - rule.alpha) + z(1 - rule.beta)) * sigma / m) ** 2
    return max(2 * rule.min_rounds, min(rule.max_rounds, math.ceil(2 * n)))


@dataclass(frozen=True)
class Decision:
    outcome: str  # faster | slower | within-noise | undecided (more rounds wanted) | failed
    reason: str
    rounds: int = 0
    gain: float | None = None  # 1 - geometric mean of candidate/best
    llr_faster: float = 0.0
    llr_slower: float = 0.0


def log_ratios(best_s: Sequence[float], cand_s: Sequence[float]) -> list[float]:
    return [math.log(c / b) for b, c in zip(best_s, cand_s) if b > 0 and c > 0]


def decide(best_s: Sequence[float], cand_s: Sequence[float], sigma: float, rule: Rule = Rule(),
           final: bool = False) -> Decision:
    """The rule on paired rounds so far; `final` turns an undecided comparison into within-noise."""
    d = log_ratios(best_s, cand_s)
    n = len(d)
    if n == 0:
        return Decision(FAILED, "no measurements")
    m = -math.log(1 - rule.design_gain)
    s2 = sigma * sigma
    total = sum(d)
    llr_f = (-total * m - n * m * m / 2) / s2  # mean -m (a gain) against mean 0
    llr_s = (total * m - n * m * m / 2) / s2  # mean +m (a loss) against mean 0
    gain = 1 - math.exp(total / n)
    desc = (f"{n} paired round(s), candidate/best {math.exp(total / n):.3f} (gain {100 * gain:+.1f}%), "
            f"noise {100 * sigma:.1f}% per pair, evidence {llr_f:+.2f} for faster / {llr_s:+.2f} for slower "
            f"(decide at {rule.upper:+.2f} / {rule.lower:+.2f})")
    if n >= rule.min_rounds:
        if llr_f >= rule.upper and gain >= rule.min_gain:
            return Decision(FASTER, f"faster: {desc}", n, gain, llr_f, llr_s)
        if llr_s >= rule.upper:
            return Decision(SLOWER, f"slower: {desc}", n, gain, llr_f, llr_s)
        if llr_f <= rule.lower and llr_s <= rule.lower:
            return Decision(WITHIN, f"equal within noise: {desc}", n, gain, llr_f, llr_s)
        if llr_f >= rule.upper:
            return Decision(WITHIN, f"faster, but by less than the {100 * rule.min_gain:.0f}% worth switching "
                                    f"for: {desc}", n, gain, llr_f, llr_s)
    if final or n >= rule.max_rounds:
        return Decision(WITHIN, f"undecided after {n} round(s), within noise: {desc}", n, gain, llr_f, llr_s)
    return Decision(UNDECIDED, f"undecided: {desc}", n, gain, llr_f, llr_s)


@dataclass
class Paired:
    """The rounds of one comparison, as (best, candidate) latencies."""

    best_s: list[float] = field(default_factory=list)
    cand_s: list[float] = field(default_factory=list)

    def add(self, best: float, cand: float) -> None:
        self.best_s.append(best)
        self.cand_s.append(cand)
