"""The OpenVINO peer: one measurement of OpenVINO GenAI's Text2ImagePipeline in a fresh process.

Why: sdagent must be faster than OpenVINO on every host, measured side by side;
this is OpenVINO as its own docs run SD-1.5 on a CPU (optimum-intel's IR,
GenAI's C++ pipeline, static shapes, LATENCY hint), with the precision hint and
threads pinned so the comparison is like for like. It runs in the OpenVINO venv
(scripts/lib.sh `venv_openvino`) with PYTHONPATH=<repo>/agent and never imports
torch; its result is the record sdagent.measuring.worker returns (workers.result, `sdagent-result/1`).

    python -m sdagent.peers.openvino --job JOB.json --result OUT.json
    python -m sdagent.peers.openvino export --model DIR [--out OVDIR]
    python -m sdagent.peers.openvino probe --ov-model OVDIR [--precision bf16|fp32] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdagent.errors import BadInput, Exit, SdagentError
from sdagent.peers.ovjob import OvJob, compile_config
from sdagent.pipeline.ov_export import (  # noqa: F401 - re-exported: the worker's names before the move
    COMPUTE_LAYERS, DEVICE, MARKER, _type_name, genai_scheduler, missing_files, probe_precision, read_marker,
    scheduler_name, unet_shapes)
from sdagent.pipeline.workload import Workload
from sdagent.workers.child import worker_main
from sdagent.workers.result import Measurement, ProcessRecord, timed

#: Libraries recorded beside a figure: OpenVINO's own and its threading runtime (TBB), besides sdagent's list.
OV_LIBRARIES: tuple[str, ...] = ("libopenvino", "libtbb")
VERSION_PACKAGES: tuple[str, ...] = ("openvino", "openvino-genai", "openvino-tokenizers", "numpy")



# ---------------------------------------------------------------------------
# Process start (pure parser + the /proc edge)
# ---------------------------------------------------------------------------


def parse_stat_starttime(text: str) -> int:
    """Field 22 of /proc/<pid>/stat: the start time in clock ticks since boot (comm may hold spaces and ')')."""
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[19])  # fields 3.. follow comm; starttime is field 22


def process_age_s() -> float | None:
    """Seconds since this process started (its fork: numactl/taskset exec into it, same start)."""
    try:
        ticks = parse_stat_starttime(Path("/proc/self/stat").read_text())
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


# ---------------------------------------------------------------------------
# One generation
# ---------------------------------------------------------------------------


@dataclass
class OvGeneration:
    """One image: wall time, and GenAI's own split (its raw metrics, per call)."""

    total_s: float
    steps_s: list[float] = field(default_factory=list)  # per denoising iteration: UNet + scheduler step
    unet_infer_s: list[float] = field(default_factory=list)  # the UNet inference alone, per step
    text_encode_s: float | None = None
    vae_decode_s: float | None = None
    image_mean_u8: float | None = None  # 0..255: a generated image, not a blank (noise for random weights)
    cpu_s: float | None = None  # the process's CPU time (all threads) during the call: contention shows as
    #                             wall time well above cpu_s / threads


    def timings(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, 6)  # noqa: E731
        return {
            "total_s": r(self.total_s), "text_encode_s": r(self.text_encode_s),
            "unet_s": r(sum(self.steps_s)) if self.steps_s else None,
            "unet_step_mean_s": r(statistics.fmean(self.steps_s)) if self.steps_s else None,
            "unet_steps_s": [r(v) for v in self.steps_s], "unet_infer_s": [r(v) for v in self.unet_infer_s],
            "vae_decode_s": r(self.vae_decode_s), "image_mean_u8": r(self.image_mean_u8), "cpu_s": r(self.cpu_s),
        }


