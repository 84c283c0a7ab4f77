"""sdagent tune: the decision rule and the search with a fake timer; the CLI end to end on the tiny model."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from dataclasses import replace

from clirun import sdagent, sdagent_popen
from sdagent.measuring.stats import rotated
from sdagent.envvars import stock_env as stock_child_env
from sdagent.tuning import axes as A
from sdagent.tuning import search as T



# ---------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------


def test_decide_is_sequential_and_paired():
    from sdagent.tuning.rule import Rule, decide

    rule = Rule()
    # a clear 20% gain at 2% noise: decided in the minimum of 3 rounds
    v = decide([1.0, 1.02, 0.99], [0.8, 0.82, 0.79], 0.02, rule)
    assert v.outcome == "faster" and v.rounds == 3 and v.gain == pytest.approx(0.2, abs=0.02)
    # two rounds are never enough, however clear
    assert decide([1.0, 1.02], [0.8, 0.82], 0.02, rule).outcome == "undecided"
    # a 10% gain at 10% noise per pair: undecided after 3 rounds, so more rounds, not a verdict
    assert decide([1.0, 1.0, 1.0], [0.9, 0.9, 0.9], 0.10, rule).outcome == "undecided"
    # the pairing: a drift shared by both members of each round cancels
    drift = [1.0, 1.3, 0.8, 1.2]
    assert decide(drift, [0.9 * d for d in drift], 0.01, rule).outcome == "faster"
    # clear loser and clear equal
    assert decide([1.0, 1.0, 1.0], [1.25, 1.26, 1.24], 0.02, rule).outcome == "slower"
    assert decide([1.0] * 6, [1.001, 0.999] * 3, 0.01, rule).outcome == "within-noise"
    # at the cap, undecided is within noise: the best stays
    capped = decide([1.0] * 4, [0.95] * 4, 0.10, replace(rule, max_rounds=4))
    assert capped.outcome == "within-noise" and "undecided after 4" in capped.reason
    assert decide([], [], 0.1, rule).outcome == "failed"


def test_noise_pools_the_floor_and_every_comparison():
    from sdagent.tuning.rule import Noise, Rule, rounds_for

    n = Noise()
    assert n.sigma == 0.10  # no evidence: assume a noisy VM
    n.add_floor([[1.0, 1.1, 0.9], [2.0, 2.2, 1.8]])
    est = n.estimate
    assert 0.10 < est < 0.20 and n.df == 4
    assert n.sigma > est  # few degrees of freedom: the test uses an upper bound
    n.add_pairs([0.01, -0.01, 0.02, 0.0])
    assert n.df == 7
    assert rounds_for(Rule(), 0.01) == 6 and rounds_for(Rule(), 0.3) == Rule().max_rounds


def test_round_order_rotates_so_each_leads_equally():
    orders = [rotated(["a", "b", "c"], i) for i in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert {o[0] for o in orders} == {"a", "b", "c"}


def test_stock_child_env_drops_preloads_and_openmp_knobs():
    env = {"PATH": "/bin", "PYTHONPATH": "agent", "LD_PRELOAD": "/x/libjemalloc.so.2",
           "MALLOC_CONF": "a:1", "OMP_NUM_THREADS": "4", "KMP_BLOCKTIME": "1", "KMP_AFFINITY": "compact",
           "SDAGENT_PLAN_FILE": "/p.json", "HOME": "/root"}
    assert stock_child_env(env) == {"PATH": "/bin", "PYTHONPATH": "agent", "HOME": "/root"}


# ---------------------------------------------------------------------------
# The search, with a fake timer
# ---------------------------------------------------------------------------


class FakeHost:
    """Deterministic latencies per candidate name (cycled), and a clock they advance."""

    def __init__(self, latencies: dict[str, list[float]], overhead: float = 5.0, fail: set[str] = frozenset()):
        self.lat = latencies
        self.calls: list[str] = []
        self.now = 0.0
        self.overhead = overhead  # process start + model load + warm-up
        self.fail = set(fail)
        self.warmed: list[str] = []

    def clock(self) -> float:
        return self.now

    def measure(self, c: T.Candidate, limit_s: float = float("inf")) -> float:
        self.now += self.overhead
        if c.name in self.fail:
            raise T.MeasureFailed(f"{c.name} crashed")
        seq = self.lat[c.name]
        x = seq[sum(1 for n in self.calls if n == c.name) % len(seq)]
        self.calls.append(c.name)
        self.now += x
        return x

    def warm(self, c: T.Candidate, limit_s: float = float("inf")) -> None:
        self.warmed.append(c.name)
        self.now += 3 * self.overhead


def resolve(overrides, layout=None):
    base = {"allocator": "jemalloc", "omp_runtime": "intel", "binding": "none", "precision": "bf16",
            "backend": "native", "channels_last": True, "compile": False, "omp_num_threads": 2,
            "kmp_blocktime": "unset", "kmp_affinity": "unset", "malloc_conf": None}
    return {**base, **overrides}


def cand(name, **settings):
    return T.Candidate(name, settings, resolve(settings), "test")


STOCK = A.stock_candidate(resolve)


def run_search(host, first, axes=(), budget=10_000.0):
    return T.search(STOCK, first, list(axes), host.measure, budget_s=budget, clock=host.clock, warm=host.warm)


def test_candidate_within_noise_is_not_chosen():
    host = FakeHost({"stock": [1.00, 1.02, 0.99, 1.01], "plan": [1.01, 1.00, 0.99, 1.02]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    assert r.chosen.name == "stock"
    comp = r.comparisons[0]
    assert comp.verdict.outcome == "within-noise" and comp.kind == "plan"
    assert "stock is the choice" in r.reason
    assert r.noise["df"] >= 4 and r.round_cap >= 6  # the floor was measured and sized the cap


def test_faster_candidate_is_chosen_and_checked_against_stock():
    host = FakeHost({"stock": [1.00, 1.02, 0.99], "plan": [0.80, 0.82, 0.81]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    assert r.chosen.name == "plan"
    assert r.comparisons[0].verdict.outcome == "faster"
    final = r.comparisons[-1]
    assert final.kind == "final" and final.candidate == "stock"
    assert "stock -> plan" in r.reason and "final check" in r.reason and r.path == ["stock", "plan"]
    # every comparison interleaves: each round holds both, the first position rotates
    assert r.comparisons[0].order == [["stock", "plan"], ["plan", "stock"], ["stock", "plan"]]


def test_a_clear_loser_is_dropped_as_soon_as_it_is_clear():
    host = FakeHost({"stock": [1.0, 1.01, 0.99], "plan": [1.3, 1.32, 1.31], "a": [1.2, 1.25, 1.22],
                     "b": [1.1, 1.12, 1.11]})
    axis = T.Axis("x", lambda best: [cand("a", allocator="default"), cand("b", omp_runtime="default")])
    r = run_search(host, [cand("plan", allocator="tcmalloc")], [axis])
    assert r.chosen.name == "stock"
    assert all(c.verdict.outcome == "slower" for c in r.comparisons)
    assert host.calls.count("a") == 3 and host.calls.count("b") == 3  # the minimum, no more


def test_final_check_falls_back_to_stock_when_stock_turns_out_faster():
    # plan beats stock in its comparison (rounds 1-3), then stock is faster in the final check
    host = FakeHost({"stock": [1.0, 1.0, 1.0, 0.5, 0.5, 0.5], "plan": [0.8, 0.8, 0.8, 0.9, 0.9, 0.9]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    assert r.chosen.name == "stock"
    assert "final check found stock faster" in r.reason


def test_an_axis_winner_is_confirmed_in_fresh_rounds_before_it_becomes_the_best():
    seen_best = []

    def variants(best):
        seen_best.append(best.name)
        return [cand("v1", kmp_blocktime=0), cand("v2", kmp_blocktime=1)]

    host = FakeHost({"stock": [1.0, 1.0, 1.0], "plan": [0.9, 0.91, 0.9], "v1": [0.7, 0.71, 0.72],
                     "v2": [0.6, 0.61, 0.62]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")], [T.Axis("blocktime", variants)])
    assert set(seen_best) == {"plan"}  # the up-front budget plan asks too, from the same best
    assert r.chosen.name == "v2" and r.path == ["stock", "plan", "v2"]
    kinds = [(c.kind, c.candidate) for c in r.comparisons]
    assert ("screen", "v1") in kinds and ("screen", "v2") in kinds and ("confirm", "v2") in kinds
    # the screen is one joint comparison: the best once per round, shared; then v2 again, fresh
    # v2: 3 rounds screened, 3 fresh ones confirmed, then 3 in the final check against stock
    assert host.calls.count("v1") == 3 and host.calls.count("v2") == 9 and len(r.samples()["v2"]) == 9


def test_failed_candidate_is_reported_and_never_chosen():
    host = FakeHost({"stock": [1.0], "plan": [0.5]}, fail={"plan"})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    assert r.chosen.name == "stock"
    assert r.comparisons[0].verdict.outcome == "failed" and "crashed" in r.comparisons[0].verdict.reason


def test_the_final_check_always_has_its_budget():
    """An axis that would eat into the final check's reserve is skipped; the final check runs."""
    host = FakeHost({"stock": [1.0, 1.01, 0.99], "plan": [0.8, 0.81, 0.79], "a": [0.5], "b": [0.5]},
                    overhead=9.0)
    axis = T.Axis("x", lambda best: [cand("a", allocator="default"), cand("b", omp_runtime="default")])
    r = run_search(host, [cand("plan", allocator="tcmalloc")], [axis], budget=150.0)
    assert [n for n, _ in r.skipped] == ["a", "b"] and all("reserve" in w for _, w in r.skipped)
    assert r.comparisons[-1].kind == "final" and r.chosen.name == "plan"


