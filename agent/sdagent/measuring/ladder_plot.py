"""The ladder as a picture: one bar per rung, min-max whiskers, speedup against vanilla."""

from __future__ import annotations

import io
from typing import Sequence

from sdagent.measuring.ladder import RungRow, not_run


def plot_png(rows: Sequence[RungRow], title: str) -> bytes:
    """A horizontal bar per rung: median seconds per image, min-max whiskers, speedup vs vanilla."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.latency is not None]
    failed = [r for r in rows if r.latency is None]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * (len(ok) + len(failed))))
    names = [r.name for r in ok] + [f"{r.name} ({not_run(r.failed).split(':')[0]})" for r in failed]
    y = list(range(len(names)))[::-1]
    med = [r.latency.median for r in ok]
    lo = [r.latency.median - r.latency.min for r in ok]
    hi = [r.latency.max - r.latency.median for r in ok]
    colors = ["#888888" if r.name in ("vanilla", "run_cpu") else "#1f77b4" for r in ok]
    ax.barh(y[:len(ok)], med, xerr=[lo, hi], color=colors, capsize=4)
    for yy, r in zip(y, ok):
        label = f" {r.latency.median:.2f} s"
        if r.vs_vanilla:
            label += f"  {r.vs_vanilla.median:.2f}× vs vanilla"
        ax.text(r.latency.max, yy, label, va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.set_xlabel("seconds per image (median, min–max over rounds)")
    ax.set_title(title, fontsize=9)
    if med:
        ax.set_xlim(0, max(r.latency.max for r in ok) * 1.45)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
