"""The ladder's Markdown: the table, the reference figures, the machine state and the command.

Pure: ladder.json's record and the table's rows in, text out (as bench_report is
for `sdagent bench`). Written by `sdagent ladder` as ladder.md.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sdagent.measuring.ladder import RungRow, not_run
from sdagent.measuring.ladder_fidelity import fidelity_cell
from sdagent.measuring.stats import Summary


def _s(x: Summary | None, fmt: str = "{:.2f}", unit: str = "") -> str:
    if x is None:
        return "–"
    if x.n == 1:
        return f"{fmt.format(x.median)}{unit}"
    return f"{fmt.format(x.median)}{unit} ({fmt.format(x.min)}–{fmt.format(x.max)})"


def _g(v: float | None) -> str:
    return "–" if v is None else f"{v / 1e9:.0f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def markdown(report: Mapping[str, Any], rows: Sequence[RungRow]) -> str:
    """The ladder as a Markdown document: table, reference figures, machine state, command."""
    lines = (_table(report, rows) + _shipped(report, rows) + _rung_notes(rows) + _reference(report)
             + _step_section(report) + _throughput_section(report) + _machine(report))
    lines += ["", "## Command", "", "```", report["command"], "```", ""]
    return "\n".join(lines)


def _table(report: Mapping[str, Any], rows: Sequence[RungRow]) -> list[str]:
    """The title, how to read the figures, and a row per rung."""
    w = report["workload"]
    lines = [
        "# Latency ladder",
        "",
        f"Model `{report['model']}` ({report.get('model_preset') or 'model'}), "
        f"{w['height']}x{w['width']}, {w['steps']} steps, guidance {w['guidance']}, "
        f"{report['rounds']} interleaved round(s), each rung a fresh process per round "
        f"({report['repeats']} timed call(s) after {report['warmup']} warm-up call(s) of "
        f"{report['warmup_steps']} step(s)).",
        "",
        "Figures are median (min–max) over rounds. Speedups are paired within a round "
        "(base time / rung time, > 1 = faster). Start to first image: from the process's start to the end of "
        "its first whole image (loading, compiling or loading artifacts, warm-up). GFLOP/s are FLOPs counted on "
        "the actual shapes "
        "(torch.utils.flop_counter) over the measured time; % of peak is against this host's "
        "GEMM peak of the rung's precision, measured in the same run. Image vs vanilla: the rung's first timed "
        "image against the vanilla rung's (fp32 stock, same seed), PSNR and SSIM (scikit-image); what a lossy "
        "rung (int8, the tiny VAE) costs in pixels.",
        "",
        "| Rung | s / image | s / UNet step | × vs vanilla | × vs run_cpu | × vs OpenVINO | start to first image, s "
        "| UNet GFLOP/s (% peak) | image GFLOP/s (% peak) | image vs vanilla |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.latency is None:
            lines.append(f"| {r.name} | {not_run(r.failed)} | | | | | | | | |")
            continue
        lines.append(
            f"| {r.name} | {_s(r.latency)} | {_s(r.step)} | {_s(r.vs_vanilla, unit='×')} | "
            f"{_s(r.vs_run_cpu, unit='×')} | {_s(r.vs_openvino, unit='×')} | {_s(r.first_image, '{:.1f}')} | "
            f"{_g(r.step_flops)} "
            f"({_pct(r.step_peak_fraction)}) | {_g(r.image_flops)} ({_pct(r.image_peak_fraction)}) | "
            f"{fidelity_cell(r.fidelity)} |")
    return lines


def _shipped(report: Mapping[str, Any], rows: Sequence[RungRow]) -> list[str]:
    """The plan as shipped (no tune) against the best other rung."""
    lines: list[str] = []
    shipped = report.get("shipped_rung")
    timed = [r for r in rows if r.latency is not None]
    others = [r for r in timed if r.name != shipped]
    if shipped and others and any(r.name == shipped for r in timed):
        best = min(others, key=lambda r: r.latency.median)
        mine = next(r for r in timed if r.name == shipped)
        lines += ["", f"The plan as shipped (no tune) is the `{shipped}` rung: {mine.latency.median:.2f} s per image, "
                  f"{mine.latency.median / best.latency.median:.2f}x the best other rung's (`{best.name}`, "
                  f"{best.latency.median:.2f} s; below 1: the shipped plan is faster)."]
    return lines


def _rung_notes(rows: Sequence[RungRow]) -> list[str]:
    lines = ["", "Rungs:", ""]
    for r in rows:
        note = f" **{not_run(r.failed) if r.latency is None else 'Failed: ' + str(r.failed)}**" if r.failed else ""
        evals = f" {r.unet_evals} UNet evaluations per image." if r.unet_evals else ""
        lines.append(f"- `{r.name}` ({r.precision}): {r.description}.{evals}{note}")
    return lines


def _reference(report: Mapping[str, Any]) -> list[str]:
    """FLOPs per step and the GEMM peaks the percentages are against."""
    lines: list[str] = []
    peaks = report.get("gemm_peak", {})
    f = report.get("flops")
    if f:
        lines += ["", f"FLOPs per UNet step (guided batch {f['unet_batch']}): {f['unet_step'] / 1e9:.1f} G; "
                  f"VAE decode {f['vae_decode'] / 1e9:.1f} G; text encoder {f['text_encoder'] / 1e9:.2f} G "
                  f"per prompt."]
    if peaks:
        lines.append("GEMM peak (best of runs, n={}): {}.".format(
            next(iter(peaks.values()))["n"],
            "; ".join(f"{k} {v['peak_flops'] / 1e9:.0f} GFLOP/s (median {v['median_flops'] / 1e9:.0f})"
                      for k, v in peaks.items())))
    return lines


def _step_section(report: Mapping[str, Any]) -> list[str]:
    """The per-UNet-step table (single guided calls at the published size)."""
    lines: list[str] = []
    sf = report.get("step_figure")
    if sf:
        lines += ["", f"## Per UNet step at {sf['height']}x{sf['width']}", "",
                  f"Single guided UNet calls (batch {sf.get('unet_batch', 2)}) on inputs of that shape, no text "
                  f"encoder or VAE: one process per rung, {sf['calls']} timed call(s) after one warm-up call; "
                  f"median (min–max) over calls. {sf['unet_step_flops'] / 1e9:.0f} GFLOP per call.", "",
                  "| Rung | s / UNet step | × vs vanilla | GFLOP/s (% peak) |", "|---|---|---|---|"]
        for r in sf["rows"]:
            st = r["step_s"]
            if not st:
                lines.append(f"| {r['rung']} | {not_run(r['failed'])} | | |")
                continue
            rng = f" ({st['min']:.2f}–{st['max']:.2f})" if st["n"] > 1 else ""
            sv = f"{r['speedup_vs_vanilla']:.2f}×" if r["speedup_vs_vanilla"] else "–"
            lines.append(f"| {r['rung']} | {st['median']:.2f}{rng} | {sv} | "
                         f"{_g(r['achieved_flops'])} ({_pct(r['fraction_of_gemm_peak'])}) |")
    return lines


def _throughput_section(report: Mapping[str, Any]) -> list[str]:
    """Every instance split at once: images/min against one instance."""
    lines: list[str] = []
    tp = report.get("throughput")
    if tp:
        lines += ["", "## Throughput: every instance at once", "",
                  f"Each instance split of this host, eager and compiled: every instance a process of its own under "
                  f"its instance plan, warmed with one image, then {tp['images_per_instance']} image(s) each after one "
                  f"shared start. Images/min = all images / the slowest instance's time; x = against 1 instance "
                  f"in the same mode.", "",
                  "| layout | images/min | x vs 1 instance | latency each instance sees, p50 / p90 s |",
                  "|---|---|---|---|"]
        for r in tp["rows"]:
            if r["failed"]:
                lines.append(f"| {r['name']} | failed: instance(s) {r['failed']} | | |")
                continue
            x = f"{r['vs_one_instance']:.2f}×" if r["vs_one_instance"] else "–"
            lines.append(f"| {r['name']} | {r['images_per_min']:.2f} | {x} | "
                         f"{r['latency_p50_s']:.2f} / {r['latency_p90_s']:.2f} |")
    return lines


def _machine(report: Mapping[str, Any]) -> list[str]:
    """What the host was doing around the run."""
    m = report["machine"]
    lines = ["", "## Machine state", ""]
    lines.append(f"- CPU: {m.get('cpu_model')} ({m.get('topology', '')})")
    la = lambda v: " ".join(f"{x:.2f}" for x in v) if v else "?"  # noqa: E731
    lines.append(f"- load average (1/5/15 min) before: {la(m.get('load_before'))}; "
                 f"after: {la(m.get('load_after'))}")
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v))
    lines.append(f"- governor: {m.get('governor') or 'not exposed'}; started {m.get('started')}, "
                 f"took {report.get('duration_s', 0):.0f} s")
    return lines
