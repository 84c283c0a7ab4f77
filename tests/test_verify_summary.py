"""verify's JSON `summary` block: the figures a fleet report row shows (issue 18, item 5).

The fleet report read p50/p90 by picking checks by name in Jinja; the agent now
states them once, with the verdict and the reason. No model or torch needed.
"""

from __future__ import annotations

from types import SimpleNamespace

from sdagent.errors import Exit
from sdagent.verifying.checks import VerifyResult, decide_exit, failed_run, latency_checks
from sdagent.verifying.targets import parse_targets


def _target(**kw):
    base = {"name": "t", "match": {}, "p50_s": 10.0, "p90_s": 12.0, "min_runs": 5}
    base.update(kw)
    return parse_targets([base])[0]


def _result(latencies, throughput=None, **target_kw):
    t = _target(**target_kw)
    checks = tuple(latency_checks(latencies, t))
    return VerifyResult(exit_code=decide_exit(checks), checks=checks, target=t, host_key=None, selection="",
                        plan={}, instance=0, model="tiny", throughput=throughput)


def test_a_pass_states_its_figures_and_no_reason():
    s = _result([9.0, 9.5, 9.8, 9.2, 9.4], SimpleNamespace(images_per_min=6.25, to_dict=lambda: {})).to_dict()["summary"]
    assert s["verdict"] == "pass" and s["exit_code"] == 0
    p50 = s["p50_s"]
    assert isinstance(p50, float) and 9.0 <= p50 <= 9.8
    assert isinstance(s["p90_s"], float) and s["p90_s"] >= p50
    assert s["images_per_min"] == 6.25 and s["reason"] == ""


def test_a_miss_gives_the_failing_checks_details_as_reason():
    res = _result([10.5, 10.6, 10.7, 10.8, 10.6])
    s = res.to_dict()["summary"]
    assert s["verdict"] == "target missed" and s["exit_code"] == int(Exit.TARGET_MISSED)
    assert "all over the ceiling" in s["reason"]
    assert s["images_per_min"] is None


def test_a_run_without_verdict_gives_the_error_reason_and_no_figures():
    res = failed_run(int(Exit.USAGE), "model directory /x not found", instance=0, model="/x", started=0.0,
                     version="t")
    s = res.to_dict()["summary"]
    assert s == {"verdict": "bad input", "exit_code": 2, "p50_s": None, "p90_s": None, "images_per_min": None,
                 "reason": "model directory /x not found"}
