"""The evidence the untuned plan is derived from: measured effects of each lever, per host class.

The data is `evidence.json` beside this module (each measurement with its host, ISA class, cores,
torch, the command and the results file it came from); this module reads it into frozen records and
answers, per lever and ISA class, whether the lever measured *faster* there. The planner's rules ask
:func:`lever_finding` and keep a lever only when it did (see README "How the plan is derived").

The verdict of one measurement, from its paired ratio (speed with the lever(s) / speed without,
per round):

- *faster*: every round faster (min > 1);
- *slower*: the median below 1, or every round slower (max < 1) where only a range is known;
- *within noise*: otherwise.

A lever is kept on a class when at least one measurement there is *faster* and none is *slower*.
A class with no measurement of a lever gets the conservative plan: only the levers kept on every
class they were measured on (today native bf16 and compile). Pure except
:func:`load_evidence` (one file read) and :func:`default_evidence` (the packaged file, read once).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdagent.atomicio import read_text, unique_keys
from sdagent.errors import BadInput

EVIDENCE_FORMAT = "sdagent-evidence/1"
EVIDENCE_FILE = Path(__file__).with_name("evidence.json")

#: The levers the evidence speaks of (evidence.json's "levers" describes each).
LEVERS: tuple[str, ...] = ("jemalloc", "tcmalloc", "libiomp5", "pinning", "kmp_blocktime", "native_bf16", "compile",
                          "channels_last")

#: ISA classes, as host.hostclass.isa_class names them.
ISA_CLASSES: tuple[str, ...] = ("amx", "avx512_bf16", "avx512", "avx2", "baseline")

FASTER, SLOWER, NOISE = "faster", "slower", "within noise"


@dataclass(frozen=True)
class Ratio:
    """Speed with the lever(s) / speed without, paired per round: > 1 faster. `median` None: a range only."""

    median: float | None
    min: float
    max: float
    rounds: int | None = None

    @property
    def verdict(self) -> str:
        if self.min > 1.0:
            return FASTER
        if self.max < 1.0 or (self.median is not None and self.median < 1.0):
            return SLOWER
        return NOISE

    def text(self) -> str:
        if self.median is None:
            return f"{self.min:.2f}-{self.max:.2f}x"
        return f"{self.median:.2f}x ({self.min:.2f}-{self.max:.2f})"


@dataclass(frozen=True)
class Measurement:
    """One measured effect: the lever(s) switched on against the same run without them."""

    id: str
    host: str
    isa_class: str
    cores: int
    torch: str | None
    levers: tuple[str, ...]
    precision: str
    against: str
    ratio: Ratio
    workload: str
    command: str
    results: str  # a path under docs/results/, or where the figure was reported ("issue 21")
    paired: dict[str, str] | None = None  # how the ratio is recomputed from `results` (tests do)

    @property
    def verdict(self) -> str:
        return self.ratio.verdict


@dataclass(frozen=True)
class Evidence:
    measurements: tuple[Measurement, ...]
    source: str = "evidence.json"

    def of(self, lever: str, isa_class: str | None = None) -> tuple[Measurement, ...]:
        """The measurements with `lever` switched on, on `isa_class` (every class when None)."""
        return tuple(m for m in self.measurements
                     if lever in m.levers and (isa_class is None or m.isa_class == isa_class))


@dataclass(frozen=True)
class Finding:
    """The answer for one lever on one ISA class, with the evidence it rests on."""

    lever: str
    isa_class: str
    keep: bool
    on_class: tuple[Measurement, ...]
    elsewhere: tuple[Measurement, ...]

    def evidence_text(self) -> str:
        """'measured 0.63-0.92x on amx hosts (2, 16 cores; torch ...; evidence ids)', or why there is none."""
        if self.on_class:
            return (f"measured {_span(self.on_class)} the speed without it on {self.isa_class} hosts "
                    f"({_where(self.on_class)})")
        if self.elsewhere:
            classes = ", ".join(sorted({m.isa_class for m in self.elsewhere}))
            how = ("kept, as it measured faster on every class measured" if self.keep
                   else "so the conservative plan")
            return (f"not measured on {self.isa_class} hosts, {how}: {_span(self.elsewhere)} the speed without "
                    f"it on {classes} hosts ({_where(self.elsewhere)})")
        return "never measured, so the conservative plan"


def _span(ms: tuple[Measurement, ...]) -> str:
    """The range of the measurements' medians ('0.63-0.92x', or one '0.85x'); a measurement known only
    as a range contributes its ends."""
    lo = min(m.ratio.median if m.ratio.median is not None else m.ratio.min for m in ms)
    hi = max(m.ratio.median if m.ratio.median is not None else m.ratio.max for m in ms)
    return f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}x"


def _where(ms: tuple[Measurement, ...]) -> str:
    cores = ", ".join(str(c) for c in sorted({m.cores for m in ms}))
    torches = ", ".join(sorted({m.torch for m in ms if m.torch}))
    ids = ", ".join(m.id for m in ms)
    return f"{cores} cores; {'torch ' + torches if torches else 'torch not recorded'}; evidence {ids}"


def _keep_on(measured: tuple[Measurement, ...]) -> bool:
    """Some measurement faster and none slower."""
    return any(m.verdict == FASTER for m in measured) and not any(m.verdict == SLOWER for m in measured)


def positive_everywhere(evidence: Evidence, lever: str) -> bool:
    """Measured, and kept on every class it was measured on (what the conservative plan keeps)."""
    classes = {m.isa_class for m in evidence.of(lever)}
    return bool(classes) and all(_keep_on(evidence.of(lever, c)) for c in classes)


def lever_finding(evidence: Evidence, lever: str, isa_class: str) -> Finding:
    """Whether `lever` stays in the untuned plan on `isa_class`.

    Measured on the class: some measurement there faster, none slower. Not measured there: the
    conservative plan, which keeps only a lever that measured faster on every class measured.
    KeyError for a lever not in LEVERS.
    """
    if lever not in LEVERS:
        raise KeyError(lever)
    on = evidence.of(lever, isa_class)
    keep = _keep_on(on) if on else positive_everywhere(evidence, lever)
    elsewhere = tuple(m for m in evidence.of(lever) if m.isa_class != isa_class)
    return Finding(lever, isa_class, keep, on, elsewhere)


# ---------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------


def _measurement(d: dict[str, Any]) -> Measurement:
    r = d["ratio"]
    ratio = Ratio(None if r.get("median") is None else float(r["median"]), float(r["min"]), float(r["max"]),
                  None if r.get("rounds") is None else int(r["rounds"]))
    levers = tuple(str(x) for x in d["levers"])
    bad = [x for x in levers if x not in LEVERS]
    if bad or not levers:
        raise ValueError(f"levers {list(levers)}: each must be one of {', '.join(LEVERS)}")
    if d["isa_class"] not in ISA_CLASSES:
        raise ValueError(f"isa_class {d['isa_class']!r}: must be one of {', '.join(ISA_CLASSES)}")
    if not 0 < ratio.min <= ratio.max or (ratio.median is not None and not ratio.min <= ratio.median <= ratio.max):
        raise ValueError(f"ratio {r}: need 0 < min <= median <= max")
    return Measurement(
        id=str(d["id"]), host=str(d["host"]), isa_class=str(d["isa_class"]), cores=int(d["cores"]),
        torch=None if d.get("torch") is None else str(d["torch"]), levers=levers, precision=str(d["precision"]),
        against=str(d["against"]), ratio=ratio, workload=str(d["workload"]), command=str(d["command"]),
        results=str(d["results"]), paired=dict(d["paired"]) if d.get("paired") else None,
    )


def parse_evidence(text: str, source: str = "evidence.json") -> Evidence:
    """An evidence record from its JSON text; BadInput naming the entry and the problem."""
    try:
        d = json.loads(text, object_pairs_hook=unique_keys)
    except ValueError as exc:
        raise BadInput(f"evidence file {source}: not valid JSON ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != EVIDENCE_FORMAT:
        raise BadInput(f"evidence file {source}: format is not {EVIDENCE_FORMAT!r}")
    out: list[Measurement] = []
    for i, m in enumerate(d.get("measurements") or []):
        try:
            out.append(_measurement(m))
        except (KeyError, TypeError, ValueError) as exc:
            name = m.get("id", f"#{i}") if isinstance(m, dict) else f"#{i}"
            raise BadInput(f"evidence file {source}: measurement {name}: {type(exc).__name__}: {exc}") from None
    ids = [m.id for m in out]
    if len(set(ids)) != len(ids):
        raise BadInput(f"evidence file {source}: duplicate measurement ids")
    return Evidence(tuple(out), source)


def load_evidence(path: str | os.PathLike[str]) -> Evidence:
    return parse_evidence(read_text(path, "evidence file"), str(path))


@functools.lru_cache(maxsize=1)
def default_evidence() -> Evidence:
    """The evidence shipped with the agent (evidence.json beside this module), read once."""
    return load_evidence(EVIDENCE_FILE)
