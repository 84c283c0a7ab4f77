"""The checks of `sdagent verify` and how they decide the exit code. Pure: facts in, checks out.

Why checks and categories: a host can fail in several ways at once, but an
operator (or a fleet dashboard) needs one answer per host. Each check has a
category, each category an exit code, and the most fundamental failure wins:

    2 usage/bad input  >  7 error (did not complete)  >  3 tuning not in effect
      >  4 no target matches  >  1 latency or quality target missed
      >  6 slower than stock  >  5 inconclusive  >  0 pass

An error before any verdict because a run that did not complete proves
nothing either way; tuning first among verdicts because figures measured
without the tuning say nothing about the tuning; no target before a miss
because a miss needs a target; a miss
before slower-than-stock because the ceiling is the contract; inconclusive
last among failures because it is the absence of a verdict, but it is never
a pass (MLPerf-style validity: too few runs or too much noise is not a pass).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sdagent.errors import BadInput, Exit, verdict
from sdagent.host.process import ProcessState, is_mapped
from sdagent.host.topology import format_cpulist
from sdagent.measuring.stats import median_bounds, min_runs_for_bounds, nearest_rank, summarize
from sdagent.planning.settings import LIBRARY_KNOBS
from sdagent.tuning.rule import FASTER, decide
from sdagent.verifying.targets import Target

PASS, FAIL, INCONCLUSIVE, SKIP = "pass", "fail", "inconclusive", "skip"
#: A check that holds but says something the reader must know (never changes the exit code): a
#: plan's library replaced by the host's own copy, a host slower than its class (verifying.classcheck).
WARN = "warn"

#: What a failing check of each category makes the exit code.
CATEGORY_EXIT: dict[str, Exit] = {
    "usage": Exit.USAGE,  # bad input met mid-way (recorded so a fleet sees it, then re-raised)
    "error": Exit.ERROR,  # the run did not complete: no verdict
    "tuning": Exit.TUNING_NOT_IN_EFFECT,
    "target": Exit.NO_TARGET,
    "latency": Exit.TARGET_MISSED,
    "throughput": Exit.TARGET_MISSED,
    "quality": Exit.TARGET_MISSED,
    "stock": Exit.SLOWER_THAN_STOCK,
    "validity": Exit.INCONCLUSIVE,
}

#: Most fundamental first (see the module docstring).
PRIORITY: tuple[Exit, ...] = (Exit.USAGE, Exit.ERROR, Exit.TUNING_NOT_IN_EFFECT, Exit.NO_TARGET, Exit.TARGET_MISSED,
                              Exit.SLOWER_THAN_STOCK, Exit.INCONCLUSIVE)

#: An image whose pixel range is below one 8-bit level is blank (a constant image).
BLANK_RANGE = 1.0 / 255.0

ALLOCATOR_LIBS = ("libjemalloc", "libtcmalloc")
IOMP_LIB = "libiomp5"


@dataclass(frozen=True)
class Check:
    name: str
    category: str  # a key of CATEGORY_EXIT
    status: str  # pass | warn | fail | inconclusive | skip
    detail: str
    value: Any = None
    limit: Any = None

    @property
    def failed(self) -> bool:
        return self.status in (FAIL, INCONCLUSIVE)

    @property
    def exit_code(self) -> Exit:
        if self.status == INCONCLUSIVE:
            return Exit.INCONCLUSIVE  # whatever the category: no verdict is never a pass, nor a miss
        return CATEGORY_EXIT[self.category] if self.status == FAIL else Exit.OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = int(self.exit_code)
        return d


def decide_exit(checks: Iterable[Check]) -> Exit:
    """The highest-priority exit code among the failing checks; OK when none fails."""
    codes = {c.exit_code for c in checks if c.failed}
    for code in PRIORITY:
        if code in codes:
            return code
    return Exit.OK


def skipped(name: str, category: str, why: str) -> Check:
    return Check(name, category, SKIP, why)


#: The checks that need the model run, in report order (name, category).
MEASURED_CHECKS: tuple[tuple[str, str], ...] = (
    ("backend", "tuning"), ("precision", "tuning"), ("artifact", "tuning"), ("latency_p50", "latency"), ("latency_p90", "latency"),
    ("runs", "validity"), ("spread", "validity"), ("image_finite", "error"), ("image_not_blank", "quality"),
    ("bf16_vs_fp32", "quality"), ("stock_measured", "stock"), ("images_per_min", "throughput"),
    ("class_figures", "class"),
)


def skip_measured(why: str) -> list[Check]:
    """Once the answer is 3 or 4, running the model cannot change it: every measured check is skipped."""
    return [skipped(n, cat, why) for n, cat in MEASURED_CHECKS]


# ---------------------------------------------------------------------------
# Tuning in effect (exit 3)
# ---------------------------------------------------------------------------


def _mapped_named(mapped: Sequence[str], prefixes: tuple[str, ...] | str) -> list[str]:
    return [m for m in mapped if Path(m).name.startswith(prefixes)]


def check_allocator(settings: Mapping[str, Any], mapped: Sequence[str]) -> Check:
    """The planned allocator's library is mapped (realpaths); 'default' means no other allocator is."""
    alloc = settings.get("allocator")
    if alloc in ("jemalloc", "tcmalloc"):
        path = settings.get(f"{alloc}_path")
        if not path:
            return Check("allocator", "tuning", FAIL, f"plan wants {alloc} but names no library path")
        if is_mapped(path, mapped):
            return Check("allocator", "tuning", PASS, f"{alloc} mapped: {os.path.realpath(path)}", alloc, alloc)
        other = _mapped_named(mapped, f"lib{alloc}")
        hint = (f"; a different lib{alloc} is mapped: {', '.join(other)}" if other else
                "; run under `sdagent exec -- ...` or the rendered env (LD_PRELOAD)")
        return Check("allocator", "tuning", FAIL, f"planned {alloc} ({path}) is not mapped{hint}",
                     "not mapped", alloc)
    found = _mapped_named(mapped, ALLOCATOR_LIBS)
    if found:
        return Check("allocator", "tuning", FAIL, f"plan says glibc malloc, but {', '.join(found)} is mapped",
                     Path(found[0]).name, "default")
    return Check("allocator", "tuning", PASS, "glibc malloc as planned (no jemalloc/tcmalloc mapped)",
                 "default", "default")


