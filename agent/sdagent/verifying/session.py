"""The verify sequence: tuning in effect, target, measurement, quality, stock; one exit code.

Order, and why: the process checks (libraries mapped, threads, affinity) and
the target cost nothing, so they run first; once the answer is 3 (tuning not
in effect) or 4 (no target), running the model cannot change it, so the
costly steps are skipped. Then the benchmark (in this process: it is the
process whose tuning is being proven), the backend and precision seen inside
the UNet's call, latency and validity, output sanity, the bf16-vs-fp32
comparison, and the stock comparison.

What measures is injected (a :class:`Measurer`), so the sequence is
unit-tested with a fake one; :class:`LocalMeasurer` is the real one.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from sdagent import __version__
from sdagent.errors import BadInput, Exit, SdagentError, one_line
from sdagent.host.process import ProcessState
from sdagent.host.topology import Topology
from sdagent.measuring.bench import BenchResult, ProgressBar, bench_model, no_bar
from sdagent.measuring.fidelity import DEFAULT_BOUND, FidelityBound
from sdagent.pipeline.modeldir import ModelDir
from sdagent.pipeline.workload import Workload
from sdagent.planning.layout import instance_physical_cores
from sdagent.planning.plan import Plan
from sdagent.planning.runspec import FP32_REFERENCE, STOCK_RUN, RunSpec
from sdagent.verifying.checks import (
    FAIL, INCONCLUSIVE, Check, StockFigures, VerifyResult, check_bf16_diff, check_fidelity, check_observed, check_stock,
    check_artifacts, check_target, decide_exit, image_checks, latency_checks, mean_abs_diff, process_checks, skip_measured,
    skipped, stock_figures_from_tuning, throughput_check,
)
from sdagent.host.hostclass import host_class, installed_software
from sdagent.verifying.classcheck import ClassComparison, class_figures_from_tuning, class_record, compare_with_class
from sdagent.verifying.targets import HostKey, Target, select_target


@dataclass(frozen=True)
class VerifyRequest:
    """Everything verify checks against, validated by the caller."""

    model: ModelDir
    workload: Workload
    plan: Plan
    instance: int
    targets: tuple[Target, ...]
    topology: Topology
    runs: int | None = None  # None: the matching target's min_runs
    warmup: int = 1
    against_stock: bool = False
    host_class: Any = None  # host.hostclass.HostClass of this host; None: from the topology and installed versions


class Measurer(Protocol):
    """What verify needs measured: the plan in this process, the fp32 reference image, stock elsewhere."""

    def bench(self, spec: RunSpec, runs: int, warmup: int) -> BenchResult: ...

    def reference(self, spec: RunSpec) -> tuple[Any, dict[str, Any]]: ...

    def stock(self, spec: RunSpec, runs: int, warmup: int) -> tuple[list[float] | str, dict[str, Any] | None]: ...

    def throughput(self, plan: Plan, spec: RunSpec, images: int, confidence: float) -> Any: ...

    def artifact_ids(self, spec: RunSpec) -> dict[str, str]: ...

    def fidelity(self, spec: RunSpec, bound: FidelityBound) -> Any: ...


class LocalMeasurer:
    """The real measurer: the plan's pipeline in this process, stock in a fresh stock-environment worker."""

    def __init__(self, model: ModelDir, workload: Workload, *, environ: Mapping[str, str],
                 plan: Plan | None = None, artifacts_dir: str | None = None,
                 bar: ProgressBar = no_bar, timeout_s: float = 7200.0) -> None:
        self.model, self.w, self.environ, self.plan = model, workload, environ, plan
        self.cache, self.bar, self.timeout_s = artifacts_dir, bar, timeout_s
        self.lock_wait_s: float | None = None  # set once the host lock is held: not part of the start-up

    def bench(self, spec: RunSpec, runs: int, warmup: int) -> BenchResult:
        result = bench_model(self.model, self.w, spec, runs, warmup,
                             plan=self.plan,
                             artifacts_dir=self.cache, bar=self.bar, lock_wait_s=self.lock_wait_s)
        gc.collect()  # the benchmarked pipeline is gone: free it before the reference loads another
        return result

    def reference(self, spec: RunSpec) -> tuple[Any, dict[str, Any]]:
        from sdagent.pipeline.backends import ready

        g = ready(self.model.path, spec, self.w, self.cache).generate(self.w)
        return g.array, {"run": spec.to_dict(), "seed": self.w.seed, "latency_s": round(g.total_s, 6)}

    def fidelity(self, spec: RunSpec, bound: FidelityBound) -> Any:
        """A lossy plan's images against the fp32 reference's on tune's fixed seeds and prompts, judged the way
        tune's gate judged it (tuning.gate.fidelity_gate: a measuring.fidelity.GateDecision)."""
        from sdagent.tuning.gate import InProcessImages, fidelity_gate, gate_workloads

        images = InProcessImages(str(self.model.path), self.cache)
        try:
            return fidelity_gate(spec, gate_workloads(self.w), images, bound)
        finally:
            images.close()

    def stock(self, spec: RunSpec, runs: int, warmup: int) -> tuple[list[float] | str, dict[str, Any] | None]:
        """The same workload in a fresh stock process on this process's CPUs (it inherits the affinity)."""
        from sdagent.measuring.runner import WorkerJob, worker_cmd
        from sdagent.planning.launch import stock_launch
        from sdagent.workers.parent import run_worker

        job = WorkerJob(str(self.model.path), self.w, spec, warmup=warmup, warmup_steps=self.w.steps,
                        repeats=runs)
        res = run_worker(stock_launch(worker_cmd(), self.environ), job, timeout_s=self.timeout_s)
        data = res.measurement.to_dict() if res.measurement is not None else None
        if not res.ok or res.measurement is None:
            return f"the stock process failed: {res.reason}", data
        return list(res.measurement.latency_s), data

    def artifact_ids(self, spec: RunSpec) -> dict[str, str]:
        """The package digests this run calls for (model, shape, precision, torch, this CPU); backend
        openvino: the export's (model content, OpenVINO toolchain, shape, precision hint, this CPU)."""
        from sdagent.pipeline.backends import artifact_keys

        if spec.backend == "openvino":
            from sdagent.pipeline.ov_backend import ov_key

            return {"openvino": ov_key(self.model.path, spec, self.w).digest}

        return {p: k.digest for p, k in artifact_keys(self.model.path, spec, self.w).items()}

    def throughput(self, plan: Plan, spec: RunSpec, images: int, confidence: float) -> Any:
        """Every instance of the plan at once, each in a fresh process under its instance plan."""
        from sdagent.measuring.throughput import measure_plan

        return measure_plan(plan, str(self.model.path), self.w, environ=self.environ, spec=spec, images=images,
                            artifacts_dir=self.cache, timeout_s=self.timeout_s, confidence=confidence)


