"""Options and small adapters shared by the subcommands (no command module imports another)."""

from __future__ import annotations

import contextlib
import functools
import math
import shlex
import sys
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import click

from sdagent.errors import BadInput
from sdagent.measuring.bench import Progress
from sdagent.pipeline.modeldir import ModelDir, check_model_dir
from sdagent.pipeline.workload import (DEMO_PROMPT, SCHEDULERS, Workload, check_fits_in_memory, validate_workload,
                                      with_default_size)
from sdagent.planning.layout import PlanRequest
from sdagent.planning.plan import Plan
from sdagent.planning.settings import BACKENDS, PRECISIONS, load_overrides_file, parse_assignments


class FiniteFloat(click.ParamType):
    """A float that is finite (no nan/inf), optionally > or >= a bound: one line naming the value otherwise."""

    name = "number"

    def __init__(self, above: float | None = None, at_least: float | None = None) -> None:
        self.above, self.at_least = above, at_least

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float) and math.isfinite(value):
            x = value
        else:
            try:
                x = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
            if not math.isfinite(x):
                self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.above is not None and not x > self.above:
            self.fail(f"{value!r} must be > {self.above:g}", param, ctx)
        if self.at_least is not None and not x >= self.at_least:
            self.fail(f"{value!r} must be >= {self.at_least:g}", param, ctx)
        return x


def command_line() -> str:
    """How this process was invoked, for records beside figures."""
    return "sdagent " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0] else "sdagent"


def warn(plan: Plan) -> None:
    for w in plan.warnings:
        click.echo(f"sdagent: warning: {w}", err=True)


def progress_bar(label: str) -> Callable[[int], Any]:
    """A measuring.bench.ProgressBar drawing a Click bar on stderr."""

    @contextlib.contextmanager
    def bar(total: int) -> Iterator[Progress]:
        with click.progressbar(length=max(1, total), label=label, file=sys.stderr, show_eta=True) as b:
            yield b.update

    return bar


# ---------------------------------------------------------------------------
# Plan layout and overrides
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanArgs:
    """The layout and override options of a command (layout_options, plan_options), as given."""

    instances: int | None = None
    cores_per_instance: int | None = None
    span_nodes: bool = False
    use_smt: bool = False
    sub_node: bool = False
    e_cores: bool = False
    assignments: tuple[str, ...] = ()  # --set KEY=VALUE, unparsed
    overrides_file: str | None = None  # --overrides FILE

    def request(self) -> PlanRequest | None:
        """The layout asked for, or None when no layout option was given (the plan in force's layout)."""
        asked = self.instances is not None or self.cores_per_instance is not None or self.span_nodes \
            or self.use_smt or self.sub_node or self.e_cores
        return PlanRequest(self.instances, self.cores_per_instance, self.span_nodes, self.use_smt, self.sub_node,
                           self.e_cores) if asked else None

    def overrides(self) -> dict[str, Any]:
        """--overrides FILE, then each --set (later wins), validated (BadInput names the bad value)."""
        out: dict[str, Any] = {}
        if self.overrides_file:
            out.update(load_overrides_file(self.overrides_file))
        out.update(parse_assignments(self.assignments))
        return out