def check_openmp(settings: Mapping[str, Any], mapped: Sequence[str]) -> Check:
    """libiomp5 is mapped when the plan wants Intel OpenMP, and absent when it wants torch's own."""
    if settings.get("omp_runtime") == "intel":
        path = settings.get("iomp_path")
        if path and is_mapped(path, mapped):
            return Check("openmp", "tuning", PASS, f"libiomp5 mapped: {os.path.realpath(path)}", "intel", "intel")
        other = _mapped_named(mapped, IOMP_LIB)
        where = f"; another libiomp5 is mapped: {', '.join(other)}" if other else ""
        return Check("openmp", "tuning", FAIL, f"planned libiomp5 ({path}) is not mapped{where}",
                     "not mapped", "intel")
    found = _mapped_named(mapped, IOMP_LIB)
    if found:
        return Check("openmp", "tuning", FAIL, f"plan says torch's own OpenMP, but {found[0]} is mapped",
                     "intel", "default")
    return Check("openmp", "tuning", PASS, "torch's own OpenMP as planned (libiomp5 not mapped)",
                 "default", "default")


def check_threads(settings: Mapping[str, Any], torch_threads: int | None) -> Check:
    want = settings.get("omp_num_threads")
    if torch_threads is None:
        return Check("threads", "tuning", FAIL, "torch's thread count is unknown (torch not importable)",
                     None, want)
    if torch_threads == want:
        return Check("threads", "tuning", PASS, f"torch uses {torch_threads} threads as planned",
                     torch_threads, want)
    return Check("threads", "tuning", FAIL, f"torch uses {torch_threads} threads, the plan {want} "
                 "(OMP_NUM_THREADS not applied?)", torch_threads, want)