def test_the_reserve_is_sized_on_both_sides_so_a_fast_plan_beside_a_slow_stock_leaves_room_for_axes():
    """Stock fp32 at 30 s beside a 6 s plan: the final check needs ~3 x (30 + 6) s, not 4 x 3 x 30 s. An
    over-sized reserve skipped every axis of a 15-minute tune on a 2-core host (docs/results/zen5-2c)."""
    host = FakeHost({"stock": [30.0], "plan": [6.0], "a": [3.0]}, overhead=0.0)
    axis = T.Axis("x", lambda best: [cand("a", allocator="default")])
    r = run_search(host, [cand("plan", allocator="tcmalloc")], [axis], budget=360.0)
    assert not r.skipped and host.calls.count("a") >= 3
    assert r.comparisons[-1].kind == "final" and r.chosen.name == "a"
    assert r.spent_s <= 360.0


def test_duplicate_settings_are_measured_once_and_compile_is_warmed_first():
    host = FakeHost({"stock": [1.0, 1.0, 1.0], "plan": [1.0, 1.01, 0.99], "c": [0.5, 0.5, 0.5]})
    compiled = T.Candidate("c", {"compile": True}, resolve({"compile": True}), "torch.compile", warmup=True)
    same_as_plan = cand("same", allocator="tcmalloc")
    axis = T.Axis("x", lambda best: [same_as_plan, compiled])
    r = run_search(host, [cand("plan", allocator="tcmalloc")], [axis])
    assert "same" not in host.calls
    assert host.warmed == ["c"] and r.chosen.name == "c"


