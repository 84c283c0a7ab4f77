"""One `sdagent tune` run: candidates from the planner, each measured in a fresh process, the search,
and the plan that records the winner with every measurement behind it.

The measurement is injected (`runner`, default measuring.runner.run_worker) so
the whole session runs under a fake in tests; `search` itself is pure.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sdagent.host.process import machine_state, read_load_average
from sdagent.host.software import HostFacts
from sdagent.host.topology import Topology, native_bf16_flag
from sdagent.measuring.runner import WorkerJob, WorkerResult, run_worker, worker_cmd
from sdagent.pipeline.modeldir import ModelDir
from sdagent.pipeline.workload import Workload
from sdagent.planning.launch import Launch, plan_launch
from sdagent.planning.layout import PlanRequest, throughput_layouts
from sdagent.planning.plan import Plan, make_plan, summary_line
from sdagent.planning.runspec import RunSpec
from sdagent.planning.settings import LIBRARY_KNOBS
from sdagent.tuning.axes import HostChoices, make_axes, plan_candidate, stock_candidate
from sdagent.tuning.rule import Rule
from sdagent.tuning.search import Candidate, Event, MeasureFailed, TuneResult, search

Runner = Callable[[Launch, WorkerJob], WorkerResult]


@dataclass(frozen=True)
class TuneRequest:
    """What to measure and for how long (validated by the caller)."""

    model: ModelDir
    workload: Workload
    budget_s: float
    rule: Rule = Rule()
    repeats: int = 3
    warmup_steps: int = 2
    timeout_s: float = 1800.0
    allow_compile: bool = True
    plan_file: str | None = None  # where the plan will be written (recorded in it)
    command: str = "sdagent tune"
    start: Plan | None = None  # the plan in force (--plan-file): measured as the first candidate
    objective: str = "latency"  # latency: one image's time on instance 0; throughput: the host's images/min


@dataclass(frozen=True)
class TuneOutcome:
    result: TuneResult
    record: dict[str, Any]  # the plan's `tuning` record: every measurement, the reason, the machine
    plan: Plan  # the winner as the tuned plan


def host_choices(plan: Plan, facts: HostFacts, allow_compile: bool,
                 layouts: tuple[dict[str, Any], ...] = ()) -> HostChoices:
    """What this host can try, from the derived plan and the host's facts."""
    return HostChoices(
        physical_cores=plan.settings["omp_num_threads"], bf16=native_bf16_flag(plan.isa_flags) is not None,
        ipex=facts.ipex.usable, jemalloc=bool(facts.libraries.get("jemalloc")),
        tcmalloc=bool(facts.libraries.get("tcmalloc")), iomp=bool(facts.libraries.get("iomp")),
        pin=("numactl" if facts.numactl else "taskset" if facts.taskset else None),
        # no compiler, no compiled candidate: the planner refuses compile=True there (exit 2)
        compile=allow_compile and bool(facts.cxx), layouts=layouts, openvino=_openvino_usable())


def _openvino_usable() -> bool:
    """Backend openvino is a candidate where this Python has OpenVINO GenAI (the workers run this Python)."""
    from sdagent.pipeline.ov_backend import openvino_status

    return openvino_status().usable


def _step_median(d: Mapping[str, Any]) -> float | None:
    steps = [s for r in d.get("runs", []) for s in r.get("unet_steps_s", [])]
    return round(statistics.median(steps), 5) if steps else None