def check_affinity(expected: Sequence[int], actual: Sequence[int]) -> Check:
    exp, act = sorted(set(expected)), sorted(set(actual))
    if exp == act:
        return Check("affinity", "tuning", PASS, f"CPUs {format_cpulist(act)} as planned",
                     format_cpulist(act), format_cpulist(exp))
    return Check("affinity", "tuning", FAIL, f"process may run on CPUs {format_cpulist(act)}, the plan pins "
                 f"{format_cpulist(exp)}", format_cpulist(act), format_cpulist(exp))


def check_honoured(plan: Any) -> Check:
    """The plan file's settings are in effect as written, judged on the plan in force.

    One rule for every setting: the process is checked against the plan in force (the other
    checks), and this check judges what the plan in force changed from the file (its
    `fallbacks`). A derived plan claims no measurement: PASS. A tuned (or hand-made) plan whose
    library path this host replaced with its own copy of the same library: WARN (the tuned
    figures were measured with another file). Any other change (a setting that fell back: a
    library missing without a host copy, numactl absent, IPEX unusable): FAIL, exit 3.
    """
    paths = set(LIBRARY_KNOBS.values())
    swapped = [(k, a, u, w) for k, a, u, w in plan.fallbacks if k in paths and u]
    changed = [f"{k}={a} (using {u}: {w})" for k, a, u, w in plan.fallbacks if (k, a, u, w) not in swapped]
    note = "; ".join(f"{k} {a} replaced by {u}" for k, a, u, _ in swapped)
    if plan.source == "derived":
        return Check("plan_honoured", "tuning", PASS, "derived: nothing measured to fall back from"
                     + (f" ({note})" if note else ""))
    if changed:
        return Check("plan_honoured", "tuning", FAIL, f"the {plan.source} plan asks for what this host cannot "
                     f"give: {'; '.join(changed)}", len(changed), 0)
    if swapped:
        return Check("plan_honoured", "tuning", WARN, f"the {plan.source} plan's libraries are not on this host, "
                     f"the host's own copies are used: {note}; its figures were measured with the other files",
                     len(swapped), 0)
    return Check("plan_honoured", "tuning", PASS, f"every setting of the {plan.source} plan is in effect", 0, 0)


def check_child_affinity(expected: Sequence[int], child: Sequence[int], env: Mapping[str, str],
                         planned_kmp_affinity: str | None = None) -> Check:
    """A child process started after torch's first parallel region may run on every CPU of the instance.

    Why: Intel OpenMP with KMP_AFFINITY binds the main thread to one CPU at its first parallel region,
    and every subprocess and multiprocessing worker a server starts afterwards inherits that CPU. The
    planner leaves KMP_AFFINITY unset; where the plan itself sets it (a tuned plan that measured it
    faster), the confinement is the price it measured, so a narrower child is a warning, not exit 3.
    """
    exp = sorted(set(expected))
    if not child:
        return Check("child_affinity", "tuning", FAIL, "could not start a child process to read its CPUs",
                     None, format_cpulist(exp))
    act = sorted(set(child))
    if act == exp:
        return Check("child_affinity", "tuning", PASS, f"a child process inherits CPUs {format_cpulist(act)}, "
                     "the instance's", format_cpulist(act), format_cpulist(exp))
    kmp = env.get("KMP_AFFINITY")
    if kmp and kmp == planned_kmp_affinity:
        return Check("child_affinity", "tuning", WARN, f"a child process may run only on CPUs "
                     f"{format_cpulist(act)} of the instance's {format_cpulist(exp)}: the plan's own "
                     f"KMP_AFFINITY={kmp} (tuned) binds the main thread; a server that starts subprocesses "
                     "or workers should `--set kmp_affinity=unset`", format_cpulist(act), format_cpulist(exp))
    why = (f"KMP_AFFINITY={kmp} bound the main thread at torch's first parallel region; leave it unset under "
           "numactl/taskset (`--set kmp_affinity=unset`)" if kmp else "the main thread is bound narrower than "
           "the instance")
    return Check("child_affinity", "tuning", FAIL, f"a child process started from here may run only on CPUs "
                 f"{format_cpulist(act)}, the instance's are {format_cpulist(exp)}: every subprocess and worker "
                 f"a server starts shares them ({why})", format_cpulist(act), format_cpulist(exp))