def generate(pipe: Any, w: Workload, seed: int) -> OvGeneration:
    """Run the pipeline once, the seed's noise from GenAI's CppStdGenerator.

    Not TorchGenerator: it imports torch into the process (libtorch_cpu and its libgomp mapped,
    a second import second), which the peer's process must not carry. The noise differs from
    torch's for the same seed; with random weights only the timing matters.
    """
    import openvino_genai as ov_genai

    kwargs: dict[str, Any] = dict(num_inference_steps=w.steps, height=w.height, width=w.width,
                                  guidance_scale=w.guidance, num_images_per_prompt=1,
                                  generator=ov_genai.CppStdGenerator(seed))
    if w.negative_prompt:  # GenAI refuses None
        kwargs["negative_prompt"] = w.negative_prompt
    c0, t0 = time.process_time(), time.perf_counter()
    image = pipe.generate(w.prompt, **kwargs)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    arr = image.data
    if tuple(arr.shape) != (1, w.height, w.width, 3):
        raise SdagentError(f"OpenVINO returned an image of shape {tuple(arr.shape)}, "
                           f"expected (1, {w.height}, {w.width}, 3)", Exit.ERROR)
    m = pipe.get_performance_metrics()
    raw = m.raw_metrics
    text_ms = m.get_text_encoder_infer_duration()
    return OvGeneration(
        total_s=total,
        steps_s=[us / 1e6 for us in raw.iteration_durations],
        unet_infer_s=[us / 1e6 for us in raw.unet_inference_durations],
        text_encode_s=sum(text_ms.values()) / 1e3 if text_ms else None,
        vae_decode_s=m.get_vae_decoder_infer_duration() / 1e3,
        image_mean_u8=float(arr.mean()),
        cpu_s=cpu,
    )


def check_steps(g: OvGeneration, w: Workload) -> None:
    """The scheduler ran at least the steps asked (PNDM runs one more, as in diffusers)."""
    if len(g.steps_s) < w.steps:
        raise SdagentError(f"OpenVINO ran {len(g.steps_s)} denoising steps for a request of {w.steps}", Exit.ERROR)


# ---------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------


def check_ov_model(path: str) -> Path:
    """An exported IR directory Text2ImagePipeline can load, or BadInput naming what is missing."""
    p = Path(path)
    if not p.is_dir():
        raise BadInput(f"OpenVINO model directory does not exist: {p}")
    missing = missing_files(p)
    if missing:
        raise BadInput(f"not a complete OpenVINO text-to-image export: {p} lacks {', '.join(missing)}")
    return p


