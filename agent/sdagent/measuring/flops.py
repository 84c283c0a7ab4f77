"""FLOPs of the actual workload and this host's measured GEMM peak.

Why both, from the same code in the same run: "how far from what this CPU
could do at best" needs a numerator counted on the real shapes (not a
datasheet figure) and a denominator measured here, now, under the same load.

FLOPs are counted by torch.utils.flop_counter on the model's own configs,
instantiated on the "meta" device: no weights, no compute, exact shapes. (On
meta, scaled-dot-product attention takes the math path, whose bmm's are
counted; on CPU the fused flash kernel has no flop formula and would be missed.)

Run as a module to get both as JSON (the ladder does, in a fresh process):
    python -m sdagent.measuring.flops --model DIR --height 256 --width 256 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from sdagent.errors import BadInput, SdagentError


@dataclass(frozen=True)
class ModelFlops:
    """FLOPs of one generation's parts at one resolution (multiply-add = 2 FLOPs)."""

    height: int
    width: int
    unet_batch: int  # 2 with classifier-free guidance
    unet_step: int  # one UNet evaluation on the guided batch
    vae_decode: int  # one latent -> image decode
    text_encoder: int  # one prompt encoding (batch 1), every encoder (SDXL: two); a guided call encodes two

    def per_image(self, unet_evals: int) -> int:
        """FLOPs of one image: the UNet evaluations actually run, the decode, both encodings."""
        enc = self.text_encoder * (2 if self.unet_batch == 2 else 1)
        return unet_evals * self.unet_step + self.vae_decode + enc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GemmPeak:
    """Square matmul throughput: the best run is the peak, the median says how steady it was."""

    dtype: str
    n: int
    inner: int  # matmuls per timed run
    runs_s: tuple[float, ...]
    threads: int

    @property
    def flop_per_run(self) -> int:
        return 2 * self.n ** 3 * self.inner

    @property
    def peak_flops(self) -> float:
        return self.flop_per_run / min(self.runs_s)

    @property
    def median_flops(self) -> float:
        return self.flop_per_run / statistics.median(self.runs_s)

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "n": self.n, "inner": self.inner, "threads": self.threads,
                "runs_s": [round(x, 5) for x in self.runs_s],
                "peak_flops": self.peak_flops, "median_flops": self.median_flops}


