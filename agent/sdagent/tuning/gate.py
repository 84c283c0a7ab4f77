"""The fidelity gate in `sdagent tune`: a lossy candidate is measured only after its images pass it.

Issue 22 item 5: a lossy speedup (today: backend openvino with int8 or int8-hybrid weights,
planning.settings.OV_WEIGHTS; the native compiled UNet in int8, `quantize: int8`; and the tiny VAE, `vae: tiny`, issue 23 item 3) may be chosen only if its images stay within a fidelity bound of
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
    if settings.get("backend") == "native" and settings.get("compile") and settings.get("quantize") == "int8":
        return "the UNet in int8 (PT2E, X86InductorQuantizer)"
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


# ---------------------------------------------------------------------------
# The gate within tune's budget (issue 21 item 5: the budget is a hard ceiling)
# ---------------------------------------------------------------------------

#: The reason a lossy candidate is recorded with when its gate does not fit what the budget has left: it is then
#: neither gated nor measured nor shipped (never shipped ungated).
NOT_GATED_BUDGET = "not gated: budget"


class GateOverBudget(Exception):
    """The gate's next image would not fit the seconds it was given: the gate stops, the candidate is not shipped."""


def gate_images(spec: RunSpec, workloads: tuple[Workload, ...], bound: Any) -> tuple[tuple[RunSpec, Workload], ...]:
    """The (spec, workload) images fidelity_gate asks `images` for, in its order (pure): the fp32 reference's,
    the candidate's and, for a bound relative to bf16, bf16 autocast's. Honour check: tests/test_ov_gate.py
    compares it with the calls fidelity_gate makes."""
    ref = FP32_REFERENCE.on_host(spec.isa_flags)
    specs = [ref, spec] + ([bf16_reference(spec)] if bound.relative_to == "bf16" else [])
    return tuple((s, w) for s in specs for w in workloads)


@dataclass(frozen=True)
class ImageCost:
    """What one gate image costs, in seconds: `load_s` once per pipeline (spec) not loaded yet, `image_s` per
    image. Source: the tune's own measurements (the session takes stock's fresh process: its wall time less its
    images is the load and warm-up, its median latency one image)."""

    load_s: float
    image_s: float


def gate_cost_s(todo: tuple[tuple[RunSpec, Workload], ...], made: set[tuple[RunSpec, Workload]],
                cost: ImageCost) -> float:
    """Seconds the images of `todo` not in `made` take (pure): one load per spec with an image to make, plus
    one image each. Images already made (the fp32 reference's, once per tune) cost nothing."""
    new = [(s, w) for s, w in todo if (s, w) not in made]
    return len({s for s, _ in new}) * cost.load_s + len(new) * cost.image_s


@dataclass
class BudgetedImages:
    """`images` for fidelity_gate within a deadline: an image not made yet is started only if its estimated
    cost (ImageCost: a load for a spec not seen yet, plus the image) fits before `deadline` on `clock`;
    otherwise GateOverBudget. Every image made is remembered in `made` (the caller keeps it across
    candidates: the reference images are made once). The ceiling holds to the estimate's accuracy: an
    image in progress is not interrupted (the images are made in the tune process), and the estimate learns:
    an image is taken to cost at least the slowest one made so far (`seconds`, its load included)."""

    images: Images
    clock: Callable[[], float]
    deadline: float
    cost: ImageCost
    made: set[tuple[RunSpec, Workload]] = field(default_factory=set)
    seconds: list[float] = field(default_factory=list)  # each image made here, its load included

    def __call__(self, spec: RunSpec, w: Workload) -> Any:
        if (spec, w) in self.made:
            return self.images(spec, w)
        need = max([self.cost.image_s + (0.0 if any(s == spec for s, _ in self.made) else self.cost.load_s)]
                   + self.seconds)
        start = self.clock()
        if need > self.deadline - start:
            raise GateOverBudget(f"the next image ({spec.describe()}) needs ~{need:.0f} s, "
                                 f"{max(self.deadline - start, 0):.0f} s left")
        img = self.images(spec, w)
        self.seconds.append(self.clock() - start)
        self.made.add((spec, w))
        return img
