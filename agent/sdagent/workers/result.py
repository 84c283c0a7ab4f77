"""What a measurement worker hands back: one frozen, versioned record, `sdagent-result/1`.

Why a record (after psf/pyperf's `Run`): the result crosses a process border as
JSON, written by two kinds of worker (sdagent's own, measuring.worker, in the
agent's venv; the OpenVINO peer, peers.openvino, in another) and read by the
ladder, tune, verify's stock run and throughput. Written and read by the same
code here, every reader takes attributes, and a file of another format or
version is refused with one line instead of a KeyError three modules later.
This is the only module that knows the result's keys (tests/test_architecture.py
checks it).

Standard library and sdagent.pipeline.workload only: the peer's process
imports it without torch.

Shape of the file (`to_dict`):

    {"format": "sdagent-result/1", "ok": true, "mode": "images" | "unet-only" | "throughput",
     "workload": {...Workload}, "latency_s": [s, ...], "latency_median_s": s, "runs": [{...}, ...],
     "process": {"libraries": [...], "torch_threads": n, "affinity": [...], "env": {...}, "pid": n},
     "load_average": [1, 5, 15 min], "describe": {...}, "load_s": s, "prepare_s": s, "warmup_s": s,
     "unet_evals": n, "observed": {...}, "start_to_first_image_s": s,
     "window": {"start": t, "deadline": t}, "images": [{"start": t, "end": t, "total_s": s}], "versions": {...}}

or, for a worker that failed, `{"format": "sdagent-result/1", "ok": false, "error": "one line"}`.
Times are seconds; `start`/`end`/`deadline` are wall-clock (time.time()).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

from sdagent.errors import BadInput
from sdagent.pipeline.workload import Workload

RESULT_FORMAT = "sdagent-result/1"

#: What a worker timed: whole images, single UNet calls, or images back to back in a throughput window.
MODES: tuple[str, ...] = ("images", "unet-only", "throughput")


def _r(v: float | None, digits: int = 6) -> float | None:
    return None if v is None else round(float(v), digits)


@dataclass(frozen=True)
class ProcessRecord:
    """What the worker process really got: notable mapped libraries, torch's threads, CPUs, tuning env."""

    libraries: tuple[str, ...] = ()
    torch_threads: int | None = None  # None where torch is not loaded (the OpenVINO peer)
    affinity: tuple[int, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"libraries": list(self.libraries), "torch_threads": self.torch_threads,
                "affinity": list(self.affinity), "env": dict(self.env), "pid": self.pid}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProcessRecord":
        return cls(tuple(str(x) for x in d.get("libraries", ())), _opt_int(d.get("torch_threads")),
                   tuple(int(x) for x in d.get("affinity", ())), dict(d.get("env") or {}),
                   _opt_int(d.get("pid")))


@dataclass(frozen=True)
class ImageSpan:
    """One image of a throughput window: wall-clock start and end, and its own timed seconds."""

    start: float
    end: float
    total_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "total_s": _r(self.total_s)}


@dataclass(frozen=True)
class Window:
    """A throughput window as the worker saw it: the shared start and the deadline (None: a number of images)."""

    start: float
    deadline: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "deadline": self.deadline}


