"""One `sdagent ladder` run: the rungs on this host, FLOPs and GEMM peaks, the interleaved rounds,
the per-step figure, and the report record (ladder.json) the Markdown and the plot are made from.

The worker runner is injected (default workers.parent.run_worker), like tune's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sdagent.errors import BadInput, one_line
from sdagent.host.process import machine_state, read_load_average
from sdagent.measuring import ladder as L
from sdagent.measuring.flops import ModelFlops
from sdagent.measuring.ladder_fidelity import rung_fidelity, with_images
from sdagent.measuring.runner import WorkerJob, worker_cmd, worker_file
from sdagent.pipeline.modeldir import ModelDir
from sdagent.pipeline.workload import Workload
from sdagent.envvars import stock_env
from sdagent.planning.launch import Launch, exec_launch, run_cpu_launch, stock_launch
from sdagent.planning.plan import Plan
from sdagent.planning.runspec import STOCK_RUN
from sdagent.workers.parent import Job, child_options, run_worker
from sdagent.workers.result import WorkerResult

Runner = Callable[[Launch, Job, float], WorkerResult]


@dataclass(frozen=True)
class LadderRequest:
    model: ModelDir
    workload: Workload
    rounds: int = 3
    repeats: int = 1
    warmup_steps: int = 2
    timeout_s: float = 1800.0
    with_compile: bool = True
    compile_why: str = "skipped: --no-compile"
    step_size: int = 512  # 0: no per-step figure
    step_calls: int = 3
    gemm_n: int = 2048
    quick: bool = False
    command: str = "sdagent ladder"
    throughput_images: int = 0  # > 0: the throughput table, this many images per instance and layout
    with_openvino: bool = True  # the OpenVINO peer rung, where its venv exists
    only: tuple[str, ...] = ()  # --rungs: the rungs to measure (rung names, or SHIPPED); empty: all
    image_dir: str | None = None  # where each rung writes its image (measuring.ladder_fidelity); None: no images


def build_rungs(plan: Plan, plan_file: str, req: LadderRequest, environ: Mapping[str, str]) -> list[L.Rung]:
    """The rungs on this host, from the plan in force (pure)."""
    model, w = str(req.model.path), req.workload
    stock_job = WorkerJob(model, w, STOCK_RUN.on_host(plan.isa_flags), repeats=req.repeats, warmup=1,
                          warmup_steps=req.warmup_steps)
    spec = plan.run_spec
    planned = replace(stock_job, run=replace(spec, compile=False))
    cmd = worker_cmd()
    tuned = exec_launch(plan, plan_file, cmd, environ)
    be = f"{spec.backend} {spec.precision}{', channels_last' if spec.channels_last else ''}"
    rungs = [
        L.Rung(L.VANILLA, "stock environment (no preload, torch's own OpenMP and threads, no pinning), "
               "fp32 eager, the model's scheduler", stock_launch(cmd, environ, name=L.VANILLA), stock_job),
        L.Rung(L.RUN_CPU, "`python -m torch.backends.xeon.run_cpu --enable-jemalloc` with its defaults, "
               "same fp32 eager script", run_cpu_launch(worker_file(), environ), stock_job),
        L.Rung("tuned", "`sdagent exec` (the plan's preloads, threads, KMP_*, pinning), fp32 eager",
               replace(tuned, name="tuned"), stock_job),
        L.Rung("tuned+backend", f"the plan's backend and precision ({be}), eager",
               replace(tuned, name="tuned+backend"), planned),
    ]
    if spec.backend == "native":
        rungs.append(L.Rung("tuned+backend+compile", f"{be}, the UNet, VAE decoder and text encoder as "
                            "AOTInductor packages (inductor, freezing), built or loaded before round 1",
                            replace(tuned, name="tuned+backend+compile"),
                            replace(planned, run=replace(planned.run, compile=True)),
                            unavailable=None if req.with_compile else req.compile_why, warm_cache=True))
    rungs.append(L.Rung("tuned+backend+dpm", f"{be}, eager, DPMSolverMultistepScheduler at the same step count",
                        replace(tuned, name="tuned+backend+dpm"),
                        replace(planned, workload=replace(w, scheduler="dpm"))))
    if req.with_openvino:
        rungs.append(openvino_rung(plan, req, environ))
    return rungs


#: The rungs by name, in the table's order (measuring.ladder_backends adds the backend rungs). --rungs
#: takes these and SHIPPED, the plan's own rung (shipped_rung).
BASE_RUNGS = (L.VANILLA, L.RUN_CPU, "tuned", "tuned+backend", "tuned+backend+compile", "tuned+backend+dpm",
              L.OPENVINO)
SHIPPED = "shipped"


def rung_names() -> tuple[str, ...]:
    """Every rung name --rungs accepts (SHIPPED included)."""
    from sdagent.measuring.ladder_backends import BACKEND_VARIANTS

    return (*BASE_RUNGS, *(n for n, _ in BACKEND_VARIANTS), SHIPPED)


def parse_rungs(text: str) -> tuple[str, ...]:
    """--rungs's comma-separated names, checked (BadInput names the first unknown and lists the choices)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise BadInput(f"invalid --rungs {text!r}: name at least one of {', '.join(rung_names())}")
    for n in names:
        if n not in rung_names():
            raise BadInput(f"invalid --rungs name {n!r}: choose from {', '.join(rung_names())}")
    return names


