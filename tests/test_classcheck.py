"""Every host held to its class: verify compares with the class's tuned figures and flags a slow sibling."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from sdagent.errors import Exit
from sdagent.host.hostclass import Software, host_class
from sdagent.pipeline.modeldir import ModelDir
from sdagent.planning.plan import make_plan
from sdagent.verifying.checks import WARN, VerifyResult
from sdagent.verifying.classcheck import (MIN_MARGIN, Z, ClassFigures, class_figures_from_tuning, compare_with_class)
from sdagent.verifying.report import verify_table
from sdagent.verifying.session import VerifyRequest, verify
from sdagent.verifying.targets import parse_targets
from test_verify_session import FACTS, TARGET, W, FakeMeasurer, state_for, zen5  # noqa: F401 - fixture

SW = Software(torch="2.13.0+cpu", sdagent="0.1.0")


def tuning(class_id: str | None, plan_s=(1.0, 1.02, 0.98), sigma: float | None = 0.05, workload=None,
           model="tiny") -> dict:
    """A tune record as tuning.session writes it (the parts verify reads)."""
    return {
        "chosen": "topology plan",
        "candidates": [{"name": "stock", "stock": True, "measured_s": [2.0, 2.1, 1.9]},
                       {"name": "topology plan", "stock": False, "measured_s": list(plan_s)}],
        "comparisons": [{"best": "topology plan", "candidate": "stock", "best_s": list(plan_s),
                         "candidate_s": [2.0, 2.1, 1.9]}],
        "noise": {"sigma_pair_used": sigma} if sigma is not None else {},
        "workload": (workload or W).to_dict(), "model_name": model, "objective": "latency",
        "host_class": {"id": class_id} if class_id else None,
    }


def run(topo, tune: dict | None, latencies, hc=None) -> VerifyResult:
    hc = hc or host_class(topo, SW)
    plan = make_plan(topo, FACTS, source="tuned" if tune else "derived", tuning=tune)
    md = ModelDir(Path("/m/tiny"), "StableDiffusionPipeline", {}, "tiny")
    req = VerifyRequest(md, W, plan, 0, parse_targets(TARGET), topo, host_class=hc)
    return verify(req, FakeMeasurer(latencies=latencies), state_for(plan, topo))


def test_a_sibling_as_fast_as_its_class_passes_and_reports_both_ratios(zen5):
    hc = host_class(zen5, SW)
    res = run(zen5, tuning(hc.id), (1.0, 1.03, 0.99, 1.01, 1.02))
    c = res.check("class_figures")
    assert c.status == "pass" and res.exit_code == Exit.OK, c
    d = res.host_class
    assert d["id"] == hc.id and d["plan_tuned_on"] == hc.id and d["class_status"] == "pass"
    assert d["ratio_to_class"] == pytest.approx(1.0 / 1.01, abs=1e-3)
    # stock_measured (a fresh stock process here) wins over tune's figures from the class's host
    assert d["ratio_to_stock"] == pytest.approx(2.0 / 1.01, abs=1e-3)
    assert d["stock_source"] == "a fresh stock process on this host"


def test_a_markedly_slower_sibling_is_a_warning_not_a_failure(zen5):
    """30% slower than the class (a throttled CPU): flagged, with the exit code untouched (the plan is fine)."""
    hc = host_class(zen5, SW)
    res = run(zen5, tuning(hc.id), (1.3, 1.31, 1.29, 1.32, 1.3))
    c = res.check("class_figures")
    assert c.status == WARN and "markedly slower than its class" in c.detail
    assert res.exit_code == Exit.OK and not c.failed
    assert res.host_class["ratio_to_class"] < res.host_class["class_floor"]
    table = verify_table(res)
    assert "WARN" in table and f"host class: {hc.id} (avx512_bf16, 1x2 cores" in table
    assert "x its class's" in table


def test_the_plan_of_another_class_is_flagged(zen5):
    res = run(zen5, tuning("0123456789ab"), (1.0, 1.0, 1.0, 1.0, 1.0))
    c = res.check("class_figures")
    assert c.status == WARN and "tuned on host class 0123456789ab" in c.detail


@pytest.mark.parametrize("tune, words", [
    (None, "not a tuned plan"),
    ("other-workload", "another workload (steps 20 vs 2"),
    ("other-model", "model 'sd15', this run is 'tiny'"),
])
def test_no_comparison_without_comparable_figures(zen5, tune, words):
    hc = host_class(zen5, SW)
    t = {None: None, "other-workload": tuning(hc.id, workload=replace(W, steps=20)),
         "other-model": tuning(hc.id, model="sd15")}[tune]
    res = run(zen5, t, (1.0,) * 5)
    c = res.check("class_figures")
    assert c.status == "skip" and words in c.detail, c
    assert res.host_class["id"] == hc.id


def test_the_noise_bound():
    """exp(max(ln 1.1, 2 sigma)): tune's sigma when it has one, else the class's own spread, never under 10%."""
    quiet = ClassFigures("x", (1.0, 1.0, 1.0), {}, None, 0.02, "p")
    assert quiet.bound() == pytest.approx(1 + MIN_MARGIN)  # 2 x 0.02 < ln 1.1: the 10% floor
    f = ClassFigures("x", (1.0, 1.0, 1.0), {}, None, 0.05, "p")
    assert f.bound() == pytest.approx(math.exp(Z * 0.05))  # 2 x 0.05 = 0.1 > ln 1.1 = 0.0953
    wide = ClassFigures("x", (1.0, 1.0, 1.0), {}, None, 0.2, "p")
    assert wide.bound() == pytest.approx(math.exp(0.4))
    own = ClassFigures("x", (1.0, 1.5, 2.0), {}, None, None, "p")
    assert own.noise_sigma() > 0.2 and own.bound() > 1.5
    # a host just inside the bound passes, just outside warns
    tight = ClassFigures("x", (1.0, 1.0, 1.0), dict(steps=2), None, 0.01, "p")
    assert compare_with_class(tight, "x", [1.09] * 5, {"steps": 2}, "m").status == "pass"
    assert compare_with_class(tight, "x", [1.11] * 5, {"steps": 2}, "m").status == WARN


def test_figures_from_a_tune_record():
    f = class_figures_from_tuning(tuning("abc"))
    assert isinstance(f, ClassFigures) and f.class_id == "abc" and f.median_s == 1.0 and f.sigma_pair == 0.05
    assert "no measurements" in class_figures_from_tuning({"chosen": "x", "candidates": []})
    assert "throughput" in class_figures_from_tuning({**tuning("abc"), "objective": "throughput"})


def test_a_plan_tune_chose_stock_for_is_at_1x_stock(zen5):
    """Tune kept stock (nothing beat it beyond noise): the plan in effect is stock's settings, so the report
    says 1.00x stock with that reason rather than leaving the ratio blank."""
    hc = host_class(zen5, SW)
    tune = dict(tuning(hc.id), chosen="stock")
    plan = make_plan(zen5, FACTS, source="tuned", tuning=tune)
    md = ModelDir(Path("/m/tiny"), "StableDiffusionPipeline", {}, "tiny")
    no_stock_run = [{k: v for k, v in TARGET[0].items() if k != "stock_check"}]
    req = VerifyRequest(md, W, plan, 0, parse_targets(no_stock_run), zen5, host_class=hc)
    d = verify(req, FakeMeasurer(latencies=(2.0, 2.05, 1.95, 2.0, 2.02)), state_for(plan, zen5)).host_class
    assert d["ratio_to_stock"] == 1.0 and d["stock_source"].startswith("tune chose stock")
    assert d["ratio_to_class"] == pytest.approx(2.0 / 2.0, abs=0.02)  # the class's figures: stock's, as chosen
