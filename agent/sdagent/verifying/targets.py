"""Latency and quality targets: a YAML file of entries, the first matching entry wins.

Why a file and first-match: a fleet has host classes (AMX Xeons, older AVX2
boxes, small containers); each class has its own ceilings, and an operator
reads the file top to bottom like a firewall rule list. No entry matching is
an answer of its own (exit 4): a host nobody wrote a target for must not pass
silently, which is why a catch-all entry (`match: {}`) is allowed but
discouraged (it turns every unknown host class into a pass-or-miss against
ceilings written for another class).

Format (a top-level list, or a mapping with the single key `targets`)::

    - name: sd15-amx            # required, unique
      description: free text    # optional
      match:                    # required; {} matches every host (catch-all)
        isa: [amx_bf16]         # all of these CPU flags
        cpu_model: Xeon         # substring of the CPU model name (case-insensitive)
        min_physical_cores: 32  # physical cores of this instance (plan's instance, cgroup-capped)
        max_physical_cores: 64
        model: sd15             # glob(s) on the model name (preset, else the directory name)
        family: [sd-turbo, sdxl-turbo]  # the model's family (pipeline.family.FAMILIES), one or a list
        height: 512             # workload shape
        width: 512
        steps: 20
        precision: bf16         # as planned for this instance (bf16|fp32)
        backend: ipex           # (ipex|native|openvino)
      p50_s: 6.0                # required: median latency ceiling, seconds per image
      p90_s: 7.0                # optional: p90 ceiling (nearest rank; the slowest run below 10 runs)
      min_images_per_min: 20    # optional: the host's throughput floor, every instance of the plan at once
      min_runs: 10              # timed runs needed for a valid result (>= 5; default 5)
      confidence: 0.95          # of each bound of the median (default 0.95; in (0.5, 1))
      max_spread: 0.2           # optional: IQR/median above this -> inconclusive (the host is too noisy)
      bf16_max_diff: 0.08       # mean |bf16 - fp32| pixel difference in [0,1] (default 0.1)
      stock_check: false        # also measure stock in a fresh process (default false)
      fidelity:                 # optional, lossy plans (vae tiny, OpenVINO int8, quantize int8): the bound
                                #   their images must stay within
        relative_to: bf16       #   bf16 (default: at least bf16-vs-fp32's PSNR/SSIM) | none
        psnr_margin_db: 0       #   loosen the relative rule ([0, 100] dB)
        ssim_margin: 0          #   ([0, 2])
        min_psnr_db: 30         #   absolute floors (optional): [0, 100] dB, SSIM [-1, 1]
        min_ssim: 0.9
"""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from sdagent.atomicio import read_yaml
from sdagent.errors import BadInput
from sdagent.measuring.fidelity import FidelityBound
from sdagent.pipeline.family import FAMILIES
from sdagent.planning.settings import BACKENDS, PRECISIONS

#: At 95%, five runs are the fewest whose order statistics bound a median from both sides.
DEFAULT_MIN_RUNS = 5
DEFAULT_CONFIDENCE = 0.95
DEFAULT_BF16_MAX_DIFF = 0.1

ENTRY_KEYS = ("name", "description", "match", "p50_s", "p90_s", "min_images_per_min", "min_runs", "confidence",
              "max_spread",
              "bf16_max_diff", "stock_check", "fidelity")
MATCH_KEYS = ("isa", "cpu_model", "min_physical_cores", "max_physical_cores", "model", "family", "height",
              "width", "steps", "precision", "backend")


@dataclass(frozen=True)
class Match:
    """Conditions on the host and workload; every given condition must hold."""

    isa: tuple[str, ...] = ()
    cpu_model: str | None = None
    min_physical_cores: int | None = None
    max_physical_cores: int | None = None
    model: tuple[str, ...] = ()
    family: tuple[str, ...] = ()  # names from pipeline.family.FAMILIES; any of them matches
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    precision: str | None = None
    backend: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v not in (None, ())}


@dataclass(frozen=True)
class Target:
    name: str
    match: Match
    p50_s: float
    p90_s: float | None = None
    min_images_per_min: float | None = None
    min_runs: int = DEFAULT_MIN_RUNS
    confidence: float = DEFAULT_CONFIDENCE
    max_spread: float | None = None  # IQR/median bound; None: no bound
    bf16_max_diff: float = DEFAULT_BF16_MAX_DIFF
    stock_check: bool = False
    fidelity: FidelityBound | None = None  # lossy plans' bound (measuring.fidelity); None: the tuned or default
    description: str = ""
    source: str = ""  # "FILE#INDEX"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["match"] = self.match.to_dict()
        d["fidelity"] = self.fidelity.to_dict() if self.fidelity else None
        return d


