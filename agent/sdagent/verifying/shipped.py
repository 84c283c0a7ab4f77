"""The fidelity a lossy plan was shipped with, read from its tune record (issue 22 item 5: "the plan and verify
report the measured fidelity beside the speed").

verify measures a lossy plan's images again (verifying.checks.check_fidelity); this module adds what tune's gate
measured when it chose the plan, and the speed it won with, so a report shows both side by side. Pure: the plan's
`tuning` record in, a frozen record (`sdagent-shipped-fidelity/1`) or None out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

SHIPPED_FORMAT = "sdagent-shipped-fidelity/1"


@dataclass(frozen=True)
class ShippedFidelity:
    """tune's gate decision for the candidate it shipped.

    candidate: the chosen candidate's name. psnr_db / ssim: its worst image against the fp32 reference (PSNR in
    dB, or the string "inf" as measuring.fidelity writes it). bf16_psnr_db / bf16_ssim: bf16's against the same
    images (None for an absolute bound). bound: measuring.fidelity.FidelityBound.to_dict(). x_vs_stock: tune's
    speed against stock (stock's median seconds / the chosen's; the paired figure where tune has it; None when
    not recorded). reason: the gate's line with its figures.
    """

    candidate: str
    psnr_db: float | str
    ssim: float
    bf16_psnr_db: float | str | None
    bf16_ssim: float | None
    bound: Mapping[str, Any]
    x_vs_stock: float | None
    reason: str
    format: str = SHIPPED_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bound"] = dict(self.bound)
        return d

    def line(self) -> str:
        """`shipped by tune with PSNR 39.9 dB / SSIM 0.999 (bf16: 33.9 dB / 0.997), 1.50x stock's speed; bound: ...`"""
        def db(v: float | str | None) -> str:
            return v if isinstance(v, str) else f"{v:.1f}"

        bf16 = f" (bf16: {db(self.bf16_psnr_db)} dB / {self.bf16_ssim:.3f})" if self.bf16_ssim is not None else ""
        speed = f", {self.x_vs_stock:.2f}x stock's speed" if self.x_vs_stock is not None else ""
        return (f"shipped by tune ({self.candidate}) with PSNR {db(self.psnr_db)} dB / SSIM {self.ssim:.3f}{bf16}"
                f"{speed}; {self.reason.rsplit(', bound: ', 1)[-1] if ', bound: ' in self.reason else ''}").rstrip("; ")


def shipped_fidelity(tuning: Mapping[str, Any] | None) -> ShippedFidelity | None:
    """The gate decision of the candidate tune chose, from the plan's `tuning` record (None: no record, the chosen
    candidate was not gated, or the record lacks the figures: a plan set by hand is not 'shipped by tune')."""
    if not tuning:
        return None
    chosen = tuning.get("chosen")
    gate = (tuning.get("fidelity") or {}).get(chosen)
    if not isinstance(gate, Mapping) or not gate.get("passed") or not isinstance(gate.get("fidelity"), Mapping):
        return None
    fid, bf16 = gate["fidelity"], gate.get("bf16") or {}
    backends = tuning.get("backends") or {}
    x = None
    if backends.get("chosen") == chosen:
        x = backends.get("paired_x_vs_stock") or backends.get("x_vs_stock")
    return ShippedFidelity(candidate=str(chosen), psnr_db=fid.get("psnr_db"), ssim=float(fid.get("ssim")),
                           bf16_psnr_db=bf16.get("psnr_db"), bf16_ssim=bf16.get("ssim"),
                           bound=dict(gate.get("bound") or {}), x_vs_stock=None if x is None else float(x),
                           reason=str(gate.get("reason", "")))