def check_openmp_runtimes(mapped: Sequence[str], env: Mapping[str, str]) -> Check:
    """One OpenMP runtime per family in the process (host.openmp): two Intel/LLVM copies abort with
    "OMP: Error #15", or run only because KMP_DUPLICATE_LIB_OK hides it until they crash at exit; two
    libgomp copies (torch's bundled one and the system's, which compiled packages link) each run a full
    thread team, unless a preloaded libiomp5 serves both (docs/results/amx-16c-defaults)."""
    from sdagent.host.openmp import REMEDY, duplicate_runtimes, preloaded_runtime

    dups = duplicate_runtimes(mapped)
    if preloaded_runtime(env):  # a preloaded libiomp5 serves every libgomp copy's GOMP_* entry points
        dups = [d for d in dups if d.family != "gnu"]
    if not dups:
        return Check("openmp_runtimes", "tuning", PASS, "one OpenMP runtime per family mapped", 0, 0)
    hidden = "; KMP_DUPLICATE_LIB_OK is set, which only hides it" if env.get("KMP_DUPLICATE_LIB_OK") else ""
    return Check("openmp_runtimes", "tuning", FAIL, f"{'; '.join(d.describe() for d in dups)}{hidden}: {REMEDY}",
                 sum(len(d.files) - 1 for d in dups), 0)


def process_checks(plan: Any, state: ProcessState, expected_affinity: Sequence[int]) -> list[Check]:
    """The tuning checks that need no model: the plan honoured, libraries, OpenMP runtimes, threads, affinity
    (the process's and a child's)."""
    settings = plan.settings
    out = [check_honoured(plan), check_allocator(settings, state.mapped), check_openmp(settings, state.mapped),
           check_openmp_runtimes(state.mapped, state.env), check_threads(settings, state.torch_threads),
           check_affinity(expected_affinity, state.affinity)]
    if state.child_affinity is not None:  # None: not read (a fake state); (): no child could start
        tuned_kmp = settings.get("kmp_affinity") if str(plan.source).startswith("tuned") else None
        out.append(check_child_affinity(expected_affinity, state.child_affinity, state.env, tuned_kmp))
    else:
        out.append(skipped("child_affinity", "tuning", "no child process was started to read its CPUs"))
    return out


def check_observed(key: str, planned: str, observed: str | None, how: str) -> Check:
    """Backend or precision as seen inside the UNet's call, against the plan."""
    if observed is None:
        return Check(key, "tuning", FAIL, f"the UNet was never called, its {key} was not observed", None, planned)
    if observed == planned:
        return Check(key, "tuning", PASS, f"{observed} as planned ({how})", observed, planned)
    return Check(key, "tuning", FAIL, f"the UNet ran {observed}, the plan says {planned} ({how})",
                 observed, planned)


def check_artifacts(planned: bool, expected: Mapping[str, str], loaded: Mapping[str, str], mode: str | None,
                    why: str | None, compiled_mode: str = "aot") -> Check:
    """The compiled packages (or, backend openvino, the export: compiled_mode "openvino") the process loaded
    are the ones the plan and this workload call for."""
    if not planned:
        return skipped("artifact", "tuning", "the plan runs eager: no compiled package to check")
    if mode != compiled_mode or not loaded:
        return Check("artifact", "tuning", FAIL, f"the plan says compiled, the UNet ran {mode or 'not at all'}"
                     + (f": {why}" if why else ""), mode, compiled_mode)
    wrong = [f"{p} {loaded.get(p)} (planned {d})" for p, d in expected.items() if loaded.get(p) != d]
    if wrong:
        return Check("artifact", "tuning", FAIL, f"loaded packages are not the planned ones: {'; '.join(wrong)}",
                     len(wrong), 0)
    return Check("artifact", "tuning", PASS, "the planned packages are loaded: "
                 + ", ".join(f"{p} {d}" for p, d in expected.items()), compiled_mode, compiled_mode)