def check_startup(bench: BenchResult) -> Check:
    """Start-up of the OpenVINO pipeline, reported (never a verdict): finding the export, loading the IR,
    compiling it for the CPU, and process start to the end of the first image."""
    st = (bench.setup.get("openvino") or {}).get("startup_s") or {}
    parts = [f"export found or built in {st.get('find_or_build', 0):.2f} s, IR loaded in {st.get('ir_load', 0):.2f} s, "
             f"compiled for the CPU in {st.get('cpu_compile', 0):.2f} s"]
    if bench.startup_s is not None:
        parts.append(f"process start to the first image {bench.startup_s:.2f} s")
    return Check("startup", "tuning", "pass", "; ".join(parts), bench.startup_s)


def host_key(req: VerifyRequest) -> HostKey:
    """What target entries are matched against: this instance's host facts and the workload."""
    topo, plan, w = req.topology, req.plan, req.workload
    return HostKey(flags=tuple(topo.flags), cpu_model=topo.model_name,
                   physical_cores=instance_physical_cores(topo, plan.instance(req.instance).cpus),
                   model=req.model.name, height=w.height, width=w.width, steps=w.steps,
                   precision=plan.precision, backend=plan.backend, family=req.model.family.name)


def verify(req: VerifyRequest, measurer: Measurer, state: ProcessState, *,
           clock: Callable[[], float] = time.perf_counter, started: float | None = None,
           lock_wait_s: float | None = None) -> VerifyResult:
    """Run the checks in order and decide the exit code (BadInput met mid-way propagates).

    `lock_wait_s`: how long the process waited for the host lock before this, reported on its own.
    """
    t0 = clock()
    started = time.time() if started is None else started
    plan = req.plan
    checks: list[Check] = []
    figures: dict[str, Any] = {}
    target: Target | None = None
    key = host_key(req)
    selection = ""

    def result() -> VerifyResult:
        return VerifyResult(
            exit_code=decide_exit(checks), checks=tuple(checks), target=target, host_key=key,
            selection=selection, plan=plan.to_dict(), instance=req.instance, model=req.model.name,
            bench=figures.get("bench"), reference=figures.get("reference"), stock=figures.get("stock"),
            throughput=figures.get("throughput"), host_class=_class_record(req, checks),
            started_at=started, duration_s=clock() - t0, version=__version__, lock_wait_s=lock_wait_s,
            shipped_fidelity=shipped_record(plan))

    checks += process_checks(plan, state, plan.expected_affinity(req.instance, req.topology.allowed_cpus))
    sel = select_target(req.targets, key)
    target, selection = sel.target, sel.explain()
    checks.append(check_target(target, selection))
    checks.append(check_stock("stock_tune", stock_figures_from_tuning(plan.tuning)))

    early = decide_exit(checks)
    if early in (Exit.TUNING_NOT_IN_EFFECT, Exit.NO_TARGET) or target is None:
        checks += skip_measured("skipped: " + ("the tuning is not in effect" if early == Exit.TUNING_NOT_IN_EFFECT
                                               else "no target matches"))
        return result()
    try:
        checks += _measured(req, target, measurer, figures)
    except SdagentError:
        raise
    except Exception as exc:  # noqa: BLE001 - a crash is "no verdict" (exit 7), recorded, never a miss
        checks.append(Check("run", "error", FAIL, f"the measurement did not complete: {one_line(exc)}"))
    return result()