def test_result_record_is_json_and_lists_every_measurement():
    host = FakeHost({"stock": [1.0, 1.02, 0.99], "plan": [0.80, 0.82, 0.81]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    d = json.loads(json.dumps(r.to_dict()))
    by = {c["name"]: c for c in d["candidates"]}
    assert len(by["plan"]["measured_s"]) == 6 and len(by["stock"]["measured_s"]) == 6  # 3 + the final check's 3
    assert d["chosen"] == "plan" and "sequential probability ratio test" in d["rule"]
    assert d["comparisons"][0]["verdict"] == "faster" and d["noise"]["df"] >= 4


def test_axes_offer_only_what_the_host_has():
    host = A.HostChoices(physical_cores=4, bf16=False, ipex=False, jemalloc=True, tcmalloc=False,
                         iomp=False, pin="taskset")
    axes = {a.name: a for a in A.make_axes(host, resolve)}
    best = cand("b", omp_runtime="default", precision="fp32")
    assert [c.name for c in axes["precision/backend"].variants(best)] == ["native fp32"]
    assert [c.name for c in axes["allocator"].variants(best)] == [
        "allocator=default", "jemalloc short", "jemalloc long", "jemalloc demo"]
    assert axes["KMP_BLOCKTIME"].variants(best) == []  # torch's own OpenMP ignores KMP_*
    assert [c.settings["omp_num_threads"] for c in axes["threads"].variants(best)] == [4, 3, 2]
    comp = axes["torch.compile"].variants(best)
    assert comp[0].warmup and comp[0].overrides["compile"] is True
    intel = cand("i", omp_runtime="intel")
    assert [c.name for c in axes["KMP_BLOCKTIME"].variants(intel)][:3] == [
        "KMP_BLOCKTIME=0", "KMP_BLOCKTIME=1", "KMP_BLOCKTIME=200"]
    # the preloads as one candidate (the demo's first rung), offered only while some are on
    off = axes["preloads"].variants(cand("p", allocator="jemalloc", omp_runtime="intel"))
    assert [c.overrides for c in off] == [{"allocator": "default", "omp_runtime": "default"}]
    assert axes["preloads"].variants(cand("n", allocator="default", omp_runtime="default")) == []  # no libiomp5
    # the derived plan leaves them off (the evidence): where the host has both, tune tries them on
    both = A.make_axes(A.HostChoices(physical_cores=4, bf16=False, ipex=False, jemalloc=True, tcmalloc=False,
                                     iomp=True, pin=None), resolve)
    on = next(a for a in both if a.name == "preloads").variants(cand("n", allocator="default", omp_runtime="default"))
    assert [c.overrides for c in on] == [{"allocator": "jemalloc", "omp_runtime": "intel"}]
    assert [c.name for c in next(a for a in both if a.name == "OpenMP runtime").variants(
        cand("n", omp_runtime="default"))] == ["omp=torch's own", "omp=libiomp5"]
    assert list(axes)[:4] == ["precision/backend", "layout", "preloads", "torch.compile"]
    assert axes["layout"].variants(best) == []  # the latency objective tries no instance splits


def test_a_host_without_a_compiler_gets_no_compiled_candidate(tmp_path):
    from hosts import HOSTS, write_tree
    from sdagent.host.software import HostFacts, IpexStatus
    from sdagent.host.topology import read_topology
    from sdagent.planning.plan import make_plan
    from sdagent.tuning.session import host_choices

    facts = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None}, numactl=None,
                      taskset="/usr/bin/taskset", numa_permitted=False,
                      ipex=IpexStatus(False, None, "2.13.0", "not installed"), cxx=None)
    plan = make_plan(read_topology(write_tree(tmp_path, HOSTS["xeon-vm-2core-amx"])), facts)
    assert plan.settings["precision"] == "bf16" and plan.settings["compile"] is False  # no compiler
    host = host_choices(plan, facts, allow_compile=True)
    assert host.compile is False
    axes = {a.name: a for a in A.make_axes(host, resolve)}
    assert axes["torch.compile"].variants(cand("b", precision="bf16")) == []
    assert host_choices(plan, replace(facts, cxx="/usr/bin/g++"), allow_compile=True).compile is True


