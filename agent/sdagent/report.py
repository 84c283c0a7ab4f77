"""Render bench and verify results: a terminal table, a JSON report, a Prometheus textfile.

Rendering is pure (result in, text out); the two `write_*` functions are the
only I/O and go through sdagent.atomicio, so a reader (node_exporter's
textfile collector, a fleet report) never sees half a file.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

from sdagent import atomicio
from sdagent.verify import EXIT_MEANING, SKIP, VerifyResult


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def _columns(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _plan_line(plan: dict[str, Any] | None) -> str:
    if not plan:
        return "plan: (none)"
    s = plan.get("settings", {})
    return (f"plan: {plan.get('source')}{' ' + plan['plan_file'] if plan.get('plan_file') else ''}: "
            f"{s.get('backend')} {s.get('precision')}, allocator {s.get('allocator')}, "
            f"OpenMP {s.get('omp_runtime')}, {s.get('omp_num_threads')} threads, binding {s.get('binding')}"
            f"{', channels_last' if s.get('channels_last') else ''}{', compiled' if s.get('compile') else ''}")


def _workload_line(model: str, w: dict[str, Any]) -> str:
    return (f"workload: model {model}, {w['width']}x{w['height']}, {w['steps']} steps, guidance {w['guidance']:g}, "
            f"scheduler {w['scheduler']}, seed {w['seed']}")


# ---------------------------------------------------------------------------
# Bench
# ---------------------------------------------------------------------------


def bench_table(result: Any) -> str:
    """The terminal view of a bench.BenchResult: per-run figures, summary, machine state."""
    d = result.to_dict()
    lat, step, m = d["latency_s"], d["unet_step_s"], d["machine"]
    out = [_workload_line(d["model"], d["workload"]),
           f"setup: {d['setup']['settings']['backend']} {d['setup']['settings']['precision']}; "
           + "; ".join(d["setup"].get("notes", [])),
           _plan_line(m.get("plan")), ""]
    rows = []
    for r in d["runs"]:
        steps = r["step_s"]
        rows.append([str(r["index"] + 1), _fmt(r["latency_s"]),
                     _fmt(sum(steps) / len(steps) if steps else None), _fmt(r["text_encode_s"]),
                     _fmt(r["vae_decode_s"])])
    out += _columns(rows, ["run", "latency_s", "unet_step_mean_s", "text_encode_s", "vae_decode_s"])
    out.append("")
    out.append(f"latency  median {_fmt(lat['median'])} s  p90 {_fmt(lat['p90'])}  p99 {_fmt(lat['p99'])}  "
               f"min {_fmt(lat['min'])}  max {_fmt(lat['max'])}  stdev {_fmt(lat['stdev'])}  "
               f"spread {_fmt(lat['spread'], 3)} ((max-min)/median)  n={lat['n']} after {d['warmup']} warm-up")
    out.append(f"throughput  {_fmt(d['images_per_s'])} images/s (one instance, 1/median)")
    if step:
        out.append(f"UNet step  median {_fmt(step['median'])} s  min {_fmt(step['min'])}  max {_fmt(step['max'])}  "
                   f"n={step['n']}")
    out.append("")
    la, lb = m["load_average"], d["load_average_after"]
    out.append(f"machine: {m['cpu_model']} ({m['logical_cpus']} CPUs), affinity {_cpus(m['affinity'])}, "
               f"governor {m['governor'] or 'n/a'}")
    out.append(f"load average: {_fmt(la[0], 3)} before, {_fmt(lb[0], 3)} after; threads: process "
               f"{_fmt(m['process_threads'])}, torch {_fmt(m['torch_threads'])}")
    out.append(f"libraries mapped: {', '.join(os.path.basename(x) for x in m['libraries']) or '(none notable)'} "
               f"({m['mapped_count']} shared objects)")
    out.append("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    return "\n".join(out) + "\n"


def _cpus(cpus: Iterable[int]) -> str:
    from sdagent.topology import format_cpulist

    return format_cpulist(cpus)


# ---------------------------------------------------------------------------
# Verify
# ---------------------------------------------------------------------------


def verify_table(result: VerifyResult) -> str:
    """The terminal view of a verify: verdict first, then every check with value and limit."""
    code = int(result.exit_code)
    word = "PASS" if code == 0 else ("INCONCLUSIVE" if code == 5 else "FAIL")
    tgt = f"target {result.target.name!r} ({result.target.source})" if result.target else "no target"
    out = [f"sdagent verify: {word} (exit {code}: {EXIT_MEANING[code]}), {tgt}, instance {result.instance}"]
    if result.plan:
        out.append(f"host: {result.plan.get('topology_summary', '')}")
    out.append(_plan_line(result.plan))
    if result.bench is not None:
        out.append(_workload_line(result.model, result.bench.workload.to_dict()))
    out.append("")
    rows = [[c.name, c.category, c.status.upper() if c.status != SKIP else "skip", _fmt(c.value), _fmt(c.limit),
             c.detail] for c in result.checks]
    out += _columns(rows, ["check", "category", "status", "value", "limit", "detail"])
    if result.bench is not None:
        lat = result.bench.latency
        out.append("")
        out.append(f"latency: median {_fmt(lat.median)} s, min {_fmt(lat.min)}, max {_fmt(lat.max)}, "
                   f"spread {_fmt(lat.spread, 3)}, {lat.n} run(s) after {result.bench.warmup} warm-up; "
                   f"{_fmt(result.bench.images_per_s)} images/s")
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
    codes = ", ".join(f"{k} {v}" for k, v in EXIT_MEANING.items())
    p.metric("sdagent_verify_exit_code", "gauge", f"Exit code of the last sdagent verify ({codes}).",
             [("", {}, int(result.exit_code))])
    p.metric("sdagent_verify_pass", "gauge", "1 when the last sdagent verify passed (exit 0), else 0.",
             [("", {}, int(result.exit_code) == 0)])
    p.metric("sdagent_verify_timestamp_seconds", "gauge", "Unix time the last sdagent verify started.",
             [("", {}, float(result.started_at))])
    p.metric("sdagent_verify_duration_seconds", "gauge", "Wall time of the last sdagent verify.",
             [("", {}, float(result.duration_s))])
    s = (result.plan or {}).get("settings", {})
    p.metric("sdagent_verify_info", "gauge", "What the last sdagent verify ran against (value always 1).",
             [("", {"target": result.target.name if result.target else "", "model": result.model,
                    "backend": s.get("backend", ""), "precision": s.get("precision", ""),
                    "plan_source": (result.plan or {}).get("source", ""), "version": result.version}, 1)])
    p.metric("sdagent_check_ok", "gauge", "1 when the check passed, 0 when it failed or was inconclusive "
             "(skipped checks are absent).",
             [("", {"check": c.name, "category": c.category}, c.status == "pass")
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
        if b.step is not None:
            p.metric("sdagent_unet_step_seconds", "gauge", "Median UNet step over the timed runs.",
                     [("", {"quantile": "0.5"}, b.step.median)])
    if result.target is not None:
        t = result.target
        tq = [("", {"quantile": "0.5"}, t.p50_s)] + ([("", {"quantile": "0.9"}, t.p90_s)] if t.p90_s else [])
        p.metric("sdagent_latency_target_seconds", "gauge", "Latency ceilings of the matching target entry.", tq)
    diff = result.check("bf16_vs_fp32")
    if diff is not None and diff.value is not None:
        p.metric("sdagent_bf16_mean_abs_diff", "gauge", "Mean |bf16 - fp32| pixel difference, same seed, [0,1].",
                 [("", {}, float(diff.value))])
    return "\n".join(p.lines) + "\n"


def write_json_report(path: str | os.PathLike[str], result: VerifyResult) -> None:
    atomicio.write_json(path, result.to_dict())


def write_prometheus(path: str | os.PathLike[str], result: VerifyResult) -> None:
    atomicio.write_text(path, prometheus_text(result))
