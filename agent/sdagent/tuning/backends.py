"""Which backend a tune chose, and by how much: the `backends` part of the tune record (issue 22 item 4).

Pure: the search's result in, a frozen record out. Why a record of its own: the
search keeps one best and drops a clear loser as soon as it is clear, so "which
backend won and by how much" is not one comparison but a reading of all of them.
The reading:

* **Per backend** (native, ipex, openvino; the stock baseline apart): the
  candidate of that backend with the lowest median latency among those
  measured, with its median (seconds per image, or the host's seconds per
  image for the throughput objective) and the number of measurements.
* **The winner** is the chosen candidate's backend (the search decided it; a
  chosen stock counts as native).
* **By how much**: ``x_vs_stock`` and ``x_vs_runner_up`` are speed ratios
  (other median / chosen median; 1.25 = the chosen runs 1.25x as fast), from
  each candidate's own medians, unpaired. Where the search compared the two
  candidates directly (paired rounds, adjacent in time), ``paired_x`` gives the
  same ratio from that comparison's geometric mean of per-round ratios, the
  figure less moved by drift; None where they were never paired.

The runner-up is the fastest other backend's best candidate; None where the
tune measured one backend only (OpenVINO and IPEX are candidates only where
their stack is installed in the Python tune runs).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from sdagent.tuning.search import Candidate, Comparison, TuneResult

BACKENDS_FORMAT = "sdagent-tune-backends/1"


@dataclass(frozen=True)
class BackendBest:
    """One backend's fastest measured candidate."""

    backend: str
    candidate: str
    median_s: float
    n: int


@dataclass(frozen=True)
class BackendOutcome:
    """The winning backend and its ratios (speed: other / chosen seconds; > 1 means the chosen is faster)."""

    chosen_backend: str
    chosen: str
    chosen_median_s: float | None
    stock_median_s: float | None
    x_vs_stock: float | None
    paired_x_vs_stock: float | None
    runner_up: BackendBest | None
    x_vs_runner_up: float | None
    paired_x_vs_runner_up: float | None
    backends: tuple[BackendBest, ...]
    format: str = BACKENDS_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backends"] = [asdict(b) for b in self.backends]
        return d

    def line(self) -> str:
        """One line for the tune table: 'backend: openvino (openvino fp32), 1.31x stock; runner-up native ...'."""
        def x(v: float | None, paired: float | None) -> str:
            if v is None:
                return "-"
            return f"{v:.2f}x" + (f" (paired {paired:.2f}x)" if paired is not None else "")

        out = f"backend: {self.chosen_backend} ({self.chosen}), {x(self.x_vs_stock, self.paired_x_vs_stock)} stock's speed"
        if self.runner_up is None:
            return out + "; no other backend measured"
        return (out + f"; runner-up {self.runner_up.backend} ({self.runner_up.candidate}, "
                f"{self.runner_up.median_s:.3f} s): {x(self.x_vs_runner_up, self.paired_x_vs_runner_up)} its speed")


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _ratio(other: float | None, chosen: float | None) -> float | None:
    return round(other / chosen, 4) if other and chosen else None


def paired_speed(comparisons: Sequence[Comparison], chosen: str, other: str) -> float | None:
    """`other`'s time over `chosen`'s from their last direct comparison (geomean of per-round ratios), or None."""
    for c in reversed(comparisons):
        if {c.best, c.candidate} == {chosen, other} and c.ratios:
            g = math.exp(c.mean_log_ratio)  # candidate / best
            return round(g if c.best == chosen else 1.0 / g, 4)
    return None


def best_per_backend(candidates: Mapping[str, Candidate], measured: Mapping[str, Sequence[float]],
                     stock: str) -> tuple[BackendBest, ...]:
    """Each backend's lowest-median measured candidate (stock apart), fastest backend first."""
    best: dict[str, BackendBest] = {}
    for name, c in candidates.items():
        med = _median(measured.get(name) or ())
        if name == stock or med is None:
            continue
        be = str(c.settings.get("backend", "native"))
        if be not in best or med < best[be].median_s:
            best[be] = BackendBest(be, name, round(med, 4), len(measured[name]))
    return tuple(sorted(best.values(), key=lambda b: b.median_s))


def backend_outcome(result: TuneResult) -> BackendOutcome:
    """Which backend the tune chose and by how much, against stock and the runner-up backend (module doc)."""
    measured = result.samples()
    stock, chosen = result.stock.name, result.chosen.name
    chosen_be = str(result.chosen.settings.get("backend", "native"))
    per = best_per_backend(result.candidates, measured, stock)
    chosen_med = _median(measured.get(chosen) or ())
    stock_med = _median(measured.get(stock) or ())
    others = [b for b in per if b.backend != chosen_be]
    runner = others[0] if others else None
    return BackendOutcome(
        chosen_backend=chosen_be, chosen=chosen,
        chosen_median_s=None if chosen_med is None else round(chosen_med, 4),
        stock_median_s=None if stock_med is None else round(stock_med, 4),
        x_vs_stock=_ratio(stock_med, chosen_med),
        paired_x_vs_stock=None if chosen == stock else paired_speed(result.comparisons, chosen, stock),
        runner_up=runner,
        x_vs_runner_up=_ratio(runner.median_s, chosen_med) if runner else None,
        paired_x_vs_runner_up=paired_speed(result.comparisons, chosen, runner.candidate) if runner else None,
        backends=per)
