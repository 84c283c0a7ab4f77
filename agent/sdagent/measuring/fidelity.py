"""The quality gate for lossy speedups: PSNR and SSIM of a candidate's images against the fp32 reference's.

A *lossy* candidate (an int8 UNet, the tiny autoencoder) changes pixels. It may win a tune only if
its images, made from the same seeds, prompts and workload as the **fp32 reference** (stock's
compute path: fp32 eager, the full VAE), stay within a :class:`FidelityBound`. Pure functions:
images in, a frozen record out; the images are made elsewhere (a worker), so this module never
loads a model.

Measures (scikit-image, a well-kept library, rather than our own arithmetic):

* **PSNR** (dB), ``skimage.metrics.peak_signal_noise_ratio`` with ``data_range=1`` on images
  scaled to [0, 1]: ``10 log10(1 / MSE)``. Identical images give ``inf``.
* **SSIM**, ``skimage.metrics.structural_similarity`` with ``channel_axis=-1`` and ``data_range=1``
  (Wang et al. 2004, 7x7 uniform window, scikit-image's defaults): in [-1, 1], 1 for identical images.

Both are taken per image pair; the record keeps every pair's figures and gates on the **worst**
pair (the lowest PSNR, the lowest SSIM), so one broken image is enough to fail.

**The default bound and its source.** Issue 22, item 5: a lossy candidate is chosen only if its
images stay within a bound of the fp32 reference, "against the same measure of bf16 vs fp32, which
the field already accepts": bf16 autocast is what every fast CPU recipe (IPEX's, the Hugging Face
demo's, this project's default plan where bf16 is native) ships. So the default bound is
*relative*: the candidate's worst PSNR and SSIM against fp32 must be at least bf16's against the
same fp32 images (margins 0 dB and 0). Targets or ``--fidelity-bound`` may loosen the margins or
set absolute floors (``min_psnr_db``, ``min_ssim``) instead; no absolute default is shipped, since
none was measured here.

Records: :class:`Fidelity` (``sdagent-fidelity/1``), :class:`FidelityBound`
(``sdagent-fidelity-bound/1``) and :class:`GateDecision`, each with ``to_dict``/``from_dict``.
PSNR ``inf`` is written as the string ``"inf"`` (JSON has no infinity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np

from sdagent.errors import BadInput

FIDELITY_FORMAT = "sdagent-fidelity/1"
BOUND_FORMAT = "sdagent-fidelity-bound/1"

#: SSIM's default 7x7 window (scikit-image) needs images at least this many pixels a side.
MIN_SIDE = 7

#: Ranges a bound's fields must lie in (inclusive). PSNR: 100 dB is an MSE of 1e-10 on [0, 1],
#: below what fp32 rounding of a decoded image resolves; SSIM is at most 1 (identical images).
#: Margins: a PSNR margin above 100 dB or an SSIM margin above 2 (SSIM's whole [-1, 1] span) would
#: accept anything, which is not a bound.
BOUND_RANGES: dict[str, tuple[float, float]] = {
    "min_psnr_db": (0.0, 100.0),
    "min_ssim": (-1.0, 1.0),
    "psnr_margin_db": (0.0, 100.0),
    "ssim_margin": (0.0, 2.0),
}
RELATIVE_TO = ("bf16", "none")


def _fmt_psnr(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.1f}"


def _enc(v: float) -> float | str:
    return "inf" if isinstance(v, float) and math.isinf(v) else v


def _dec(v: Any) -> float:
    return math.inf if v == "inf" else float(v)


@dataclass(frozen=True)
class Fidelity:
    """How close a candidate's images are to the reference's.

    psnr_db: the lowest PSNR over the image pairs, dB (``inf``: every pair identical).
    ssim: the lowest SSIM over the pairs, in [-1, 1].
    n_images: pairs compared. reference: what the candidate was compared with, in words
    ("fp32 eager, full VAE; seeds 0-1; 64x64, 2 steps"). per_image: (psnr_db, ssim) per pair.
    """

    psnr_db: float
    ssim: float
    n_images: int
    reference: str
    per_image: tuple[tuple[float, float], ...] = ()
    format: str = FIDELITY_FORMAT

    def describe(self) -> str:
        """`PSNR 31.2 dB / SSIM 0.930 vs <reference>` (the worst of n images)."""
        return (f"PSNR {_fmt_psnr(self.psnr_db)} dB / SSIM {self.ssim:.3f} vs {self.reference}"
                f" (worst of {self.n_images} image{'s' if self.n_images != 1 else ''})")

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "psnr_db": _enc(self.psnr_db), "ssim": self.ssim,
                "n_images": self.n_images, "reference": self.reference,
                "per_image": [[_enc(p), s] for p, s in self.per_image]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Fidelity":
        if d.get("format") != FIDELITY_FORMAT:
            raise BadInput(f"fidelity record format {d.get('format')!r} is not {FIDELITY_FORMAT}")
        return cls(psnr_db=_dec(d["psnr_db"]), ssim=float(d["ssim"]), n_images=int(d["n_images"]),
                   reference=str(d["reference"]),
                   per_image=tuple((_dec(p), float(s)) for p, s in d.get("per_image", ())))


@dataclass(frozen=True)
class FidelityBound:
    """What a lossy candidate must reach. Every condition given must hold.

    relative_to: "bf16" (default): worst PSNR >= bf16's worst PSNR vs the same fp32 images minus
    psnr_margin_db, and worst SSIM >= bf16's minus ssim_margin; "none": only the absolute floors.
    min_psnr_db / min_ssim: absolute floors (None: not checked). Ranges: :data:`BOUND_RANGES`.
    """

    relative_to: str = "bf16"
    psnr_margin_db: float = 0.0
    ssim_margin: float = 0.0
    min_psnr_db: float | None = None
    min_ssim: float | None = None
    format: str = BOUND_FORMAT

    def __post_init__(self) -> None:
        check_bound(self)

    def describe(self) -> str:
        parts = []
        if self.relative_to == "bf16":
            parts.append(f"at least bf16-vs-fp32's PSNR - {self.psnr_margin_db:g} dB and SSIM - {self.ssim_margin:g}")
        if self.min_psnr_db is not None:
            parts.append(f"PSNR >= {self.min_psnr_db:g} dB")
        if self.min_ssim is not None:
            parts.append(f"SSIM >= {self.min_ssim:g}")
        return "bound: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "fidelity bound") -> "FidelityBound":
        """A bound from a mapping (a targets entry's `fidelity`, a plan's record); BadInput names the key."""
        if not isinstance(d, Mapping):
            raise BadInput(f"{where}: must be a mapping of {', '.join(BOUND_KEYS)}, got {type(d).__name__}")
        unknown = sorted(set(d) - set(BOUND_KEYS) - {"format"})
        if unknown:
            raise BadInput(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(BOUND_KEYS)})")
        if d.get("format", BOUND_FORMAT) != BOUND_FORMAT:
            raise BadInput(f"{where}: format {d.get('format')!r} is not {BOUND_FORMAT}")
        kw: dict[str, Any] = {}
        for key in BOUND_KEYS:
            if key in d and d[key] is not None:
                kw[key] = d[key] if key == "relative_to" else _number(d[key], f"{where}: {key}")
        return cls(**kw)


BOUND_KEYS = ("relative_to", "psnr_margin_db", "ssim_margin", "min_psnr_db", "min_ssim")

#: The bound's keys and ranges in words, for --help (made from BOUND_RANGES, the ranges checked).
BOUND_HELP = (
    "Keys: relative_to=bf16|none (default bf16: at least bf16-vs-fp32's PSNR and SSIM on the same images, the "
    "deviation the field accepts, issue 22), psnr_margin_db and ssim_margin (loosen the relative rule; default "
    "0), min_psnr_db and min_ssim (absolute floors). Ranges: "
    + ", ".join(f"{k} [{lo:g}, {hi:g}]" for k, (lo, hi) in BOUND_RANGES.items())
    + "; outside them: exit 2.")


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise BadInput(f"{what}: {v!r} is not a number")
    try:
        x = float(v)
    except ValueError:
        raise BadInput(f"{what}: {v!r} is not a number") from None
    if not math.isfinite(x):
        raise BadInput(f"{what}: {v!r} is not a finite number")
    return x


def check_bound(b: FidelityBound) -> None:
    """Range check of every field (BadInput, one line naming the field, the value and its range)."""
    if b.relative_to not in RELATIVE_TO:
        raise BadInput(f"fidelity bound relative_to {b.relative_to!r}: must be one of {', '.join(RELATIVE_TO)}")
    for name, (lo, hi) in BOUND_RANGES.items():
        v = getattr(b, name)
        if v is None:
            continue
        x = _number(v, f"fidelity bound {name}")
        if not lo <= x <= hi:
            raise BadInput(f"fidelity bound {name}={x:g} is outside its range [{lo:g}, {hi:g}]")
    if b.relative_to == "none" and b.min_psnr_db is None and b.min_ssim is None:
        raise BadInput("fidelity bound relative_to=none needs min_psnr_db or min_ssim: otherwise it bounds nothing")


def parse_bound(text: str) -> FidelityBound:
    """`KEY=VALUE[,KEY=VALUE...]` (the `--fidelity-bound` option) -> a bound; BadInput on a bad pair.

    Giving an absolute floor without `relative_to` keeps the default relative rule too.
    """
    d: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"fidelity bound {part!r}: expected KEY=VALUE (keys: {', '.join(BOUND_KEYS)})")
        if key.strip() in d:
            raise BadInput(f"fidelity bound {text!r}: {key.strip()!r} given twice")
        d[key.strip()] = value.strip()
    if not d:
        raise BadInput(f"fidelity bound {text!r} is empty (keys: {', '.join(BOUND_KEYS)})")
    return FidelityBound.from_dict(d, where="--fidelity-bound")


@dataclass(frozen=True)
class GateDecision:
    """passes_gate's answer: whether the candidate may ship, and the one-line reason with the figures."""

    passed: bool
    reason: str
    fidelity: Fidelity
    bound: FidelityBound
    bf16: Fidelity | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "fidelity": self.fidelity.to_dict(),
                "bound": self.bound.to_dict(), "bf16": self.bf16.to_dict() if self.bf16 else None}


