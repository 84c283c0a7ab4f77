"""verify's checks and exit-code decision, with fake process state (no model, no torch needed)."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest

from sdagent.errors import Exit
from sdagent.host.process import ProcessState
from sdagent.verifying.targets import parse_targets
from sdagent.verifying.checks import (
    FAIL, INCONCLUSIVE, PASS, PRIORITY, SKIP, Check, StockFigures, check_affinity, check_allocator,
    check_bf16_diff, check_observed, check_openmp, check_stock, check_target, check_threads, decide_exit,
    image_checks, latency_checks, mean_abs_diff, process_checks, stock_figures_from_tuning,
)

JE = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
IOMP = "/opt/venv/lib/libiomp5.so"
TORCH = "/opt/venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so"
GOMP = "/opt/venv/lib/python3.11/site-packages/torch/lib/libgomp.so.1"


def settings(**kw):
    s = {"allocator": "jemalloc", "jemalloc_path": JE, "tcmalloc_path": None, "omp_runtime": "intel",
         "iomp_path": IOMP, "omp_num_threads": 4}
    s.update(kw)
    return s


def target(**kw):
    base = {"name": "t", "match": {}, "p50_s": 10.0, "p90_s": 12.0, "min_runs": 5}
    base.update(kw)
    return parse_targets([base])[0]


# ---------------------------------------------------------------------------
# Tuning in effect
# ---------------------------------------------------------------------------


def test_allocator_and_openmp_mapped_pass():
    mapped = (TORCH, JE, IOMP)
    assert check_allocator(settings(), mapped).status == PASS
    assert check_openmp(settings(), mapped).status == PASS


def test_planned_libraries_missing_fail_with_exit_3():
    c = check_allocator(settings(), (TORCH, GOMP))
    assert c.status == FAIL and c.exit_code == Exit.TUNING_NOT_IN_EFFECT
    assert "sdagent exec" in c.detail
    o = check_openmp(settings(), (TORCH, GOMP))
    assert o.status == FAIL and o.exit_code == Exit.TUNING_NOT_IN_EFFECT


def test_mapped_paths_are_compared_by_realpath(tmp_path):
    real = tmp_path / "libjemalloc.so.2"
    real.write_bytes(b"")
    link = tmp_path / "libjemalloc.so"
    link.symlink_to(real)
    assert check_allocator(settings(jemalloc_path=str(link)), (str(real),)).status == PASS
    # the same file name from another directory is not the planned library
    other = tmp_path / "other"
    other.mkdir()
    (other / "libjemalloc.so.2").write_bytes(b"")
    c = check_allocator(settings(jemalloc_path=str(link)), (str(other / "libjemalloc.so.2"),))
    assert c.status == FAIL and "different libjemalloc is mapped" in c.detail


def test_default_runtimes_must_not_have_the_tuned_libraries_mapped():
    s = settings(allocator="default", omp_runtime="default")
    assert check_allocator(s, (TORCH, GOMP)).status == PASS
    assert check_openmp(s, (TORCH, GOMP)).status == PASS
    assert check_allocator(s, (JE,)).status == FAIL
    assert check_openmp(s, (IOMP,)).status == FAIL


def test_threads_and_affinity():
    assert check_threads(settings(), 4).status == PASS
    t = check_threads(settings(), 2)
    assert t.status == FAIL and (t.value, t.limit) == (2, 4)
    assert check_threads(settings(), None).status == FAIL
    assert check_affinity((0, 1, 2, 3), (3, 2, 1, 0)).status == PASS
    a = check_affinity((0, 1, 2, 3), tuple(range(8)))
    assert a.status == FAIL and a.value == "0-7" and a.limit == "0-3"


def plan_of(source="derived", fallbacks=(), **kw):
    return SimpleNamespace(settings=settings(**kw), source=source, fallbacks=tuple(fallbacks))


def test_process_checks_on_a_fake_stock_process():
    stock = ProcessState(mapped=(TORCH, GOMP), torch_threads=8, affinity=tuple(range(8)))
    checks = process_checks(plan_of(), stock, expected_affinity=(0, 1, 2, 3))
    assert [(c.name, c.status) for c in checks] == [
        ("plan_honoured", PASS), ("allocator", FAIL), ("openmp", FAIL), ("openmp_runtimes", PASS), ("threads", FAIL),
        ("affinity", FAIL), ("child_affinity", SKIP)]
    assert decide_exit(checks) == Exit.TUNING_NOT_IN_EFFECT
    tuned = ProcessState(mapped=(JE, TORCH, IOMP), torch_threads=4, affinity=(0, 1, 2, 3))
    assert decide_exit(process_checks(plan_of(), tuned, (0, 1, 2, 3))) == Exit.OK


def test_a_plan_files_preload_gone_missing_is_exit_3_not_a_silent_fallback():
    """The tuned plan asked for jemalloc; the host lost it; the planner fell back to glibc malloc and the
    process runs exactly that fallback: every library check passes, and still the tuning is not in effect."""
    fell = plan_of("tuned", fallbacks=[("allocator", "jemalloc", "default", "libjemalloc was not found")],
                   allocator="default")
    ok_proc = ProcessState(mapped=(TORCH, IOMP), torch_threads=4, affinity=(0, 1, 2, 3))
    checks = process_checks(fell, ok_proc, (0, 1, 2, 3))
    assert checks[0].name == "plan_honoured" and checks[0].status == FAIL and "jemalloc" in checks[0].detail
    assert decide_exit(checks) == Exit.TUNING_NOT_IN_EFFECT
    unsafe = plan_of("tuned", fallbacks=[("jemalloc_path", "/home/u/libjemalloc.so", None, "writable by others"),
                                         ("allocator", "jemalloc", "default", "libjemalloc was not found")],
                     allocator="default")
    assert process_checks(unsafe, ok_proc, (0, 1, 2, 3))[0].status == FAIL


def test_observed_backend_and_precision():
    assert check_observed("precision", "bf16", "bf16", "autocast").status == PASS
    c = check_observed("precision", "bf16", "fp32", "autocast off")
    assert c.status == FAIL and c.exit_code == Exit.TUNING_NOT_IN_EFFECT
    assert check_observed("backend", "ipex", None, "").status == FAIL


# ---------------------------------------------------------------------------
# Latency and validity
# ---------------------------------------------------------------------------


def by_name(checks):
    return {c.name: c for c in checks}


def test_latency_pass():
    cs = by_name(latency_checks([9.0, 9.5, 9.8, 9.2, 9.4], target(max_spread=0.2)))
    assert all(cs[n].status == PASS for n in ("latency_p50", "latency_p90", "runs", "spread"))
    assert decide_exit(cs.values()) == Exit.OK


def test_p50_miss_is_exit_1():
    cs = latency_checks([10.5, 10.6, 10.7, 10.8, 10.6], target())
    assert by_name(cs)["latency_p50"].status == FAIL and "all over the ceiling" in by_name(cs)["latency_p50"].detail
    assert decide_exit(cs) == Exit.TARGET_MISSED


def test_p50_passes_only_when_the_median_is_bounded_under_the_ceiling():
    cs = by_name(latency_checks([9.0, 9.1, 9.2, 9.05, 9.15], target()))
    assert cs["latency_p50"].status == PASS and "all under the ceiling" in cs["latency_p50"].detail
    straddle = by_name(latency_checks([9.0, 9.5, 9.8, 10.2, 10.6], target()))
    assert straddle["latency_p50"].status == INCONCLUSIVE and "straddle" in straddle["latency_p50"].detail
    # more runs with the same spread decide: the bounds narrow, they never widen with data
    many = [9.0, 9.5, 9.8, 10.2, 10.6] + [9.3, 9.4, 9.6, 9.7, 9.2, 9.35, 9.45, 9.55, 9.65, 9.25]
    assert by_name(latency_checks(many, target()))["latency_p50"].status == PASS


def test_p90_below_ten_runs_is_the_slowest_run():
    cs = by_name(latency_checks([9.0, 9.1, 12.5, 9.05, 9.02], target()))
    assert cs["latency_p50"].status == INCONCLUSIVE  # 5 runs: the max bounds the median, and 12.5 > 10
    assert cs["latency_p90"].status == FAIL and cs["latency_p90"].value == 12.5
    assert "slowest of 5" in cs["latency_p90"].detail
    ten = [9.0] * 9 + [12.5]  # nearest rank p90 of 10 runs is the 9th: 9.0
    cs10 = by_name(latency_checks(ten, target()))
    assert cs10["latency_p90"].status == PASS and "nearest rank" in cs10["latency_p90"].detail
    assert cs10["latency_p50"].status == PASS


def test_no_p90_ceiling_is_skipped():
    t = target(p90_s=None)
    assert by_name(latency_checks([1.0] * 5, t))["latency_p90"].status == SKIP


def test_too_few_runs_is_inconclusive_never_a_pass():
    cs = latency_checks([9.0, 9.1], target(min_runs=5))
    assert by_name(cs)["runs"].status == INCONCLUSIVE and by_name(cs)["latency_p50"].status == INCONCLUSIVE
    assert "cannot bound it" in by_name(cs)["latency_p50"].detail
    assert decide_exit(cs) == Exit.INCONCLUSIVE


def test_a_noise_bound_is_optional_and_robust():
    assert by_name(latency_checks([9.0] * 5, target()))["spread"].status == SKIP
    noisy = [5.0, 9.0, 9.5, 9.6, 4.0, 9.1]  # IQR/median well above 0.2
    sp = by_name(latency_checks(noisy, target(max_spread=0.2)))["spread"]
    assert sp.status == INCONCLUSIVE and "IQR/median" in sp.detail
    one_outlier = [9.0, 9.1, 9.05, 9.02, 9.08, 30.0]  # the range would say 2.3; the IQR does not care
    assert by_name(latency_checks(one_outlier, target(max_spread=0.2)))["spread"].status == PASS


def test_a_miss_outranks_noise():
    cs = latency_checks([11.0, 20.0, 30.0, 12.0, 15.0], target(max_spread=0.01))
    assert decide_exit(cs) == Exit.TARGET_MISSED


# ---------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------


def test_image_checks():
    rng = np.random.default_rng(0)
    good = rng.random((8, 8, 3), dtype=np.float32)
    assert [c.status for c in image_checks(good)] == [PASS, PASS]
    nan = good.copy()
    nan[0, 0, 0] = np.nan
    cs = image_checks(nan)
    assert cs[0].status == FAIL and "1 of 192" in cs[0].detail and cs[1].status == SKIP
    assert decide_exit(cs) == Exit.ERROR  # a non-finite image is an error in every command (issue 19 item 11)
    blank = np.full((8, 8, 3), 0.5, dtype=np.float32)
    assert image_checks(blank)[1].status == FAIL
    black = np.zeros((8, 8, 3), dtype=np.float32)
    black[0, 0, 0] = 1 / 512  # below one 8-bit level: still blank
    assert image_checks(black)[1].status == FAIL


def test_bf16_vs_fp32_difference():
    a = np.zeros((4, 4, 3))
    b = np.full((4, 4, 3), 0.02)
    assert mean_abs_diff(a, b) == pytest.approx(0.02)
    assert check_bf16_diff(0.02, 0.05).status == PASS
    over = check_bf16_diff(0.2, 0.05)
    assert over.status == FAIL and over.exit_code == Exit.TARGET_MISSED
    assert math.isnan(mean_abs_diff(a, np.zeros((2, 2, 3))))
    assert check_bf16_diff(float("nan"), 0.05).status == FAIL


# ---------------------------------------------------------------------------
# Slower than stock
# ---------------------------------------------------------------------------


def tuning(chosen="tuned", plan_s=(12.0, 12.5, 13.0), stock_s=(10.0, 10.5, 11.0), sigma=0.02, kind="final"):
    """A tune record whose last comparison of the chosen plan with stock has these paired rounds."""
    comp = {"best": chosen, "candidate": "stock", "kind": kind, "best_s": list(plan_s), "candidate_s": list(stock_s)}
    return {"chosen": chosen, "noise": {"sigma_pair_used": sigma}, "candidates": [
        {"name": "stock", "stock": True, "measured_s": list(stock_s)},
        {"name": "tuned", "stock": False, "measured_s": list(plan_s)},
    ], "comparisons": [comp]}


def test_stock_from_tuning_decided_by_tunes_own_rule():
    figs = stock_figures_from_tuning(tuning())
    assert isinstance(figs, StockFigures) and figs.paired_sigma == 0.02 and "final comparison" in figs.source
    c = check_stock("stock_tune", figs)
    assert c.status == FAIL and c.exit_code == Exit.SLOWER_THAN_STOCK and "sequential" not in c.detail
    fast = stock_figures_from_tuning(tuning(plan_s=(9.0, 9.2, 9.1), stock_s=(10.0, 10.1, 10.2)))
    assert check_stock("stock_tune", fast).status == PASS


def test_stock_within_noise_passes():
    figs = stock_figures_from_tuning(tuning(plan_s=(10.9, 11.5, 10.2), stock_s=(10.0, 11.0, 11.1), sigma=0.1))
    assert check_stock("stock_tune", figs).status == PASS


def test_a_fresh_stock_process_is_judged_by_the_medians_bounds():
    slower = StockFigures((12.0, 12.1, 12.2, 12.3, 12.4), (10.0, 10.1, 10.2, 10.3, 10.4), "fresh")
    assert check_stock("stock_measured", slower).status == FAIL
    close = StockFigures((10.3, 10.1, 10.6, 10.4, 10.5), (10.0, 10.1, 10.2, 10.3, 10.4), "fresh")
    assert check_stock("stock_measured", close).status == PASS
    few = StockFigures((12.0, 12.1), (10.0, 10.1), "fresh")
    assert check_stock("stock_measured", few).status == INCONCLUSIVE


def test_stock_without_tune_results_or_when_stock_was_chosen():
    assert check_stock("stock_tune", stock_figures_from_tuning(None)).status == SKIP
    assert check_stock("stock_tune", stock_figures_from_tuning({"chosen": "x", "candidates": []})).status == SKIP
    assert check_stock("stock_tune", stock_figures_from_tuning(tuning(chosen="stock"))).status == PASS
    assert check_stock("stock_measured", None).status == SKIP


# ---------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------

FAILING = {
    Exit.USAGE: Check("input", "usage", FAIL, "bad"),
    Exit.TUNING_NOT_IN_EFFECT: Check("allocator", "tuning", FAIL, "x"),
    Exit.NO_TARGET: check_target(None, "nothing"),
    Exit.TARGET_MISSED: Check("latency_p50", "latency", FAIL, "x"),
    Exit.SLOWER_THAN_STOCK: Check("stock_tune", "stock", FAIL, "x"),
    Exit.INCONCLUSIVE: Check("spread", "validity", INCONCLUSIVE, "x"),
    Exit.ERROR: Check("run", "error", FAIL, "x"),
}


def test_priority_order_is_2_7_3_4_1_6_5():
    assert [int(x) for x in PRIORITY] == [2, 7, 3, 4, 1, 6, 5]


@pytest.mark.parametrize("combo", [c for r in range(1, 8) for c in itertools.combinations(FAILING, r)])
def test_most_fundamental_failure_decides(combo):
    passing = [Check("threads", "tuning", PASS, "ok"), Check("x", "quality", SKIP, "skipped")]
    checks = passing + [FAILING[code] for code in combo]
    expected = next(code for code in PRIORITY if code in combo)
    assert decide_exit(checks) == expected


def test_all_pass_or_skip_is_exit_0():
    assert decide_exit([Check("a", "tuning", PASS, ""), Check("b", "stock", SKIP, "")]) == Exit.OK
    assert decide_exit([]) == Exit.OK


def test_inconclusive_in_any_category_is_exit_5():
    c = Check("stock_measured", "stock", INCONCLUSIVE, "the stock process failed")
    assert c.exit_code == Exit.INCONCLUSIVE
