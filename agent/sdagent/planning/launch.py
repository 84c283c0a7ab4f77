"""How a command is started under a plan, in the stock environment, or under PyTorch's run_cpu.

Pure functions: a plan, a command and an environment mapping in; an argv and an
environment (a :class:`Launch`) out. `sdagent exec` runs what
:func:`build_exec` returns, and every measurement (tune's candidates, the
ladder's rungs, verify's stock run) is started the same way, so what is
measured is what a user's `sdagent exec -- CMD` gets. Every launch starts from
the stock environment (sdagent.envvars), so a stray LD_PRELOAD or
OMP_NUM_THREADS in the caller's shell cannot leak into one configuration and
not another.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from sdagent.envvars import PLAN_ENV, stock_env
from sdagent.planning.plan import Plan
from sdagent.planning.planfile import plan_env_value


@dataclass(frozen=True)
class Launch:
    """How a program is started: the argv up to the program's own arguments, and its environment."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    expect_libraries: tuple[str, ...] = ()  # preloads that must show up in the program's maps


def build_exec(plan: Plan, instance: int, cmd: Sequence[str],
               base_env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run `cmd` under the plan (what `sdagent exec` runs)."""
    env = dict(base_env)
    planned = plan.env(instance)
    preload = planned.pop("LD_PRELOAD", None)
    if preload:
        # Ours first; keep whatever the caller already preloads (e.g. a sanitizer).
        env["LD_PRELOAD"] = ":".join(x for x in (preload, base_env.get("LD_PRELOAD")) if x)
    else:
        env.pop("LD_PRELOAD", None)
    for key in ("MALLOC_CONF", "KMP_AFFINITY", "KMP_BLOCKTIME"):
        if key not in planned:
            env.pop(key, None)  # a stale value from the caller would silently change the plan
    env.update(planned)
    if plan.plan_file:
        env["SDAGENT_PLAN_FILE"] = os.path.abspath(plan.plan_file)
    env[PLAN_ENV] = plan_env_value(plan)
    return plan.launcher(instance) + list(cmd), env


def stock_launch(cmd: Sequence[str], environ: Mapping[str, str], name: str = "stock") -> Launch:
    """`cmd` as an untuned install runs it: no preload, torch's own OpenMP and threads, no pinning."""
    return Launch(name, tuple(cmd), stock_env(environ))


def plan_launch(plan: Plan, cmd: Sequence[str], environ: Mapping[str, str], name: str = "plan",
                instance: int = 0) -> Launch:
    """`cmd` under the plan, built exactly as `sdagent exec` builds it.

    numactl refuses CPUs outside its caller's own affinity, so a measurement started from a
    process pinned to one instance (verify's throughput check runs inside instance 0) goes
    through taskset first, which may widen it to the instance's CPUs.
    """
    argv, env = build_exec(plan, instance, cmd, stock_env(environ))
    if plan.binding == "numactl" and plan.taskset:
        argv = [plan.taskset, "-c", plan.instance(instance).cpulist] + argv
    return Launch(name, tuple(argv), env, tuple(plan.preload))


def exec_launch(plan: Plan, plan_file: str, cmd: Sequence[str], environ: Mapping[str, str],
                python: str | None = None, name: str = "tuned", instance: int = 0) -> Launch:
    """`cmd` under `sdagent --plan-file F exec --instance I -- CMD`: the command a user would type."""
    py = python or sys.executable
    argv = (py, "-m", "sdagent", "--plan-file", plan_file, "exec", "--instance", str(instance), "--", *cmd)
    return Launch(name, argv, stock_env(environ), tuple(plan.preload))


def run_cpu_launch(program: str, environ: Mapping[str, str], python: str | None = None,
                   name: str = "run_cpu", extra: tuple[str, ...] = ("--enable-jemalloc",)) -> Launch:
    """A `.py` program under PyTorch's launcher with its defaults, as a user in this venv would run it.

    run_cpu finds libraries in $VIRTUAL_ENV/lib: an activated venv sets it, so we
    do too when running from one (the intel-openmp wheel's libiomp5.so is there).
    """
    py = python or sys.executable
    env = stock_env(environ)
    if sys.prefix != sys.base_prefix and "VIRTUAL_ENV" not in env:
        env["VIRTUAL_ENV"] = sys.prefix
    return Launch(name, (py, "-m", "torch.backends.xeon.run_cpu", *extra, program), env)