# ---------------------------------------------------------------------------
# Counting (torch imported lazily: the CLI must stay fast)
# ---------------------------------------------------------------------------


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn`, counted by torch.utils.flop_counter (multiply-add = 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return int(counter.get_total_flops())


def unet_inputs(unet, latent_h: int, latent_w: int, batch: int = 2, text_len: int = 77) -> tuple[tuple, dict]:
    """(args, kwargs) of one UNet call of the shapes the pipeline feeds it, on the UNet's device.

    Shapes: latents (batch, in_channels, h, w); timestep (batch,); text embeddings (batch, text_len,
    cross_attention_dim: 768 SD 1.x, 1024 SD 2.x, 2048 SDXL = CLIP-L 768 + bigG 1280 concatenated).
    SDXL's added conditioning ("text_time"): pooled text embeddings (batch, projection_class_embeddings_
    input_dim - 6 x addition_time_embed_dim: 2816 - 1536 = 1280) and the 6 size/crop ids (batch, 6).
    LCM's guidance embedding: timestep_cond (batch, time_cond_proj_dim).
    """
    import torch

    cfg = unet.config
    dev = next(unet.parameters()).device
    sample = torch.zeros(batch, cfg.in_channels, latent_h, latent_w, device=dev)
    hidden = torch.zeros(batch, text_len, cfg.cross_attention_dim, device=dev)
    t = torch.full((batch,), 999.0, device=dev)
    from sdagent.pipeline.family import unet_extra_shapes

    extra = {k: torch.zeros(*shape, device=dev) for k, shape in unet_extra_shapes(cfg, batch).items()}
    kw: dict[str, Any] = {"encoder_hidden_states": hidden}
    if "text_embeds" in extra:
        kw["added_cond_kwargs"] = {"text_embeds": extra["text_embeds"], "time_ids": extra["time_ids"]}
    if "timestep_cond" in extra:
        kw["timestep_cond"] = extra["timestep_cond"]
    return (sample, t), kw


def unet_call_flops(unet, latent_h: int, latent_w: int, batch: int = 2, text_len: int = 77) -> int:
    """FLOPs of one UNet call on latents of this size (batch 2 = with guidance); free on "meta".
    Every family's inputs (unet_inputs): SDXL's added conditioning and LCM's guidance embedding count."""
    args, kw = unet_inputs(unet, latent_h, latent_w, batch, text_len)
    return count_flops(lambda: unet(*args, **kw))


def flops_by_module(fn: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of one call of `fn` per module (FlopCounterMode's names: 'UNet2DConditionModel.add_embedding'
    and so on; each module counts its submodules too), for checks against a hand calculation."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}


def count_model_flops(model_dir: str | Path, height: int, width: int, guidance: bool = True) -> ModelFlops:
    """Count one UNet step (guided batch), one VAE decode and one text encoding on meta tensors.

    The text encoding is every encoder the family runs (SDXL: CLIP-L and bigG with its projection). A
    family without classifier-free guidance (LCM) counts batch 1 whatever `guidance` says."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdagent.pipeline.modeldir import check_model_dir

    root = Path(model_dir)
    for sub in ("unet", "vae", "text_encoder"):
        if not (root / sub / "config.json").is_file():
            raise BadInput(f"not a diffusers pipeline directory (no {sub}/config.json): {root}")
    family = check_model_dir(root).family
    batch = 2 if guidance and family.cfg else 1
    meta = torch.device("meta")
    with meta:
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root / "unet")).eval()
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae")).eval()
        texts = [CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder")).eval()]
        if family.text_encoders == 2:
            texts.append(CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(root / "text_encoder_2")).eval())
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if height % factor or width % factor:
        raise BadInput(f"invalid size {height}x{width}: must be multiples of {factor}")
    lh, lw = height // factor, width // factor
    tlen = texts[0].config.max_position_embeddings
    latents = torch.zeros(1, vae.config.latent_channels, lh, lw, device=meta)
    ids = torch.zeros(1, tlen, dtype=torch.long, device=meta)
    return ModelFlops(
        height=height, width=width, unet_batch=batch,
        unet_step=unet_call_flops(unet, lh, lw, batch, tlen),
        vae_decode=count_flops(lambda: vae.decode(latents)),
        text_encoder=sum(count_flops(lambda te=te: te(ids)) for te in texts),
    )


def gemm_peak(dtype: str = "fp32", n: int = 2048, runs: int = 7, warmup: int = 2,
              min_run_s: float = 0.2, clock: Callable[[], float] = time.perf_counter) -> GemmPeak:
    """Time square n x n matmuls in `dtype` (fp32 or bf16) with torch's own threads."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(dtype)
    if dt is None:
        raise BadInput(f"unknown GEMM dtype {dtype!r}: choose fp32 or bf16")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dt)
    b = torch.randn(n, n, generator=g).to(dt)
    c = torch.empty(n, n, dtype=dt)

    def run(k: int) -> float:
        t0 = clock()
        for _ in range(k):
            torch.mm(a, b, out=c)
        return clock() - t0

    for _ in range(warmup):
        run(1)
    inner = 1
    while run(inner) < min_run_s and inner < 1024:
        inner *= 2
    return GemmPeak(dtype, n, inner, tuple(run(inner) for _ in range(runs)), torch.get_num_threads())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdagent.measuring.flops", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--no-guidance", action="store_true")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--gemm-runs", type=int, default=7)
    ap.add_argument("--no-peak", action="store_true", help="count FLOPs only")
    ap.add_argument("--bf16-peak", action="store_true",
                    help="also measure the bf16 GEMM peak (the caller's plan says bf16 is native here)")
    ap.add_argument("--json", action="store_true", help="print JSON (the only output form)")
    a = ap.parse_args(argv)
    try:
        mf = count_model_flops(a.model, a.height, a.width, not a.no_guidance)
        peaks = {}
        if not a.no_peak:
            if a.gemm_n < 64:
                raise BadInput(f"invalid --gemm-n {a.gemm_n}: must be >= 64")
            peaks["fp32"] = gemm_peak("fp32", a.gemm_n, a.gemm_runs).to_dict()
            if a.bf16_peak:
                peaks["bf16"] = gemm_peak("bf16", a.gemm_n, a.gemm_runs).to_dict()
    except SdagentError as exc:
        print(f"sdagent.measuring.flops: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"model": str(a.model), "flops": mf.to_dict(), "gemm_peak": peaks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
