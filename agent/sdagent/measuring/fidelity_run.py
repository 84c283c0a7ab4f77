"""The fidelity gate's images: made in this process, on fixed seeds and the workload's prompt, and judged.

measuring/fidelity.py is the pure rule; this is its edge: it loads pipelines (pipeline.backends.ready)
and generates the images a lossy candidate is judged on. The fp32 reference (``FP32_REFERENCE``:
stock's compute path, fp32 eager, the model's full VAE) and, for the default bound, bf16's images on
the same path are made once per judge and reused for every candidate.

Seeds: ``workload.seed + i`` for i in 0..n_images-1 (:data:`GATE_IMAGES`, 2 by default), one prompt
(the workload's): the same for the reference, bf16 and every candidate, so pixels differ only by the
candidate's change.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field, replace
from typing import Any

from sdagent.measuring.fidelity import DEFAULT_BOUND, Fidelity, FidelityBound, GateDecision, measure, passes_gate
from sdagent.pipeline.workload import Workload
from sdagent.planning.runspec import FP32_REFERENCE, RunSpec

#: Images per gate: two seeds, so one lucky image does not pass a candidate (the gate takes the worst).
GATE_IMAGES = 2


def make_images(model_dir: str, spec: RunSpec, workload: Workload, n_images: int,
                store_dir: str | None = None) -> list[Any]:
    """n images (float HxWx3 in [0, 1]) of `spec` on seeds workload.seed .. + n - 1, in this process."""
    from sdagent.pipeline.backends import ready

    prepared = ready(model_dir, spec, workload, store_dir)
    try:
        return [prepared.generate(workload, seed=workload.seed + i).array for i in range(n_images)]
    finally:
        del prepared
        gc.collect()


def reference_words(workload: Workload, n_images: int) -> str:
    """What the candidate is compared with, in words (the Fidelity record's `reference`)."""
    seeds = f"seed {workload.seed}" if n_images == 1 else f"seeds {workload.seed}-{workload.seed + n_images - 1}"
    return (f"fp32 reference (fp32 eager, full VAE; {seeds}, {workload.width}x{workload.height}, "
            f"{workload.steps} steps)")


@dataclass
class FidelityJudge:
    """Judges lossy candidates of one tune (or verify) against one set of reference images."""

    model_dir: str
    workload: Workload
    isa_flags: tuple[str, ...]
    bound: FidelityBound = DEFAULT_BOUND
    n_images: int = GATE_IMAGES
    store_dir: str | None = None
    _reference: list[Any] | None = field(default=None, repr=False)
    _bf16: Fidelity | None = field(default=None, repr=False)

    @property
    def words(self) -> str:
        return reference_words(self.workload, self.n_images)

    def reference(self) -> list[Any]:
        if self._reference is None:
            self._reference = make_images(self.model_dir, FP32_REFERENCE.on_host(self.isa_flags), self.workload,
                                          self.n_images, self.store_dir)
        return self._reference

    def fidelity_of(self, spec: RunSpec) -> Fidelity:
        """The candidate's images against the reference's."""
        images = make_images(self.model_dir, spec, self.workload, self.n_images, self.store_dir)
        return measure(images, self.reference(), self.words)

    def bf16(self) -> Fidelity:
        """bf16 on the reference's own path (eager, full VAE) against the fp32 images: what the field accepts."""
        if self._bf16 is None:
            self._bf16 = self.fidelity_of(replace(FP32_REFERENCE, precision="bf16").on_host(self.isa_flags))
        return self._bf16

    def judge(self, spec: RunSpec) -> GateDecision:
        """passes_gate on the candidate's images (bf16's measured too when the bound is relative to it)."""
        fid = self.fidelity_of(spec)
        return passes_gate(fid, self.bound, self.bf16() if self.bound.relative_to == "bf16" else None)
