"""The verify sequence as a domain function, with a fake measurer: order, early exits, crash = no verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hosts import HOSTS, write_tree
from sdagent.errors import BadInput, Exit
from sdagent.host.process import ProcessState
from sdagent.host.software import HostFacts, IpexStatus
from sdagent.host.topology import read_topology
from sdagent.measuring.bench import BenchResult, RunRecord
from sdagent.measuring.stats import summarize
from sdagent.pipeline.modeldir import ModelDir
from sdagent.pipeline.observe import Observed
from sdagent.pipeline.workload import Workload
from sdagent.planning.plan import make_plan
from sdagent.planning.runspec import FP32_REFERENCE, STOCK_RUN
from sdagent.verifying.session import VerifyRequest, verify
from sdagent.verifying.targets import parse_targets

FACTS = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None},
                  ipex=IpexStatus(False, None, "2.13.0", "not installed"))
W = Workload(steps=2, height=64, width=64)
IMAGE = np.linspace(0, 1, 64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)


class FakeMeasurer:
    """Returns given latencies; records what it was asked to run."""

    def __init__(self, latencies=(1.0, 1.02, 0.98, 1.01, 0.99), stock=(2.0, 2.1, 1.9, 2.05, 1.95), precision="bf16",
                 crash=None, mode="eager", loaded=None):
        self.latencies, self.stock_s, self.precision, self.crash = latencies, stock, precision, crash
        self.mode, self.loaded = mode, loaded or {}
        self.calls: list[tuple] = []

    def bench(self, spec, runs, warmup):
        self.calls.append(("bench", spec, runs, warmup))
        if self.crash:
            raise self.crash
        lat = list(self.latencies)[:runs]
        obs = Observed("bfloat16" if self.precision == "bf16" else "float32", "float32", 0, False, self.mode,
                       self.loaded.get("unet"))
        runs_ = tuple(RunRecord(i, x, (x / 2,), 0.01, 0.02) for i, x in enumerate(lat))
        return BenchResult(W, warmup, runs_, summarize(lat), summarize([x / 2 for x in lat]), 1.0, (),
                           {"artifacts": self.loaded, "compile_error": None if self.loaded else "no compiler"}, None,
                           (0.0, 0.0, 0.0), obs, "tiny", 1.0, last_image=IMAGE)

    def artifact_ids(self, spec):
        return {"unet": "u1", "vae_decoder": "v1", "text_encoder": "t1"}

    def reference(self, spec):
        self.calls.append(("reference", spec))
        return IMAGE + 0.01, {"run": spec.to_dict()}

    def stock(self, spec, runs, warmup):
        self.calls.append(("stock", spec, runs, warmup))
        return list(self.stock_s)[:runs], {"ok": True}


@pytest.fixture(scope="module")
def zen5(tmp_path_factory):
    return read_topology(write_tree(tmp_path_factory.mktemp("h") / "z", HOSTS["epyc-2core-zen5"]))


def request(topo, targets_yaml, **kw):
    plan = make_plan(topo, FACTS)
    targets = parse_targets(targets_yaml)
    md = ModelDir(Path("/m/tiny"), "StableDiffusionPipeline", {}, "tiny")
    return VerifyRequest(md, W, plan, 0, targets, topo, **kw), plan


def state_for(plan, topo):
    return ProcessState(mapped=(), torch_threads=plan.settings["omp_num_threads"], affinity=topo.allowed_cpus)


TARGET = [{"name": "t", "match": {"model": "tiny"}, "p50_s": 5, "min_runs": 5, "stock_check": True}]


def test_a_passing_host_runs_bench_reference_and_stock_in_that_order(zen5):
    req, plan = request(zen5, TARGET)
    m = FakeMeasurer()
    res = verify(req, m, state_for(plan, zen5))
    assert res.exit_code == Exit.OK, [c for c in res.checks if c.failed]
    assert [c[0] for c in m.calls] == ["bench", "reference", "stock"]
    assert m.calls[0][1].precision == "bf16" and m.calls[0][2] == 5  # the plan's run record, min_runs timed runs
    assert m.calls[1][1] == FP32_REFERENCE.on_host(zen5.flags)
    assert m.calls[2][1] == STOCK_RUN.on_host(zen5.flags)
    assert res.check("stock_measured").status == "pass" and res.check("bf16_vs_fp32").status == "pass"


def test_tuning_not_in_effect_skips_the_costly_steps(zen5):
    req, plan = request(zen5, TARGET)
    m = FakeMeasurer()
    wrong = ProcessState(mapped=(), torch_threads=99, affinity=zen5.allowed_cpus)
    res = verify(req, m, wrong)
    assert res.exit_code == Exit.TUNING_NOT_IN_EFFECT and m.calls == []
    assert res.check("latency_p50").status == "skip"


def test_no_target_skips_the_costly_steps(zen5):
    req, plan = request(zen5, [{"name": "other", "match": {"model": "sd15"}, "p50_s": 5}])
    m = FakeMeasurer()
    res = verify(req, m, state_for(plan, zen5))
    assert res.exit_code == Exit.NO_TARGET and m.calls == []


def test_a_crash_mid_measurement_is_exit_7_never_a_miss(zen5):
    req, plan = request(zen5, TARGET)
    res = verify(req, FakeMeasurer(crash=MemoryError("oom")), state_for(plan, zen5))
    assert res.exit_code == Exit.ERROR and res.verdict == "error"
    assert "MemoryError" in res.check("run").detail
    assert res.to_dict()["exit_code"] == 7


def test_bad_input_mid_measurement_propagates(zen5):
    req, plan = request(zen5, TARGET)
    with pytest.raises(BadInput):
        verify(req, FakeMeasurer(crash=BadInput("scheduler 'x' is not usable here")), state_for(plan, zen5))


def test_a_miss_and_a_slower_than_stock(zen5):
    req, plan = request(zen5, TARGET)
    res = verify(req, FakeMeasurer(latencies=(6.0, 6.1, 5.9, 6.2, 6.05), stock=(1.0, 1.1, 1.05, 1.02, 1.07)),
                 state_for(plan, zen5))
    assert res.exit_code == Exit.TARGET_MISSED
    assert res.check("stock_measured").status == "fail"


def test_a_compiled_plan_must_run_the_planned_packages(zen5):
    from dataclasses import replace

    facts = replace(FACTS, cxx="/usr/bin/g++")
    plan = make_plan(zen5, facts)
    assert plan.settings["compile"]  # bf16 native and a compiler: compiled by default
    md = ModelDir(Path("/m/tiny"), "StableDiffusionPipeline", {}, "tiny")
    req = VerifyRequest(md, W, plan, 0, parse_targets(TARGET), zen5)
    ok = verify(req, FakeMeasurer(mode="aot", loaded={"unet": "u1", "vae_decoder": "v1", "text_encoder": "t1"}),
                state_for(plan, zen5))
    assert ok.check("artifact").status == "pass" and ok.exit_code == Exit.OK
    wrong = verify(req, FakeMeasurer(mode="aot", loaded={"unet": "OLD", "vae_decoder": "v1", "text_encoder": "t1"}),
                   state_for(plan, zen5))
    assert wrong.exit_code == Exit.TUNING_NOT_IN_EFFECT and "unet OLD (planned u1)" in wrong.check("artifact").detail
    eager = verify(req, FakeMeasurer(mode="eager"), state_for(plan, zen5))
    assert eager.exit_code == Exit.TUNING_NOT_IN_EFFECT and "no compiler" in eager.check("artifact").detail


def test_the_wait_for_the_host_lock_is_reported_on_its_own_not_in_the_start_up(zen5, monkeypatch):
    """A verify that waited 262 s for the lock and took 30 s to its first image reported 292 s of start-up:
    the start-up figure leaves the wait out, and the wait is its own field and metric."""
    from sdagent.measuring import bench as B
    from sdagent.verifying.report import prometheus_text

    class Gen:
        total_s, step_s, text_encode_s, vae_decode_s, array = 1.0, (0.5,), 0.01, 0.02, IMAGE

    class Prepared:
        pipe = object()

        def generate(self, w, step_callback=None):
            return Gen()

        def describe(self):
            return {}

    now = 1_000_000.0
    monkeypatch.setattr(B, "process_start_time", lambda: now - 292.0)
    monkeypatch.setattr(B, "observe_unet", lambda pipe: (lambda: None, lambda: None))
    monkeypatch.setattr(B.time, "time", lambda: now)
    res = B.run_bench(Prepared(), W, runs=2, warmup=1, lock_wait_s=262.0)
    assert res.startup_s == pytest.approx(30.0) and res.to_dict()["lock_wait_s"] == 262.0

    req, plan = request(zen5, TARGET)
    out = verify(req, FakeMeasurer(), state_for(plan, zen5), lock_wait_s=262.0)
    assert out.lock_wait_s == 262.0
    from dataclasses import replace as _replace

    assert _replace(out, bench=None).to_dict()["lock_wait_s"] == 262.0  # the JSON report carries it
    assert "sdagent_lock_wait_seconds{sdagent_instance=\"0\"} 262" in prometheus_text(out)


def test_the_target_matches_on_the_models_family_and_the_report_names_it(zen5):
    """A `match: {family: ...}` entry picks a Turbo directory's target; the key, JSON and table say the family."""
    from dataclasses import replace

    from sdagent.pipeline.family import FAMILIES
    from sdagent.verifying.report import verify_table

    targets = [{"name": "sd1-only", "match": {"family": "sd1"}, "p50_s": 5},
               {"name": "turbo", "match": {"family": ["sd-turbo", "sdxl-turbo"]}, "p50_s": 5}]
    req, plan = request(zen5, targets)
    req = replace(req, model=replace(req.model, family=FAMILIES["sd-turbo"]))
    res = verify(req, FakeMeasurer(), state_for(plan, zen5))
    assert res.target.name == "turbo" and res.host_key.family == "sd-turbo"
    assert res.host_key.to_dict()["family"] == "sd-turbo"
    assert "model: tiny, family sd-turbo (SD-Turbo" in verify_table(res)
    plain, _ = request(zen5, targets)
    assert verify(plain, FakeMeasurer(), state_for(plan, zen5)).target.name == "sd1-only"
