"""Render verify results: a terminal table, a JSON report, a Prometheus textfile.

Rendering is pure (result in, text out); the two `write_*` functions are the
only I/O and go through sdagent.atomicio, so a reader (node_exporter's
textfile collector, a fleet report) never sees half a file.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

from sdagent import atomicio
from sdagent.errors import EXIT_CODES, SdagentError
from sdagent.pipeline.family import FAMILIES
from sdagent.textfmt import columns, fmt, plan_line, workload_line
from sdagent.verifying.checks import SKIP, VerifyResult


# ---------------------------------------------------------------------------
# Verify
# ---------------------------------------------------------------------------


def fidelity_lines(result: VerifyResult) -> list[str]:
    """A lossy plan's fidelity beside the speed: measured now (the `fidelity` check) and as tune shipped it."""
    from sdagent.verifying.shipped import ShippedFidelity

    out = []
    c = result.check("fidelity")
    if c is not None and isinstance(c.value, dict):
        psnr = c.value.get("psnr_db")
        out.append(f"fidelity: now PSNR {psnr if isinstance(psnr, str) else fmt(psnr)} dB / SSIM "
                   f"{fmt(c.value.get('ssim'), 3)} vs the fp32 reference ({c.status})")
    if result.shipped_fidelity:
        d = {k: v for k, v in result.shipped_fidelity.items() if k != "format"}
        out.append(("fidelity: " if not out else "          ") + ShippedFidelity(**d).line())
    return ([""] if out else []) + out


def cell(v: Any) -> str:
    """A check's value or limit in one short table cell: a fidelity figure as `PSNR 48.9 dB / SSIM 0.9997`, a
    fidelity bound as its description (measuring.fidelity.FidelityBound.describe), anything else by fmt()."""
    if isinstance(v, Mapping):
        if "psnr_db" in v and "ssim" in v and "relative_to" not in v:
            psnr = v["psnr_db"]
            return f"PSNR {psnr if isinstance(psnr, str) else fmt(psnr)} dB / SSIM {fmt(v['ssim'])}"
        if "relative_to" in v:
            from sdagent.measuring.fidelity import FidelityBound

            try:
                return FidelityBound.from_dict(v).describe().removeprefix("bound: ")
            except SdagentError:
                pass
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items() if k != "format")
    return fmt(v)


def verify_table(result: VerifyResult) -> str:
    """The terminal view of a verify: verdict first, then every check with value and limit."""
    code = int(result.exit_code)
    word = "PASS" if code == 0 else ("INCONCLUSIVE" if code == 5 else "FAIL")
    tgt = f"target {result.target.name!r} ({result.target.source})" if result.target else "no target"
    out = [f"sdagent verify: {word} (exit {code}: {result.verdict}), {tgt}, instance {result.instance}"]
    if result.plan:
        out.append(f"host: {result.plan.get('topology_summary', '')}")
    hc = result.host_class
    if hc:
        ratios = ", ".join(f"{fmt(hc.get(k))}x {what}" for k, what in (("ratio_to_stock", "stock's speed"),
                                                                     ("ratio_to_class", "its class's"))
                           if hc.get(k) is not None)
        out.append(f"host class: {hc.get('id')} ({hc.get('description')})" + (f"; {ratios}" if ratios else ""))
    out.append(plan_line(result.plan))
    if result.host_key is not None:
        fam = FAMILIES.get(result.host_key.family)
        out.append(f"model: {result.model}, family {result.host_key.family}" + (f" ({fam.description})" if fam else ""))
    if result.bench is not None:
        out.append(workload_line(result.model, result.bench.workload.to_dict()))
    out.append("")
    rows = [[c.name, c.category, c.status.upper() if c.status != SKIP else "skip", cell(c.value), cell(c.limit),
             c.detail] for c in result.checks]
    out += columns(rows, ["check", "category", "status", "value", "limit", "detail"])
    if result.bench is not None:
        lat = result.bench.latency
        out.append("")
        out.append(f"latency: median {fmt(lat.median)} s, min {fmt(lat.min)}, max {fmt(lat.max)}, "
                   f"spread {fmt(lat.spread, 3)}, {lat.n} run(s) after {result.bench.warmup} warm-up; "
                   f"{fmt(result.bench.images_per_s)} images/s; start-up (process start to the first image) "
                   f"{fmt(result.bench.startup_s)} s")
    out += fidelity_lines(result)
    if result.lock_wait_s:
        out.append(f"host lock: waited {fmt(result.lock_wait_s)} s for another benchmark (not in the start-up)")
    if result.throughput is not None:
        t = result.throughput.to_dict()
        out.append(f"throughput: {fmt(t['images_per_min'])} images/min from {t['instances']} instance(s) at once, "
                   f"latency under load p50 {fmt(t['latency_p50_s'])} s")
    if result.selection and result.target is None:
        out.append(f"entries tried: {result.selection}")
    return "\n".join(out) + "\n"


