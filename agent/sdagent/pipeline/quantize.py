"""The native backend's int8 UNet: PyTorch's PT2E quantization, calibrated here, compiled into its package.

Issue 22 item 5. The flow is PyTorch's own for x86 CPUs ("PyTorch 2 Export Quantization with X86 Backend
through Inductor"), whose quantizer and passes now live in torchao (`torchao.quantization.pt2e`; torch 2.13
has no `torch.ao.quantization.quantizer`):

1. export the UNet's call (pipeline.components.UNetCall: latents, timestep, text embeddings, the family's
   extra tensors) on the run's example inputs, as the fp32 package would be;
2. ``prepare_pt2e`` with ``X86InductorQuantizer`` and its default config
   (``get_default_x86_inductor_quantization_config()``: int8 weights, symmetric per output channel;
   uint8 activations, affine per tensor, static; convolutions, linears and the ops around them);
3. calibrate: the pipeline itself runs :data:`CALIBRATION_STEPS`-step images of the first
   :data:`CALIBRATION_IMAGES` prompts of :data:`CALIBRATION_PROMPTS` (the OpenVINO hybrid export's, none of
   them the gate's) at the run's size and guidance, its UNet calls going through the prepared graph's
   observers;
4. ``convert_pt2e``: quantize/dequantize pairs around each quantized op, which inductor's x86 passes
   (registered by importing the quantizer module) fuse into oneDNN int8 kernels when the package is
   built with freezing (pipeline.artifacts.ArtifactStore.build);
5. under precision bf16, the converted graph is exported inside ``torch.autocast("cpu", torch.bfloat16)``
   (:func:`mixed_bf16`): the tutorial's **int8-mixed-bf16**, where the int8 ops stay int8 and the ops
   between them (attention, normalisation, activations) run in bf16, which AMX and AVX512-BF16 hosts run
   natively. Calibration is in fp32 either way (the observers see the fp32 model's ranges).

The recipe (the quantizer's config, the prompts, the images and steps) is part of the package's key
(:data:`QUANT_RECIPE`, in pipeline.artifacts.ArtifactKey.quantize), so a package calibrated otherwise is
stale, never loaded.

Errors: :class:`QuantizeUnavailable` (torchao missing, or calibration that reached no UNet call); the
caller (pipeline.backends) runs the part eager and records why, as for any package it cannot have.
"""

from __future__ import annotations

from typing import Any

from sdagent.pipeline.ov_hybrid import CALIBRATION_PROMPTS
from sdagent.pipeline.workload import Workload

#: Bump when anything below changes what the int8 package computes: the key's quantize field carries it.
QUANT_RECIPE = 1
#: The key's quantize value of an int8 package (pipeline.artifacts.ArtifactKey.quantize).
INT8_KEY = f"int8-pt2e/{QUANT_RECIPE}"
#: Calibration: images of the first prompts, each of this many steps. Source: the activation ranges are
#: taken over the whole schedule (timesteps from ~999 to ~0), which a short schedule already spans; two
#: prompts at 8 steps are 16 guided UNet calls through the observers, about the cost of one 16-step image,
#: once per package. PT2E's tutorial calibrates on a few batches too.
CALIBRATION_IMAGES = 2
CALIBRATION_STEPS = 8
CALIBRATION_SEED = 1234


def available() -> bool:
    """Whether this Python can make the int8 UNet: torchao is installed (found, not imported: cheap)."""
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


class QuantizeUnavailable(Exception):
    """The int8 UNet cannot be made here: why, in one line."""


def quantizer_api() -> tuple[Any, Any, Any]:
    """(prepare_pt2e, convert_pt2e, a configured X86InductorQuantizer); QuantizeUnavailable without torchao.
    Importing the quantizer module also registers inductor's int8 fusion and weight-prepack passes."""
    from sdagent.pipeline.stack import import_torch

    import_torch()  # quiets torchao's loggers first (stack.QUIET_LOGGERS)
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as exc:
        raise QuantizeUnavailable(f"quantize int8 needs torchao (the native extra installs it): {exc}") from None
    q = xiq.X86InductorQuantizer()
    q.set_global(xiq.get_default_x86_inductor_quantization_config())
    return prepare_pt2e, convert_pt2e, q


def calibration_requests(w: Workload) -> list[dict[str, Any]]:
    """The pipeline calls that calibrate (pure): :data:`CALIBRATION_IMAGES` prompts, :data:`CALIBRATION_STEPS`
    steps (fewer when the workload has fewer), the run's size and guidance, latents out (no VAE decode)."""
    return [{"prompt": p, "num_inference_steps": min(CALIBRATION_STEPS, w.steps), "guidance_scale": w.guidance,
             "height": w.height, "width": w.width, "output_type": "latent"}
            for p in CALIBRATION_PROMPTS[:CALIBRATION_IMAGES]]


def mixed_bf16(module: Any) -> Any:
    """`module` (the converted GraphModule) called under bf16 autocast (module doc, step 5): what the
    int8-mixed-bf16 package exports. The graph's ``aten._assert_tensor_metadata`` nodes go first, in place:
    export records them for the fp32 dtypes it traced, which autocast changes by design (left in, the
    re-export fails with "Tensor dtype mismatch! Expected: torch.float32, Got: torch.bfloat16")."""
    import torch

    check = torch.ops.aten._assert_tensor_metadata.default
    for node in [n for n in module.graph.nodes if n.op == "call_function" and n.target is check]:
        module.graph.erase_node(node)
    module.graph.lint()
    module.recompile()

    class MixedBf16(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.inner(*inputs)

    return MixedBf16(module)


def int8_unet(pipe: Any, call: Any, example: tuple, workload: Workload, extra_names: tuple[str, ...],
              channels_last: bool, precision: str = "fp32") -> Any:
    """The UNet call quantized to int8 (module doc, steps 1-5): a module taking `example`'s inputs.

    `pipe`: the loaded pipeline, its UNet still the original (the calibration images run through it);
    `call`: UNetCall of that UNet in fp32 (what is exported and calibrated); `example`: its example inputs (the
    package's shapes); `precision`: the plan's, "bf16" wraps the result in :func:`mixed_bf16`.
    QuantizeUnavailable when torchao is missing or no calibration call reached the prepared graph.
    """
    import torch

    from sdagent.pipeline.components import UNetRunner

    prepare_pt2e, convert_pt2e, quantizer = quantizer_api()
    with torch.no_grad():
        prepared = prepare_pt2e(torch.export.export(call, example).module(), quantizer)
    shapes = tuple(tuple(x.shape) for x in example if x.dim() > 0)
    calls = [0]

    def observe(*inputs: Any) -> Any:
        calls[0] += 1
        return prepared(*inputs)

    runner = UNetRunner(pipe.unet, observe, pipe.unet, "calibrate", "fp32", shapes, None)
    runner.extra_names, runner.channels_last = extra_names, channels_last
    original, pipe.unet = pipe.unet, runner
    try:
        g = torch.Generator().manual_seed(CALIBRATION_SEED)
        for req in calibration_requests(workload):
            pipe(**req, generator=g)
    finally:
        pipe.unet = original
    if not calls[0]:
        raise QuantizeUnavailable("int8 calibration reached no UNet call of the package's shapes "
                                  f"({runner.fallbacks} went eager)")
    with torch.no_grad():
        converted = convert_pt2e(prepared)
    return mixed_bf16(converted) if precision == "bf16" else converted