def _measured(req: VerifyRequest, target: Target, measurer: Measurer, figures: dict[str, Any]) -> list[Check]:
    """Benchmark the plan here; then output quality and, if asked, the stock comparison."""
    plan = req.plan
    checks: list[Check] = []
    n = req.runs if req.runs is not None else target.min_runs
    spec = plan.run_spec
    bench = measurer.bench(spec, n, req.warmup)
    figures["bench"] = bench
    obs = bench.observed
    how = f"computed in {obs.out_dtype}, UNet weights {obs.param_dtype}, path {obs.mode}" if obs else ""
    checks.append(check_observed("backend", plan.backend, obs.backend if obs else None,
                                 f"{obs.ipex_modules} IPEX modules in the UNet" if obs else ""))
    checks.append(check_observed("precision", plan.precision, obs.precision if obs else None, how))
    ov = spec.backend == "openvino"  # its export is always compiled ahead: always checked
    checks.append(check_artifacts(spec.compile or ov, measurer.artifact_ids(spec) if spec.compile or ov else {},
                                  bench.setup.get("artifacts") or {}, obs.mode if obs else None,
                                  bench.setup.get("compile_error"), "openvino" if ov else "aot"))
    if ov:
        checks.append(check_startup(bench))
    tuned = not any(c.failed for c in checks)
    checks += latency_checks(bench.latencies, target)
    checks += image_checks(bench.last_image)
    if not tuned:
        checks.append(skipped("bf16_vs_fp32", "quality", "skipped: the tuning is not in effect"))
        checks.append(skipped("stock_measured", "stock", "skipped: the tuning is not in effect"))
        checks.append(skipped("images_per_min", "throughput", "skipped: the tuning is not in effect"))
        checks.append(skipped("class_figures", "class", "skipped: the tuning is not in effect"))
        if spec.lossy:
            checks.append(skipped("fidelity", "quality", "skipped: the tuning is not in effect"))
        return checks
    flags = plan.isa_flags
    if plan.precision == "bf16":
        ref, info = measurer.reference(FP32_REFERENCE.on_host(flags))
        diff = mean_abs_diff(bench.last_image, ref)
        info["mean_abs_diff"] = None if diff != diff else round(diff, 6)
        figures["reference"] = info
        checks.append(check_bf16_diff(diff, target.bf16_max_diff))
    else:
        checks.append(skipped("bf16_vs_fp32", "quality", "precision is fp32: nothing to compare"))
    if spec.lossy:
        decision = measurer.fidelity(spec, fidelity_bound_for(plan, target))
        figures["fidelity"] = decision.to_dict()
        checks.append(check_fidelity(decision))
    if req.against_stock or target.stock_check:
        stock_s, data = measurer.stock(STOCK_RUN.on_host(flags), n, req.warmup)
        if isinstance(stock_s, str):
            figures["stock"] = {"figures": None, "note": stock_s, "result": data}
            checks.append(Check("stock_measured", "stock", INCONCLUSIVE, stock_s))
        else:
            fig = StockFigures(tuple(bench.latencies), tuple(stock_s), "fresh stock process, measured after the plan")
            figures["stock"] = {"figures": fig.to_dict(), "note": None, "result": data}
            checks.append(check_stock("stock_measured", fig, confidence=target.confidence))
    else:
        checks.append(skipped("stock_measured", "stock", "not asked (--against-stock or stock_check: true)"))
    if target.min_images_per_min is not None:
        figs = measurer.throughput(plan, plan.run_spec, n, target.confidence)
        figures["throughput"] = figs
        checks.append(throughput_check(figs, target))
    else:
        checks.append(skipped("images_per_min", "throughput", "the target sets no min_images_per_min"))
    checks.append(_class_check(req, bench.latencies))
    return checks