# ---------------------------------------------------------------------------
# Target (exit 4)
# ---------------------------------------------------------------------------


def check_target(target: Target | None, explain: str) -> Check:
    if target is not None:
        return Check("target", "target", PASS, f"entry {target.name!r} ({target.source})", target.name)
    return Check("target", "target", FAIL, f"no target entry matches this host and workload: {explain or 'no entries'}")


# ---------------------------------------------------------------------------
# Latency (exit 1) and validity (exit 5)
# ---------------------------------------------------------------------------


def latency_checks(latencies: Sequence[float], target: Target) -> list[Check]:
    """The median against p50_s by its confidence bounds, p90 against p90_s, and the validity of the runs.

    The median passes when its upper bound is at or under the ceiling, misses when its lower bound
    is over it, and is inconclusive in between (exit 5): order-statistic bounds, distribution-free,
    that narrow as runs are added, so more data makes a verdict more likely, never less. The p90
    is the nearest rank (below 10 runs the slowest run, which bounds it). Valid: at least
    min_runs timed runs, and IQR/median at or under max_spread where the target sets one.
    """
    s = summarize(latencies)
    pct = f"{100 * target.confidence:g}%"
    lo, hi = median_bounds(latencies, target.confidence)
    nums = f"median {s.median:.4g} s over {s.n} run(s), {pct} bounds "
    if lo is None or hi is None:
        p50 = Check("latency_p50", "latency", INCONCLUSIVE,
                    f"median {s.median:.4g} s, but {s.n} run(s) cannot bound it at {pct} "
                    f"(at least {min_runs_for_bounds(target.confidence)} are needed)",
                    round(s.median, 6), target.p50_s)
    elif hi <= target.p50_s:
        p50 = Check("latency_p50", "latency", PASS, f"{nums}[{lo:.4g}, {hi:.4g}] s, all under the "
                    f"ceiling {target.p50_s:g} s", round(s.median, 6), target.p50_s)
    elif lo > target.p50_s:
        p50 = Check("latency_p50", "latency", FAIL, f"{nums}[{lo:.4g}, {hi:.4g}] s, all over the "
                    f"ceiling {target.p50_s:g} s", round(s.median, 6), target.p50_s)
    else:
        p50 = Check("latency_p50", "latency", INCONCLUSIVE, f"{nums}[{lo:.4g}, {hi:.4g}] s straddle the "
                    f"ceiling {target.p50_s:g} s: more runs (or a quieter host) decide", round(s.median, 6),
                    target.p50_s)
    out = [p50]
    if target.p90_s is not None:
        p90 = nearest_rank(latencies, 0.90)
        how = "p90 (nearest rank)" if s.n >= 10 else f"slowest of {s.n} runs (fewer than 10: bounds the p90)"
        out.append(Check("latency_p90", "latency", PASS if p90 <= target.p90_s else FAIL,
                         f"{how} {p90:.4g} s, ceiling {target.p90_s:g} s", round(p90, 6), target.p90_s))
    else:
        out.append(skipped("latency_p90", "latency", "the target sets no p90_s"))
    out.append(Check("runs", "validity", PASS if s.n >= target.min_runs else INCONCLUSIVE,
                     f"{s.n} timed run(s), the target needs {target.min_runs}", s.n, target.min_runs))
    if target.max_spread is None:
        out.append(skipped("spread", "validity", "the target sets no max_spread"))
    elif s.iqr is None:
        out.append(Check("spread", "validity", INCONCLUSIVE, f"IQR/median needs 4 runs, {s.n} given",
                         None, target.max_spread))
    else:
        disp = s.iqr / s.median if s.median > 0 else math.inf
        ok = disp <= target.max_spread
        out.append(Check("spread", "validity", PASS if ok else INCONCLUSIVE,
                         f"IQR/median {disp:.3f}, bound {target.max_spread:g}"
                         + ("" if ok else ": the host is too noisy to decide, rerun on a quieter one"),
                         round(disp, 6), target.max_spread))
    return out


