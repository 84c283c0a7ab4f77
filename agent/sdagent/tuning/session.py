"""One `sdagent tune` run: candidates from the planner, each measured in a fresh process, the search,
and the plan that records the winner with every measurement behind it.

The measurement is injected (`runner`, default workers.parent.run_worker) so
the whole session runs under a fake in tests; `search` itself is pure. The
budget is a hard ceiling: each measurement is handed the seconds it may take
and is stopped there (the worker's timeout). The axes run in order of expected
effect (tuning.priority).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from sdagent.errors import BadInput, SdagentError
from sdagent.host.hostclass import host_class, installed_software
from sdagent.host.process import machine_state, read_load_average
from sdagent.host.software import HostFacts
from sdagent.host.topology import Topology, native_bf16_flag
from sdagent.measuring.runner import WorkerJob, worker_cmd
from sdagent.pipeline import quantize
from sdagent.pipeline.modeldir import ModelDir
from sdagent.pipeline.workload import Workload
from sdagent.planning.launch import Launch, plan_launch
from sdagent.planning.layout import PlanRequest, latency_layouts, throughput_layouts
from sdagent.planning.plan import Plan, make_plan, summary_line
from sdagent.planning.runspec import RunSpec
from sdagent.planning.settings import LIBRARY_KNOBS
from sdagent.tuning.axes import HostChoices, make_axes, plan_candidate, stock_candidate
from sdagent.tuning.backends import backend_outcome
from sdagent.tuning.gate import (
    NOT_GATED_BUDGET, BudgetedImages, GateOverBudget, ImageCost, Images, InProcessImages, fidelity_gate, gate_cost_s,
    gate_images, gate_workloads, lossy,
)
from sdagent.tuning.priority import order_axes
from sdagent.tuning.rule import Rule
from sdagent.tuning.search import Axis, Candidate, Event, MeasureFailed, MeasureStopped, TuneResult, search
from sdagent.workers.parent import run_worker
from sdagent.workers.result import WorkerResult

#: (launch, job, timeout in seconds) -> the worker's result
Runner = Callable[[Launch, WorkerJob, float], WorkerResult]


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
    only_axes: tuple[str, ...] = ()  # --axis: search only these axes (tuning.axes names); () = every axis
    #: what a lossy candidate's images must reach (measuring.fidelity.FidelityBound); None: its default
    fidelity_bound: Any = None


@dataclass(frozen=True)
class TuneOutcome:
    result: TuneResult
    record: dict[str, Any]  # the plan's `tuning` record: every measurement, the reason, the machine
    plan: Plan  # the winner as the tuned plan


def host_choices(plan: Plan, facts: HostFacts, allow_compile: bool,
                 layouts: tuple[dict[str, Any], ...] = (), vae_tiny: bool = False) -> HostChoices:
    """What this host can try, from the derived plan and the host's facts."""
    return HostChoices(
        physical_cores=plan.settings["omp_num_threads"], bf16=native_bf16_flag(plan.isa_flags) is not None,
        ipex=facts.ipex.usable, jemalloc=bool(facts.libraries.get("jemalloc")),
        tcmalloc=bool(facts.libraries.get("tcmalloc")), iomp=bool(facts.libraries.get("iomp")),
        pin=("numactl" if facts.numactl else "taskset" if facts.taskset else None),
        # no compiler, no compiled candidate: the planner refuses compile=True there (exit 2)
        compile=allow_compile and bool(facts.cxx), layouts=layouts, openvino=_openvino_usable(),
        vae_tiny=vae_tiny, int8=allow_compile and bool(facts.cxx) and quantize.available())


def _openvino_usable() -> bool:
    """Backend openvino is a candidate where this Python has OpenVINO GenAI (the workers run this Python)."""
    from sdagent.pipeline.ov_backend import openvino_status

    return openvino_status().usable


