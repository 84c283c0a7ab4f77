"""The environment variables that tune a process: one table, read by every launch and every record.

Why one table: the stock environment is "ours minus these", the machine state
beside a figure records "ours, only these", and `sdagent exec` must clear a
stale value of each one it does not set. Three lists would drift apart.
"""

from __future__ import annotations

from typing import Mapping

#: Prefixes of variables that change how the ML stack computes (threads, OpenMP
#: runtime, oneDNN, inductor).
TUNING_PREFIXES: tuple[str, ...] = ("OMP_", "KMP_", "GOMP_", "MKL_", "DNNL_", "ONEDNN_", "TORCHINDUCTOR_")

#: Whole names: the preloads and allocator, and the agent's own markers of a tuned process.
TUNING_KEYS: tuple[str, ...] = ("LD_PRELOAD", "MALLOC_CONF", "SDAGENT_PLAN_FILE", "SDAGENT_PLAN_JSON",
                                "SDAGENT_INSTANCE")

#: Set by `sdagent exec` for its child: the plan in effect, as JSON (see planning.planfile).
PLAN_ENV = "SDAGENT_PLAN_JSON"


def is_tuning_var(name: str) -> bool:
    return name in TUNING_KEYS or name.startswith(TUNING_PREFIXES)


def stock_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of an untuned process: ours minus every tuning variable.

    This is what a user gets with no tuning: torch's own libgomp and thread
    count, glibc malloc, no pinning. A stray LD_PRELOAD or OMP_NUM_THREADS in
    the caller's shell cannot leak into one measured configuration and not another.
    """
    return {k: v for k, v in environ.items() if not is_tuning_var(k)}


def tuning_vars(environ: Mapping[str, str]) -> dict[str, str]:
    """Only the tuning variables (recorded beside every figure); the plan JSON is left out as noise."""
    return {k: v for k, v in environ.items() if is_tuning_var(k) and k != PLAN_ENV}
