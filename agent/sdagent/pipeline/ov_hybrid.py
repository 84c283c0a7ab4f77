"""The int8 hybrid-quantized OpenVINO export of a diffusers directory, offline: a script for the OpenVINO venv.

    python ov_hybrid.py --model DIR --out DIR [--samples N]

What it makes: what `optimum-cli export openvino --task text-to-image` makes (IR of the text encoder,
UNet, VAE and the converted tokenizer), then NNCF's **hybrid** quantization through optimum-intel
(`OVWeightQuantizationConfig(bits=8, quant_method="hybrid", dataset=<prompts>)`): the UNet's
convolutions and matmuls get int8 weights *and* int8 activations (static, calibrated on the prompts
below), every other model int8 weights only (data-free). The same two steps `optimum-cli export
openvino --weight-format int8 --dataset conceptual_captions` runs, but with the calibration prompts
given as a list, which optimum-intel 2.2 accepts for diffusion pipelines
(OVCalibrationDatasetBuilder.build_from_quantization_config: "a list of string prompts") and which
needs neither the `datasets` package nor the network. Calibration runs the exported pipeline on the
prompts (optimum-intel's _prepare_diffusion_calibration_data: at the model's own sample size, at most
512x512, 50 steps each) and keeps the UNet inputs of the first `--samples` calls (optimum's default 200).

Standalone on purpose: it imports nothing of sdagent (pipeline.ov_export runs it with the OpenVINO
venv's python, in a subprocess, into a temp directory it then checks and renames); exit 0 on success,
1 with the reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Calibration prompts: varied subjects, styles and compositions in the register SD-1.5 is prompted in; none
#: of the prompts the fidelity gate judges on (the workload's default, the demo's, and tuning.gate.GATE_PROMPTS).
#: Part of the export's recipe (ov_export.HYBRID_RECIPE): changing them changes the export.
CALIBRATION_PROMPTS: tuple[str, ...] = (
    "a stone bridge over a river in autumn, impressionist painting",
    "a photograph of an astronaut riding a horse",
    "a bowl of fruit on a wooden table, still life, oil painting",
    "portrait of an old fisherman, dramatic lighting, 85mm photograph",
    "a futuristic city at night, neon lights, rain, cinematic",
    "a watercolor landscape of mountains and a lake at sunrise",
    "a red fox in the snow, wildlife photography",
    "an isometric illustration of a cozy library with plants",
)
#: UNet calls kept for the statistics: optimum-intel's default for diffusion models.
DEFAULT_SAMPLES = 200


def export_hybrid(model: Path, out: Path, samples: int) -> None:
    """Export `model` to `out` (fp IR + tokenizers), then hybrid-quantize it in place (see the module doc)."""
    from optimum.exporters.openvino import main_export
    from optimum.exporters.openvino.__main__ import _main_quantize
    from optimum.intel import OVWeightQuantizationConfig

    main_export(str(model), out, task="text-to-image", convert_tokenizer=True, library_name="diffusers")
    config = OVWeightQuantizationConfig(bits=8, quant_method="hybrid", dataset=list(CALIBRATION_PROMPTS),
                                        num_samples=samples)
    _main_quantize(str(model), "text-to-image", "diffusers", config, out, cache_dir=str(out / ".hf-cache"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    a = ap.parse_args(argv)
    if a.samples < 1:
        print(f"ov_hybrid: invalid --samples {a.samples}: at least 1", file=sys.stderr)
        return 1
    try:
        export_hybrid(a.model, a.out, a.samples)
    except Exception as exc:  # noqa: BLE001 - the parent reports it in one line
        print(f"ov_hybrid: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
