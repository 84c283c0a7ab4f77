"""The tune record a tuned plan carries (`sdagent-tune/1`), read back as typed fields.

Why: `sdagent verify` judges a tuned plan against stock from the paired rounds
tune measured (verifying.checks.stock_figures_from_tuning); it reads the
chosen candidate, which candidate is stock, the comparisons' paired series and
the noise the rule used. Those are fields here, parsed once and checked, so
the reader does not pick key strings out of nested dicts. Written by
tuning.search.TuneResult.to_dict() and tuning.session (the machine, the
workload, every process); only the fields verify needs are typed here, the
rest stays in the plan file as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from sdagent.errors import BadInput

TUNE_FORMAT = "sdagent-tune/1"


@dataclass(frozen=True)
class CandidateEntry:
    """One candidate tune measured: its name, whether it is stock, and its latencies (s) in order."""

    name: str
    stock: bool = False
    axis: str = ""
    measured_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class ComparisonEntry:
    """Paired rounds of two candidates (s per image or per host image, in round order)."""

    best: str
    candidate: str
    kind: str
    best_s: tuple[float, ...]
    candidate_s: tuple[float, ...]

    def series(self, name: str) -> tuple[float, ...]:
        """The latencies of `name` in this comparison (one of its two sides)."""
        return self.best_s if name == self.best else self.candidate_s

    def pairs(self, a: str, b: str) -> bool:
        """Whether this compares `a` with `b` (either way round) and has rounds on both sides."""
        return {self.best, self.candidate} == {a, b} and bool(self.best_s) and bool(self.candidate_s)


@dataclass(frozen=True)
class TuneRecord:
    """What a tuned plan says of its tune: the choice, the candidates, the comparisons, the noise used."""

    chosen: str
    candidates: tuple[CandidateEntry, ...] = ()
    comparisons: tuple[ComparisonEntry, ...] = ()
    sigma_pair_used: float | None = None  # the pooled noise (sd of a paired log-ratio) the rule used

    @property
    def stock(self) -> CandidateEntry | None:
        return next((c for c in self.candidates if c.stock), None)

    def last_comparison(self, a: str, b: str) -> ComparisonEntry | None:
        """The last comparison of `a` with `b` that has rounds (the final check, when there was one)."""
        return next((c for c in reversed(self.comparisons) if c.pairs(a, b)), None)

    @classmethod
    def from_dict(cls, d: Any) -> "TuneRecord":
        """Parse a plan file's `tuning` record; BadInput names what is wrong (another format, a bad field)."""
        if not isinstance(d, Mapping):
            raise BadInput(f"not a tune record: expected an object, got {type(d).__name__}")
        if d.get("format", TUNE_FORMAT) != TUNE_FORMAT:
            raise BadInput(f"not a tune record: format {d.get('format')!r}, expected {TUNE_FORMAT!r}")
        try:
            cands = tuple(CandidateEntry(str(c["name"]), bool(c.get("stock", False)), str(c.get("axis") or ""),
                                         _floats(c.get("measured_s")))
                          for c in d.get("candidates") or () if isinstance(c, Mapping))
            comps = tuple(ComparisonEntry(str(c.get("best")), str(c.get("candidate")), str(c.get("kind") or ""),
                                          _floats(c.get("best_s")), _floats(c.get("candidate_s")))
                          for c in d.get("comparisons") or () if isinstance(c, Mapping))
            sigma = (d.get("noise") or {}).get("sigma_pair_used")
            return cls(str(d.get("chosen")), cands, comps,
                       float(sigma) if isinstance(sigma, (int, float)) and not isinstance(sigma, bool) else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"not a tune record ({type(exc).__name__}: {exc})") from None


def _floats(xs: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in xs or ())