def layout_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the layout options; the command receives `plan_args` (a PlanArgs)."""

    @click.option("--instances", type=int, default=None,
                  help="Split the host into N instances (never across NUMA nodes unless --span-nodes).")
    @click.option("--cores-per-instance", type=int, default=None,
                  help="Physical cores per instance.")
    @click.option("--span-nodes/--no-span-nodes", default=False,
                  help="Allow an instance to cross NUMA nodes.")
    @click.option("--use-smt/--no-use-smt", default=False,
                  help="Give SMT siblings their own OpenMP threads (default: one thread per physical core).")
    @click.option("--sub-node/--no-sub-node", default=False,
                  help="Latency instance on one NUMA node (an SNC/NPS sub-node) instead of the whole socket.")
    @click.option("--e-cores/--no-e-cores", default=False,
                  help="Use a hybrid CPU's E-cores too (default: P-cores only).")
    @functools.wraps(func)
    def wrapper(*args: Any, instances: int | None, cores_per_instance: int | None, span_nodes: bool,
                use_smt: bool, sub_node: bool, e_cores: bool, **kwargs: Any) -> Any:
        kwargs["plan_args"] = replace(kwargs.get("plan_args") or PlanArgs(), instances=instances,
                                      cores_per_instance=cores_per_instance, span_nodes=span_nodes,
                                      use_smt=use_smt, sub_node=sub_node, e_cores=e_cores)
        return func(*args, **kwargs)

    return wrapper


def plan_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the layout and override options; the command receives `plan_args` (a PlanArgs)."""

    @click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                  help="Override a planned value, e.g. --set binding=taskset (repeatable; validated).")
    @click.option("--overrides", "overrides_file", type=click.Path(dir_okay=False), default=None,
                  help="YAML/JSON mapping of planned values to override.")
    @functools.wraps(func)
    def wrapper(*args: Any, assignments: tuple[str, ...], overrides_file: str | None, **kwargs: Any) -> Any:
        kwargs["plan_args"] = replace(kwargs.get("plan_args") or PlanArgs(), assignments=tuple(assignments),
                                      overrides_file=overrides_file)
        return func(*args, **kwargs)

    return layout_options(wrapper)


def resolve_plan(ctx: click.Context, plan_args: PlanArgs | None = None,
                 extra: dict[str, Any] | None = None) -> Plan:
    """The plan for this invocation: the plan in force, a new layout if asked, then overrides."""
    a = plan_args or PlanArgs()
    plan = ctx.obj.plan(a.request(), {**a.overrides(), **(extra or {})})
    warn(plan)
    return plan


# ---------------------------------------------------------------------------
# How the pipeline runs
# ---------------------------------------------------------------------------


def backend_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--backend/--precision/--compile/--artifacts: 'auto' or unset means the plan's value."""
    for decorator in reversed((
        click.option("--backend", type=click.Choice(["auto", *BACKENDS]), default="auto",
                     show_default=True, help="auto = the plan's (ipex where IPEX imports and matches torch)."),
        click.option("--precision", type=click.Choice(["auto", *PRECISIONS]), default="auto",
                     show_default=True,
                     help="auto = the plan's (bf16 where the CPU has AMX-BF16 or AVX512-BF16)."),
        click.option("--compile/--no-compile", "compile_", default=None,
                     help="torch.compile the UNet (native backend; inductor with freezing). Default: the plan's."),
        click.option("--artifacts", type=click.Path(file_okay=False), default=None,
                     help="Where the compiled packages are kept (default ~/.cache/sdagent/artifacts); a "
                          "missing one is built once (minutes for SD-1.5; `sdagent model compile` does it ahead)."),
    )):
        func = decorator(func)
    return func


def run_overrides(backend: str, precision: str, compile_: bool | None,
                  channels_last: bool | None = None) -> dict[str, Any]:
    """Explicit CLI values override the plan; "auto" (and an absent flag) mean the plan's."""
    o: dict[str, Any] = {}
    if backend != "auto":
        o["backend"] = backend
    if precision != "auto":
        o["precision"] = precision
    if compile_ is not None:
        o["compile"] = compile_
    if channels_last is not None:
        o["channels_last"] = channels_last
    return o


def check_compile_flag(plan: Plan, compile_: bool | None) -> None:
    """--compile asks for torch.compile, which the ipex backend does not use."""
    if plan.backend == "ipex" and compile_:
        raise BadInput("--compile is for the native backend (IPEX optimizes the graph itself): "
                       "add --backend native")


# ---------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------


