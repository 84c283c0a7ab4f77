"""Each ladder rung's image beside stock's: what a lossy rung (int8, the tiny VAE) costs in pixels, measured
in the same run as its time (issue 22 item 6: "the int8 candidates with their fidelity").

Every rung that runs sdagent's worker on whole images writes its first timed image (seed 0 of the workload,
measuring.runner.WorkerJob.image_out); the vanilla rung's is the fp32 reference (stock's compute path,
runspec.FP32_REFERENCE, at the same seed, prompt, size and steps). Each rung's image is compared with it by
measuring.fidelity (PSNR and SSIM through scikit-image): lossless rungs read ~inf dB or fp32 round-off, bf16
rungs show the deviation the field accepts, int8 rungs theirs. One image per rung: the ladder's figure is a
reading, not the gate (tuning.gate decides on two seeds and a bound); the DPM rung uses another scheduler,
so its figure is not a precision's cost. The OpenVINO GenAI peer runs its own worker and writes no image.

Pure but for reading the PNGs (:func:`rung_fidelity`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from sdagent.measuring import ladder as L
from sdagent.measuring.runner import WorkerJob


def image_name(rung: str) -> str:
    """The rung's image file name: its name with every run of other characters than [A-Za-z0-9.-] as '_'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", rung).strip("_") + ".png"


def with_images(rungs: Sequence[L.Rung], image_dir: str | None) -> list[L.Rung]:
    """The rungs, each whole-image sdagent worker job told to write its image into `image_dir` (None: as
    they are)."""
    if not image_dir:
        return list(rungs)
    return [replace(r, job=replace(r.job, image_out=str(Path(image_dir) / image_name(r.name))))
            if isinstance(r.job, WorkerJob) and not r.job.unet_only and not r.unavailable else r for r in rungs]


def rung_fidelity(rungs: Sequence[L.Rung], outcomes: Mapping[str, L.RungOutcome]) -> dict[str, dict[str, Any]]:
    """Per rung that ran and wrote an image: its measuring.fidelity.Fidelity (to_dict()) against the vanilla
    rung's image; {} when vanilla wrote none (not run, failed, or no image directory)."""
    from PIL import Image

    from sdagent.measuring.fidelity import measure

    def load(r: L.Rung) -> Any | None:
        path = getattr(r.job, "image_out", None)
        o = outcomes.get(r.name)
        if not path or o is None or not o.samples or not Path(path).is_file():
            return None
        with Image.open(path) as im:
            return im.convert("RGB").copy()

    by_name = {r.name: r for r in rungs}
    ref = load(by_name[L.VANILLA]) if L.VANILLA in by_name else None
    if ref is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for r in rungs:
        img = load(r) if r.name != L.VANILLA else None
        if img is not None and img.size == ref.size:
            out[r.name] = measure([img], [ref], "the vanilla rung's image (fp32 stock, seed 0)").to_dict()
    return out


def fidelity_cell(fid: Mapping[str, Any] | None) -> str:
    """The table's cell: 'PSNR 31.2 dB, SSIM 0.912', '–' where not measured."""
    if not fid:
        return "–"
    psnr = fid.get("psnr_db")
    p = "identical" if psnr in ("inf", float("inf")) else f"PSNR {float(psnr):.1f} dB"
    return f"{p}, SSIM {float(fid.get('ssim')):.3f}"