def _label(v: Any) -> str:
    """A Prometheus label value, escaped (backslash, double quote, newline)."""
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(d: dict[str, Any]) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in d.items()) + "}" if d else ""


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class _Prom:
    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_: str, samples: list[tuple[str, dict[str, Any], float]]) -> None:
        if not samples:
            return
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            self.lines.append(f"{name}{suffix}{_labels({**self.base, **labels})} {_num(value)}")


def prometheus_text(result: VerifyResult) -> str:
    """node_exporter textfile-collector format: HELP and TYPE per metric, one sample a line."""
    base = {"sdagent_instance": result.instance}
    p = _Prom(base)
    codes = ", ".join(f"{e.code} {e.verdict}" for e in EXIT_CODES)
    p.metric("sdagent_verify_exit_code", "gauge", f"Exit code of the last sdagent verify ({codes}).",
             [("", {}, int(result.exit_code))])
    p.metric("sdagent_verify_pass", "gauge", "1 when the last sdagent verify passed (exit 0), else 0.",
             [("", {}, int(result.exit_code) == 0)])
    p.metric("sdagent_verify_in_progress", "gauge", "1 while a verify runs (or was killed before a verdict).",
             [("", {}, 0)])
    p.metric("sdagent_verify_timestamp_seconds", "gauge", "Unix time the last sdagent verify started.",
             [("", {}, float(result.started_at))])
    p.metric("sdagent_verify_duration_seconds", "gauge", "Wall time of the last sdagent verify.",
             [("", {}, float(result.duration_s))])
    if result.lock_wait_s is not None:
        p.metric("sdagent_lock_wait_seconds", "gauge", "Seconds the last sdagent verify waited for the host "
                 "benchmark lock (not in sdagent_startup_seconds).", [("", {}, float(result.lock_wait_s))])
    s = (result.plan or {}).get("settings", {})
    p.metric("sdagent_verify_info", "gauge", "What the last sdagent verify ran against (value always 1).",
             [("", {"target": result.target.name if result.target else "", "model": result.model,
                    "family": result.host_key.family if result.host_key is not None else "",
                    "backend": s.get("backend", ""), "precision": s.get("precision", ""),
                    "plan_source": (result.plan or {}).get("source", ""), "version": result.version}, 1)])
    p.metric("sdagent_check_ok", "gauge", "1 when the check passed (or passed with a warning), 0 when it "
             "failed or was inconclusive (skipped checks are absent).",
             [("", {"check": c.name, "category": c.category}, not c.failed)
              for c in result.checks if c.status != SKIP])
    b = result.bench
    if b is not None:
        lat = b.latency
        samples: list[tuple[str, dict[str, Any], float]] = [("", {"quantile": "0.5"}, lat.median)]
        if lat.p90 is not None:
            samples.append(("", {"quantile": "0.9"}, lat.p90))
        if lat.p99 is not None:
            samples.append(("", {"quantile": "0.99"}, lat.p99))
        samples += [("_sum", {}, sum(b.latencies)), ("_count", {}, lat.n)]
        p.metric("sdagent_latency_seconds", "summary", "Latency per image of the timed runs (nearest-rank "
                 "quantiles; 0.9 from 10 runs, 0.99 from 100).", samples)
        p.metric("sdagent_latency_min_seconds", "gauge", "Fastest timed run.", [("", {}, lat.min)])
        p.metric("sdagent_latency_max_seconds", "gauge", "Slowest timed run.", [("", {}, lat.max)])
        if lat.spread is not None:
            p.metric("sdagent_latency_spread_ratio", "gauge", "(max-min)/median of the timed runs.",
                     [("", {}, lat.spread)])
        p.metric("sdagent_images_per_second", "gauge", "One instance's throughput, 1/median latency.",
                 [("", {}, b.images_per_s)])
        if b.startup_s is not None:
            p.metric("sdagent_startup_seconds", "gauge", "Process start to the end of its first image, less "
                     "the wait for the host benchmark lock.",
                     [("", {}, b.startup_s)])
        if b.step is not None:
            p.metric("sdagent_unet_step_seconds", "gauge", "Median UNet step over the timed runs.",
                     [("", {"quantile": "0.5"}, b.step.median)])
    if result.throughput is not None and result.throughput.images_per_min is not None:
        p.metric("sdagent_images_per_minute", "gauge", "The host's images per minute, every instance of the plan "
                 "at once (the last verify with a throughput target).", [("", {}, result.throughput.images_per_min)])
    if result.target is not None:
        t = result.target
        tq = [("", {"quantile": "0.5"}, t.p50_s)] + ([("", {"quantile": "0.9"}, t.p90_s)] if t.p90_s else [])
        p.metric("sdagent_latency_target_seconds", "gauge", "Latency ceilings of the matching target entry.", tq)
    diff = result.check("bf16_vs_fp32")
    if diff is not None and diff.value is not None:
        p.metric("sdagent_bf16_mean_abs_diff", "gauge", "Mean |bf16 - fp32| pixel difference, same seed, [0,1].",
                 [("", {}, float(diff.value))])
    return "\n".join(p.lines) + "\n"


