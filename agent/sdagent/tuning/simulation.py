"""Seeded simulations of the decision rules: how often tune and verify decide right under known noise.

Why simulate: whether "faster" or "pass" can be trusted is a property of the
rule under the noise a host really has, which a handful of real runs cannot
show. Here the truth is known: candidates with set latencies, timed calls with
lognormal noise, a drift shared by neighbouring processes, occasional
outliers, and a fake clock; the real search and the real verify rule run on
top. Fixed seeds make the figures reproducible; tests pin them
(tests/test_tune_rule.py) and `python -m sdagent.tuning.simulation` prints them.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sdagent.tuning.rule import Rule
from sdagent.tuning.search import Axis, Candidate, search


@dataclass(frozen=True)
class NoiseModel:
    """How a simulated host times a process."""

    per_call: float = 0.10  # lognormal sigma of each timed call
    drift: float = 0.0  # stationary sigma of a slow drift, shared by processes close in time
    outliers: float = 0.0  # probability that a timed call is 2x slow (a neighbour woke up)
    calls: int = 3  # timed calls per process; the process reports their median
    overhead_s: float = 10.0  # process start, model load and warm-up, on the fake clock

    def label(self) -> str:
        parts = [f"{100 * self.per_call:.0f}% per call"]
        if self.drift:
            parts.append(f"{100 * self.drift:.0f}% drift")
        if self.outliers:
            parts.append(f"{100 * self.outliers:.0f}% outliers x2")
        return ", ".join(parts)


class SimHost:
    """True latencies per candidate name, timed through the noise model on a fake clock."""

    def __init__(self, true_s: dict[str, float], model: NoiseModel, seed: int) -> None:
        self.true_s, self.model = true_s, model
        self.rng = random.Random(seed)
        self.now = 0.0
        self.log_drift = 0.0
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def _call(self, t: float) -> float:
        m = self.model
        x = t * math.exp(self.log_drift + self.rng.gauss(0.0, m.per_call))
        if m.outliers and self.rng.random() < m.outliers:
            x *= 2.0
        return x

    def measure(self, c: Candidate, limit_s: float = math.inf) -> float:
        """One process's median of `calls` timed calls (the simulated host never overruns `limit_s`)."""
        m = self.model
        # AR(1) drift: neighbours in time share most of it (correlation 0.9 per process)
        self.log_drift = 0.9 * self.log_drift + self.rng.gauss(0.0, m.drift * math.sqrt(1 - 0.81))
        base = self.true_s[c.name]
        xs = [self._call(base) for _ in range(m.calls)]
        self.now += m.overhead_s + sum(xs)
        self.calls += 1
        return statistics.median(xs)

    def warm(self, c: Candidate, limit_s: float = math.inf) -> None:
        self.now += self.model.overhead_s


def _cand(name: str, axis: str = "sim", stock: bool = False) -> Candidate:
    return Candidate(name, {"name": name}, {"name": name}, axis, stock=stock)


def tune_trial(seed: int, gain: float, model: NoiseModel, variants: int = 1, rule: Rule = Rule(),
               budget_s: float = 1e9) -> dict[str, Any]:
    """Stock, a plan as fast as stock, then one axis of `variants` candidates, the first `gain` faster.

    Returns what was chosen and how many processes it took.
    """
    names = [f"v{i}" for i in range(variants)]
    true = {"stock": 1.0, "plan": 1.0, **{n: 1.0 for n in names}}
    true[names[0]] = 1.0 - gain
    host = SimHost(true, model, seed)
    axis = Axis("sim", lambda best: [_cand(n) for n in names])
    r = search(_cand("stock", "stock", True), [_cand("plan", "plan")], [axis], host.measure, budget_s=budget_s,
               clock=host.clock, warm=host.warm, rule=rule)
    return {"chosen": r.chosen.name, "processes": host.calls, "cap": r.round_cap, "spent_s": r.spent_s,
            "axis_switched": any(n in names for n in r.path)}