def shipped_record(plan: Plan) -> dict[str, Any] | None:
    """A lossy plan's fidelity as tune's gate shipped it, with tune's speed (verifying.shipped), for the report."""
    from sdagent.verifying.shipped import shipped_fidelity

    if not plan.run_spec.lossy:
        return None
    shipped = shipped_fidelity(plan.tuning)
    return shipped.to_dict() if shipped is not None else None


def fidelity_bound_for(plan: Plan, target: Target) -> FidelityBound:
    """The bound a lossy plan is held to: the target's `fidelity`, else the bound tune chose it under (its
    record's gate decision), else the default (measuring.fidelity.DEFAULT_BOUND)."""
    if target.fidelity is not None:
        return target.fidelity
    for gate in ((plan.tuning or {}).get("fidelity") or {}).values():
        if gate.get("passed") and gate.get("bound"):
            try:
                return FidelityBound.from_dict(gate["bound"], "the tuned plan's fidelity bound")
            except BadInput:
                break
    return DEFAULT_BOUND


def _host_class(req: VerifyRequest) -> Any:
    return req.host_class if req.host_class is not None else host_class(req.topology, installed_software())


def _class_check(req: VerifyRequest, latencies: list[float]) -> Check:
    """This host against the figures its class's tuned plan was measured at: a warning, never a failure."""
    c = compare_with_class(class_figures_from_tuning(req.plan.tuning), _host_class(req).id, latencies,
                           req.workload.to_dict(), req.model.name)
    return Check("class_figures", "class", c.status, c.detail, c.ratio, c.floor)


def _class_record(req: VerifyRequest, checks: list[Check]) -> dict[str, Any]:
    """The report's `host_class`: this host's class, and its speed against stock and against its class."""
    hc = _host_class(req)
    by = {c.name: c for c in checks}
    cc = by.get("class_figures")
    comparison = ClassComparison(cc.status, cc.detail, cc.value, cc.limit) if cc else ClassComparison("skip", "")
    stock = None
    for name, source in (("stock_measured", "a fresh stock process on this host"),
                         ("stock_tune", "tune's final check on the class's host")):
        c = by.get(name)
        if c is not None and isinstance(c.value, (int, float)) and isinstance(c.limit, (int, float)):
            stock = (float(c.value), float(c.limit), source)
            break
    if stock is None and stock_figures_from_tuning(req.plan.tuning) == "stock":
        stock = (1.0, 1.0, "tune chose stock: the plan in effect is stock's settings")
    return class_record(hc.to_dict(), class_figures_from_tuning(req.plan.tuning), comparison, stock)