@dataclass(frozen=True)
class Measurement:
    """One worker's measurement (see the module docstring for the file's shape)."""

    mode: str
    workload: Workload
    latency_s: tuple[float, ...]  # per timed image (or UNet call), in order
    process: ProcessRecord = field(default_factory=ProcessRecord)
    load_average: tuple[float, ...] = ()
    describe: Mapping[str, Any] = field(default_factory=dict)  # the prepared pipeline's own account
    load_s: float | None = None
    prepare_s: float | None = None
    warmup_s: float | None = None
    runs: tuple[Mapping[str, Any], ...] = ()  # per timed call: the generation's split (pipeline.generate)
    unet_evals: int | None = None  # UNet evaluations per image
    observed: Mapping[str, Any] | None = None  # what ran inside the UNet's call (pipeline.observe)
    start_to_first_image_s: float | None = None
    window: Window | None = None  # throughput only
    images: tuple[ImageSpan, ...] = ()  # throughput only
    versions: Mapping[str, Any] | None = None  # the peer's package versions

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadInput(f"not a worker result: mode {self.mode!r}, expected one of {', '.join(MODES)}")

    # -- derived figures ----------------------------------------------------------------------

    @property
    def latency_median_s(self) -> float | None:
        """The median timed latency (seconds per image, or per UNet call in unet-only mode)."""
        return statistics.median(self.latency_s) if self.latency_s else None

    @property
    def unet_steps_s(self) -> tuple[float, ...]:
        """Every timed UNet step of every timed call, in order."""
        return tuple(float(s) for r in self.runs for s in (r.get("unet_steps_s") or ()))

    @property
    def unet_step_median_s(self) -> float | None:
        steps = self.unet_steps_s
        return statistics.median(steps) if steps else None

    def summary(self) -> dict[str, Any]:
        """The one line a worker prints on stdout when it succeeds."""
        return {"latency_s": list(self.latency_s), "start_to_first_image_s": self.start_to_first_image_s}

    # -- the file ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT, "ok": True, "mode": self.mode, "workload": self.workload.to_dict(),
            "latency_s": [_r(x) for x in self.latency_s], "latency_median_s": _r(self.latency_median_s),
            "process": self.process.to_dict(), "load_average": list(self.load_average),
            "describe": dict(self.describe), "load_s": _r(self.load_s, 4), "prepare_s": _r(self.prepare_s, 4),
            "warmup_s": _r(self.warmup_s, 4), "runs": [dict(r) for r in self.runs], "unet_evals": self.unet_evals,
            "observed": dict(self.observed) if self.observed is not None else None,
            "start_to_first_image_s": _r(self.start_to_first_image_s, 3),
            "window": self.window.to_dict() if self.window else None,
            "images": [i.to_dict() for i in self.images],
            "versions": dict(self.versions) if self.versions is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Measurement":
        """Parse a successful result; BadInput names what is wrong (another format, a missing field)."""
        _check_format(d)
        if d.get("ok") is not True:
            raise BadInput("not a successful worker result (ok is not true)")
        unknown = set(d) - _KEYS
        if unknown:
            raise BadInput(f"not a worker result of {RESULT_FORMAT}: unknown keys {sorted(unknown)}")
        try:
            win = d.get("window")
            return cls(
                mode=str(d["mode"]), workload=Workload(**d["workload"]),
                latency_s=tuple(float(x) for x in d["latency_s"]),
                process=ProcessRecord.from_dict(d.get("process") or {}),
                load_average=tuple(float(x) for x in d.get("load_average") or ()),
                describe=dict(d.get("describe") or {}), load_s=_opt_float(d.get("load_s")),
                prepare_s=_opt_float(d.get("prepare_s")), warmup_s=_opt_float(d.get("warmup_s")),
                runs=tuple(dict(r) for r in d.get("runs") or ()), unet_evals=_opt_int(d.get("unet_evals")),
                observed=d.get("observed"), start_to_first_image_s=_opt_float(d.get("start_to_first_image_s")),
                window=Window(float(win["start"]), _opt_float(win.get("deadline"))) if win else None,
                images=tuple(ImageSpan(float(i["start"]), float(i["end"]), float(i["total_s"]))
                             for i in d.get("images") or ()),
                versions=d.get("versions"))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"not a worker result of {RESULT_FORMAT} ({type(exc).__name__}: {exc})") from None


#: Every key a result file may hold (the derived ones are written for readers of the file, never read back).
_KEYS = frozenset({"format", "ok", "latency_median_s"} | {f.name for f in fields(Measurement)})


def failure(reason: str) -> dict[str, Any]:
    """What a worker that could not measure writes: the reason, one line."""
    return {"format": RESULT_FORMAT, "ok": False, "error": str(reason)}


def read_result(d: Any) -> Measurement | str:
    """A result file's content: the measurement, or the worker's own reason for failing.

    BadInput when it is not a result of this format at all (a worker of another version).
    """
    if not isinstance(d, Mapping):
        raise BadInput(f"not a worker result: expected a JSON object, got {type(d).__name__}")
    _check_format(d)
    if d.get("ok") is not True:
        return str(d.get("error") or "failed")
    return Measurement.from_dict(d)


def _check_format(d: Mapping[str, Any]) -> None:
    if d.get("format") != RESULT_FORMAT:
        raise BadInput(f"not a worker result: format {d.get('format')!r}, expected {RESULT_FORMAT!r}")


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def timed(mode: str, workload: Workload, latency_s: Sequence[float], **kw: Any) -> Measurement:
    """A Measurement with its sequences as tuples (what the workers build)."""
    return Measurement(mode, workload, tuple(float(x) for x in latency_s), **kw)


@dataclass(frozen=True)
class WorkerResult:
    """The parent's view of one worker process: ok, why not, how long it took, and its measurement.

    `measurement` is None when the process wrote nothing (a crash, a timeout) or its own failure;
    it is kept when a check after the fact failed (a preload that did not take), so the figures
    can still be shown beside the reason.
    """

    ok: bool
    reason: str
    wall_s: float
    measurement: Measurement | None = None
    argv: tuple[str, ...] = ()

    @property
    def latency_s(self) -> float:
        """The median timed latency of the process (only for a successful one)."""
        if self.measurement is None or self.measurement.latency_median_s is None:
            raise ValueError(f"no latency: {self.reason}")
        return self.measurement.latency_median_s