def select_rungs(rungs: Sequence[L.Rung], only: Sequence[str], shipped: str) -> list[L.Rung]:
    """Rule: --rungs measures the named rungs only; the others are reported as skipped, with that reason.
    Why: a workload where one process takes a minute (SD-Turbo or SDXL at 512x512 on a small host) cannot
    afford every rung each round; the few-step ladder needs stock, the shipped plan and the peer. An
    unselected rung starts no process and no export (honoured: tests/test_ladder.py)."""
    if not only:
        return list(rungs)
    keep = {shipped if n == SHIPPED else n for n in only}
    return [r if r.name in keep or r.unavailable else replace(r, unavailable="skipped: not in --rungs")
            for r in rungs]


def shipped_rung(plan: Plan) -> str:
    """The rung that runs the plan as it is (what a host gets with no tune)."""
    spec = plan.run_spec
    return "tuned+backend+compile" if spec.compile else "tuned+backend"


def openvino_rung(plan: Plan, req: LadderRequest, environ: Mapping[str, str]) -> L.Rung:
    """The peer: OpenVINO GenAI's Text2ImagePipeline on the same model, exported offline by optimum-intel,
    static shapes, the plan's precision as INFERENCE_PRECISION_HINT and its thread count, on the plan's
    CPUs; in its own venv (the export is made once, outside the timed rounds, in `run`)."""
    from sdagent.peers.ovexport import openvino_python
    from sdagent.peers.ovjob import OvJob
    from sdagent.peers.ovrun import openvino_launch

    desc = (f"OpenVINO GenAI Text2ImagePipeline, the same model exported with optimum-cli, static shapes, "
            f"{plan.precision} hint, {plan.settings['omp_num_threads']} threads")
    py = openvino_python(environ)
    if py is None:
        return L.Rung(L.OPENVINO, desc, None, None, unavailable="skipped: no OpenVINO venv (bash -c 'source "
                      "scripts/lib.sh; venv_openvino ~/.cache/sdagent/venv-openvino')")
    job = OvJob("(exported in run)", req.workload, plan.precision, plan.settings["omp_num_threads"], warmup=1,
                warmup_steps=req.warmup_steps, repeats=req.repeats)
    return L.Rung(L.OPENVINO, desc, openvino_launch(py, environ, prefix=plan.launcher(0)), job)


def step_rungs(rungs: Sequence[L.Rung], size: int, calls: int) -> list[L.Rung]:
    """The eager, default-scheduler rungs as single guided UNet calls at size x size."""
    if not size:
        return []
    return [replace(r, job=replace(r.job, workload=replace(r.job.workload, height=size, width=size,
                                                            scheduler="default"),
                                   unet_only=True, repeats=calls, warmup=1))
            for r in rungs if not r.unavailable and isinstance(r.job, WorkerJob) and not r.job.run.compile
            and r.job.workload.scheduler == "default"]


def runtime_note(libraries: Sequence[str]) -> str:
    """What allocator and OpenMP a process really had, from its mapped libraries."""
    names = [Path(p).name for p in libraries]
    alloc = ("jemalloc" if any(n.startswith("libjemalloc") for n in names) else
             "tcmalloc" if any(n.startswith("libtcmalloc") for n in names) else "glibc malloc")
    omp = "libiomp5" if any(n.startswith("libiomp5") for n in names) else "libgomp"
    return f"{alloc} + {omp}"