def test_the_throughput_objective_adds_instance_splits_that_keep_the_best_settings():
    lays = ({"instances": 2, "cores_per_instance": 2, "span_nodes": False, "use_smt": False},
            {"instances": 4, "cores_per_instance": 1, "span_nodes": False, "use_smt": False})
    host = A.HostChoices(physical_cores=4, bf16=True, ipex=False, jemalloc=True, tcmalloc=False, iomp=True,
                         pin="numactl", layouts=lays)
    axes = {a.name: a for a in A.make_axes(host, resolve)}
    best = cand("b", precision="bf16", omp_num_threads=4, kmp_blocktime="unset")
    v = axes["layout"].variants(best)
    assert [c.name for c in v] == ["2 x 2 cores", "4 x 1 cores"]
    assert all(c.overrides == {"precision": "bf16"} for c in v)  # threads and KMP_* are the layout's
    assert v[0].layout == lays[0] and v[0].key != v[1].key


# ---------------------------------------------------------------------------
# The budget: a hard ceiling, the minimum checked, what fits said up front
# ---------------------------------------------------------------------------


class CeilingHost(FakeHost):
    """A FakeHost whose measurements are stopped at the limit the search hands them, as the worker's timeout."""

    def measure(self, c: T.Candidate, limit_s: float = float("inf")) -> float:
        seq = self.lat[c.name]
        x = seq[sum(1 for n in self.calls if n == c.name) % len(seq)]
        if self.overhead + x > limit_s:
            self.now += limit_s
            raise T.MeasureStopped(f"timed out after {limit_s:.0f} s")
        return super().measure(c, limit_s)


