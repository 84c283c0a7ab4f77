"""sdagent tune: the decision rule and the search with a fake timer; the CLI end to end on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdagent.measuring.stats import rotated
from sdagent.envvars import stock_env as stock_child_env
from sdagent.tuning import axes as A
from sdagent.tuning import search as T

AGENT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "agent")


# ---------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------


def test_decide_faster_needs_non_overlapping_ranges_over_three_rounds():
    assert T.decide([1.0, 1.02, 0.99], [0.8, 0.85, 0.82]).outcome == "faster"
    assert T.decide([1.0, 1.02], [0.8, 0.85]).outcome == "within-noise"  # two rounds are not enough
    assert T.decide([1.0, 1.02, 0.99], [0.8, 1.0, 0.82]).outcome == "within-noise"  # one round overlaps
    v = T.decide([1.0, 1.02, 0.99], [1.2, 1.3, 1.25])
    assert v.outcome == "slower" and "median ratio" in v.reason
    assert T.decide([], []).outcome == "failed"


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

    def measure(self, c: T.Candidate) -> float:
        self.now += self.overhead
        if c.name in self.fail:
            raise T.MeasureFailed(f"{c.name} crashed")
        seq = self.lat[c.name]
        x = seq[sum(1 for n in self.calls if n == c.name) % len(seq)]
        self.calls.append(c.name)
        self.now += x
        return x

    def warm(self, c: T.Candidate) -> None:
        self.warmed.append(c.name)
        self.now += 3 * self.overhead


def resolve(overrides):
    base = {"allocator": "jemalloc", "omp_runtime": "intel", "binding": "none", "precision": "bf16",
            "backend": "native", "channels_last": True, "compile": False, "omp_num_threads": 2,
            "kmp_blocktime": "unset", "kmp_affinity": "unset", "malloc_conf": None}
    return {**base, **overrides}


def cand(name, **settings):
    return T.Candidate(name, settings, resolve(settings), "test")


STOCK = A.stock_candidate(resolve)


def run_search(host, first, axes=(), budget=10_000.0, rounds=3):
    return T.search(STOCK, first, list(axes), host.measure, budget_s=budget, clock=host.clock,
                    warm=host.warm, rounds=rounds)


def test_candidate_within_noise_is_not_chosen():
    host = FakeHost({"stock": [1.00, 1.10, 0.95], "plan": [0.98, 1.05, 0.97]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    assert r.chosen.name == "stock"
    comp = r.comparisons[0]
    assert comp.verdict.outcome == "within-noise"
    assert "fallback" in r.reason
    assert host.calls.count("plan") == 3 and host.calls.count("stock") == 3


def test_faster_candidate_is_chosen_and_checked_against_stock():
    host = FakeHost({"stock": [1.00, 1.02, 0.99], "plan": [0.80, 0.82, 0.81]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    assert r.chosen.name == "plan"
    assert r.comparisons[0].verdict.outcome == "faster"
    final = r.comparisons[-1]
    assert final.axis == "final check against stock" and final.candidate == "stock"
    assert "stock -> plan" in r.reason and "final check" in r.reason
    # every comparison interleaves: each round holds both, the first position rotates
    assert r.comparisons[0].order == [["stock", "plan"], ["plan", "stock"], ["stock", "plan"]]


def test_stock_wins_when_everything_else_is_slower():
    host = FakeHost({"stock": [1.0, 1.01, 0.99], "plan": [1.3, 1.32, 1.31], "a": [1.2, 1.25, 1.22],
                     "b": [1.1, 1.12, 1.11]})
    axis = T.Axis("x", lambda best: [cand("a", allocator="default"), cand("b", omp_runtime="default")])
    r = run_search(host, [cand("plan", allocator="tcmalloc")], [axis])
    assert r.chosen.name == "stock"
    assert all(c.verdict.outcome == "slower" for c in r.comparisons)
    # a clear loser is dropped after two rounds
    assert host.calls.count("plan") == 2 and host.calls.count("a") == 2


def test_final_check_falls_back_to_stock_when_stock_turns_out_faster():
    # plan beats stock in its comparison (rounds 1-3), then stock is faster in the final check (drift)
    host = FakeHost({"stock": [1.0, 1.0, 1.0, 0.5, 0.5, 0.5], "plan": [0.8, 0.8, 0.8, 0.9, 0.9, 0.9]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    assert r.chosen.name == "stock"
    assert "final check found stock faster" in r.reason


def test_lowest_median_of_several_faster_variants_wins_and_axes_build_on_the_best():
    seen_best = []

    def variants(best):
        seen_best.append(best.name)
        return [cand("v1", kmp_blocktime=0), cand("v2", kmp_blocktime=1)]

    host = FakeHost({"stock": [1.0, 1.0, 1.0], "plan": [0.9, 0.9, 0.9], "v1": [0.7, 0.71, 0.72],
                     "v2": [0.6, 0.61, 0.62]})
    r = run_search(host, [cand("plan", allocator="tcmalloc")], [T.Axis("blocktime", variants)])
    assert seen_best == ["plan"]
    assert r.chosen.name == "v2"
    assert "stock -> plan -> v2" in r.reason
    # the axis is one joint comparison: the best measured once per round, shared by both variants
    axis_calls = host.calls[6:15]
    assert axis_calls.count("plan") == 3 and axis_calls.count("v1") == 3 and axis_calls.count("v2") == 3


def test_failed_candidate_is_reported_and_never_chosen():
    host = FakeHost({"stock": [1.0], "plan": [0.5]}, fail={"plan"})
    r = run_search(host, [cand("plan", allocator="tcmalloc")])
    assert r.chosen.name == "stock"
    assert r.comparisons[0].verdict.outcome == "failed" and "crashed" in r.comparisons[0].verdict.reason


def test_budget_skips_what_does_not_fit_and_is_respected():
    host = FakeHost({"stock": [1.0, 1.01, 0.99], "plan": [1.0, 1.01, 0.99], "a": [0.5], "b": [0.5]},
                    overhead=9.0)
    axis = T.Axis("x", lambda best: [cand("a", allocator="default"), cand("b", omp_runtime="default")])
    r = run_search(host, [cand("plan", allocator="tcmalloc")], [axis], budget=80.0)
    assert r.chosen.name == "stock"
    assert [n for n, _ in r.skipped] == ["a", "b"] and all("budget" in w for _, w in r.skipped)
    assert r.spent_s <= 80.0


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
    # 3 rounds in the comparison, then 2 in the final check: stock, clearly slower, is dropped early
    assert len(by["plan"]["measured_s"]) == 5 and len(by["stock"]["measured_s"]) == 5
    assert d["chosen"] == "plan" and d["rule"] == T.RULE and d["comparisons"][0]["verdict"] == "faster"


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
    assert axes["preloads"].variants(cand("n", allocator="default", omp_runtime="default")) == []
    assert list(axes)[:3] == ["precision/backend", "preloads", "torch.compile"]


def test_stock_candidate_is_untuned():
    s = STOCK.settings
    assert STOCK.stock and s["allocator"] == "default" and s["omp_runtime"] == "default"
    assert s["binding"] == "none" and s["precision"] == "fp32" and not s["channels_last"] and not s["compile"]


# ---------------------------------------------------------------------------
# End to end through the CLI (tiny model, real processes)
# ---------------------------------------------------------------------------


def sdagent(*args, **kw):
    env = dict(os.environ, PYTHONPATH=AGENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "sdagent", *args], capture_output=True, text=True, env=env, **kw)


TINY_WORKLOAD = ("--steps", "2", "--height", "64", "--width", "64", "--warmup-steps", "1")


@pytest.mark.slow
def test_tune_cli_writes_a_plan_that_env_and_exec_accept(tiny_model, tmp_path):
    out = tmp_path / "tuned.json"
    r = sdagent("tune", "--model", str(tiny_model), *TINY_WORKLOAD, "--budget", "0.3", "--no-compile",
                "-o", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "chosen:" in r.stdout and "stock" in r.stdout
    plan = json.loads(out.read_text())
    assert plan["source"] == "tuned"
    t = plan["tuning"]
    assert t["format"] == "sdagent-tune/1" and t["chosen"] and t["reason"] and t["rule"]
    names = [c["name"] for c in t["candidates"]]
    assert names[0] == "stock" and "topology plan" in names
    assert len(t["candidates"][0]["measured_s"]) >= 2  # stock always measured (a clear loser stops at 2 rounds)
    assert 0 < t["spent_s"] and t["budget_s"] == pytest.approx(18.0)  # the budget is recorded; its
    # enforcement is tested with a fake clock above, not with wall time on a shared machine
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
    env = dict(os.environ, PYTHONPATH=AGENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # A shell's background job (`cmd &`) inherits SIGINT ignored, and Python keeps an ignored
    # SIGINT ignored: give the child the default disposition, as a terminal's Ctrl-C would find.
    p = subprocess.Popen([sys.executable, "-m", "sdagent", "tune", "--model", str(tiny_model), *TINY_WORKLOAD,
                          "--budget", "5", "-o", str(out)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(8)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0
    assert out.read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tuned.json")]  # no temp file left


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
                          skipped=[("a", "budget")], reason="r", budget_s=60, spent_s=30, rule=T.RULE)
    lines = tune_table(result, {"a": [], "b": [2.0], "c": [1.0, 3.0]}).splitlines()
    row = {ln[2:28].strip(): ln for ln in lines[2:5]}
    assert "skipped (budget)" in row["a"]
    assert row["b"].split()[1:3] == ["1", "2.000"] and " -  " in row["b"]  # one sample: no spread
    assert row["c"].startswith("*") and "100.0%" in row["c"]  # (3-1)/2
