"""Throughput: N instances of the plan at once, each in its own process on its own CPUs, images per minute.

Why this shape (MLPerf's Offline scenario, per host): a fleet is paid in images
per hour. Every instance is started under its own instance plan (binding,
threads, memory node) and warmed up with one whole image; only when all are
warm does the window open, at one wall-clock time for all (a barrier: files in
a private directory). Each instance then generates back to back, a fixed number
of images or for a fixed window. An instance that fails or straggles is
reported as such, not averaged away.

The analysis is pure (records in, figures out) and judged with the same
statistics as latency: each instance's per-image times bound its median
(measuring.stats.median_bounds), so the host's rate has bounds too.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sdagent import atomicio
from sdagent.errors import BadInput
from sdagent.measuring.runner import ThroughputSpec, WorkerJob, worker_cmd
from sdagent.measuring.stats import median_bounds, summarize
from sdagent.pipeline.workload import Workload
from sdagent.planning.launch import plan_launch
from sdagent.planning.plan import Plan
from sdagent.planning.runspec import RunSpec
from sdagent.workers.parent import WorkerProcess
from sdagent.workers.result import WorkerResult

#: An instance whose makespan exceeds the median instance's by this factor is a straggler.
STRAGGLER = 1.25


# ---------------------------------------------------------------------------
# The barrier (used by the worker side too)
# ---------------------------------------------------------------------------


def write_ready(tp: ThroughputSpec, image_s: float) -> None:
    atomicio.write_json(Path(tp.barrier) / f"ready-{tp.index}.json", {"pid": os.getpid(), "image_s": image_s})


def await_start(tp: ThroughputSpec, poll_s: float = 0.05) -> tuple[float, float | None]:
    """Block until the parent opens the window; (start, deadline) as wall-clock times."""
    go = Path(tp.barrier) / "go.json"
    while True:
        try:
            d = json.loads(go.read_text())
            break
        except (OSError, ValueError):
            time.sleep(poll_s)
    if d.get("abort"):
        raise BadInput(str(d["abort"]))
    start = float(d["start"])
    while time.time() < start:
        time.sleep(min(poll_s, max(0.0, start - time.time())))
    return start, d.get("deadline")


# ---------------------------------------------------------------------------
# Figures (pure)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceFigures:
    index: int
    ok: bool
    reason: str
    images: int = 0
    makespan_s: float | None = None  # window start to the end of its last counted image
    images_per_min: float | None = None
    image_s: tuple[float, ...] = ()
    rate_bounds: tuple[float | None, float | None] = (None, None)  # images/min from the median's bounds
    straggler: bool = False
    cpus: str = ""

    def to_dict(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {"index": self.index, "ok": self.ok, "reason": self.reason, "images": self.images,
                "makespan_s": r(self.makespan_s), "images_per_min": r(self.images_per_min),
                "image_s": [round(x, 4) for x in self.image_s],
                "images_per_min_bounds": [r(x) for x in self.rate_bounds], "straggler": self.straggler,
                "cpus": self.cpus}


@dataclass(frozen=True)
class ThroughputFigures:
    """The host's images per minute, each instance's, and the latency every image saw under that load."""

    instances: tuple[InstanceFigures, ...]
    images_per_min: float | None  # all images / the makespan of the slowest instance
    rate_bounds: tuple[float | None, float | None]  # sum of the instances' bounds (None when any is unbounded)
    latency_p50_s: float | None
    latency_p90_s: float | None
    window_s: float | None
    mode: str  # "images" | "window"
    confidence: float = 0.95
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[InstanceFigures]:
        return [i for i in self.instances if not i.ok]

    def to_dict(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {"images_per_min": r(self.images_per_min), "images_per_min_bounds": [r(x) for x in self.rate_bounds],
                "confidence": self.confidence, "instances": len(self.instances),
                "per_instance": [i.to_dict() for i in self.instances],
                "latency_p50_s": r(self.latency_p50_s), "latency_p90_s": r(self.latency_p90_s),
                "window_s": r(self.window_s), "mode": self.mode,
                "failed": [i.index for i in self.failed], "stragglers": [i.index for i in self.instances if i.straggler],
                "machine": self.machine}


def figures(results: Sequence[tuple[int, str, WorkerResult]], *, window_s: float | None = None,
            confidence: float = 0.95) -> ThroughputFigures:
    """The figures of one throughput run from each instance's (index, cpus, worker result)."""
    per: list[InstanceFigures] = []
    all_images: list[float] = []
    start = None
    for idx, cpus, res in results:
        m = res.measurement
        if not res.ok or m is None:
            per.append(InstanceFigures(idx, False, res.reason, cpus=cpus))
            continue
        if m.window is None:
            per.append(InstanceFigures(idx, False, "the worker reported no throughput window", cpus=cpus))
            continue
        s = m.window.start
        start = s if start is None else min(start, s)
        deadline = m.window.deadline
        imgs = [x for x in m.images if deadline is None or x.end <= deadline]
        if not imgs:
            per.append(InstanceFigures(idx, False, "no image completed inside the window", cpus=cpus))
            continue
        span = (deadline - s) if deadline is not None else max(x.end for x in imgs) - s
        secs = tuple(x.end - x.start for x in imgs)
        lo, hi = median_bounds(secs, confidence)
        per.append(InstanceFigures(idx, True, "ok", len(imgs), span, 60.0 * len(imgs) / span, secs,
                                   (60.0 / hi if hi else None, 60.0 / lo if lo else None), cpus=cpus))
        all_images += secs
    ok = [i for i in per if i.ok]
    spans = [i.makespan_s for i in ok if i.makespan_s is not None]
    if spans:
        med = statistics.median(spans)
        per = [replace(i, straggler=bool(i.ok and i.makespan_s and i.makespan_s > STRAGGLER * med)) for i in per]
    makespan = max(spans, default=None)
    host = 60.0 * sum(i.images for i in ok) / makespan if makespan else None
    rb = (_sum_or_none([i.rate_bounds[0] for i in ok]), _sum_or_none([i.rate_bounds[1] for i in ok]))
    lat = summarize(all_images) if all_images else None
    return ThroughputFigures(tuple(per), host, rb,
                             lat.median if lat else None, (lat.p90 or lat.max) if lat else None, window_s,
                             "window" if window_s else "images", confidence)