def cpu_facts() -> dict[str, Any]:
    """What the CPU plugin says of this CPU before any model: bf16 support and its default hint."""
    import openvino as ov

    core = ov.Core()
    return {"full_device_name": str(core.get_property(DEVICE, "FULL_DEVICE_NAME")),
            "optimization_capabilities": list(core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")),
            "default_inference_precision_hint": _type_name(core.get_property(DEVICE, "INFERENCE_PRECISION_HINT"))}


def versions(ov_model: Path | None = None) -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for n in VERSION_PACKAGES:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    marker = read_marker(ov_model) if ov_model is not None else None
    if marker is not None:
        out["export"] = marker.get("versions", {})
    return out


def process_record() -> ProcessRecord:
    """What the process got, as the torch worker records it (no torch here: torch_threads is None)."""
    from sdagent.envvars import tuning_vars
    from sdagent.host import process

    mapped = process.read_mapped_libraries()
    notable = set(process.notable(mapped))
    libs = tuple(m for m in mapped if m in notable or Path(m).name.startswith(OV_LIBRARIES))
    return ProcessRecord(libs, None, process.read_process_affinity(), tuning_vars(os.environ), os.getpid())


def measure(job: OvJob) -> Measurement:
    """Load, compile and warm up once; then time `repeats` full images, as the torch worker does."""
    startup_s = process_age_s()
    ov_model = check_ov_model(job.ov_model)
    w = job.workload
    kind = genai_scheduler(w.scheduler)
    config = compile_config(job)
    import openvino_genai as ov_genai

    t0 = time.perf_counter()
    pipe = ov_genai.Text2ImagePipeline(str(ov_model))
    if kind is not None:
        sched = ov_genai.Scheduler.from_config(str(ov_model / "scheduler" / "scheduler_config.json"),
                                               getattr(ov_genai.Scheduler.Type, kind))
        pipe.set_scheduler(sched)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    if job.static_shapes:
        pipe.reshape(1, w.height, w.width, w.guidance)
    pipe.compile(DEVICE, **config)
    prepare_s = time.perf_counter() - t1
    first_image_s: float | None = None

    t2 = time.perf_counter()
    for i in range(job.warmup):
        g = generate(pipe, job.warmup_workload, seed=1000 + i)
        check_steps(g, job.warmup_workload)
        if first_image_s is None:
            first_image_s = process_age_s()
    warmup_s = time.perf_counter() - t2
    runs = []
    for i in range(job.repeats):
        g = generate(pipe, w, seed=i)
        check_steps(g, w)
        runs.append(g)
        if first_image_s is None:
            first_image_s = process_age_s()
    lat = [g.total_s for g in runs]
    del pipe

    notes = [f"OpenVINO GenAI Text2ImagePipeline on {DEVICE}, "
             + (f"static shapes {w.height}x{w.width}, guidance {w.guidance}" if job.static_shapes
                else "dynamic shapes"),
             "unet_steps_s: GenAI's per-iteration durations (UNet + scheduler step); unet_infer_s: the UNet alone"]
    if "torch" in sys.modules:
        notes.append("torch was imported into this process (it should not be)")
    facts = cpu_facts()
    describe: dict[str, Any] = {
        "run": {"backend": "openvino", "precision": job.precision, "device": DEVICE,
                "static_shapes": job.static_shapes, "threads": job.threads, "config": config},
        "notes": notes, "prepare_s": round(prepare_s, 3), "scheduler": scheduler_name(ov_model, kind),
        "cpu": facts, "export": read_marker(ov_model),
    }
    if job.probe_precision:
        describe["precision_probe"] = probe_precision(ov_model, config, w if job.static_shapes else None)
    describe["startup_s"] = startup_s  # process start to this call: the interpreter and imports
    return timed("images", w, lat, process=process_record(), load_average=tuple(os.getloadavg()),
                 describe=describe, load_s=load_s, prepare_s=prepare_s, warmup_s=warmup_s,
                 runs=tuple(g.timings() for g in runs), unet_evals=len(runs[0].steps_s) if runs else None,
                 start_to_first_image_s=first_image_s, versions=versions(ov_model))


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def run_job(job_path: str, result_path: str) -> int:
    """The worker: a job file in, a result file out (an error result on any failure), the exit code."""
    return worker_main("sdagent.peers.openvino", job_path, result_path, measure, OvJob.from_dict)


def _export(a: argparse.Namespace) -> int:
    from sdagent.peers.ovexport import export_model

    res = export_model(a.model, a.out, python=a.python)
    print(json.dumps(res.to_dict(), indent=2))
    return 0


def _probe(a: argparse.Namespace) -> int:
    w = Workload(height=a.height, width=a.width, guidance=a.guidance)
    job = OvJob(a.ov_model, w, precision=a.precision, threads=a.threads).checked()
    ov_model = check_ov_model(job.ov_model)
    report = {"cpu": cpu_facts(), "versions": versions(ov_model),
              "unet": probe_precision(ov_model, compile_config(job), None if a.dynamic else w)}
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "python -m sdagent.peers.openvino"
    if argv[:1] in (["export"], ["probe"]):
        ap = argparse.ArgumentParser(prog=f"{prog} {argv[0]}")
        if argv[0] == "export":
            ap.description = "Export a diffusers directory to OpenVINO IR (cached; atomic)."
            ap.add_argument("--model", required=True, help="a diffusers directory (sdagent model create)")
            ap.add_argument("--out", help=f"the IR directory (default: <cache>/openvino/<name>-<key>; {MARKER})")
            ap.add_argument("--python", help="the OpenVINO venv's python (default: $SDAGENT_OPENVINO_PYTHON, "
                                             "else <cache>/venv-openvino/bin/python)")
            handler = _export
        else:
            ap.description = "What the CPU plugin runs the UNet in: resolved hint, runtime precisions, primitives."
            ap.add_argument("--ov-model", required=True, help="an exported IR directory")
            ap.add_argument("--precision", default="bf16", help="bf16 or fp32 (default bf16)")
            ap.add_argument("--threads", type=int, default=None)
            ap.add_argument("--height", type=int, default=512)
            ap.add_argument("--width", type=int, default=512)
            ap.add_argument("--guidance", type=float, default=7.5)
            ap.add_argument("--dynamic", action="store_true", help="compile with dynamic shapes")
            handler = _probe
        a = ap.parse_args(argv[1:])
        try:
            return handler(a)
        except SdagentError as exc:
            print(f"sdagent.peers.openvino: error: {exc}", file=sys.stderr)
            return exc.exit_code
    ap = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--job", required=True, help="the job: JSON sdagent-ov-job/1 (sdagent.peers.ovjob)")
    ap.add_argument("--result", required=True, help="write the JSON result here (atomically)")
    a = ap.parse_args(argv)
    return run_job(a.job, a.result)


if __name__ == "__main__":
    sys.exit(main())
