"""The terminal view of a benchmark: per-run figures, the summary, the machine state beside them."""

from __future__ import annotations

import os
from typing import Any

from sdagent.textfmt import columns, cpus, fmt, plan_line, runs_with_line, workload_line


def bench_table(result: Any) -> str:
    """The terminal view of a bench.BenchResult: per-run figures, summary, machine state."""
    d = result.to_dict()
    lat, step, m = d["latency_s"], d["unet_step_s"], d["machine"]
    out = [workload_line(d["model"], d["workload"]),
           f"setup: {d['setup'].get('ran') or d['setup']['run']['backend'] + ' ' + d['setup']['run']['precision']}; "
           + "; ".join(d["setup"].get("notes", [])),
           plan_line(m.get("plan")), runs_with_line(m.get("plan"), m["libraries"]), ""]
    rows = []
    for r in d["runs"]:
        steps = r["step_s"]
        rows.append([str(r["index"] + 1), fmt(r["latency_s"]),
                     fmt(sum(steps) / len(steps) if steps else None), fmt(r["text_encode_s"]),
                     fmt(r["vae_decode_s"])])
    out += columns(rows, ["run", "latency_s", "unet_step_mean_s", "text_encode_s", "vae_decode_s"])
    out.append("")
    out.append(f"latency  median {fmt(lat['median'])} s  p90 {fmt(lat['p90'])}  p99 {fmt(lat['p99'])}  "
               f"min {fmt(lat['min'])}  max {fmt(lat['max'])}  stdev {fmt(lat['stdev'])}  "
               f"spread {fmt(lat['spread'], 3)} ((max-min)/median)  n={lat['n']} after {d['warmup']} warm-up")
    out.append(f"throughput  {fmt(d['images_per_s'])} images/s (one instance, 1/median)")
    if step:
        out.append(f"UNet step  median {fmt(step['median'])} s  min {fmt(step['min'])}  max {fmt(step['max'])}  "
                   f"n={step['n']}")
    out.append("")
    la, lb = m["load_average"], d["load_average_after"]
    out.append(f"machine: {m['cpu_model']} ({m['logical_cpus']} CPUs), affinity {cpus(m['affinity'])}, "
               f"governor {m['governor'] or 'n/a'}")
    out.append(f"load average: {fmt(la[0], 3)} before, {fmt(lb[0], 3)} after; threads: process "
               f"{fmt(m['process_threads'])}, torch {fmt(m['torch_threads'])}")
    out.append(f"libraries mapped: {', '.join(os.path.basename(x) for x in m['libraries']) or '(none notable)'} "
               f"({m['mapped_count']} shared objects)")
    out.append("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    return "\n".join(out) + "\n"


def throughput_table(figs: Any, workload: Any, plan: dict[str, Any]) -> str:
    """The terminal view of a throughput run: the host's images/min, each instance's, latency under load."""
    d = figs.to_dict()
    lo, hi = d["images_per_min_bounds"]
    bounds = f" ({100 * d['confidence']:g}% bounds {fmt(lo)}-{fmt(hi)})" if lo is not None and hi is not None else ""
    out = [workload_line("", workload.to_dict()).replace("model , ", ""), plan_line(plan), "",
           f"host: {fmt(d['images_per_min'])} images/min{bounds} from {d['instances']} instance(s); "
           f"latency under load p50 {fmt(d['latency_p50_s'])} s, p90 {fmt(d['latency_p90_s'])} s", ""]
    rows = [[str(i["index"]), i["cpus"], "ok" if i["ok"] else "FAILED", str(i["images"]), fmt(i["makespan_s"]),
             fmt(i["images_per_min"]), "straggler" if i["straggler"] else ("" if i["ok"] else i["reason"][:60])]
            for i in d["per_instance"]]
    out += columns(rows, ["instance", "cpus", "status", "images", "makespan_s", "images/min", "note"])
    return "\n".join(out) + "\n"