def _sum_or_none(xs: Sequence[float | None]) -> float | None:
    """The sum, or None when there is nothing to add or any term is unbounded."""
    vals = [x for x in xs if x is not None]
    return sum(vals) if xs and len(vals) == len(xs) else None


# ---------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ThroughputRequest:
    model: str
    job: WorkerJob  # the per-instance job (workload, run record); its throughput part is filled in per instance
    images: int | None = 3
    window_s: float | None = None
    timeout_s: float = 7200.0
    confidence: float = 0.95


Event = Callable[[str, dict[str, Any]], None]


def check_request(plan: Plan, images: int | None, window_s: float | None) -> None:
    """Bad input before any process starts."""
    if (images is None) == (window_s is None):
        raise BadInput("give either a number of images per instance or a window, not both")
    if images is not None and images < 1:
        raise BadInput(f"invalid --images {images}: at least 1 per instance")
    if window_s is not None and not window_s > 0:
        raise BadInput(f"invalid --window {window_s}: must be > 0 seconds")


def run(plan: Plan, req: ThroughputRequest, *, environ: Mapping[str, str], on_event: Event | None = None,
        clock: Callable[[], float] = time.time) -> ThroughputFigures:
    """Start every instance of the plan together, open the window once all are warm, collect the figures."""
    emit = on_event or (lambda kind, data: None)
    check_request(plan, req.images, req.window_s)
    barrier = tempfile.mkdtemp(prefix="sdagent-throughput-")
    cmd = worker_cmd()
    procs: list[tuple[int, str, WorkerProcess]] = []
    try:
        for inst in plan.instances:
            job = replace(req.job, warmup=1, throughput=ThroughputSpec(barrier, inst.index, req.images,
                                                                       req.window_s))
            launch = plan_launch(plan, cmd, environ, name=f"instance {inst.index}", instance=inst.index)
            procs.append((inst.index, inst.cpulist, WorkerProcess(launch, job)))
            emit("started", {"instance": inst.index, "cpus": inst.cpulist})
        ready = _await_ready(barrier, procs, req.timeout_s, emit)
        if isinstance(ready, str):
            _open(barrier, abort=ready)
        else:
            slowest = max(ready.values())
            if req.window_s is not None and req.window_s < slowest:
                _open(barrier, abort=f"the window {req.window_s:g} s is shorter than one image "
                                     f"({slowest:.1f} s on the slowest instance)")
                raise BadInput(f"invalid --window {req.window_s:g}: shorter than one image "
                               f"({slowest:.1f} s on the slowest instance)")
            start = clock() + 0.5
            _open(barrier, start=start, deadline=start + req.window_s if req.window_s else None)
            emit("window", {"start": start, "window_s": req.window_s, "images": req.images})
        results = []
        for i, c, p in procs:
            results.append((i, c, p.wait(req.timeout_s)))
            emit("done", {"instance": i, "ok": results[-1][2].ok, "reason": results[-1][2].reason})
    finally:
        for _, _, p in procs:
            p.kill()
            p.close()
        shutil.rmtree(barrier, ignore_errors=True)
    return figures(results, window_s=req.window_s, confidence=req.confidence)


