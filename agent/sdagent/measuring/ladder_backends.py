"""The ladder's backend rungs (issue 22 item 6): each backend as the plan in force would run it.

`tune` measures the backends against each other on the host (tuning.backends); the ladder shows them side by side
at the published workload, beside stock, the shipped plan and the OpenVINO GenAI peer (which stays as it is: the
peer with its defaults). Each rung is the plan in force with the backend's settings on top (its preloads, threads
and pinning kept, as a tuned plan of that backend would have them), run by sdagent's own worker:

* `backend: native eager` and `backend: native compiled` (the AOTInductor packages, built or loaded before round 1);
* `backend: openvino fp32`, and `backend: openvino bf16` where the CPU has native bf16 (AVX512-BF16 or AMX);
* `backend: native int8`: the compiled packages with the UNet quantized by PT2E (pipeline/quantize.py), lossy;
  `backend: native int8-mixed-bf16`, the same UNet with bf16 between its int8 ops, where the CPU has native bf16;
* `backend: openvino int8` (int8 weights) and `backend: openvino int8-hybrid` (NNCF's hybrid quantization of the
  UNet), lossy.

Every rung's image is compared with stock's in the same run (measuring.ladder_fidelity: the table's last
column); the openvino int8 rung also quotes the plan's tune's gate where its tune gated one (tuning.gate).

The openvino rungs run in the Python that has OpenVINO GenAI: this one where it does, else the OpenVINO venv's
(peers.ovexport.openvino_python). Pure but for :func:`backend_rungs`' one look at which Python that is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sdagent.errors import SdagentError
from sdagent.measuring import ladder as L
from sdagent.measuring.runner import WorkerJob, worker_cmd
from sdagent.planning.launch import plan_launch
from sdagent.planning.plan import Plan

PREFIX = "backend: "

#: (rung name, the settings put on the plan in force). Source: issue 22 items 4 and 6 (the backends tune measures).
BACKEND_VARIANTS: tuple[tuple[str, Mapping[str, Any]], ...] = (
    (PREFIX + "native eager", {"backend": "native", "compile": False}),
    (PREFIX + "native compiled", {"backend": "native", "compile": True}),
    (PREFIX + "native int8", {"backend": "native", "compile": True, "precision": "fp32", "quantize": "int8"}),
    (PREFIX + "native int8-mixed-bf16", {"backend": "native", "compile": True, "precision": "bf16",
                                         "quantize": "int8"}),
    (PREFIX + "openvino fp32", {"backend": "openvino", "precision": "fp32", "ov_weights": "full"}),
    (PREFIX + "openvino bf16", {"backend": "openvino", "precision": "bf16", "ov_weights": "full"}),
    (PREFIX + "openvino int8", {"backend": "openvino", "ov_weights": "int8"}),
    (PREFIX + "openvino int8-hybrid", {"backend": "openvino", "precision": "fp32", "ov_weights": "int8-hybrid"}),
)


@dataclass(frozen=True)
class BackendRungSpec:
    """One backend rung before it is planned: its name, settings, and why it cannot run here (None: it can)."""

    name: str
    overrides: Mapping[str, Any]
    unavailable: str | None


def backend_rung_specs(native_bf16: bool, with_compile: bool, compile_why: str, with_openvino: bool,
                       openvino_python: str | None, int8: bool = True) -> list[BackendRungSpec]:
    """The backend rungs on a host (pure): every one of BACKEND_VARIANTS, each with the reason it is skipped.
    `int8`: the native int8 UNet can be made (torchao installed: pipeline.quantize.available)."""
    out = []
    for name, overrides in BACKEND_VARIANTS:
        why = None
        if overrides.get("compile") and not with_compile:
            why = compile_why
        elif overrides.get("quantize") == "int8" and not int8:
            why = "skipped: no torchao in this Python (the native extra installs it) for the int8 UNet"
        elif overrides.get("precision") == "bf16" and not native_bf16:
            why = "skipped: no native bf16 on this CPU (AVX512-BF16 or AMX)"
        elif overrides.get("backend") == "openvino":
            if not with_openvino:
                why = "skipped: the OpenVINO rungs are off (--quick or --no-openvino)"
            elif openvino_python is None:
                why = ("skipped: no Python with OpenVINO GenAI (bash -c 'source scripts/lib.sh; venv_openvino "
                       "~/.cache/sdagent/venv-openvino')")
        out.append(BackendRungSpec(name, overrides, why))
    return out


def int8_gate(tuning: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The plan's tune's gate decision for its OpenVINO int8 candidate (GateDecision.to_dict(), or tune's
    "not gated: budget" entry), or None when its tune gated none."""
    if not tuning:
        return None
    gates = tuning.get("fidelity") or {}
    for c in tuning.get("candidates") or ():
        ov = dict(c.get("overrides") or {})
        if ov.get("ov_weights") == "int8" and c.get("name") in gates:
            return dict(gates[c["name"]])
    return None


def fidelity_words(gate: Mapping[str, Any] | None) -> str:
    """The int8 rung's fidelity beside its time, in words (the gate's reason carries its PSNR/SSIM and bound)."""
    if gate is None:
        return ("its image against stock's: the last column (the plan's tune gated no int8 candidate; "
                "`sdagent tune --axis 'OpenVINO weights'` does)")
    return f"fidelity (tune's gate): {gate.get('reason')}"


def openvino_worker_python(environ: Mapping[str, str]) -> str | None:
    """This Python where it has OpenVINO GenAI, else the OpenVINO venv's (None: neither)."""
    import sys

    from sdagent.pipeline.ov_backend import openvino_status
    from sdagent.peers.ovexport import openvino_python

    return sys.executable if openvino_status().usable else openvino_python(environ)


def backend_rungs(plan: Plan, plan_with: Callable[[dict[str, Any]], Plan], model: str, req: Any,
                  environ: Mapping[str, str], ov_python: str | None = None) -> list[L.Rung]:
    """The backend rungs: each spec planned on the plan in force (`plan_with(overrides)`; a plan the planner
    refuses here, e.g. compile without a compiler, is a skipped rung with its reason), its worker launched
    under that plan. `req`: the ladder's request (workload, repeats, warm-up, compile and openvino switches)."""
    from sdagent.pipeline.quantize import available as int8_available

    out = []
    specs = backend_rung_specs(plan.run_spec.native_bf16, req.with_compile, req.compile_why, req.with_openvino,
                               ov_python, int8_available())
    gate = int8_gate(plan.tuning)
    for s in specs:
        if s.unavailable:
            out.append(L.Rung(s.name, s.name[len(PREFIX):], None, None, unavailable=s.unavailable))
            continue
        try:
            p = plan_with(dict(s.overrides))
        except SdagentError as exc:
            out.append(L.Rung(s.name, s.name[len(PREFIX):], None, None, unavailable=f"skipped: {exc}"))
            continue
        spec = p.run_spec
        desc = f"{spec.describe()}, the plan in force with backend {spec.backend}"
        if spec.ov_weights == "int8":
            desc += f"; {fidelity_words(gate)}"
        if spec.int8_unet or spec.ov_weights == "int8-hybrid":
            desc += "; calibrated (built or loaded before round 1)"
        job = WorkerJob(model, req.workload, spec, repeats=req.repeats, warmup=1, warmup_steps=req.warmup_steps)
        cmd = worker_cmd(ov_python if spec.backend == "openvino" else None)
        out.append(L.Rung(s.name, desc, plan_launch(p, cmd, environ, name=s.name), job,
                          warm_cache=spec.compile or spec.backend == "openvino"))
    return out
