"""One measurement in a fresh process: load, prepare, warm up, time, write JSON.

Why a separate process per measurement: preloads (LD_PRELOAD), the OpenMP
runtime and its KMP_* settings, thread counts and pinning are fixed when a
process starts, so every candidate plan and every ladder rung needs its own.
The parent (tune, ladder, verify's stock run) starts this module under the
environment and launcher being measured, hands it one JSON job
(measuring.runner.WorkerJob) and reads the result file it writes (workers.result,
`sdagent-result/1`); the result also records what the process really got (mapped libraries, threads, affinity).

    python -m sdagent.measuring.worker --job JOB.json --result OUT.json

It can also be run as a file (`python .../worker.py`): PyTorch's run_cpu
launcher only accepts a `.py` path.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file: import the package, not its siblings as top-level modules
    _here = os.path.dirname(os.path.abspath(__file__))
    _root = os.path.dirname(os.path.dirname(_here))  # agent/sdagent/measuring -> agent
    if sys.path and os.path.abspath(sys.path[0] or ".") == _here:
        sys.path[0] = _root
    else:
        sys.path.insert(0, _root)

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from sdagent.measuring.runner import WorkerJob  # noqa: E402
from sdagent.pipeline.workload import validate_workload  # noqa: E402
from sdagent.workers.child import worker_main  # noqa: E402
from sdagent.workers.result import ImageSpan, Measurement, ProcessRecord, Window, timed  # noqa: E402


def _process_record() -> ProcessRecord:
    from sdagent.host import process

    ps = process.process_state()
    return ProcessRecord(process.notable(ps.mapped), ps.torch_threads, ps.affinity, ps.env, os.getpid())


def _since_start(t: float | None) -> float | None:
    """Seconds from this process's start to `t` (a whole image's end): what a restarted server waits."""
    from sdagent.host.process import process_start_time

    t0 = process_start_time()
    return t - t0 if t is not None and t0 is not None else None


def _load_average() -> tuple[float, ...]:
    from sdagent.host.process import read_load_average

    return tuple(read_load_average())


def measure(job: WorkerJob) -> Measurement:
    """Load, prepare and warm up once; then time `repeats` generations (or UNet calls)."""
    from sdagent.pipeline.backends import ready
    from sdagent.pipeline.observe import observe_unet

    w = validate_workload(job.workload)
    t0 = time.perf_counter()
    prepared = ready(job.model, job.run, w, job.artifacts_dir)
    load_s = time.perf_counter() - t0 - prepared.prepare_s
    if job.unet_only:
        return measure_unet(prepared, job, load_s)
    if job.throughput is not None:
        return measure_throughput(prepared, job, load_s)
    t1 = time.perf_counter()
    warm = w.with_steps(min(job.warmup_steps, w.steps))
    first_image_at = None
    for i in range(job.warmup):
        prepared.generate(warm, seed=1000 + i)
        first_image_at = first_image_at or time.time()
    warmup_s = time.perf_counter() - t1
    get_observed, unhook = observe_unet(prepared.pipe)
    try:
        runs = [prepared.generate(w, seed=i) for i in range(job.repeats)]
    finally:
        unhook()
    observed = get_observed()
    lat = [g.total_s for g in runs]
    if first_image_at is None and runs:
        first_image_at = time.time() - sum(lat[1:])  # no warm-up: the first timed image was the first
    if job.image_out and runs:  # after every clock above: the encode is in no figure
        _write_png(job.image_out, runs[0].image)
    return timed(
        "images", w, lat, process=_process_record(), load_average=_load_average(), describe=prepared.describe(),
        load_s=load_s, prepare_s=prepared.prepare_s, warmup_s=warmup_s, runs=tuple(g.timings() for g in runs),
        unet_evals=len(runs[0].step_s) if runs else None, observed=observed.to_dict() if observed else None,
        start_to_first_image_s=_since_start(first_image_at) if warm.steps == w.steps else None)


def _write_png(path: str, image: Any) -> None:
    """The image as PNG at `path`, atomically (atomicio.write_bytes): a reader never sees half of it."""
    import io

    from sdagent.atomicio import write_bytes

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def measure_unet(prepared: Any, job: WorkerJob, load_s: float) -> Measurement:
    """Time `repeats` UNet calls after `warmup` untimed ones, as the denoising loop makes them."""
    import torch

    from sdagent.pipeline.backends import unet_sample_input

    latents, t, hidden = unet_sample_input(prepared.pipe, job.workload)
    unet = prepared.pipe.unet

    def call() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():  # the runner applies the precision
            unet(latents, t, encoder_hidden_states=hidden)
        return time.perf_counter() - t0

    t1 = time.perf_counter()
    for _ in range(job.warmup):
        call()
    warmup_s = time.perf_counter() - t1
    calls = [call() for _ in range(job.repeats)]
    return timed("unet-only", job.workload, calls, process=_process_record(), load_average=_load_average(),
                 describe=prepared.describe(), load_s=load_s, prepare_s=prepared.prepare_s, warmup_s=warmup_s,
                 runs=({"unet_steps_s": [round(x, 6) for x in calls]},), unet_evals=1)


def measure_throughput(prepared: Any, job: WorkerJob, load_s: float) -> Measurement:
    """Warm up with one whole image, say so at the barrier, wait for the start, then generate back to back."""
    from sdagent.measuring.throughput import await_start, write_ready

    tp = job.throughput
    if tp is None:
        raise ValueError("measure_throughput needs a job with a throughput part")
    t1 = time.perf_counter()
    for i in range(max(1, job.warmup)):
        warm = prepared.generate(job.workload, seed=1000 + i)
    warmup_s = time.perf_counter() - t1
    write_ready(tp, warm.total_s)
    start, deadline = await_start(tp)
    images: list[ImageSpan] = []
    i = 0
    while (tp.images is not None and i < tp.images) or (deadline is not None and time.time() < deadline):
        t_start = time.time()
        g = prepared.generate(job.workload, seed=i)
        images.append(ImageSpan(t_start, time.time(), g.total_s))
        i += 1
    return timed("throughput", job.workload, [x.total_s for x in images], process=_process_record(),
                 load_average=_load_average(), describe=prepared.describe(), load_s=load_s,
                 prepare_s=prepared.prepare_s, warmup_s=warmup_s, window=Window(start, deadline),
                 images=tuple(images))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdagent.measuring.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--job", required=True, help="the job: JSON written by measuring.runner")
    ap.add_argument("--result", required=True, help="write the JSON result here (atomically)")
    a = ap.parse_args(argv)
    return worker_main("sdagent.measuring.worker", a.job, a.result, measure, WorkerJob.from_dict)


if __name__ == "__main__":
    sys.exit(main())
