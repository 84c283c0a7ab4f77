"""The fidelity gate in `sdagent tune`: a lossy candidate is measured only after its images pass it.

Issue 22 item 5: a lossy speedup (today: backend openvino with int8 or int8-hybrid weights,
planning.settings.OV_WEIGHTS, and the tiny VAE, `vae: tiny`, issue 23 item 3) may be chosen only if its images stay within a fidelity bound of
the fp32 reference on fixed seeds and prompts. The measure and the rule are
measuring.fidelity's (PSNR/SSIM through scikit-image, the worst image, by default no further from
fp32 than bf16 is); this module decides *which* candidates are gated, on *which* images, and
makes them:

* :func:`lossy`: why a candidate's settings are lossy (None: they are not, no gate).
* :func:`gate_workloads`: the fixed images: the tune's workload (size, steps, scheduler, guidance)
  at seeds 0 and 1, with the workload's prompt and :data:`GATE_PROMPTS`' second one (none of
  them among pipeline/ov_hybrid.py's calibration prompts: the gate is not judged on the data the
  quantizer saw).
* :func:`fidelity_gate`: the candidate's images, the fp32 reference's (runspec.FP32_REFERENCE:
  stock's compute path) and, for a bound relative to bf16, native bf16 autocast's, compared.
  Pure given its ``images(spec, workload) -> HxWx3 array`` (injected: the session makes them in
  the tune process, :class:`InProcessImages`; tests fake them).

A candidate that fails is reported with its figures (the search records it as failed with the
gate's reason) and never measured or shipped; one that passes is measured like any other, and
its figures stay in the tune record beside its speed.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sdagent.pipeline.workload import Workload
from sdagent.planning.runspec import FP32_REFERENCE, RunSpec

#: The gate's images: (prompt or None for the workload's own, seed). Source: issue 22 item 5 ("fixed seeds
#: and prompts"); two images keep the tune cheap, and the gate takes the worst of them.
GATE_PROMPTS: tuple[tuple[str | None, int], ...] = (
    (None, 0),
    ("a lighthouse on a cliff at dusk, oil painting", 1),
)

#: (spec, workload) -> the image as a float array HxWx3 in [0, 1]
Images = Callable[[RunSpec, Workload], Any]


def lossy(settings: Mapping[str, Any]) -> str | None:
    """Why a candidate with these settings changes pixels beyond its precision (None: it does not)."""
    if settings.get("vae") == "tiny":
        return "the tiny VAE (AutoencoderTiny, MODEL/vae_tiny)"
    weights = settings.get("ov_weights", "full")
    if settings.get("backend") == "openvino" and weights not in (None, "full"):
        return f"OpenVINO {weights} weights"
    return None


def gate_workloads(w: Workload) -> tuple[Workload, ...]:
    """The fixed images the gate compares, at the tune's workload (pure)."""
    return tuple(Workload(**{**w.to_dict(), "prompt": p or w.prompt, "seed": s}) for p, s in GATE_PROMPTS)


def bf16_reference(spec: RunSpec) -> RunSpec:
    """bf16 autocast on stock's path (native, eager): the deviation from fp32 the field accepts."""
    return RunSpec("native", "bf16", False, False, FP32_REFERENCE.weights_prepack, spec.isa_flags)


def fidelity_gate(spec: RunSpec, workloads: tuple[Workload, ...], images: Images, bound: Any) -> Any:
    """measuring.fidelity.passes_gate for `spec`'s images against the fp32 reference's (and bf16's when the
    bound is relative to it). Returns a measuring.fidelity.GateDecision; BadInput from measure() on
    images it cannot compare."""
    from sdagent.measuring.fidelity import measure, passes_gate

    ref_spec = FP32_REFERENCE.on_host(spec.isa_flags)
    refs = [images(ref_spec, w) for w in workloads]
    where = (f"the fp32 reference ({ref_spec.describe()}); {workloads[0].width}x{workloads[0].height}, "
             f"{workloads[0].steps} steps, seeds {', '.join(str(w.seed) for w in workloads)}")
    fid = measure([images(spec, w) for w in workloads], refs, where)
    bf16 = None
    if bound.relative_to == "bf16":
        b = bf16_reference(spec)
        bf16 = measure([images(b, w) for w in workloads], refs, where)
    return passes_gate(fid, bound, bf16)


@dataclass
class InProcessImages:
    """`images` for fidelity_gate: each spec's pipeline loaded once in this process (sdagent.pipeline.backends
    .ready, the export built there when missing), its images kept by (spec, workload); `close()` frees them.

    In the tune process, not a worker: the gate runs before a candidate is measured, and the images must
    be compared in one place; close() frees the pipelines before the next measurement."""

    model_dir: str
    store_dir: str | None = None
    pipelines: dict[RunSpec, Any] = field(default_factory=dict)
    made: dict[tuple[RunSpec, Workload], Any] = field(default_factory=dict)

    def __call__(self, spec: RunSpec, w: Workload) -> Any:
        if (spec, w) not in self.made:
            from sdagent.pipeline.backends import ready

            if spec not in self.pipelines:
                self.pipelines[spec] = ready(self.model_dir, spec, w, self.store_dir)
            self.made[(spec, w)] = self.pipelines[spec].generate(w).array
        return self.made[(spec, w)]

    def close(self) -> None:
        """Drop the pipelines (the images stay: the next candidate's gate reuses the references')."""
        self.pipelines.clear()
        gc.collect()
