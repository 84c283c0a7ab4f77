"""Peak RSS of one image, eager fp32, as `sdagent run` makes it but without its up-front estimate (which may
refuse the very size being measured), beside that estimate: one JSON line.

    PYTHONPATH=agent python scripts/memprobe.py MODEL SIZE GUIDANCE CFG(1|0)

docs/results/memory.md's 16-bit rows come from it (pipeline/workload.py's WEIGHT_COPIES_16BIT)."""
import json, resource, sys, time
from sdagent.pipeline.backends import ready
from sdagent.pipeline.modeldir import check_model_dir
from sdagent.pipeline.workload import Workload, memory_estimate_bytes, loaded_weight_bytes
from sdagent.planning.runspec import RunSpec
from pathlib import Path
model, size, guidance, cfg = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
md = check_model_dir(model)
w = Workload(steps=1, height=size, width=size, guidance=guidance, cfg=cfg)
t = time.time()
p = ready(md.path, RunSpec("native", "fp32", True, False, True), w)
load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
p.generate(w)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
weights = sum(loaded_weight_bytes(f) for sub in ("unet", "vae", "text_encoder", "text_encoder_2")
              for f in (Path(md.path) / sub).glob("*.safetensors"))
files = sum(f.stat().st_size for sub in ("unet", "vae", "text_encoder", "text_encoder_2")
            for f in (Path(md.path) / sub).glob("*.safetensors"))
print(json.dumps({"model": model, "size": size, "peak_gib": round(peak / 2**30, 2), "after_load_gib": round(load_rss / 2**30, 2),
                  "fp32_weights_gib": round(weights / 2**30, 2), "file_gib": round(files / 2**30, 2),
                  "estimate_gib": round(memory_estimate_bytes(md, w) / 2**30, 2), "s": round(time.time() - t, 1)}))