def count_flops(model: str, w: Workload, environ: Mapping[str, str], gemm_n: int, timeout_s: float, *,
                size: int | None = None, peak: bool = True, bf16_peak: bool = False) -> dict[str, Any]:
    """FLOPs (and GEMM peaks) from `python -m sdagent.measuring.flops` in a fresh stock process."""
    argv = [sys.executable, "-m", "sdagent.measuring.flops", "--model", model, "--height", str(size or w.height),
            "--width", str(size or w.width), "--gemm-n", str(gemm_n), "--json"]
    if w.batch == 1:  # no classifier-free pass: guidance <= 1, or a guidance-embedding model (LCM)
        argv.append("--no-guidance")
    if not peak:
        argv.append("--no-peak")
    if bf16_peak:
        argv.append("--bf16-peak")
    try:
        p = subprocess.run(argv, env=stock_env(environ), capture_output=True, text=True, timeout=timeout_s,
                           **child_options())
    except subprocess.TimeoutExpired:
        return {"error": f"FLOP counting timed out after {timeout_s:.0f} s"}
    if p.returncode != 0:
        tail = [ln for ln in p.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return {"error": f"FLOP counting failed: {tail[0][:300]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def export_for_openvino(rungs: list[L.Rung], req: LadderRequest, environ: Mapping[str, str],
                        emit: L.Event) -> list[L.Rung]:
    """Export the model for the OpenVINO rung once (cached across runs), before any timed round."""
    out = []
    for r in rungs:
        if r.name == L.OPENVINO and not r.unavailable:
            from sdagent.peers.ovexport import export_model

            emit("export", {"rung": r.name})
            try:
                res = export_model(req.model.path, environ=environ, family=req.model.family.name)
                r = replace(r, job=replace(r.job, ov_model=res.path),
                            description=r.description + ("" if res.reused else
                                                         f"; exported in {res.export_s:.0f} s, once"))
            except Exception as exc:  # noqa: BLE001 - the peer failing never stops the ladder
                r = replace(r, unavailable=f"the OpenVINO export failed: {one_line(exc)}")
        out.append(r)
    return out


def planned_processes(rungs: Sequence[L.Rung], steps: Sequence[L.Rung], rounds: int) -> int:
    """Processes the run will start (the progress bar's length): rounds, warm-ups, FLOPs, step figure."""
    live = [r for r in rungs if not r.unavailable]
    return len(live) * rounds + sum(1 for r in live if r.warm_cache) + 1 + len(steps)


def throughput_table(plan_for: Callable[[dict[str, Any]], Plan], layouts: Sequence[dict[str, Any]],
                     req: LadderRequest, environ: Mapping[str, str], emit: L.Event) -> list[dict[str, Any]]:
    """Each instance split, eager and compiled, every instance at once: images/min and the latency each sees."""
    from sdagent.measuring import throughput as T

    rows: list[dict[str, Any]] = []
    base: dict[bool, float] = {}
    for lay in layouts:
        plan = plan_for(lay)
        spec = plan.run_spec
        for compiled in ((False, True) if spec.backend == "native" and req.with_compile else (False,)):
            name = f"{len(plan.instances)} x {len(plan.instances[0].cpus)} CPUs, {'compiled' if compiled else 'eager'}"
            emit("throughput", {"layout": name})
            figs = T.measure_plan(plan, str(req.model.path), req.workload, environ=environ,
                                  spec=replace(spec, compile=compiled), images=req.throughput_images,
                                  timeout_s=max(req.timeout_s, 3600))
            d = figs.to_dict()
            ipm = d["images_per_min"]
            if ipm and len(plan.instances) == 1:
                base.setdefault(compiled, ipm)
            rows.append({"layout": lay, "name": name, "compiled": compiled, "images_per_min": ipm,
                         "vs_one_instance": ipm / base[compiled] if ipm and compiled in base else None,
                         "latency_p50_s": d["latency_p50_s"], "latency_p90_s": d["latency_p90_s"],
                         "failed": d["failed"], "figures": d})
            emit("throughput_done", {"layout": name, "images_per_min": ipm})
    return rows


def run(plan: Plan, plan_file: str, req: LadderRequest, *, environ: Mapping[str, str],
        on_event: L.Event | None = None, runner: Runner | None = None,
        plan_for: Callable[[dict[str, Any]], Plan] | None = None,
        layouts: Sequence[dict[str, Any]] = (),
        plan_with: Callable[[dict[str, Any]], Plan] | None = None) -> tuple[dict[str, Any], list[L.RungRow]]:
    """Measure the ladder; returns the report record (ladder.json) and the table's rows. `plan_with(overrides)`:
    the plan in force with settings on top; given, the backend rungs are measured too (measuring.ladder_backends)."""
    emit = on_event or (lambda kind, data: None)
    go = runner or (lambda launch, job, timeout: run_worker(launch, job, timeout_s=timeout))
    started = time.time()
    load_before = list(read_load_average())
    shipped = shipped_rung(plan)
    rungs = export_for_openvino(select_rungs(build_rungs(plan, plan_file, req, environ), req.only, shipped), req,
                                environ, emit)
    steps = step_rungs(rungs, req.step_size, req.step_calls)
    if plan_with is not None:
        from sdagent.measuring.ladder_backends import backend_rungs, openvino_worker_python

        ov_py = openvino_worker_python(environ) if req.with_openvino else None
        rungs += select_rungs(backend_rungs(plan, plan_with, str(req.model.path), req, environ, ov_py), req.only,
                              shipped)
    rungs = with_images(rungs, req.image_dir)
    tp_runs = len(layouts) * (2 if req.with_compile else 1) if req.throughput_images else 0
    emit("plan", {"processes": planned_processes(rungs, steps, req.rounds) + tp_runs})
    bf16 = plan.settings["precision"] == "bf16"
    emit("flops", {})
    fl = count_flops(str(req.model.path), req.workload, environ, req.gemm_n, req.timeout_s, bf16_peak=bf16)
    emit("flops_done", {"ok": "error" not in fl, "reason": fl.get("error", "ok")})

    def warm(r: L.Rung) -> WorkerResult:
        res = go(r.launch, replace(r.job, repeats=0), max(req.timeout_s, 3600))
        emit("warmed", {"rung": r.name})
        return res

    outcomes = L.run_ladder(rungs, req.rounds, lambda r, i: go(r.launch, r.job, req.timeout_s),
                            on_event=emit, warm=warm)
    step_out = L.run_ladder(steps, 1, lambda r, i: go(r.launch, r.job, req.timeout_s), on_event=emit) \
        if steps else {}
    step_fl = count_flops(str(req.model.path), req.workload, environ, 0, req.timeout_s, size=req.step_size,
                          peak=False) if steps else {}
    tp_rows = throughput_table(plan_for, layouts, req, environ, emit) if req.throughput_images and plan_for else []
    flops = ModelFlops(**fl["flops"]) if fl.get("flops") else None
    peaks = {k: v["peak_flops"] for k, v in (fl.get("gemm_peak") or {}).items()}
    fidelity = rung_fidelity(rungs, outcomes)
    rows = [replace(r, fidelity=fidelity.get(r.name)) for r in L.summarize(outcomes, flops, peaks)]
    state = machine_state().to_dict()
    report: dict[str, Any] = {
        "format": "sdagent-ladder/1",
        "command": req.command,
        "model": str(req.model.path), "model_preset": req.model.sdagent_preset,
        "workload": req.workload.to_dict(), "rounds": req.rounds, "repeats": req.repeats, "warmup": 1,
        "warmup_steps": req.warmup_steps, "quick": req.quick,
        "flops": fl.get("flops"), "gemm_peak": fl.get("gemm_peak") or {}, "flops_error": fl.get("error"),
        "plan": plan.to_dict(),
        "rungs": [r.to_dict() for r in rows],
        "samples": {n: [s.to_dict() for s in o.samples] for n, o in outcomes.items()},
        "runtime": {n: runtime_note(o.samples[0].libraries) for n, o in outcomes.items() if o.samples},
        "machine": {"cpu_model": state["cpu_model"], "topology": plan.topology_summary, "load_before": load_before,
                    "load_after": list(read_load_average()), "versions": state["versions"],
                    "memory_available_kb": state["memory_available_kb"],
                    "governor": state["governor"], "hostname": state["hostname"],
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))},
        "duration_s": round(time.time() - started, 1),
        "shipped_rung": shipped, "rungs_selected": list(req.only),
        "fidelity": fidelity,
    }
    if steps:
        sflops = (step_fl.get("flops") or {}).get("unet_step")
        report["step_figure"] = {
            "height": req.step_size, "width": req.step_size, "calls": req.step_calls,
            "unet_step_flops": sflops or 0, "unet_batch": (step_fl.get("flops") or {}).get("unet_batch", 2),
            "flops_error": step_fl.get("error"), "rows": L.step_figure(step_out, sflops, peaks),
            "samples": {n: [s.to_dict() for s in o.samples] for n, o in step_out.items()}}
    if tp_rows:
        report["throughput"] = {"images_per_instance": req.throughput_images, "rows": tp_rows}
    # say what each process really ran with (run_cpu may not find jemalloc)
    rows = [replace(r, description=f"{r.description}; ran with {report['runtime'][r.name]}")
            if r.name in report["runtime"] else r for r in rows]
    return report, rows
