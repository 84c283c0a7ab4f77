"""One measurement in a fresh process: load, prepare, warm up, time, write JSON.

Why a separate process per measurement: preloads (LD_PRELOAD), the OpenMP
runtime and its KMP_* settings, thread counts and pinning are fixed when a
process starts, so every candidate plan and every ladder rung needs its own.
The parent (tune, ladder) starts this module under the environment and
launcher being measured, and reads the result file it writes; the file also
records what the process really got (mapped libraries, threads, affinity).

    python -m sdagent.measure_worker --model DIR --result OUT.json [workload] [backend]

It can also be run as a file (`python .../measure_worker.py`): PyTorch's
run_cpu launcher only accepts a `.py` path.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file: import the package, not its siblings as top-level modules
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == _here:
        sys.path[0] = os.path.dirname(_here)
    else:
        sys.path.insert(0, os.path.dirname(_here))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from sdagent import atomicio  # noqa: E402
from sdagent.errors import BadInput, SdagentError  # noqa: E402
from sdagent.workload import Workload, validate_workload  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m sdagent.measure_worker", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--result", required=True, help="write the JSON result here (atomically)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scheduler", default="default")
    ap.add_argument("--prompt", default=Workload.prompt)
    ap.add_argument("--backend", default="native", choices=("native", "ipex"))
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-prepack", action="store_true", help="IPEX bf16 without weight prepacking")
    ap.add_argument("--compile-cache-dir", default=None)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    ap.add_argument("--warmup-steps", type=int, default=2, help="steps of each warm-up call")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls (0: only load, prepare and warm up)")
    ap.add_argument("--unet-only", action="store_true",
                    help="time single guided UNet calls on random inputs of the workload's shape (no text "
                         "encoder, scheduler or VAE): a per-step figure at sizes too slow for whole images")
    return ap.parse_args(argv)


def measure(a: argparse.Namespace) -> dict[str, Any]:
    """Load, prepare and warm up once; then time `repeats` generations."""
    from sdagent import procstate
    from sdagent.bench import observe_unet
    from sdagent.pipeline import BackendSettings, load_pipeline, prepare
    from sdagent.topology import current_topology

    if a.repeats < 0 or a.warmup < 0 or a.warmup_steps < 1:
        raise BadInput(f"invalid repeats/warmup ({a.repeats}/{a.warmup}/{a.warmup_steps})")
    w = validate_workload(Workload(prompt=a.prompt, steps=a.steps, height=a.height, width=a.width,
                                   guidance=a.guidance, scheduler=a.scheduler))
    t0 = time.perf_counter()
    pipe = load_pipeline(a.model, a.scheduler)
    load_s = time.perf_counter() - t0
    settings = BackendSettings(backend=a.backend, precision=a.precision, channels_last=a.channels_last,
                               compile=a.compile, weights_prepack=not a.no_prepack,
                               compile_cache_dir=a.compile_cache_dir,
                               isa_flags=tuple(current_topology().flags))
    prepared = prepare(pipe, settings, w)
    if a.unet_only:
        return measure_unet(prepared, w, a, load_s)
    t1 = time.perf_counter()
    warm = Workload(**{**w.to_dict(), "steps": min(a.warmup_steps, w.steps)})
    for i in range(a.warmup):
        prepared.generate(warm, seed=1000 + i)
    warmup_s = time.perf_counter() - t1
    get_observed, unhook = observe_unet(prepared.pipe)
    try:
        runs = [prepared.generate(w, seed=i) for i in range(a.repeats)]
    finally:
        unhook()
    observed = get_observed()
    ps = procstate.process_state()
    lat = [g.total_s for g in runs]
    return {
        "ok": True,
        "workload": w.to_dict(),
        "describe": prepared.describe(),
        "load_s": round(load_s, 4),
        "prepare_s": round(prepared.prepare_s, 4),
        "warmup_s": round(warmup_s, 4),
        "latency_s": [round(x, 6) for x in lat],
        "latency_median_s": round(statistics.median(lat), 6) if lat else None,
        "runs": [g.timings() for g in runs],
        "unet_evals": len(runs[0].step_s) if runs else None,
        "observed": observed.to_dict() if observed else None,
        "process": {"libraries": list(procstate.notable(ps.mapped)), "torch_threads": ps.torch_threads,
                    "affinity": list(ps.affinity), "env": ps.env, "pid": os.getpid()},
        "load_average": list(procstate.read_load_average()),
    }


def measure_unet(prepared: Any, w: Workload, a: argparse.Namespace, load_s: float) -> dict[str, Any]:
    """Time `repeats` UNet calls after `warmup` untimed ones, as the denoising loop makes them."""
    import torch

    from sdagent import procstate
    from sdagent.pipeline import unet_sample_input

    latents, t, hidden = unet_sample_input(prepared.pipe, w)
    unet = prepared.pipe.unet

    def call() -> float:
        t0 = time.perf_counter()
        with torch.no_grad(), prepared.autocast():
            unet(latents, t, encoder_hidden_states=hidden)
        return time.perf_counter() - t0

    t1 = time.perf_counter()
    for _ in range(a.warmup):
        call()
    warmup_s = time.perf_counter() - t1
    calls = [call() for _ in range(a.repeats)]
    ps = procstate.process_state()
    return {
        "ok": True, "mode": "unet-only", "workload": w.to_dict(), "describe": prepared.describe(),
        "load_s": round(load_s, 4), "prepare_s": round(prepared.prepare_s, 4), "warmup_s": round(warmup_s, 4),
        "latency_s": [round(x, 6) for x in calls],
        "latency_median_s": round(statistics.median(calls), 6) if calls else None,
        "runs": [{"unet_steps_s": [round(x, 6) for x in calls]}], "unet_evals": 1,
        "process": {"libraries": list(procstate.notable(ps.mapped)), "torch_threads": ps.torch_threads,
                    "affinity": list(ps.affinity), "env": ps.env, "pid": os.getpid()},
        "load_average": list(procstate.read_load_average()),
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = Path(a.result)
    try:
        data = measure(a)
        code = 0
    except SdagentError as exc:
        data, code = {"ok": False, "error": str(exc)}, exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a crash is a failed measurement with its reason, not a traceback
        first = (str(exc).strip().splitlines() or [""])[0][:400]
        data, code = {"ok": False, "error": f"{exc.__class__.__name__}: {first}"}, 1
    try:
        atomicio.write_json(out, data)
    except SdagentError as exc:
        print(f"sdagent.measure_worker: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not data["ok"]:
        print(f"sdagent.measure_worker: error: {data['error']}", file=sys.stderr)
    else:
        print(json.dumps({"latency_s": data["latency_s"]}))
    return code


if __name__ == "__main__":
    sys.exit(main())