def tune(topo: Topology, facts: HostFacts, req: TuneRequest, *, environ: Mapping[str, str],
         on_event: Event | None = None, runner: Runner | None = None,
         clock: Callable[[], float] = time.monotonic) -> TuneOutcome:
    """Measure stock, the topology plan and each axis's variants; return the winner as a tuned plan."""
    run_one = runner or (lambda launch, job: run_worker(launch, job, timeout_s=req.timeout_s))
    throughput = req.objective == "throughput"
    request = req.start.request if req.start is not None and req.start.request != PlanRequest() else (
        PlanRequest(instances=len(topo.nodes)) if throughput else PlanRequest())

    def plan_for(overrides: Mapping[str, Any], layout: Mapping[str, Any] | None = None) -> Plan:
        lay = PlanRequest.from_dict(layout) if layout else request
        return make_plan(topo, facts, lay, overrides=dict(overrides), objective=req.objective)

    def resolve(overrides: Mapping[str, Any], layout: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(plan_for(overrides, layout).settings)

    derived = plan_for({})
    stock = stock_candidate(resolve)
    first = [plan_candidate(resolve)]
    if req.start is not None and req.start.source != "derived":
        # The plan file given: its settings (as honoured here) are the first candidate's.
        given = {k: v for k, v in req.start.settings.items() if k not in LIBRARY_KNOBS.values()}
        first = [Candidate(f"plan file ({req.start.source})", given, resolve(given), "plan",
                           warmup=bool(given.get("compile")))]
    if not req.allow_compile and first[0].settings.get("compile"):
        off = {**first[0].overrides, "compile": False}
        first = [Candidate(first[0].name, off, resolve(off), "plan")]
    layouts = tuple(lay for lay in throughput_layouts(topo) if lay != request.to_dict()) if throughput else ()
    axes = make_axes(host_choices(derived, facts, req.allow_compile, layouts), resolve)
    details: dict[str, list[dict[str, Any]]] = {}
    cmd = worker_cmd()

    def launch_for(c: Candidate) -> Launch:
        # stock too: its settings on the plan's CPUs and thread count, launched like any plan
        return plan_launch(plan_for(c.overrides, c.layout), cmd, environ, name=c.name)

    def job_for(c: Candidate, repeats: int) -> WorkerJob:
        return WorkerJob(str(req.model.path), req.workload, RunSpec.from_settings(c.settings, topo.flags),
                         repeats=repeats, warmup=1, warmup_steps=req.warmup_steps)

    def host_seconds_per_image(c: Candidate) -> float:
        """Throughput: every instance of the candidate's layout at once; the host's seconds per image."""
        from sdagent.measuring import throughput as T

        figs = T.run(plan_for(c.overrides, c.layout),
                     T.ThroughputRequest(str(req.model.path), job_for(c, req.repeats), req.repeats, None,
                                         req.timeout_s), environ=environ)
        details.setdefault(c.name, []).append({"throughput": figs.to_dict()})
        if figs.failed or not figs.images_per_min:
            raise MeasureFailed("; ".join(i.reason for i in figs.failed) or "no image completed")
        return 60.0 / figs.images_per_min

    def run(c: Candidate, repeats: int) -> WorkerResult:
        res = run_one(launch_for(c), job_for(c, repeats))
        if res.data and res.data.get("ok"):
            d = res.data
            details.setdefault(c.name, []).append({
                "latency_s": d["latency_s"], "wall_s": round(res.wall_s, 2),
                "unet_step_median_s": _step_median(d), "libraries": d["process"]["libraries"],
                "torch_threads": d["process"]["torch_threads"], "affinity": d["process"]["affinity"],
                "observed": d.get("observed"), "load_average": d.get("load_average")})
        if not res.ok:
            raise MeasureFailed(res.reason)
        return res

    load_before = list(read_load_average())
    started = time.time()
    measure = host_seconds_per_image if throughput else (lambda c: run(c, req.repeats).latency_s)
    result = search(stock, first, axes, measure, budget_s=req.budget_s, clock=clock,
                    warm=lambda c: run(c, 0), rule=req.rule, on_event=on_event)
    state = machine_state().to_dict()
    record = result.to_dict()
    record.update({
        "format": "sdagent-tune/1",
        "command": req.command,
        "model": str(req.model.path), "model_preset": req.model.sdagent_preset,
        "workload": req.workload.to_dict(), "repeats": req.repeats, "warmup_steps": req.warmup_steps,
        "objective": req.objective, "measure": "the host's seconds per image, every instance at once"
        if throughput else "one image's median latency on instance 0",
        "layout": (dict(result.chosen.layout) if result.chosen.layout else request.to_dict()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "chosen_settings": summary_line(result.chosen.settings),
        "machine": {"cpu_model": state["cpu_model"], "topology": topo.summary(),
                    "load_before": load_before, "load_after": list(read_load_average()),
                    "memory_available_kb": state["memory_available_kb"],
                    "versions": state["versions"], "governor": state["governor"]},
        "processes": details,
    })
    for c in record["candidates"]:
        c["description"] = summary_line(result.candidates[c["name"]].settings)
    # The winner is the tuned plan itself, not overrides on top of one.
    chosen_layout = PlanRequest.from_dict(result.chosen.layout) if result.chosen.layout else request
    plan = make_plan(topo, facts, chosen_layout, file_settings=dict(result.chosen.overrides), source="tuned",
                     tuning=record, plan_file=os.path.abspath(req.plan_file) if req.plan_file else None,
                     objective=req.objective)
    return TuneOutcome(result, record, plan)