def throughput_check(figs: Any, target: Target) -> Check:
    """The host's images/min (every instance at once) against the target's floor, by the same rule as
    latency: pass when the rate's lower bound is at or above it, miss when the upper bound is below it."""
    floor = target.min_images_per_min
    d = figs.to_dict()
    rate, (lo, hi) = d["images_per_min"], d["images_per_min_bounds"]
    pct = f"{100 * d['confidence']:g}%"
    where = f"{d['instances']} instance(s), latency under load p50 {d['latency_p50_s']} s"
    if figs.failed:
        return Check("images_per_min", "throughput", FAIL, f"instance(s) {d['failed']} failed: "
                     + "; ".join(i.reason for i in figs.failed), rate, floor)
    if lo is None or hi is None:
        return Check("images_per_min", "throughput", INCONCLUSIVE, f"{rate:.4g} images/min from {where}, but too "
                     f"few images per instance to bound it at {pct}", rate, floor)
    desc = f"{rate:.4g} images/min from {where}; {pct} bounds [{lo:.4g}, {hi:.4g}], floor {floor:g}"
    if lo >= floor:
        return Check("images_per_min", "throughput", PASS, desc, round(rate, 4), floor)
    if hi < floor:
        return Check("images_per_min", "throughput", FAIL, desc, round(rate, 4), floor)
    return Check("images_per_min", "throughput", INCONCLUSIVE, desc + ": more images decide", round(rate, 4), floor)


# ---------------------------------------------------------------------------
# Output quality (exit 1)
# ---------------------------------------------------------------------------


def image_checks(image: Any) -> list[Check]:
    """The image is finite (else exit 7, as in every command: generation.NonFiniteOutput) and not blank
    (a constant image: all black, all grey...: a quality miss, exit 1)."""
    import numpy as np

    a = np.asarray(image, dtype=np.float64)
    finite = bool(np.isfinite(a).all()) and a.size > 0
    out = [Check("image_finite", "error", PASS if finite else FAIL,
                 "every pixel finite" if finite else
                 f"{int((~np.isfinite(a)).sum())} of {a.size} values are NaN/Inf")]
    if not finite:
        out.append(skipped("image_not_blank", "quality", "the image is not finite"))
        return out
    rng = float(a.max() - a.min())
    out.append(Check("image_not_blank", "quality", PASS if rng >= BLANK_RANGE else FAIL,
                     f"pixel range {rng:.4f}" + ("" if rng >= BLANK_RANGE else ": a constant (blank) image"),
                     round(rng, 6), round(BLANK_RANGE, 6)))
    return out