def workload_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--model and the workload's shape (bench, verify); the command gets `model_dir` and `wl`."""

    @click.option("--model", "model_dir", required=True, type=click.Path(),
                  help="A diffusers StableDiffusionPipeline directory (`sdagent model create`, or a real SD-1.5).")
    @click.option("--prompt", default=DEMO_PROMPT, show_default=True, help="Text prompt.")
    @click.option("--steps", type=int, default=20, show_default=True, help="Denoising (UNet) steps.")
    @click.option("--height", type=int, default=None,
                  help="Image height, a multiple of 8 (default: the model's own, 512 for SD-1.5).")
    @click.option("--width", type=int, default=None, help="Image width (default: the model's own).")
    @click.option("--guidance", type=FiniteFloat(at_least=0), default=7.5, show_default=True,
                  help="Classifier-free guidance scale; above 1 the UNet runs at batch 2.")
    @click.option("--seed", type=int, default=0, show_default=True,
                  help="Seed of the initial noise; every run uses it, so every run does the same work.")
    @click.option("--scheduler", default="default", show_default=True,
                  help=f"One of: {', '.join(SCHEDULERS)} (default = the model's own).")
    @functools.wraps(func)
    def wrapper(*args: Any, model_dir: str, prompt: str, steps: int, height: int | None, width: int | None,
                guidance: float, seed: int, scheduler: str, **kwargs: Any) -> Any:
        kwargs["model_dir"] = model_dir
        kwargs["wl"] = dict(prompt=prompt, steps=steps, height=height, width=width, guidance=guidance,
                            seed=seed, scheduler=scheduler)
        return func(*args, **kwargs)

    return wrapper


def model_and_workload(model_dir: str, wl: dict[str, Any] | Workload) -> tuple[ModelDir, Workload]:
    """The checked model directory and the validated workload (missing sizes = the model's own), refused
    up front when one image of it would not fit in this host's memory."""
    md = check_model_dir(model_dir)
    w = wl if isinstance(wl, Workload) else with_default_size(wl, md.default_size)
    validate_workload(w)
    check_fits_in_memory(md, w)
    return md, w


@dataclass(frozen=True)
class MeasureArgs:
    """--model, the workload and the per-process measurement knobs (tune and ladder)."""

    model_dir: str
    wl: dict[str, Any]
    repeats: int
    warmup_steps: int
    timeout_s: float

    def workload(self, scheduler: str = "default") -> Workload:
        return validate_workload(Workload(**self.wl, scheduler=scheduler))

    def check(self) -> None:
        if self.repeats < 1:
            raise BadInput(f"invalid --repeats {self.repeats}: at least 1 timed call per process")
        if self.warmup_steps < 1:
            raise BadInput(f"invalid --warmup-steps {self.warmup_steps}: must be >= 1")


def measure_options(steps: int, size: int, repeats: int = 1,
                    warmup_steps: int | None = 2) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--model, the workload and the per-process measurement knobs; the command gets `m` (MeasureArgs)."""

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--model", "model_dir", required=True, type=click.Path(),
                      help="A diffusers StableDiffusionPipeline directory (`sdagent model create`).")
        @click.option("--steps", type=int, default=steps, show_default=True, help="Denoising steps per image.")
        @click.option("--height", type=int, default=size, show_default=True, help="Image height (multiple of 8).")
        @click.option("--width", type=int, default=size, show_default=True, help="Image width (multiple of 8).")
        @click.option("--guidance", type=FiniteFloat(at_least=0), default=7.5, show_default=True,
                      help="Guidance scale; above 1 the UNet runs at batch 2.")
        @click.option("--prompt", default=DEMO_PROMPT, show_default=True)
        @click.option("--repeats", type=int, default=repeats, show_default=True,
                      help="Timed calls per process (the process's median counts).")
        @click.option("--warmup-steps", type=int, default=warmup_steps, show_default=warmup_steps is not None,
                      help="Steps of the one untimed warm-up call in each process"
                           + (" (default: --steps: a whole first image)." if warmup_steps is None else "."))
        @click.option("--timeout", "timeout_s", type=FiniteFloat(above=0), default=1800, show_default=True,
                      help="Seconds before one measurement process is killed and counted as failed.")
        @functools.wraps(func)
        def wrapper(*args: Any, model_dir: str, steps: int, height: int, width: int, guidance: float,
                    prompt: str, repeats: int, warmup_steps: int, timeout_s: float, **kw: Any) -> Any:
            kw["m"] = MeasureArgs(model_dir, dict(prompt=prompt, steps=steps, height=height, width=width,
                                                   guidance=guidance), repeats,
                                  steps if warmup_steps is None else warmup_steps, timeout_s)
            return func(*args, **kw)

        return wrapper

    return deco