def test_a_budget_that_cannot_hold_the_minimum_is_refused_with_the_estimate():
    """tune --budget 1 measured for 351 s: now the first round's figures size the minimum, and it stops."""
    host = FakeHost({"stock": [30.0], "plan": [25.0]}, overhead=5.0)
    with pytest.raises(T.BudgetTooSmall) as e:
        run_search(host, [cand("plan", allocator="tcmalloc")], [], budget=120.0)
    assert e.value.exit_code == 2 and "not even the minimum fits" in str(e.value)
    assert "35 s per stock process, 30 s per plan process" in str(e.value) and "~8.1 min" in str(e.value) and "--budget 9 or more" in str(e.value)
    assert host.calls == ["stock", "plan"]  # one round, then refused


@pytest.mark.parametrize("budget", [200.0, 260.0, 333.0, 500.0, 900.0])
def test_the_budget_is_a_hard_ceiling_on_the_time_measured(budget):
    """Slow, uneven variants: whatever the budget, the search ends within it (a process in flight at the
    ceiling is stopped), and stock is chosen whenever the final check could not be completed."""
    host = CeilingHost({"stock": [10.0, 10.2, 9.9], "plan": [8.0, 8.1, 7.9], "a": [7.0, 40.0, 7.1],
                        "b": [6.0, 6.1, 60.0], "c": [5.0, 5.0, 5.0]}, overhead=2.0)
    axes = [T.Axis("x", lambda best: [cand("a", allocator="default"), cand("b", omp_runtime="default")]),
            T.Axis("y", lambda best: [cand("c", kmp_blocktime=1)])]
    r = run_search(host, [cand("plan", allocator="tcmalloc")], axes, budget=budget)
    assert r.spent_s <= budget + 1e-9, (r.spent_s, budget)
    final = [c for c in r.comparisons if c.kind == "final"]
    if r.chosen.name != "stock":
        assert final and final[-1].verdict.outcome != "failed"


def test_a_process_in_flight_is_stopped_where_the_final_checks_reserve_begins():
    """A variant that hangs on its third process (a neighbour, a swapped host) is stopped, not waited for:
    the final check still runs inside the budget."""
    host = CeilingHost({"stock": [10.0, 10.1, 9.9], "plan": [8.0, 8.1, 7.9], "a": [7.0, 7.1, 500.0]},
                       overhead=0.0)
    axis = T.Axis("x", lambda best: [cand("a", allocator="default")])
    r = run_search(host, [cand("plan", allocator="tcmalloc")], [axis], budget=400.0)
    screen = next(c for c in r.comparisons if c.candidate == "a")
    assert screen.verdict.outcome == "failed" and "timed out" in screen.verdict.reason
    assert r.comparisons[-1].kind == "final" and r.comparisons[-1].verdict.outcome != "failed"
    assert r.chosen.name == "plan" and r.spent_s <= 400.0


