"""The OpenVINO peer's job: what one worker process measures, parsed and checked without OpenVINO.

Why a record of its own rather than measuring.runner.WorkerJob: the peer has no
RunSpec (no backend recipe, channels_last or torch.compile), it runs an exported
IR directory, not a diffusers one, and its knobs are OpenVINO's (precision hint,
threads, static shapes). It crosses the process border the same way: one JSON
file, `to_dict` on one side and `from_dict` on the other. Pure: no OpenVINO, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from sdagent.errors import BadInput
from sdagent.pipeline.workload import Workload, validate_workload
from sdagent.pipeline.ov_export import (  # noqa: F401 - re-exported: the job's names before the move
    DEVICE, GENAI_SCHEDULERS, PRECISION_HINTS, genai_scheduler)
from sdagent.planning.settings import PRECISIONS

JOB_FORMAT = "sdagent-ov-job/1"

@dataclass(frozen=True)
class OvJob:
    """What one OpenVINO worker process measures (the JSON `sdagent-ov-job/1`)."""

    ov_model: str  # an exported OpenVINO IR directory (ovexport)
    workload: Workload
    precision: str = "bf16"  # sdagent's name; sent to OpenVINO as INFERENCE_PRECISION_HINT
    threads: int | None = None  # INFERENCE_NUM_THREADS; None leaves OpenVINO's own choice
    warmup: int = 1
    warmup_steps: int = 2
    repeats: int = 1
    static_shapes: bool = True  # reshape to the workload's size before compiling
    cache_dir: str | None = None  # OpenVINO's CACHE_DIR (compiled-blob cache); None: compile afresh
    probe_precision: bool = False  # after timing, compile the UNet alone and record what it runs in

    def to_dict(self) -> dict[str, Any]:
        return {"format": JOB_FORMAT, "ov_model": str(self.ov_model), "workload": self.workload.to_dict(),
                "precision": self.precision, "threads": self.threads, "warmup": self.warmup,
                "warmup_steps": self.warmup_steps, "repeats": self.repeats,
                "static_shapes": self.static_shapes, "cache_dir": self.cache_dir,
                "probe_precision": self.probe_precision}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OvJob":
        """Parse and check a job; BadInput names the first bad value."""
        if not isinstance(d, Mapping):
            raise BadInput(f"not an OpenVINO job: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != JOB_FORMAT:
            raise BadInput(f"not an OpenVINO job: format {d.get('format')!r}, expected {JOB_FORMAT!r}")
        try:
            job = cls(
                ov_model=_text(d["ov_model"], "ov_model"),
                workload=Workload(**d["workload"]),
                precision=str(d.get("precision", "bf16")),
                threads=None if d.get("threads") is None else _int(d["threads"], "threads"),
                warmup=_int(d.get("warmup", 1), "warmup"),
                warmup_steps=_int(d.get("warmup_steps", 2), "warmup_steps"),
                repeats=_int(d.get("repeats", 1), "repeats"),
                static_shapes=_bool(d.get("static_shapes", True), "static_shapes"),
                cache_dir=None if d.get("cache_dir") is None else _text(d["cache_dir"], "cache_dir"),
                probe_precision=_bool(d.get("probe_precision", False), "probe_precision"),
            )
            return job.checked()
        except KeyError as exc:
            raise BadInput(f"not an OpenVINO job: missing {exc}") from None
        except TypeError as exc:  # a workload field of the wrong kind (steps "20", an unknown key)
            raise BadInput(f"not an OpenVINO job: bad workload ({exc})") from None

    def checked(self) -> "OvJob":
        """The job itself, or BadInput for a value the worker would fail on or silently change."""
        if self.precision not in PRECISIONS:
            raise BadInput(f"invalid precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.threads is not None and self.threads < 1:
            raise BadInput(f"invalid threads {self.threads}: must be >= 1 (or null for OpenVINO's choice)")
        if self.warmup < 0 or self.repeats < 0 or self.warmup_steps < 1:
            raise BadInput(f"invalid repeats/warmup/warmup_steps ({self.repeats}/{self.warmup}/{self.warmup_steps})")
        if self.warmup + self.repeats < 1:
            raise BadInput("invalid job: warmup and repeats are both 0, nothing would be generated")
        validate_workload(self.workload)
        genai_scheduler(self.workload.scheduler)
        return self

    @property
    def warmup_workload(self) -> Workload:
        return self.workload.with_steps(min(self.warmup_steps, self.workload.steps))


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadInput(f"invalid {name} {v!r}: must be an integer")
    return v


def _bool(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise BadInput(f"invalid {name} {v!r}: must be true or false")
    return v


def _text(v: Any, name: str) -> str:
    if not isinstance(v, str) or not v:
        raise BadInput(f"invalid {name} {v!r}: must be a non-empty path")
    return v


def compile_config(job: OvJob) -> dict[str, str]:
    """The properties the pipeline is compiled with: every one that decides speed, stated explicitly.

    INFERENCE_PRECISION_HINT is always set: OpenVINO's CPU default is bf16 wherever the CPU has
    bf16 instructions (AMX, or AVX512_BF16 as on Zen 4/5), so an unset hint would compare
    OpenVINO bf16 with a torch fp32 run, or the reverse, depending on the host.
    """
    cfg = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[job.precision], "PERFORMANCE_HINT": "LATENCY"}
    if job.threads is not None:
        cfg["INFERENCE_NUM_THREADS"] = str(job.threads)
    if job.cache_dir is not None:
        cfg["CACHE_DIR"] = job.cache_dir
    return cfg