@dataclass(frozen=True)
class HostKey:
    """What entries are matched against: host facts and the workload verify will run."""

    flags: tuple[str, ...]
    cpu_model: str
    physical_cores: int
    model: str
    height: int
    width: int
    steps: int
    precision: str
    backend: str
    family: str = "sd1"  # pipeline.family.detect_family's name for the model directory

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = list(self.flags)
        return d


# ---------------------------------------------------------------------------
# Parsing (strict)
# ---------------------------------------------------------------------------


class _Where:
    """Builds the one-line error message: file, entry, key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, entry: str | None, key: str | None, why: str) -> BadInput:
        parts = [f"targets file {self.path}"]
        if entry is not None:
            parts.append(f"entry {entry}")
        if key is not None:
            parts.append(f"key {key!r}")
        return BadInput(": ".join(parts) + f": {why}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _positive(v: Any, fail: Callable[[str], BadInput]) -> float:
    if not _is_number(v) or float(v) <= 0:
        raise fail(f"must be a number > 0, got {v!r}")
    return float(v)


def _int(v: Any, fail: Callable[[str], BadInput], minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise fail(f"must be an integer >= {minimum}, got {v!r}")
    return v


def _str_list(v: Any, fail: Callable[[str], BadInput]) -> tuple[str, ...]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x.strip() for x in items):
        raise fail(f"must be a string or a non-empty list of strings, got {v!r}")
    return tuple(x.strip() for x in items)


def _parse_match(raw: Any, fail: Callable[[str | None, str], BadInput]) -> Match:
    if not isinstance(raw, dict):
        raise fail("match", f"must be a mapping (use {{}} to match every host), got {type(raw).__name__}")
    kw: dict[str, Any] = {}
    for key, v in raw.items():
        f: Callable[[str], BadInput] = lambda why, k=key: fail(f"match.{k}", why)  # noqa: E731
        if key not in MATCH_KEYS:
            raise fail(f"match.{key}", f"unknown key (valid: {', '.join(MATCH_KEYS)})")
        if key == "isa":
            kw[key] = tuple(x.lower() for x in _str_list(v, f))
        elif key == "model":
            kw[key] = _str_list(v, f)
        elif key == "family":
            kw[key] = parse_family_list(v, f)
        elif key == "cpu_model":
            if not isinstance(v, str) or not v.strip():
                raise f(f"must be a non-empty string, got {v!r}")
            kw[key] = v.strip()
        elif key in ("min_physical_cores", "max_physical_cores", "height", "width", "steps"):
            kw[key] = _int(v, f)
        elif key in ("precision", "backend"):
            legal = PRECISIONS if key == "precision" else BACKENDS
            if v not in legal:
                raise f(f"must be {' or '.join(legal)}, got {v!r}")
            kw[key] = v
    m = Match(**kw)
    if m.min_physical_cores and m.max_physical_cores and m.min_physical_cores > m.max_physical_cores:
        raise fail("match.min_physical_cores", f"{m.min_physical_cores} is above max_physical_cores "
                                               f"{m.max_physical_cores}: the entry can never match")
    return m


def parse_family_list(v: Any, fail: Callable[[str], BadInput]) -> tuple[str, ...]:
    """`match.family`: one family name or a list of them, each a key of pipeline.family.FAMILIES
    (sd1, sd2, sd2-v, sd-turbo, sdxl, sdxl-turbo, lcm, lcm-sdxl). An unknown name is BadInput naming it
    and the known ones: a misspelt family would otherwise never match and hide behind exit 4."""
    names = _str_list(v, fail)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise fail(f"unknown family {unknown[0]!r} (known: {', '.join(FAMILIES)})")
    return names


def parse_targets(data: Any, path: str = "<targets>") -> tuple[Target, ...]:
    """Validate the loaded YAML; any unknown key, wrong type or non-positive ceiling is BadInput."""
    w = _Where(path)
    if isinstance(data, dict):
        extra = set(data) - {"targets"}
        if extra:
            raise w.fail(None, sorted(extra)[0], "unknown top-level key (expected a list, or a mapping "
                                                 "with the single key 'targets')")
        data = data.get("targets")
    if not isinstance(data, list) or not data:
        raise w.fail(None, None, "must hold a non-empty list of target entries")
    out: list[Target] = []
    names: set[str] = set()
    for i, raw in enumerate(data, start=1):
        label = f"#{i}"
        if not isinstance(raw, dict):
            raise w.fail(label, None, f"must be a mapping, got {type(raw).__name__}")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise w.fail(label, "name", f"required, a non-empty string (got {name!r})")
        label = f"#{i} {name!r}"

        def fail(key: str | None, why: str, label: str = label) -> BadInput:
            return w.fail(label, key, why)

        for key in raw:
            if key not in ENTRY_KEYS:
                raise fail(str(key), f"unknown key (valid: {', '.join(ENTRY_KEYS)})")
        if name in names:
            raise fail("name", "duplicate name: each entry needs its own")
        names.add(name)
        if "match" not in raw:
            raise fail("match", "required (use `match: {}` to match every host, knowing it hides exit 4)")
        if "p50_s" not in raw:
            raise fail("p50_s", "required: the median latency ceiling in seconds")

        def k(key: str) -> Callable[[str], BadInput]:
            return lambda why: fail(key, why)

        p50 = _positive(raw["p50_s"], k("p50_s"))
        p90 = _positive(raw["p90_s"], k("p90_s")) if raw.get("p90_s") is not None else None
        if p90 is not None and p90 < p50:
            raise fail("p90_s", f"{p90:g} is below p50_s {p50:g}: a p90 ceiling cannot be under the median's")
        ipm = (_positive(raw["min_images_per_min"], k("min_images_per_min"))
               if raw.get("min_images_per_min") is not None else None)
        min_runs = _int(raw.get("min_runs", DEFAULT_MIN_RUNS), k("min_runs"), minimum=5)  # see DEFAULT_MIN_RUNS
        conf = raw.get("confidence", DEFAULT_CONFIDENCE)
        if not _is_number(conf) or not 0.5 < float(conf) < 1:
            raise fail("confidence", f"must be a number in (0.5, 1), got {conf!r}")
        max_spread = _positive(raw["max_spread"], k("max_spread")) if raw.get("max_spread") is not None else None
        diff = _positive(raw.get("bf16_max_diff", DEFAULT_BF16_MAX_DIFF), k("bf16_max_diff"))
        if diff > 1:
            raise fail("bf16_max_diff", f"{diff:g} is above 1: pixel differences are on a [0, 1] scale")
        stock = raw.get("stock_check", False)
        if not isinstance(stock, bool):
            raise fail("stock_check", f"must be true or false, got {stock!r}")
        try:
            fid = FidelityBound.from_dict(raw["fidelity"], "bound") if raw.get("fidelity") is not None else None
        except BadInput as exc:
            raise fail("fidelity", str(exc)) from None
        desc = raw.get("description", "")
        if not isinstance(desc, str):
            raise fail("description", f"must be a string, got {desc!r}")
        out.append(Target(
            name=name, match=_parse_match(raw["match"], fail), p50_s=p50, p90_s=p90, min_images_per_min=ipm,
            min_runs=min_runs,
            confidence=float(conf), max_spread=max_spread, bf16_max_diff=diff, stock_check=stock, fidelity=fid, description=desc,
            source=f"{path}#{i}",
        ))
    return tuple(out)


def load_targets(path: str | os.PathLike[str]) -> tuple[Target, ...]:
    """Read and validate a targets file (YAML or JSON; a key given twice in a mapping is refused)."""
    p = Path(path)
    return parse_targets(read_yaml(p, "targets file"), str(p))


# ---------------------------------------------------------------------------
# Matching (pure)
# ---------------------------------------------------------------------------


def mismatches(m: Match, key: HostKey) -> list[str]:
    """Why `m` does not match `key` (empty: it matches)."""
    why: list[str] = []
    flags = set(f.lower() for f in key.flags)
    missing = [f for f in m.isa if f not in flags]
    if missing:
        why.append(f"lacks ISA {', '.join(missing)}")
    if m.cpu_model and m.cpu_model.lower() not in key.cpu_model.lower():
        why.append(f"CPU model is not *{m.cpu_model}*")
    if m.min_physical_cores is not None and key.physical_cores < m.min_physical_cores:
        why.append(f"{key.physical_cores} cores < {m.min_physical_cores}")
    if m.max_physical_cores is not None and key.physical_cores > m.max_physical_cores:
        why.append(f"{key.physical_cores} cores > {m.max_physical_cores}")
    if m.model and not any(fnmatch.fnmatchcase(key.model, pat) for pat in m.model):
        why.append(f"model {key.model!r} is not {'|'.join(m.model)}")
    if m.family and key.family not in m.family:
        why.append(f"family {key.family} is not {'|'.join(m.family)}")
    for attr in ("height", "width", "steps", "precision", "backend"):
        want = getattr(m, attr)
        if want is not None and getattr(key, attr) != want:
            why.append(f"{attr} {getattr(key, attr)} != {want}")
    return why


@dataclass(frozen=True)
class Selection:
    """The matching entry (or None) and, for each entry tried before it, why it did not match."""

    target: Target | None
    skipped: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)

    def explain(self) -> str:
        return "; ".join(f"{name}: {', '.join(why)}" for name, why in self.skipped)


def select_target(targets: tuple[Target, ...] | list[Target], key: HostKey) -> Selection:
    """The first entry of the targets file whose every match condition holds (ISA flags, CPU model, cores,
    model, family, size, steps, precision, backend) is the target; no entry matching fails."""
    skipped: list[tuple[str, tuple[str, ...]]] = []
    for t in targets:
        why = mismatches(t.match, key)
        if not why:
            return Selection(t, tuple(skipped))
        skipped.append((t.name, tuple(why)))
    return Selection(None, tuple(skipped))