def test_the_session_hands_each_worker_the_time_left_and_reads_its_record(tmp_path):
    """tune() end to end under a fake worker runner and clock: every worker's timeout is within the budget
    left, the record carries each process's figures (read from the worker's result record)."""
    from hosts import HOSTS, write_tree
    from sdagent.host.software import HostFacts, IpexStatus
    from sdagent.host.topology import read_topology
    from sdagent.pipeline.modeldir import ModelDir
    from sdagent.pipeline.workload import Workload
    from sdagent.tuning.session import TuneRequest, tune
    from sdagent.workers.result import Measurement, ProcessRecord, WorkerResult

    topo = read_topology(write_tree(tmp_path, HOSTS["xeon-vm-2core-amx"]))
    facts = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None}, numactl=None,
                      taskset="/usr/bin/taskset", numa_permitted=False,
                      ipex=IpexStatus(False, None, "2.13.0", "not installed"), cxx=None)
    now = [0.0]
    timeouts = []

    def runner(launch, job, timeout_s):
        timeouts.append((now[0], timeout_s))
        lat = 10.0 if launch.name == "stock" else 8.0
        now[0] += lat + 2.0
        m = Measurement("images", job.workload, (lat,), ProcessRecord(("/x/libgomp.so.1",), 2, (0, 1)),
                        runs=({"unet_steps_s": [lat / 4] * 4},), unet_evals=4)
        return WorkerResult(True, "ok", lat + 2.0, m)

    w = Workload(steps=4, height=64, width=64)
    req = TuneRequest(ModelDir(tmp_path, "StableDiffusionPipeline", {}, "tiny"), w, 300.0, allow_compile=False)
    out = tune(topo, facts, req, environ={}, runner=runner, clock=lambda: now[0])
    assert timeouts and all(t <= 300.0 - start + 1e-9 for start, t in timeouts)
    procs = out.record["processes"]
    assert procs["stock"][0]["latency_s"] == [10.0] and procs["stock"][0]["unet_step_median_s"] == 2.5
    assert out.record["budget_plan"] and out.result.spent_s <= 300.0


def test_a_first_round_that_does_not_finish_within_the_budget_is_refused():
    host = CeilingHost({"stock": [300.0], "plan": [200.0]}, overhead=5.0)
    with pytest.raises(T.BudgetTooSmall, match="not even the first round of stock and plan finished"):
        run_search(host, [cand("plan", allocator="tcmalloc")], [], budget=60.0)
    assert host.now == pytest.approx(60.0)  # stopped at the ceiling, not after 305 s


def test_the_axes_that_fit_are_said_up_front_in_order():
    host = FakeHost({"stock": [10.0, 10.1, 9.9], "plan": [8.0, 8.1, 7.9], "a": [9.0], "b": [9.0], "c": [9.0]},
                    overhead=0.0)
    events = []
    axes = [T.Axis("small", lambda best: [cand("a", allocator="default")]),
            T.Axis("big", lambda best: [cand("b", omp_runtime="default"), cand("c", kmp_blocktime=1)])]
    r = T.search(STOCK, [cand("plan", allocator="tcmalloc")], axes, host.measure, budget_s=260.0,
                 clock=host.clock, warm=host.warm, on_event=lambda k, d: events.append((k, d)))
    said = [d for k, d in events if k == "budget"]
    assert len(said) == 1 and [a["axis"] for a in said[0]["axes"]] == ["small", "big"]
    assert [a["fits"] for a in r.budget_plan] == [True, False]
    assert r.budget_plan[0]["estimate_s"] == pytest.approx(3 * (8.0 + 9.0), abs=0.5)
    from sdagent.tuning.report import budget_plan_line

    assert budget_plan_line(r.budget_plan).startswith("fit the budget, in this order: small ~51 s; do not fit: big")


def test_axes_run_in_order_of_expected_effect_compile_and_precision_before_allocator_variants():
    from sdagent.tuning.priority import EXPECTED_EFFECT, order_axes

    host = A.HostChoices(physical_cores=4, bf16=True, ipex=False, jemalloc=True, tcmalloc=True, iomp=True,
                         pin="numactl")
    axes = A.make_axes(host, resolve)
    names = [a.name for a in order_axes(axes)]
    assert names[:2] == ["precision/backend", "torch.compile"] and names[-1] == "allocator"
    assert sorted(names) == sorted(a.name for a in axes)  # a reorder, nothing lost
    assert {a.name for a in axes} <= {n for n, _ in EXPECTED_EFFECT}  # every axis has its place and reason
    assert [a.name for a in order_axes([T.Axis("new", lambda b: []), axes[0]])] == [axes[0].name, "new"]