@dataclass
class _Session:
    """One tune's context: the host, the request, how a candidate is planned, launched and measured."""

    topo: Topology
    facts: HostFacts
    req: TuneRequest
    environ: Mapping[str, str]
    runner: Runner
    details: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per candidate, per process
    images: Images | None = None  # the fidelity gate's image maker (default: InProcessImages)
    gates: dict[str, Any] = field(default_factory=dict)  # per lossy candidate: measuring.fidelity.GateDecision
    clock: Callable[[], float] = time.monotonic  # the search's clock: the gate's images count against the budget
    not_gated: dict[str, dict[str, Any]] = field(default_factory=dict)  # per lossy candidate the budget left ungated
    gate_made: set[tuple[RunSpec, Workload]] = field(default_factory=set)  # the gate's images made so far
    gate_seconds: list[float] = field(default_factory=list)  # what each of them took (its load included)

    @property
    def throughput(self) -> bool:
        return self.req.objective == "throughput"

    @property
    def request(self) -> PlanRequest:
        """The layout measured: the plan file's, else one instance per NUMA node (throughput) or the default."""
        start = self.req.start
        if start is not None and start.request != PlanRequest():
            return start.request
        return PlanRequest(instances=len(self.topo.nodes)) if self.throughput else PlanRequest()

    def plan_for(self, overrides: Mapping[str, Any], layout: Mapping[str, Any] | None = None) -> Plan:
        lay = PlanRequest.from_dict(layout) if layout else self.request
        return make_plan(self.topo, self.facts, lay, overrides=dict(overrides), objective=self.req.objective)

    def honoured(self, file_settings: Mapping[str, Any]) -> dict[str, Any]:
        """A plan file's settings as this host honours them (the planner's lenient path for a file: what it
        cannot honour falls back, e.g. an older file's `ov_*` values on the native backend), so that they can
        be a candidate's overrides, which the planner takes strictly."""
        settings = make_plan(self.topo, self.facts, self.request, file_settings=file_settings,
                             objective=self.req.objective).settings
        return {k: settings[k] for k in file_settings if k in settings}

    def resolve(self, overrides: Mapping[str, Any], layout: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(self.plan_for(overrides, layout).settings)

    # -- the candidates ------------------------------------------------------------------------

    def first(self) -> list[Candidate]:
        """The first candidate: the plan file given (its settings as honoured here), else the topology plan."""
        start = self.req.start
        first = [plan_candidate(self.resolve)]
        if start is not None and start.source != "derived":
            given = self.honoured({k: v for k, v in start.settings.items() if k not in LIBRARY_KNOBS.values()})
            first = [Candidate(f"plan file ({start.source})", given, self.resolve(given), "plan",
                               warmup=bool(given.get("compile")))]
        if not self.req.allow_compile and first[0].settings.get("compile"):
            off = {**first[0].overrides, "compile": False}
            first = [Candidate(first[0].name, off, self.resolve(off), "plan")]
        return first

    def axes(self) -> list[Axis]:
        """This host's axes, by expected effect (tuning.priority)."""
        layouts = tuple(lay for lay in (throughput_layouts(self.topo) if self.throughput
                                        else latency_layouts(self.topo))
                        if lay != self.request.to_dict())
        derived = self.plan_for({})
        axes = order_axes(make_axes(host_choices(derived, self.facts, self.req.allow_compile, layouts,
                                                 vae_tiny=self.vae_tiny()), self.resolve))
        return [a for a in axes if a.name in self.req.only_axes] if self.req.only_axes else axes

    def vae_tiny(self) -> bool:
        """The VAE axis's condition: the model carries a tiny autoencoder that fits it (pipeline/vae.py)."""
        from sdagent.pipeline.vae import check_tiny, tiny_available

        if not tiny_available(self.req.model.path):
            return False
        try:
            check_tiny(self.req.model.path)
        except BadInput:
            return False
        return True

    # -- measuring -----------------------------------------------------------------------------

    def job_for(self, c: Candidate, repeats: int) -> WorkerJob:
        return WorkerJob(str(self.req.model.path), self.req.workload, RunSpec.from_settings(c.settings, self.topo.flags),
                         repeats=repeats, warmup=1, warmup_steps=self.req.warmup_steps)

    def timeout(self, limit_s: float) -> float:
        """The worker's timeout: the search's limit (the budget's ceiling), never above --timeout."""
        return min(self.req.timeout_s, limit_s) if math.isfinite(limit_s) else self.req.timeout_s

    def run(self, c: Candidate, repeats: int, limit_s: float) -> WorkerResult:
        """One fresh process of `c` (stock too: its settings on the plan's CPUs and threads, launched like
        any plan); its figures go to the record; MeasureFailed with the reason when it failed."""
        launch = plan_launch(self.plan_for(c.overrides, c.layout), worker_cmd(), self.environ, name=c.name)
        res = self.runner(launch, self.job_for(c, repeats), self.timeout(limit_s))
        m = res.measurement
        if m is not None:
            step = m.unet_step_median_s
            self.details.setdefault(c.name, []).append({
                "latency_s": list(m.latency_s), "wall_s": round(res.wall_s, 2),
                "unet_step_median_s": None if step is None else round(step, 5),
                "libraries": list(m.process.libraries), "torch_threads": m.process.torch_threads,
                "affinity": list(m.process.affinity), "observed": m.observed,
                "load_average": list(m.load_average)})
        if not res.ok:
            stopped = res.measurement is None and res.reason.startswith("timed out") and limit_s < self.req.timeout_s
            raise (MeasureStopped if stopped else MeasureFailed)(
                f"stopped at the budget after {limit_s:.0f} s" if stopped else res.reason)
        return res

    def latency(self, c: Candidate, limit_s: float) -> float:
        """Latency objective: the median of --repeats images on instance 0."""
        return self.run(c, self.req.repeats, limit_s).latency_s

    def host_seconds_per_image(self, c: Candidate, limit_s: float) -> float:
        """Throughput objective: every instance of the candidate's layout at once; the host's seconds per image."""
        from sdagent.measuring.throughput import measure_plan

        plan = self.plan_for(c.overrides, c.layout)
        figs = measure_plan(plan, str(self.req.model.path), self.req.workload, environ=self.environ,
                            spec=RunSpec.from_settings(c.settings, self.topo.flags), images=self.req.repeats,
                            timeout_s=self.timeout(limit_s))
        self.details.setdefault(c.name, []).append({"throughput": figs.to_dict()})
        if figs.failed or not figs.images_per_min:
            why = "; ".join(i.reason for i in figs.failed) or "no image completed"
            stopped = limit_s < self.req.timeout_s and ("timed out" in why or "not warm in" in why)
            raise (MeasureStopped if stopped else MeasureFailed)(why)
        return 60.0 / figs.images_per_min

    def image_cost(self) -> ImageCost:
        """What one gate image costs here, from stock's fresh processes (stock runs first, and the gate's
        reference is stock's compute path): the median wall time less the images as the load, the median
        latency as one image, or the gate's own images' median when larger. Nothing measured yet: ImageCost(0, 0),
        and BudgetedImages still refuses to start an image past the deadline."""
        import statistics

        runs = [d for d in self.details.get("stock", []) if d.get("latency_s")]
        if not runs:
            return ImageCost(0.0, 0.0)
        image_s = max([statistics.median(x for d in runs for x in d["latency_s"])]
                      + ([statistics.median(self.gate_seconds)] if self.gate_seconds else []))
        load_s = statistics.median(max(d["wall_s"] - sum(d["latency_s"]), 0.0) for d in runs)
        return ImageCost(load_s, image_s)

    def skip_gate(self, c: Candidate, bound: Any, words: str) -> MeasureFailed:
        """Record a lossy candidate the budget left ungated (NOT_GATED_BUDGET and why) and say so: MeasureFailed,
        so the search never measures nor ships it."""
        reason = f"{NOT_GATED_BUDGET} ({words})"
        self.not_gated[c.name] = {"passed": False, "gated": False, "reason": reason, "fidelity": None,
                                  "bound": bound.to_dict(), "bf16": None}
        return MeasureFailed(f"lossy ({lossy(c.settings)}): {reason}")

    def gate(self, c: Candidate, limit_s: float = math.inf) -> float:
        """A lossy candidate's images against the fp32 reference's, once, before it is measured (tuning.gate),
        within `limit_s` (the seconds the search gave this measurement: the gate's images count against the
        budget). Returns the seconds the gate took (0 when not lossy or already gated). MeasureFailed with the
        gate's reason and figures when it fails, or NOT_GATED_BUDGET when its images do not fit `limit_s`
        (estimated up front, then checked before each image): reported, never measured or shipped."""
        why = lossy(c.settings)
        if why is None:
            return 0.0
        if c.name in self.not_gated:
            raise MeasureFailed(f"lossy ({why}): {self.not_gated[c.name]['reason']}")
        start = self.clock()
        if c.name not in self.gates:
            from sdagent.measuring.fidelity import DEFAULT_BOUND

            bound = self.req.fidelity_bound or DEFAULT_BOUND
            spec, workloads = RunSpec.from_settings(c.settings, self.topo.flags), gate_workloads(self.req.workload)
            cost = self.image_cost()
            need = gate_cost_s(gate_images(spec, workloads, bound), self.gate_made, cost)
            if need > limit_s:
                raise self.skip_gate(c, bound, f"its images need ~{need:.0f} s, {max(limit_s, 0):.0f} s left")
            images = self.images or InProcessImages(str(self.req.model.path))
            budgeted = BudgetedImages(images, self.clock, start + limit_s, cost, self.gate_made, self.gate_seconds)
            try:
                self.gates[c.name] = fidelity_gate(spec, workloads, budgeted, bound)
            except GateOverBudget as exc:
                raise self.skip_gate(c, bound, f"stopped after {self.clock() - start:.0f} s: {exc}") from None
            except SdagentError as exc:
                raise MeasureFailed(f"the fidelity gate could not measure it ({why}): {exc}") from None
            finally:
                if isinstance(images, InProcessImages):
                    images.close()
                self.images = images
        decision = self.gates[c.name]
        if not decision.passed:
            raise MeasureFailed(f"lossy ({why}): {decision.reason}")
        return self.clock() - start

    def after_gate(self, c: Candidate, limit_s: float) -> float:
        """The seconds the measurement may take once the gate has taken its share of `limit_s`; MeasureStopped
        when nothing is left (the budget is a hard ceiling)."""
        left = limit_s - self.gate(c, limit_s)
        if left <= 0:
            raise MeasureStopped("not started: the fidelity gate used the seconds the budget left")
        return left

    def measure(self, c: Candidate, limit_s: float) -> float:
        left = self.after_gate(c, limit_s)  # the measurement gets what the gate left of its limit
        return self.host_seconds_per_image(c, left) if self.throughput else self.latency(c, left)

    def warm(self, c: Candidate, limit_s: float) -> None:
        """The search's warm-up of `c`: one untimed run in a fresh worker, which builds what the candidate needs
        (its compiled packages, its OpenVINO export: minutes, an int8-hybrid export of SD-1.5 close to an hour on
        2 cores) in a process the budget's ceiling stops; then, for a lossy candidate, the fidelity gate within
        what is left, whose in-process images load what the worker built. Gating first would build it in the
        tune process, where an image in progress is not interrupted, so past the ceiling. A candidate that then
        fails the gate has run untimed, never measured nor shipped."""
        start = self.clock()
        is_lossy = lossy(c.settings) is not None
        if is_lossy and (c.name in self.not_gated or c.name in self.gates):
            self.gate(c, limit_s)  # decided before: a failure's reason again, without another worker
        self.run(c, 0, limit_s)
        if is_lossy:
            self.after_gate(c, limit_s - (self.clock() - start))

    # -- the record and the plan ---------------------------------------------------------------

    def record(self, result: TuneResult, load_before: list[float], started: float) -> dict[str, Any]:
        """The plan's `tuning` record: the search's, with the workload, the machine and every process."""
        req = self.req
        state = machine_state().to_dict()
        record = result.to_dict()
        record.update({
            "format": "sdagent-tune/1",
            "command": req.command,
            "model": str(req.model.path), "model_preset": req.model.sdagent_preset, "model_name": req.model.name,
            # the class this plan was measured on: its siblings install it, verify holds them to these figures
            "host_class": host_class(self.topo, installed_software()).to_dict(),
            "workload": req.workload.to_dict(), "repeats": req.repeats, "warmup_steps": req.warmup_steps,
            "objective": req.objective, "measure": "the host's seconds per image, every instance at once"
            if self.throughput else "one image's median latency on instance 0",
            "layout": (dict(result.chosen.layout) if result.chosen.layout else self.request.to_dict()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "chosen_settings": summary_line(result.chosen.settings),
            "machine": {"cpu_model": state["cpu_model"], "topology": self.topo.summary(),
                        "load_before": load_before, "load_after": list(read_load_average()),
                        "memory_available_kb": state["memory_available_kb"],
                        "versions": state["versions"], "governor": state["governor"]},
            "processes": self.details,
            # which backend won and by how much (issue 22 item 4): against stock and the runner-up backend
            "backends": backend_outcome(result).to_dict(),
            # each lossy candidate's images against the fp32 reference (issue 22 item 5), passed or not
            # and those the budget left ungated (NOT_GATED_BUDGET: "gated": false, no figures, never shipped)
            "fidelity": {**{name: d.to_dict() for name, d in self.gates.items()}, **self.not_gated},
        })
        for c in record["candidates"]:
            c["description"] = summary_line(result.candidates[c["name"]].settings)
        return record

    def tuned_plan(self, result: TuneResult, record: dict[str, Any]) -> Plan:
        """The winner as the tuned plan itself, not overrides on top of one."""
        chosen_layout = PlanRequest.from_dict(result.chosen.layout) if result.chosen.layout else self.request
        plan_file = os.path.abspath(self.req.plan_file) if self.req.plan_file else None
        plan = make_plan(self.topo, self.facts, chosen_layout, file_settings=dict(result.chosen.overrides),
                         source="tuned", tuning=record, plan_file=plan_file, objective=self.req.objective)
        return with_gate_reason(plan, result, self.gates)


def gate_speed_words(result: TuneResult, name: str) -> str:
    """`1.25x faster per image` from the last comparison in which `name` was decided faster (the geometric
    mean of its paired ratios), or '' when it never was."""
    won = [c for c in result.comparisons if c.candidate == name and c.verdict is not None
           and c.verdict.outcome == "faster" and c.ratios]
    return f"{1 / math.exp(won[-1].mean_log_ratio):.2f}x faster per image" if won else ""


def with_gate_reason(plan: Plan, result: TuneResult, gates: Mapping[str, Any]) -> Plan:
    """A tiny-VAE winner's decision says what shipped it: its speed, the gate's figures and the bound."""
    if plan.vae != "tiny":
        return plan
    name = next((n for n in reversed(result.path) if n in gates), None)
    if name is None:
        return plan
    speed = gate_speed_words(result, name)
    words = f"vae tiny: {speed + ', ' if speed else ''}{gates[name].reason}"
    return replace(plan, decisions=tuple(replace(d, reason=words) if d.key == "vae" else d for d in plan.decisions))


def tune(topo: Topology, facts: HostFacts, req: TuneRequest, *, environ: Mapping[str, str],
         on_event: Event | None = None, runner: Runner | None = None,
         clock: Callable[[], float] = time.monotonic, images: Images | None = None) -> TuneOutcome:
    """Measure stock, the topology plan and each axis's variants; return the winner as a tuned plan.

    BudgetTooSmall (tuning.search, exit 2) when not even the minimum fits the budget.
    """
    go = runner or (lambda launch, job, timeout_s: run_worker(launch, job, timeout_s=timeout_s))
    s = _Session(topo, facts, req, environ, go, images=images, clock=clock)
    stock = stock_candidate(s.resolve)
    load_before = list(read_load_average())
    started = time.time()
    result = search(stock, s.first(), s.axes(), s.measure, budget_s=req.budget_s, clock=clock, warm=s.warm,
                    rule=req.rule, on_event=on_event)
    record = s.record(result, load_before, started)
    return TuneOutcome(result, record, s.tuned_plan(result, record))
