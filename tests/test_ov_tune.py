"""Backend as a tune axis (issue 22 item 4): the record says which backend won and by how much; and a small
real tune, in the OpenVINO venv on the tiny model, that measures backend openvino beside native.

The unit tests run the pure search under a fake clock (no OpenVINO). The end-to-end test skips, saying why,
where the OpenVINO venv is absent (scripts/lib.sh venv_openvino creates it).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from clirun import REPO, clean_env
from sdagent.tuning import search as T
from sdagent.tuning.backends import backend_outcome, best_per_backend, paired_speed
from sdagent.tuning.search import Axis, Candidate


def resolve(overrides, layout=None):
    return {"backend": "native", "precision": "fp32", "compile": False, "allocator": "default", **overrides}


def cand(name, axis="test", **over):
    return Candidate(name, over, resolve(over), axis)


STOCK = Candidate("stock", {"channels_last": False}, resolve({"channels_last": False}), "stock", stock=True)


class Clock:
    """Fixed latencies per candidate (a little jitter so the rule sees noise), a clock that advances."""

    def __init__(self, lat):
        self.lat, self.now, self.i = lat, 0.0, 0

    def clock(self):
        return self.now

    def measure(self, c, limit_s=float("inf")):
        self.i += 1
        x = self.lat[c.name] * (1.0 + 0.004 * ((self.i % 3) - 1))
        self.now += x + 1.0
        return x


def backend_axis():
    return Axis("precision/backend", lambda best: [cand("openvino fp32", "precision/backend", backend="openvino"),
                                                   cand("ipex fp32", "precision/backend", backend="ipex")])


def test_the_record_names_the_winning_backend_and_its_ratios_to_stock_and_the_runner_up():
    clk = Clock({"stock": 1.0, "plan": 0.8, "openvino fp32": 0.5, "ipex fp32": 0.9})
    r = T.search(STOCK, [cand("plan", allocator="jemalloc")], [backend_axis()], clk.measure, budget_s=1e5,
                 clock=clk.clock)
    assert r.chosen.name == "openvino fp32"
    out = backend_outcome(r)
    assert out.chosen_backend == "openvino" and out.chosen == "openvino fp32"
    assert [b.backend for b in out.backends] == ["openvino", "native", "ipex"]  # fastest first, stock apart
    assert out.runner_up.backend == "native" and out.runner_up.candidate == "plan"
    assert out.x_vs_stock == pytest.approx(2.0, rel=0.02) and out.paired_x_vs_stock == pytest.approx(2.0, rel=0.02)
    assert out.x_vs_runner_up == pytest.approx(1.6, rel=0.02)
    assert out.paired_x_vs_runner_up == pytest.approx(1.6, rel=0.02)  # the axis screened it against the plan
    d = json.loads(json.dumps(out.to_dict()))
    assert d["format"] == "sdagent-tune-backends/1" and d["runner_up"]["backend"] == "native"
    assert "backend: openvino (openvino fp32), 2.00x" in out.line() and "runner-up native (plan" in out.line()


def test_a_chosen_stock_is_native_at_1x_and_a_lone_backend_has_no_runner_up():
    clk = Clock({"stock": 1.0, "plan": 1.3})
    r = T.search(STOCK, [cand("plan", allocator="jemalloc")], [], clk.measure, budget_s=1e5, clock=clk.clock)
    out = backend_outcome(r)
    assert r.chosen.stock and out.chosen_backend == "native" and out.x_vs_stock == 1.0
    assert out.paired_x_vs_stock is None  # stock is not compared with itself
    assert out.runner_up is None and out.x_vs_runner_up is None and "no other backend measured" in out.line()


def test_unmeasured_candidates_and_stock_are_not_a_backends_best():
    cands = {"stock": STOCK, "a": cand("a"), "b": cand("b", backend="openvino"), "c": cand("c", backend="openvino")}
    per = best_per_backend(cands, {"stock": [0.1], "a": [2.0, 2.2], "b": [], "c": [3.0]}, "stock")
    assert [(b.backend, b.candidate, b.median_s, b.n) for b in per] == [("native", "a", 2.1, 2), ("openvino", "c", 3.0, 1)]


def test_paired_speed_reads_either_side_of_a_comparison():
    comp = T.Comparison("a", "b", "x", best_s=[2.0, 2.0], candidate_s=[1.0, 1.0])
    assert paired_speed([comp], "b", "a") == pytest.approx(2.0)  # b is twice as fast as a
    assert paired_speed([comp], "a", "b") == pytest.approx(0.5)
    assert paired_speed([comp], "a", "c") is None


def test_the_tune_table_says_which_backend_won():
    from sdagent.tuning.report import tune_table

    clk = Clock({"stock": 1.0, "plan": 0.8, "openvino fp32": 0.5, "ipex fp32": 0.9})
    r = T.search(STOCK, [cand("plan", allocator="jemalloc")], [backend_axis()], clk.measure, budget_s=1e5,
                 clock=clk.clock)
    assert "backend: openvino (openvino fp32)" in tune_table(r, r.samples())


# ---------------------------------------------------------------------------
# A small real tune in the OpenVINO venv: the backend axis measures openvino beside native
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.openvino
def test_a_small_tune_measures_backend_openvino_and_records_the_backends(ov_setup, tiny_model, tmp_path):
    """tune in the OpenVINO venv on the tiny model, the backend axis alone (--axis; fp32 only where the CPU
    lacks bf16), at most 6 rounds a comparison: the axis offers openvino, its worker finds the export the
    session built (conftest ov_setup, copied into this test's private cache, XDG_CACHE_HOME: the build is
    test_ov_backend.py's subject) and measures it; the plan's record says which backend won and by how much
    (on the tiny model, whichever it is: its 0.05 s images are within a loaded host's noise)."""
    out = tmp_path / "tuned.json"
    store = tmp_path / "cache" / "sdagent" / "artifacts"
    shutil.copytree(ov_setup["art"], store)
    digest = ov_setup["first"]["artifacts"]["openvino"]
    before = (store / "openvino" / digest / "manifest.json").stat().st_mtime_ns
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    p = subprocess.run([ov_setup["py"], "-m", "sdagent", "tune", "--model", str(tiny_model), "--steps", "2",
                        "--height", "64", "--width", "64", "--warmup-steps", "1", "--repeats", "1",
                        "--no-compile", "--axis", "precision/backend", "--max-rounds", "6", "--budget", "12",
                        "-o", str(out)],
                       env=env, capture_output=True, text=True, timeout=1200, cwd=str(REPO))
    assert p.returncode == 0, p.stderr[-3000:]
    t = json.loads(out.read_text())["tuning"]
    ov = [c for c in t["candidates"] if c["overrides"].get("backend") == "openvino"]
    assert ov and ov[0]["axis"] == "precision/backend" and ov[0]["measured_s"], (t["skipped"], [
        (c["candidate"], c["verdict"], c["reason"]) for c in t["comparisons"]], t["budget_plan"])
    b = t["backends"]
    assert {x["backend"] for x in b["backends"]} >= {"native", "openvino"}
    assert b["chosen_backend"] in ("native", "openvino") and b["x_vs_stock"] > 0
    assert b["runner_up"]["backend"] in ("native", "openvino") and b["runner_up"]["backend"] != b["chosen_backend"]
    assert b["x_vs_runner_up"] > 0 and (b["paired_x_vs_runner_up"] is None or b["paired_x_vs_runner_up"] > 0)
    assert "backend: " + b["chosen_backend"] in p.stdout
    exports = {e.name: e for e in (store / "openvino").iterdir() if e.is_dir()}  # (beside them, their lock files)
    assert (exports[digest] / "manifest.json").stat().st_mtime_ns == before  # found, never rebuilt
    assert all((e / "manifest.json").is_file() for e in exports.values())  # any other (bf16) built whole
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
