"""Every host held to its class: this host's latency against the figures its class's tuned plan was measured at.

A tuned plan carries what `sdagent tune` measured on the class's host (its `tuning` record: the chosen
candidate's per-process medians, the workload, the noise its rule used, and the host class it ran on).
A sibling of that class running the same plan on the same workload should be as fast. One markedly
slower is flagged (a noisy neighbour, a throttled CPU, a bad DIMM): a *warning*, never a failure,
because the plan is the class's and the host is the suspect, and verify's exit code is about the plan.

Pure: records in, a :class:`ClassFigures` or the reason there are none, and one check out.

The noise bound: the host is flagged when its median latency over the class's is above
``exp(max(ln(1 + MIN_MARGIN), Z * sigma))`` (its speed below the inverse), where ``sigma`` is the standard deviation of a paired
log-ratio that tune's rule used on the class's host (tuning.rule.Noise; two processes' medians
compared, which is what this is), else estimated from the class's own per-process medians
(their log standard deviation times sqrt 2). ``Z`` = 2 puts an equal host over the bound about 2%
of the time under normal noise (one-sided); ``MIN_MARGIN`` = 10% is tune's design gain
(tuning.rule.Rule.design_gain): a difference tune would not act on is not flagged either.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

#: One-sided z of the noise bound (about 2.3% of equal hosts above it under normal noise).
Z = 2.0
#: The least slowdown flagged: tune's design gain (tuning.rule.Rule.design_gain).
MIN_MARGIN = 0.10
#: Workload fields that decide the cost of an image (pipeline.workload.Workload).
COST_FIELDS: tuple[str, ...] = ("steps", "height", "width", "guidance", "scheduler")


@dataclass(frozen=True)
class ClassFigures:
    """What the class's tuned plan was measured at, on the class's host."""

    class_id: str | None  # host class id of the host tune ran on (None: a plan tuned before classes)
    latencies_s: tuple[float, ...]  # the chosen candidate's per-process medians
    workload: Mapping[str, Any]
    model: str | None
    sigma_pair: float | None  # tune's noise per paired log-ratio
    chosen: str

    @property
    def median_s(self) -> float:
        return statistics.median(self.latencies_s)

    def noise_sigma(self) -> float | None:
        """tune's sigma, else the class's own spread (log sd of its process medians times sqrt 2)."""
        if self.sigma_pair is not None:
            return self.sigma_pair
        if len(self.latencies_s) >= 3:
            return statistics.stdev(math.log(x) for x in self.latencies_s) * math.sqrt(2)
        return None

    def bound(self) -> float:
        """The host/class latency ratio above which a host is markedly slower."""
        s = self.noise_sigma()
        return math.exp(max(math.log1p(MIN_MARGIN), Z * s if s is not None else 0.0))


def class_figures_from_tuning(tuning: Mapping[str, Any] | None) -> ClassFigures | str:
    """The chosen candidate's figures from a plan file's `tuning` record, or why there are none."""
    if not tuning:
        return "the plan in effect is not a tuned plan: no class figures to compare with"
    chosen = tuning.get("chosen")
    cand = next((c for c in tuning.get("candidates") or [] if isinstance(c, dict) and c.get("name") == chosen), None)
    lat = [float(x) for x in (cand or {}).get("measured_s") or [] if isinstance(x, (int, float)) and x > 0]
    if not lat:
        return f"the tune record has no measurements of its chosen plan {chosen!r}"
    if tuning.get("objective", "latency") != "latency":
        return "the plan was tuned for throughput: its figures are seconds per image of the whole host"
    hc = tuning.get("host_class")
    sigma = (tuning.get("noise") or {}).get("sigma_pair_used")
    return ClassFigures(
        class_id=hc.get("id") if isinstance(hc, Mapping) else None, latencies_s=tuple(lat),
        workload=dict(tuning.get("workload") or {}), model=tuning.get("model_name") or tuning.get("model_preset"),
        sigma_pair=float(sigma) if isinstance(sigma, (int, float)) and sigma > 0 else None, chosen=str(chosen))


def comparable(figures: ClassFigures, workload: Mapping[str, Any], model: str) -> str | None:
    """Why the class's figures and this run cannot be compared (another workload or model), or None."""
    diff = [f"{k} {figures.workload.get(k)} vs {workload.get(k)}" for k in COST_FIELDS
            if k in figures.workload and figures.workload.get(k) != workload.get(k)]
    if diff:
        return f"the class's figures are for another workload ({', '.join(diff)})"
    if figures.model and model and figures.model != model:
        return f"the class's figures are for model {figures.model!r}, this run is {model!r}"
    return None


@dataclass(frozen=True)
class ClassComparison:
    """This host against its class: its speed relative to the class's, the floor, and the words."""

    status: str  # pass | warn | skip (verifying.checks' words)
    detail: str
    ratio: float | None = None  # the class's median / this host's: this host's speed, 1 = the class's, < 1 slower
    floor: float | None = None  # below this ratio the host is markedly slower (1 / ClassFigures.bound())


def compare_with_class(figures: ClassFigures | str, host_class_id: str | None, latencies: Sequence[float],
                       workload: Mapping[str, Any], model: str) -> ClassComparison:
    """This host's timed runs against its class's tuned figures."""
    if isinstance(figures, str):
        return ClassComparison("skip", figures)
    if not latencies:
        return ClassComparison("skip", "no timed runs")
    why = comparable(figures, workload, model)
    if why:
        return ClassComparison("skip", why)
    if figures.class_id and host_class_id and figures.class_id != host_class_id:
        return ClassComparison("warn", f"the plan was tuned on host class {figures.class_id}, this host is class "
                                       f"{host_class_id}: it runs another class's plan (tune this class, or "
                                       f"install its own plan)")
    host, cls = statistics.median(latencies), figures.median_s
    ratio, floor = cls / host, 1.0 / figures.bound()
    nums = (f"median {host:.4g} s vs the class's {cls:.4g} s ({figures.chosen}, {len(figures.latencies_s)} "
            f"process(es) at tune): {ratio:.3f}x the class's speed, noise floor {floor:.3f}")
    if ratio < floor:
        return ClassComparison("warn", f"markedly slower than its class: {nums} (a noisy neighbour, a throttled "
                                       f"CPU, a bad DIMM?)", round(ratio, 4), round(floor, 4))
    return ClassComparison("pass", f"as fast as its class within noise: {nums}", round(ratio, 4), round(floor, 4))


def class_record(host_class: Mapping[str, Any], figures: ClassFigures | str, comparison: ClassComparison,
                 stock: tuple[float, float, str] | None) -> dict[str, Any]:
    """What the verify report says of this host's class: id, description, the class the plan was tuned on,
    and this host's speed relative to stock and to its class (> 1 faster; None where not measured).

    `stock`: (the plan's median s, stock's median s, where the pair comes from), or None.
    """
    return {
        "id": host_class.get("id"),
        "description": host_class.get("description"),
        "plan_tuned_on": figures.class_id if isinstance(figures, ClassFigures) else None,
        "class_median_s": round(figures.median_s, 6) if isinstance(figures, ClassFigures) else None,
        "ratio_to_class": comparison.ratio,
        "class_floor": comparison.floor,
        "class_status": comparison.status,
        "ratio_to_stock": round(stock[1] / stock[0], 4) if stock and stock[0] > 0 else None,
        "stock_source": stock[2] if stock else None,
    }
