"""Summary statistics of repeated timings: pure functions, no I/O.

Why these and not a mean: latency targets are about what a user waits for,
so the median is the central figure (robust to one slow outlier), tail
percentiles are reported only when enough runs exist to estimate them, and the
spread says whether the figures can be trusted at all.

Definitions (stated once, used everywhere: bench, verify, tune, ladder):

* interleaving: round i runs the configurations rotated by i (A B C, B C A,
  C A B), so each leads equally often and drift hurts all alike.

* percentile q: the *nearest-rank* value, the ceil(q*n)-th smallest run.
  It is always an observed run, never an interpolation.
* a percentile is *reported* only when n >= ceil(1 / (1 - q)) runs (p90 from 10
  runs, p99 from 100): with fewer runs the nearest-rank value is the maximum,
  which is an upper bound of the percentile, not an estimate of it.
* relative spread = (max - min) / median ("range over median"). With the 3-20
  runs a benchmark can afford, the interquartile range rests on one or two
  points; the full range is the conservative choice, and one disturbed run is
  enough to make a result inconclusive rather than silently pass.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from sdagent.errors import BadInput


def _clean(values: Iterable[float]) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise BadInput("no timings to summarize: at least one run is needed")
    for v in out:
        if not math.isfinite(v) or v < 0:
            raise BadInput(f"invalid timing {v!r}: timings must be finite and >= 0")
    return sorted(out)


def min_runs_for(q: float) -> int:
    """Runs needed before the nearest-rank q-percentile differs from the maximum."""
    if not 0 < q < 1:
        raise ValueError(f"percentile must be in (0, 1), got {q}")
    return math.ceil(round(1.0 / (1.0 - q), 9))


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ceil(q*n)-th smallest value (1-based); q in (0, 1]."""
    xs = _clean(values)
    if not 0 < q <= 1:
        raise ValueError(f"percentile must be in (0, 1], got {q}")
    rank = max(1, math.ceil(round(q * len(xs), 9)))
    return xs[rank - 1]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-percentile, or None when there are too few runs to estimate it."""
    if len(values) < min_runs_for(q):
        return None
    return nearest_rank(values, q)


def relative_spread(values: Sequence[float]) -> float | None:
    """(max - min) / median; None for a single run (noise cannot be seen in one sample)."""
    xs = _clean(values)
    if len(xs) < 2:
        return None
    med = statistics.median(xs)
    if med == 0:
        return 0.0 if xs[-1] == xs[0] else math.inf
    return (xs[-1] - xs[0]) / med


def iqr(values: Sequence[float]) -> float | None:
    """Interquartile range (inclusive quartiles), reported for reference; None below 4 runs."""
    xs = _clean(values)
    if len(xs) < 4:
        return None
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q3 - q1


@dataclass(frozen=True)
class Summary:
    """The figures of one series of timings (seconds)."""

    n: int
    median: float
    mean: float
    min: float
    max: float
    stdev: float | None  # sample standard deviation; None for n < 2
    p90: float | None  # None below 10 runs
    p99: float | None  # None below 100 runs
    spread: float | None  # (max - min) / median; None for n < 2
    iqr: float | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spread_definition"] = "(max-min)/median"
        d["percentile_method"] = "nearest-rank; p90 from 10 runs, p99 from 100"
        return d


def summarize(values: Iterable[float]) -> Summary:
    """Median, mean, min/max, stdev, p90/p99 where the runs allow, relative spread."""
    xs = _clean(values)
    return Summary(
        n=len(xs),
        median=statistics.median(xs),
        mean=statistics.fmean(xs),
        min=xs[0],
        max=xs[-1],
        stdev=statistics.stdev(xs) if len(xs) >= 2 else None,
        p90=percentile(xs, 0.90),
        p99=percentile(xs, 0.99),
        spread=relative_spread(xs),
        iqr=iqr(xs),
    )


def images_per_second(latency_s: float, batch: int = 1) -> float:
    """Throughput of one instance generating `batch` images per call of `latency_s` seconds."""
    if latency_s <= 0 or not math.isfinite(latency_s):
        raise BadInput(f"invalid latency {latency_s!r}: must be finite and > 0")
    return batch / latency_s


def rotated(names: Sequence[str], i: int) -> list[str]:
    """Round i's order: `names` rotated left by i (see "interleaving" above)."""
    k = i % len(names) if names else 0
    return list(names[k:]) + list(names[:k])


def spread_or_none(values: Sequence[float], digits: int = 4) -> float | None:
    """relative_spread rounded for reports; None below 2 samples."""
    s = relative_spread(values) if len(values) >= 2 else None
    return round(s, digits) if s is not None else None


def median_bounds(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    """One-sided distribution-free bounds of the true median, each holding with `confidence`.

    The upper bound is the smallest order statistic x(u) with P(Binomial(n, 1/2) <= u - 1) >= confidence
    (the median is below it unless at least n - u + 1 runs landed above the median); the lower bound
    mirrors it. None where n runs are too few (below 5 at 95%): more runs narrow the bounds, so a
    verdict only gets more certain with more data.
    """
    xs = _clean(values)
    n = len(xs)
    cdf = 0.0
    u = None
    for k in range(n + 1):
        cdf += math.comb(n, k) / 2 ** n
        if cdf >= confidence - 1e-12:
            u = k + 1  # P(B <= k) >= confidence -> x(k+1) bounds the median from above
            break
    if u is None or u > n:
        return None, None
    return xs[n - u], xs[u - 1]


def min_runs_for_bounds(confidence: float = 0.95) -> int:
    """The fewest runs whose median_bounds exist at this confidence (5 at 95%)."""
    n = 1
    while median_bounds([1.0] * n, confidence) == (None, None):
        n += 1
    return n