# ---------------------------------------------------------------------------
# In progress: what stands in the files while verify runs
# ---------------------------------------------------------------------------

#: The state of a report that verify wrote before measuring and has not replaced with a verdict.
INCOMPLETE = "incomplete"


def in_progress_record(*, instance: int, model: str, started: float, pid: int, version: str) -> dict[str, Any]:
    """The report verify writes before any work: no verdict (exit code and verdict null), when and which
    process started. A verify that ends in any way replaces it; one killed outright (SIGKILL, the OOM
    killer, systemd's TimeoutStopSec escalation) leaves it, read as "incomplete", never an old pass."""
    reason = (f"verify (pid {pid}) started and has not finished: still running, or killed before a verdict "
              f"(SIGKILL, the OOM killer)")
    return {"format": "sdagent-verify/1", "sdagent_version": version, "state": INCOMPLETE, "exit_code": None,
            "verdict": None, "instance": instance, "model": model, "pid": pid, "started_at": started,
            "checks": [], "error": {"exit_code": None, "reason": reason, "time": started}}


def in_progress_prometheus(record: dict[str, Any]) -> str:
    """The textfile while verify runs: not passing, in progress, with its start time and pid (no exit code:
    there is none yet; an alert on sdagent_verify_pass == 0 or on a stale timestamp fires)."""
    p = _Prom({"sdagent_instance": record["instance"]})
    p.metric("sdagent_verify_pass", "gauge", "1 when the last sdagent verify passed (exit 0), else 0.", [("", {}, 0)])
    p.metric("sdagent_verify_in_progress", "gauge", "1 while a verify runs (or was killed before a verdict).",
             [("", {"pid": record["pid"]}, 1)])
    p.metric("sdagent_verify_timestamp_seconds", "gauge", "Unix time the last sdagent verify started.",
             [("", {}, float(record["started_at"]))])
    return "\n".join(p.lines) + "\n"


def write_in_progress(report: str | None, prometheus: str | None, record: dict[str, Any]) -> None:
    if report:
        atomicio.write_json(report, record)
    if prometheus:
        atomicio.write_text(prometheus, in_progress_prometheus(record))


def write_json_report(path: str | os.PathLike[str], result: VerifyResult) -> None:
    atomicio.write_json(path, result.to_dict())


def write_prometheus(path: str | os.PathLike[str], result: VerifyResult) -> None:
    atomicio.write_text(path, prometheus_text(result))
