"""The parent's side of the OpenVINO peer: the worker's command and environment, and one measurement.

The worker runs in the OpenVINO venv, which does not have sdagent installed: it
finds the package through PYTHONPATH=<this checkout>/agent. Measurements start it
like any other worker (workers.parent.run_worker: one JSON job in, one result
record out, a private temp dir, its own process group, dying with the agent), by default in the stock
environment: an inherited KMP_AFFINITY or LD_PRELOAD must not change OpenVINO's
run (KMP_AFFINITY is known to leave OpenVINO on one core).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from sdagent.peers.ovexport import require_openvino_python
from sdagent.peers.ovjob import OvJob
from sdagent.planning.launch import Launch, stock_launch
from sdagent.workers.parent import run_worker
from sdagent.workers.result import WorkerResult

WORKER_MODULE = "sdagent.peers.openvino"

#: <repo>/agent (or site-packages in an installed agent): what the worker's PYTHONPATH must hold.
AGENT_ROOT = str(Path(__file__).resolve().parents[2])


def worker_cmd(python: str) -> list[str]:
    """`<OpenVINO venv python> -m sdagent.peers.openvino`: the command a launch prefixes."""
    return [python, "-m", WORKER_MODULE]


def worker_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with this sdagent first on PYTHONPATH (the OpenVINO venv has no sdagent of its own)."""
    env = dict(environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (AGENT_ROOT, environ.get("PYTHONPATH")) if x)
    return env


def openvino_launch(python: str | None = None, environ: Mapping[str, str] | None = None,
                    prefix: Sequence[str] = (), name: str = "openvino") -> Launch:
    """The worker as a stock launch (optionally behind a binding prefix such as `numactl -C 0-3`)."""
    env = os.environ if environ is None else environ
    py = python or require_openvino_python(env)
    return stock_launch(list(prefix) + worker_cmd(py), worker_environ(env), name=name)


def measure_openvino(job: OvJob, launch: Launch | None = None, *, timeout_s: float = 1800.0) -> WorkerResult:
    """One OpenVINO worker process on `job`; a crash, a timeout or an error result is a failure with a reason."""
    return run_worker(launch or openvino_launch(), job.checked(), timeout_s=timeout_s)
