"""The job of sdagent's own measurement worker (measuring.worker): model, workload, run record.

The job crosses the process border as one JSON file (`sdagent-job/1`); starting
the worker, waiting for it and reading its result (`sdagent-result/1`) is
workers.parent's, shared with the OpenVINO peer.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sdagent.errors import BadInput
from sdagent.pipeline.workload import Workload
from sdagent.planning.runspec import RunSpec

WORKER_MODULE = "sdagent.measuring.worker"


@dataclass(frozen=True)
class ThroughputSpec:
    """A worker's part in a throughput run: wait at a barrier, then generate images back to back.

    `barrier` is a directory the parent owns: the worker writes ready-<index>.json there once
    warm, and starts when go.json appears (its start time and window; or an abort reason).
    """

    barrier: str
    index: int
    images: int | None = None  # a fixed number of images ...
    window_s: float | None = None  # ... or as many as a window holds

    def to_dict(self) -> dict[str, Any]:
        return {"barrier": self.barrier, "index": self.index, "images": self.images, "window_s": self.window_s}


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process measures."""

    model: str
    workload: Workload
    run: RunSpec
    warmup: int = 1
    warmup_steps: int = 2
    repeats: int = 1
    artifacts_dir: str | None = None
    unet_only: bool = False  # time single UNet calls instead of whole images
    throughput: ThroughputSpec | None = None
    #: where the worker writes its first timed image (seed 0) as PNG, or None: the ladder compares each rung's
    #: with stock's (measuring.ladder_fidelity)
    image_out: str | None = None

    @property
    def precision(self) -> str:
        """The precision the worker runs in (the ladder's rows say it)."""
        return self.run.precision

    def to_dict(self) -> dict[str, Any]:
        return {"format": "sdagent-job/1", "model": str(self.model), "workload": self.workload.to_dict(),
                "run": self.run.to_dict(), "warmup": self.warmup, "warmup_steps": self.warmup_steps,
                "repeats": self.repeats, "artifacts_dir": self.artifacts_dir,
                "unet_only": self.unet_only,
                "throughput": self.throughput.to_dict() if self.throughput else None,
                "image_out": self.image_out}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorkerJob":
        try:
            tp = d.get("throughput")
            job = cls(str(d["model"]), Workload(**d["workload"]), RunSpec.from_dict(d["run"]),
                      int(d["warmup"]), int(d["warmup_steps"]), int(d["repeats"]), d.get("artifacts_dir"),
                      bool(d.get("unet_only", False)), ThroughputSpec(**tp) if tp else None,
                      None if d.get("image_out") is None else str(d["image_out"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"not a worker job ({type(exc).__name__}: {exc})") from None
        if job.repeats < 0 or job.warmup < 0 or job.warmup_steps < 1:
            raise BadInput(f"invalid repeats/warmup ({job.repeats}/{job.warmup}/{job.warmup_steps})")
        return job


def worker_cmd(python: str | None = None) -> list[str]:
    """`python -m sdagent.measuring.worker`: the command every launch prefixes."""
    return [python or sys.executable, "-m", WORKER_MODULE]


def worker_file() -> str:
    """The worker's file path: PyTorch's run_cpu only accepts a `.py` program."""
    return str(Path(__file__).with_name("worker.py"))