def test_stock_candidate_is_untuned():
    s = STOCK.settings
    assert STOCK.stock and s["allocator"] == "default" and s["omp_runtime"] == "default"
    assert s["binding"] == "none" and s["precision"] == "fp32" and not s["channels_last"] and not s["compile"]


# ---------------------------------------------------------------------------
# End to end through the CLI (tiny model, real processes)
# ---------------------------------------------------------------------------


TINY_WORKLOAD = ("--steps", "2", "--height", "64", "--width", "64", "--warmup-steps", "1")


@pytest.mark.slow
def test_tune_cli_writes_a_plan_that_env_and_exec_accept(tiny_model, tmp_path):
    out = tmp_path / "tuned.json"
    # every axis, at the rule's smallest round cap (the search itself: the unit tests above)
    r = sdagent("tune", "--model", str(tiny_model), *TINY_WORKLOAD, "--budget", "5", "--repeats", "1",
                "--max-rounds", "6", "--no-compile", "-o", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "chosen:" in r.stdout and "stock" in r.stdout
    plan = json.loads(out.read_text())
    assert plan["source"] == "tuned"
    t = plan["tuning"]
    assert t["format"] == "sdagent-tune/1" and t["chosen"] and t["reason"] and t["rule"]
    # the class it was measured on (its siblings install it; verify holds them to these figures)
    assert len(t["host_class"]["id"]) == 12 and t["model_name"] == tiny_model.name
    names = [c["name"] for c in t["candidates"]]
    assert names[0] == "stock" and "topology plan" in names
    assert len(t["candidates"][0]["measured_s"]) >= 2  # stock always measured (a clear loser stops at 2 rounds)
    assert 0 < t["spent_s"] <= t["budget_s"] == pytest.approx(300.0)  # a hard ceiling
    assert "tune: axes by expected effect; fit the budget, in this order:" in r.stderr
    env = sdagent("--plan-file", str(out), "env", "--format", "shell")
    assert env.returncode == 0, env.stderr
    assert "OMP_NUM_THREADS=" in env.stdout
    ex = sdagent("--plan-file", str(out), "exec", "--", sys.executable, "-c",
                 "import os; print('threads', os.environ['OMP_NUM_THREADS'])")
    assert ex.returncode == 0, ex.stderr
    assert ex.stdout.strip() == f"threads {plan['settings']['omp_num_threads']}"


@pytest.mark.slow
def test_interrupted_tune_leaves_the_previous_plan_file(tiny_model, tmp_path):
    out = tmp_path / "tuned.json"
    out.write_text('{"settings": {}, "previous": true}\n')
    before = out.read_bytes()
    p = sdagent_popen("tune", "--model", str(tiny_model), *TINY_WORKLOAD, "--budget", "5", "-o", str(out))
    time.sleep(8)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0
    assert out.read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tuned.json")]  # no temp file left


def test_a_budget_too_small_for_one_round_is_exit_2_with_nothing_written(tiny_model, tmp_path):
    """tune --budget 1 used to measure for 351 s: now a budget that cannot hold even the first round of stock
    and the plan stops at its ceiling and says so, exit 2, the plan file untouched."""
    out = tmp_path / "tuned.json"
    t0 = time.monotonic()
    r = sdagent("tune", "--model", str(tiny_model), *TINY_WORKLOAD, "--budget", "0.05", "-o", str(out), timeout=300)
    assert r.returncode == 2, r.stderr
    assert "invalid --budget 0.05 min: not even the first round" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and time.monotonic() - t0 < 120


def test_tune_rejects_bad_input_in_one_line(tmp_path):
    r = sdagent("tune", "--model", str(tmp_path / "nope"), "--budget", "1")
    assert r.returncode == 2 and "model directory not found" in r.stderr and "Traceback" not in r.stderr
    r = sdagent("tune", "--model", str(tmp_path), "--budget", "0")
    assert r.returncode == 2 and "--budget" in r.stderr
    r = sdagent("tune", "--model", str(tmp_path), "--rounds", "2")
    assert r.returncode == 2 and "--rounds" in r.stderr
    r = sdagent("tune", "--model", str(tmp_path), "-o", str(tmp_path / "no" / "plan.json"))
    assert r.returncode == 2 and "output directory does not exist" in r.stderr
    assert Path(tmp_path).is_dir()


def test_tune_table_shows_unmeasured_and_single_samples():
    from sdagent.tuning.report import tune_table

    a, b, c = cand("a", allocator="default"), cand("b", omp_runtime="default"), cand("c", compile=True)
    result = T.TuneResult(chosen=c, stock=STOCK, comparisons=[], candidates={"a": a, "b": b, "c": c},
                          skipped=[("a", "budget")], reason="r", budget_s=60, spent_s=30, rule="r")
    lines = tune_table(result, {"a": [], "b": [2.0], "c": [1.0, 3.0]}).splitlines()
    row = {ln[2:28].strip(): ln for ln in lines[2:5]}
    assert "skipped (budget)" in row["a"]
    assert row["b"].split()[1:3] == ["1", "2.000"] and " -  " in row["b"]  # one sample: no spread
    assert row["c"].startswith("*") and "100.0%" in row["c"]  # (3-1)/2


def test_a_tunes_record_reads_back_as_typed_fields_and_feeds_verifys_stock_check():
    """The record tune writes, parsed by tuning.record: verify's stock figures are its fields."""
    from sdagent.errors import BadInput
    from sdagent.tuning.record import TuneRecord
    from sdagent.verifying.checks import StockFigures, stock_figures_from_tuning

    host = FakeHost({"stock": [1.0, 1.02, 0.99], "plan": [0.80, 0.82, 0.81]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    d = json.loads(json.dumps({**r.to_dict(), "format": "sdagent-tune/1"}))
    rec = TuneRecord.from_dict(d)
    assert rec.chosen == "plan" and rec.stock.name == "stock" and rec.stock.stock
    final = rec.last_comparison("plan", "stock")
    assert final.kind == "final" and final.series("plan") == tuple(r.comparisons[-1].best_s)
    assert rec.sigma_pair_used == r.noise["sigma_pair_used"]
    figs = stock_figures_from_tuning(d)
    assert isinstance(figs, StockFigures) and figs.plan_s == final.series("plan")
    with pytest.raises(BadInput, match="sdagent-tune/9"):
        TuneRecord.from_dict({**d, "format": "sdagent-tune/9"})
    assert "unreadable" in stock_figures_from_tuning({**d, "format": "sdagent-tune/9"})


def test_a_plan_file_whose_openvino_settings_no_backend_reads_starts_the_tune(tmp_path):
    """A plan file written before the planner refused ov_* settings off backend openvino (a stock-winning
    tune recorded ov_cpu_pinning: true on the native backend) is the tune's first candidate, honoured here,
    not an exit 2: its settings go through the planner's lenient path for files before they are overrides."""
    from hosts import HOSTS, write_tree
    from sdagent.host.software import HostFacts, IpexStatus
    from sdagent.host.topology import read_topology
    from sdagent.pipeline.modeldir import ModelDir
    from sdagent.pipeline.workload import Workload
    from sdagent.planning.plan import make_plan
    from sdagent.tuning.session import TuneRequest, _Session

    topo = read_topology(write_tree(tmp_path, HOSTS["xeon-vm-2core-amx"]))
    facts = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None}, numactl=None,
                      taskset="/usr/bin/taskset", numa_permitted=False,
                      ipex=IpexStatus(False, None, "2.13.0", "not installed"), cxx=None)
    old = make_plan(topo, facts, file_settings={"backend": "native", "ov_cpu_pinning": True, "ov_weights": "int8"},
                    source="tuned")
    assert old.settings["ov_cpu_pinning"] is False and old.warnings  # a file's value falls back, with a warning
    req = TuneRequest(ModelDir(tmp_path, "StableDiffusionPipeline", {}, "tiny"), Workload(steps=4, height=64,
                      width=64), 300.0, allow_compile=False, start=dataclasses.replace(
                          old, settings={**old.settings, "ov_cpu_pinning": True, "ov_weights": "int8"}))
    (first,) = _Session(topo, facts, req, {}, runner=None).first()
    assert first.overrides["ov_cpu_pinning"] is False and first.overrides["ov_weights"] == "full"
    assert first.settings["backend"] == "native"