def _to_unit(img: Any) -> np.ndarray:
    """An image (HxWxC or HxW; uint8, or float in [0, 1]; a PIL image) as float64 HxWxC in [0, 1]."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    else:
        a = a.astype(np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise BadInput(f"an image must be HxW or HxWxC, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise BadInput("an image holds NaN or Inf: fidelity is undefined")
    if a.min() < -1e-6 or a.max() > 1 + 1e-6:
        raise BadInput(f"a float image must be on the [0, 1] scale, got [{a.min():.3g}, {a.max():.3g}]")
    return np.clip(a, 0.0, 1.0)


def pair_fidelity(candidate: Any, reference: Any) -> tuple[float, float]:
    """(PSNR dB, SSIM) of one image against its reference (same shape; see the module's measures)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = _to_unit(candidate), _to_unit(reference)
    if a.shape != b.shape:
        raise BadInput(f"candidate image {a.shape} and reference image {b.shape} differ in shape")
    if min(a.shape[:2]) < MIN_SIDE:
        raise BadInput(f"images of {a.shape[1]}x{a.shape[0]} are below SSIM's {MIN_SIDE}x{MIN_SIDE} window")
    if np.array_equal(a, b):
        return math.inf, 1.0
    psnr = float(peak_signal_noise_ratio(b, a, data_range=1.0))
    ssim = float(structural_similarity(b, a, data_range=1.0, channel_axis=-1))
    return psnr, ssim


def measure(candidates: Sequence[Any], references: Sequence[Any], reference: str) -> Fidelity:
    """Fidelity of candidate images against reference images, paired in order (seed i with seed i)."""
    if len(candidates) != len(references):
        raise BadInput(f"{len(candidates)} candidate images against {len(references)} reference images")
    if not candidates:
        raise BadInput("no images to compare: the fidelity gate needs at least one")
    pairs = tuple(pair_fidelity(c, r) for c, r in zip(candidates, references))
    return Fidelity(psnr_db=min(p for p, _ in pairs), ssim=min(s for _, s in pairs), n_images=len(pairs),
                    reference=reference, per_image=pairs)


def passes_gate(fidelity: Fidelity, bound: FidelityBound, bf16: Fidelity | None = None) -> GateDecision:
    """The rule: a lossy candidate ships only if every condition of ``bound`` holds on its worst image.

    Reason (issue 22, item 5): the field accepts bf16's deviation from fp32, so by default a
    candidate must be no further from the fp32 reference than bf16 is (``bf16``: bf16's fidelity
    against the same reference images). A relative bound without a bf16 measurement fails closed.
    Honour check: :func:`tests.test_fidelity` feeds figures on each side of each condition.
    """
    fails: list[str] = []
    if bound.relative_to == "bf16":
        if bf16 is None:
            fails.append("no bf16-vs-fp32 measurement to compare with")
        else:
            need_p = bf16.psnr_db - bound.psnr_margin_db
            need_s = bf16.ssim - bound.ssim_margin
            if fidelity.psnr_db < need_p:
                fails.append(f"PSNR {_fmt_psnr(fidelity.psnr_db)} dB < bf16's {_fmt_psnr(bf16.psnr_db)}"
                             f" - {bound.psnr_margin_db:g} dB")
            if fidelity.ssim < need_s:
                fails.append(f"SSIM {fidelity.ssim:.3f} < bf16's {bf16.ssim:.3f} - {bound.ssim_margin:g}")
    if bound.min_psnr_db is not None and fidelity.psnr_db < bound.min_psnr_db:
        fails.append(f"PSNR {_fmt_psnr(fidelity.psnr_db)} dB < {bound.min_psnr_db:g} dB")
    if bound.min_ssim is not None and fidelity.ssim < bound.min_ssim:
        fails.append(f"SSIM {fidelity.ssim:.3f} < {bound.min_ssim:g}")
    figures = fidelity.describe()
    if bf16 is not None:
        figures += f"; bf16: PSNR {_fmt_psnr(bf16.psnr_db)} dB / SSIM {bf16.ssim:.3f}"
    if fails:
        return GateDecision(False, f"fails the fidelity gate ({'; '.join(fails)}): {figures}, {bound.describe()}",
                            fidelity, bound, bf16)
    return GateDecision(True, f"passes the fidelity gate: {figures}, {bound.describe()}", fidelity, bound, bf16)


DEFAULT_BOUND = FidelityBound()
