"""How each configuration's worker process is started: stock, under a plan, under run_cpu.

Pure functions: environment mapping in, :class:`sdagent.measure.Launch` out.
Every launch starts from :func:`stock_child_env`, so a stray LD_PRELOAD or
OMP_NUM_THREADS in the caller's shell cannot leak into one rung and not another.
"""

from __future__ import annotations

import sys
from typing import Mapping

from sdagent.measure import Launch, worker_cmd
from sdagent.plan import Plan

#: Environment variables that change what an untuned process does.
TUNING_PREFIXES = ("OMP_", "KMP_", "GOMP_", "MKL_", "DNNL_", "ONEDNN_")
TUNING_KEYS = ("LD_PRELOAD", "MALLOC_CONF", "SDAGENT_PLAN_FILE", "SDAGENT_PLAN_JSON", "SDAGENT_INSTANCE")


def stock_child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of an untuned process: ours minus preloads, allocator and OpenMP knobs.

    This is what a user gets with no tuning: torch's own libgomp, its default
    thread count (one per physical core), glibc malloc, no pinning.
    """
    return {k: v for k, v in environ.items()
            if k not in TUNING_KEYS and not k.startswith(TUNING_PREFIXES)}


def tuning_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The tuning-relevant part of an environment (for records)."""
    return {k: v for k, v in environ.items() if k in TUNING_KEYS or k.startswith(TUNING_PREFIXES)}


def stock_launch(environ: Mapping[str, str], python: str | None = None, name: str = "stock") -> Launch:
    return Launch(name, tuple(worker_cmd(python)), stock_child_env(environ))


def plan_launch(plan: Plan, environ: Mapping[str, str], python: str | None = None, name: str = "plan",
                instance: int = 0) -> Launch:
    """The worker under the plan, built exactly as `sdagent exec` builds it (its pure build_exec)."""
    from sdagent.cli.hostcmds import build_exec

    argv, env = build_exec(plan, instance, worker_cmd(python), stock_child_env(environ))
    return Launch(name, tuple(argv), env, tuple(plan.preload))


def exec_launch(plan: Plan, plan_file: str, environ: Mapping[str, str], python: str | None = None,
                name: str = "tuned", instance: int = 0) -> Launch:
    """The worker under `sdagent --plan-file F exec -- ...`: the command a user would type."""
    py = python or sys.executable
    argv = (py, "-m", "sdagent", "--plan-file", plan_file, "exec", "--instance", str(instance), "--",
            *worker_cmd(py))
    return Launch(name, argv, stock_child_env(environ), tuple(plan.preload))


def run_cpu_launch(environ: Mapping[str, str], python: str | None = None, name: str = "run_cpu",
                   extra: tuple[str, ...] = ("--enable-jemalloc",)) -> Launch:
    """The worker under PyTorch's launcher with its defaults, as a user in this venv would run it.

    run_cpu finds libraries in $VIRTUAL_ENV/lib: an activated venv sets it, so we
    do too when running from one (the intel-openmp wheel's libiomp5.so is there).
    It insists on a `.py` program, hence the worker's file path.
    """
    py = python or sys.executable
    env = stock_child_env(environ)
    if sys.prefix != sys.base_prefix and "VIRTUAL_ENV" not in env:
        env["VIRTUAL_ENV"] = sys.prefix
    argv = (py, "-m", "torch.backends.xeon.run_cpu", *extra, *worker_cmd(py, as_file=True))
    return Launch(name, argv, env)