def measure_plan(plan: Plan, model: str, workload: Workload, *, environ: Mapping[str, str],
                 spec: RunSpec | None = None, images: int | None = 3, window_s: float | None = None,
                 artifacts_dir: str | None = None, timeout_s: float = 7200.0, confidence: float = 0.95,
                 on_event: Event | None = None) -> ThroughputFigures:
    """The one throughput entry point (bench --throughput, verify's images/min, tune's throughput objective,
    the ladder's table): every instance of `plan` at once running `spec` (default: the plan's own run
    record) on `workload`, `images` each or for `window_s` seconds. BadInput before any process starts
    for a bad count or window."""
    check_request(plan, images, window_s)
    job = WorkerJob(str(model), workload, spec if spec is not None else plan.run_spec,
                    warmup_steps=workload.steps, artifacts_dir=artifacts_dir)
    return run(plan, ThroughputRequest(str(model), job, images, window_s, timeout_s, confidence),
               environ=environ, on_event=on_event)


def _await_ready(barrier: str, procs: Sequence[tuple[int, str, WorkerProcess]], timeout_s: float,
                 emit: Event) -> dict[int, float] | str:
    """Each instance's warm single-image time once all are warm; or why one never got there."""
    end = time.monotonic() + timeout_s
    ready: dict[int, float] = {}
    while len(ready) < len(procs):
        for i, _, p in procs:
            if i in ready:
                continue
            f = Path(barrier) / f"ready-{i}.json"
            if f.is_file():
                try:
                    ready[i] = float(json.loads(f.read_text())["image_s"])
                    emit("ready", {"instance": i, "image_s": ready[i]})
                except (OSError, ValueError, KeyError):
                    pass
            elif p.proc is None or p.proc.poll() is not None:
                return f"instance {i} ended before it was warm"
        if time.monotonic() > end:
            return f"instances {sorted(set(i for i, _, _ in procs) - set(ready))} not warm in {timeout_s:.0f} s"
        time.sleep(0.1)
    return ready


def _open(barrier: str, **go: Any) -> None:
    atomicio.write_json(Path(barrier) / "go.json", go)
