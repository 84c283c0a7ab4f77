"""Options shared by every subcommand that works from a plan."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from sdagent.plan import Plan, PlanRequest, load_overrides_file, parse_assignments


def plan_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the layout and override options; the command receives `plan_args` (a dict)."""

    @click.option("--instances", type=int, default=None,
                  help="Split the host into N instances (never across NUMA nodes unless --span-nodes).")
    @click.option("--cores-per-instance", type=int, default=None,
                  help="Physical cores per instance.")
    @click.option("--span-nodes/--no-span-nodes", default=False,
                  help="Allow an instance to cross NUMA nodes.")
    @click.option("--use-smt/--no-use-smt", default=False,
                  help="Give SMT siblings their own OpenMP threads (default: one thread per physical core).")
    @click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                  help="Override a planned value, e.g. --set binding=taskset (repeatable; validated).")
    @click.option("--overrides", "overrides_file", type=click.Path(dir_okay=False), default=None,
                  help="YAML/JSON mapping of planned values to override.")
    @functools.wraps(func)
    def wrapper(*args: Any, instances: int | None, cores_per_instance: int | None, span_nodes: bool,
                use_smt: bool, assignments: tuple[str, ...], overrides_file: str | None,
                **kwargs: Any) -> Any:
        kwargs["plan_args"] = {
            "instances": instances, "cores_per_instance": cores_per_instance,
            "span_nodes": span_nodes, "use_smt": use_smt,
            "assignments": assignments, "overrides_file": overrides_file,
        }
        return func(*args, **kwargs)

    return wrapper


def resolve_plan(ctx: click.Context, plan_args: dict[str, Any] | None = None) -> Plan:
    """The plan for this invocation: plan file and/or derivation, then overrides."""
    a = plan_args or {}
    overrides: dict[str, Any] = {}
    if a.get("overrides_file"):
        overrides.update(load_overrides_file(a["overrides_file"]))
    overrides.update(parse_assignments(a.get("assignments") or ()))
    layout = (a.get("instances"), a.get("cores_per_instance"), a.get("span_nodes"), a.get("use_smt"))
    asked = a.get("instances") is not None or a.get("cores_per_instance") is not None \
        or bool(a.get("span_nodes")) or bool(a.get("use_smt"))
    request = PlanRequest(*layout) if asked else None
    plan = ctx.obj.plan(request, overrides)
    for w in plan.warnings:
        click.echo(f"sdagent: warning: {w}", err=True)
    return plan


def backend_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--backend/--precision/--compile/--compile-cache: 'auto' or unset means the plan's value."""
    for decorator in reversed((
        click.option("--backend", type=click.Choice(["auto", "ipex", "native"]), default="auto",
                     show_default=True, help="auto = the plan's (ipex where IPEX imports and matches torch)."),
        click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto",
                     show_default=True,
                     help="auto = the plan's (bf16 where the CPU has AMX-BF16 or AVX512-BF16)."),
        click.option("--compile/--no-compile", "compile_", default=None,
                     help="torch.compile the UNet (native backend; inductor with freezing). Default: the plan's."),
        click.option("--compile-cache", type=click.Path(file_okay=False), default=None,
                     help="Inductor cache directory (default ~/.cache/sdagent/inductor): "
                          "a cold compile takes minutes."),
    )):
        func = decorator(func)
    return func