def tune_rates(gain: float, model: NoiseModel, trials: int, variants: int = 1, rule: Rule = Rule(),
               seed0: int = 0) -> dict[str, float]:
    """accept: the faster variant was chosen; false_axis: the axis switched to a variant no faster than
    the best (gain = 0); false_any: anything but stock chosen when all are equal (the plan's comparison too)."""
    fast = false_axis = false_any = 0
    procs = []
    for s in range(seed0, seed0 + trials):
        t = tune_trial(s, gain, model, variants, rule)
        procs.append(t["processes"])
        fast += t["chosen"] == "v0"
        false_axis += t["axis_switched"]
        false_any += t["chosen"] != "stock"
    return {"accept": fast / trials, "false_axis": false_axis / trials, "false_any": false_any / trials,
            "processes_median": statistics.median(procs)}


def verify_rates(offset: float, model: NoiseModel, runs: int, trials: int, seed0: int = 0,
                 confidence: float = 0.95) -> dict[str, float]:
    """Verify's median rule against a ceiling `offset` away from the true median (-0.2: 20% under it)."""
    from sdagent.measuring.stats import median_bounds

    out = {"pass": 0, "miss": 0, "inconclusive": 0}
    for s in range(seed0, seed0 + trials):
        rng = random.Random(10_000 + s)
        drift = 0.0
        xs = []
        for _ in range(runs):
            drift = 0.9 * drift + rng.gauss(0.0, model.drift * math.sqrt(1 - 0.81))
            x = math.exp(drift + rng.gauss(0.0, model.per_call))
            if model.outliers and rng.random() < model.outliers:
                x *= 2.0
            xs.append(x)
        ceiling = 1.0 / (1.0 + offset)  # true median 1.0 is `offset` above (+) or below (-) the ceiling
        lo, hi = median_bounds(xs, confidence)
        out["pass" if hi is not None and hi <= ceiling else "miss" if lo is not None and lo > ceiling
            else "inconclusive"] += 1
    return {k: v / trials for k, v in out.items()}


MODELS: dict[str, NoiseModel] = {
    "iid 5%": NoiseModel(0.05),
    "iid 10%": NoiseModel(0.10),
    "iid 20%": NoiseModel(0.20),
    "10% + 10% drift": NoiseModel(0.10, drift=0.10),
    "10% + 5% outliers": NoiseModel(0.10, outliers=0.05),
    "10%, 1 call per process": NoiseModel(0.10, calls=1),
}


def report(trials: int = 400, write: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """The operating characteristics as a Markdown table (what the README shows)."""
    rows = []
    write(f"{trials} seeded trials per cell. Tune: stock, a plan as fast as stock, one axis; verify: "
          f"10 timed runs in one process, the true median 20% under (pass) or over (miss) the ceiling.")
    write("")
    write("| noise | tune: a true 10% gain taken | false switch per axis, 1 variant | false switch per axis, "
          "5 variants | processes, median (10% gain) | verify: pass at -20% | verify: miss at +20% |")
    write("|---|---|---|---|---|---|---|")
    for name, m in MODELS.items():
        acc = tune_rates(0.10, m, trials)
        eq1 = tune_rates(0.0, m, trials, seed0=50_000)
        eq5 = tune_rates(0.0, m, trials, variants=5, seed0=90_000)
        under = verify_rates(-0.20, m, 10, trials)
        over = verify_rates(0.20, m, 10, trials, seed0=70_000)
        rows.append({"noise": name, "accept": acc["accept"], "false_1": eq1["false_axis"],
                     "false_5": eq5["false_axis"], "processes": acc["processes_median"],
                     "verify_pass": under["pass"], "verify_miss": over["miss"]})
        write(f"| {name} | {100 * acc['accept']:.1f}% | {100 * eq1['false_axis']:.1f}% | "
              f"{100 * eq5['false_axis']:.1f}% | {acc['processes_median']:.0f} | {100 * under['pass']:.1f}% | "
              f"{100 * over['miss']:.1f}% |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdagent.tuning.simulation", description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=400, help="seeded trials per cell")
    a = ap.parse_args(argv)
    if a.trials < 1:
        print(f"sdagent.tuning.simulation: error: invalid --trials {a.trials}: at least 1", file=sys.stderr)
        return 2
    report(a.trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