def mean_abs_diff(a: Any, b: Any) -> float:
    """Mean |a - b| of two images on the [0, 1] pixel scale (NaN when shapes differ or values are not finite)."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return math.nan
    return float(np.abs(x - y).mean())


def check_bf16_diff(diff: float, limit: float) -> Check:
    """bf16 plans: the mean |bf16 - fp32| pixel difference (same seed, [0,1] scale) at or under bf16_max_diff."""
    ok = math.isfinite(diff) and diff <= limit
    return Check("bf16_vs_fp32", "quality", PASS if ok else FAIL,
                 f"mean |bf16 - fp32| {diff:.4g} on the [0,1] pixel scale, same seed; limit {limit:g}",
                 None if not math.isfinite(diff) else round(diff, 6), limit)


def check_fidelity(decision: Any) -> Check:
    """Lossy plans (vae tiny, OpenVINO int8 weights, quantize int8): the images' PSNR and SSIM (worst of fixed
    seeds, scikit-image) against the fp32 reference's (fp32 eager, full VAE, same seeds and prompt) within the
    fidelity bound (the target's `fidelity`, else the one the plan was tuned with, else the default: at least
    bf16-vs-fp32's figures)."""
    fid = decision.fidelity
    value = {"psnr_db": "inf" if math.isinf(fid.psnr_db) else round(fid.psnr_db, 3), "ssim": round(fid.ssim, 5)}
    return Check("fidelity", "quality", PASS if decision.passed else FAIL, decision.reason, value,
                 decision.bound.to_dict())


# ---------------------------------------------------------------------------
# Slower than stock (exit 6)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StockFigures:
    """Latencies of the plan and of stock, where they come from, and whether they are paired rounds."""

    plan_s: tuple[float, ...]
    stock_s: tuple[float, ...]
    source: str
    paired_sigma: float | None = None  # tune's rounds: the noise per pair its rule used; None: unpaired

    def to_dict(self) -> dict[str, Any]:
        return {"plan_s": list(self.plan_s), "stock_s": list(self.stock_s), "source": self.source,
                "paired_sigma": self.paired_sigma}


def stock_figures_from_tuning(tuning: Mapping[str, Any] | None) -> StockFigures | str:
    """The chosen plan's and stock's paired rounds from a plan file's `tuning` record, or why there are none.

    Reads the typed tune record (tuning.record.TuneRecord): the last comparison of the
    chosen candidate with stock (the final check: same rounds, same drift) and the noise
    its rule used.
    """
    from sdagent.tuning.record import TuneRecord

    if not tuning:
        return "the plan in effect carries no tune results"
    try:
        rec = TuneRecord.from_dict(tuning)
    except BadInput as exc:
        return f"the tune results are unreadable: {exc}"
    stock = rec.stock
    if stock is None:
        return "the tune results have no stock measurement"
    if rec.chosen == stock.name:
        return "stock"
    comp = rec.last_comparison(rec.chosen, stock.name)
    if comp is None:
        return f"the tune results have no comparison of {rec.chosen!r} with stock"
    return StockFigures(comp.series(rec.chosen), comp.series(stock.name),
                        f"tune's {comp.kind or 'paired'} comparison of {rec.chosen} with stock", rec.sigma_pair_used)


def check_stock(name: str, figures: StockFigures | str | None, not_asked: str = "not asked",
                confidence: float = 0.95) -> Check:
    """Slower than stock beyond noise: paired rounds by tune's own rule (stock found faster), separate
    processes by the median's bounds (the plan's lower bound above stock's upper bound)."""
    if figures is None:
        return skipped(name, "stock", not_asked)
    if figures == "stock":
        return Check(name, "stock", PASS, "tune chose stock: the plan in effect is stock's settings")
    if isinstance(figures, str):
        return skipped(name, "stock", figures)
    if not figures.plan_s or not figures.stock_s:
        return Check(name, "stock", INCONCLUSIVE, f"no figures ({figures.source})")
    p, s = summarize(figures.plan_s), summarize(figures.stock_s)
    desc = f"plan median {p.median:.4g} s vs stock {s.median:.4g} s, {figures.source}"
    if figures.paired_sigma is not None:
        v = decide(figures.plan_s, figures.stock_s, figures.paired_sigma, final=True)
        slower = v.outcome == FASTER  # stock, as the candidate, faster than the plan
        desc += f"; {v.reason}"
    else:
        plo, _ = median_bounds(figures.plan_s, confidence)
        _, shi = median_bounds(figures.stock_s, confidence)
        if plo is None or shi is None:
            return Check(name, "stock", INCONCLUSIVE, f"too few runs to bound the medians: {desc}",
                         round(p.median, 6), round(s.median, 6))
        slower = plo > shi
        desc += f"; plan's median >= {plo:.4g} s, stock's <= {shi:.4g} s ({100 * confidence:g}% bounds)"
    if slower:
        return Check(name, "stock", FAIL, f"slower than stock beyond noise: {desc}",
                     round(p.median, 6), round(s.median, 6))
    return Check(name, "stock", PASS, f"not slower than stock beyond noise: {desc}",
                 round(p.median, 6), round(s.median, 6))


# ---------------------------------------------------------------------------
# The result record (what report.py renders)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """Everything one verify produced: checks, the exit code they decide, and the figures behind them."""

    exit_code: Exit
    checks: tuple[Check, ...]
    target: Target | None
    host_key: Any  # targets.HostKey
    selection: str  # why earlier entries did not match
    plan: dict[str, Any]  # Plan.to_dict() of the plan in effect
    instance: int
    model: str
    bench: Any = None  # bench.BenchResult
    throughput: Any = None  # measuring.throughput.ThroughputFigures, when the target sets a floor
    reference: dict[str, Any] | None = None  # the fp32 reference image's run, where bf16 was checked
    stock: dict[str, Any] | None = None  # figures of the stock comparison
    started_at: float = 0.0
    duration_s: float = 0.0
    version: str = ""
    error: dict[str, Any] | None = None  # {exit_code, reason, time}: the run ended without a verdict
    lock_wait_s: float | None = None  # seconds waited for the host benchmark lock before measuring
    #: this host's class and its ratios to stock and to the class's tuned figures (verifying.classcheck)
    host_class: dict[str, Any] | None = None
    #: a lossy plan's fidelity as tune's gate shipped it, with tune's speed (verifying.shipped); None otherwise
    shipped_fidelity: dict[str, Any] | None = None

    @property
    def verdict(self) -> str:
        return verdict(int(self.exit_code))

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def summary(self) -> dict[str, Any]:
        """The figures a fleet report row shows, so no reader picks checks by name.

        Shape: {verdict, exit_code, p50_s, p90_s (seconds per image, nearest rank; None when not
        measured), images_per_min (None without a throughput target), reason (the error's, else the
        failing checks' details joined by "; ", else "")}.
        """
        def value(name: str) -> float | None:
            c = self.check(name)
            return c.value if c is not None and isinstance(c.value, (int, float)) else None

        if self.error and self.error.get("reason") is not None:
            reason = str(self.error["reason"])
        else:
            reason = "; ".join(str(c.detail) for c in self.checks if c.failed)
        return {"verdict": self.verdict, "exit_code": int(self.exit_code), "p50_s": value("latency_p50"),
                "p90_s": value("latency_p90"),
                "images_per_min": self.throughput.images_per_min if self.throughput is not None else None,
                "reason": reason}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "sdagent-verify/1",
            "sdagent_version": self.version,
            "exit_code": int(self.exit_code),
            "verdict": self.verdict,
            "priority": [int(x) for x in PRIORITY],
            "instance": self.instance,
            "model": self.model,
            "target": self.target.to_dict() if self.target else None,
            "target_selection": self.selection,
            "host_key": self.host_key.to_dict() if self.host_key is not None else None,
            "checks": [c.to_dict() for c in self.checks],
            "bench": self.bench.to_dict() if self.bench is not None else None,
            "throughput": self.throughput.to_dict() if self.throughput is not None else None,
            "reference": self.reference,
            "stock": self.stock,
            "plan": self.plan,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "lock_wait_s": None if self.lock_wait_s is None else round(self.lock_wait_s, 3),
            "error": self.error,
            "host_class": self.host_class,
            "shipped_fidelity": self.shipped_fidelity,
            "summary": self.summary(),
        }


def failed_run(code: int, reason: str, *, instance: int, model: str, started: float, version: str,
               plan: dict[str, Any] | None = None) -> VerifyResult:
    """The record of a verify that ended without a verdict (bad input, a crash, a signal, the lock):
    what replaces the previous report, so nobody reads an old pass as today's."""
    import time

    category = "usage" if code == Exit.USAGE else "error"
    status = INCONCLUSIVE if code == Exit.INCONCLUSIVE else FAIL
    check = Check("input" if category == "usage" else "run", category, status, reason)
    return VerifyResult(exit_code=Exit(code), checks=(check,), target=None, host_key=None, selection="",
                        plan=plan or {}, instance=instance, model=model, started_at=started,
                        duration_s=time.time() - started, version=version,
                        error={"exit_code": int(code), "reason": reason, "time": time.time()})
