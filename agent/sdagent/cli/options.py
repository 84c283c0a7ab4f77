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

from sdagent import atomicio
from sdagent.cli.context import AgentContext
from sdagent.errors import BadInput
from sdagent.measuring.bench import Progress
from sdagent.pipeline.family import guidance_help, steps_help
from sdagent.pipeline.modeldir import ModelDir, check_model_dir
from sdagent.pipeline.workload import (DEMO_PROMPT, SCHEDULERS, Workload, check_fits_in_memory, validate_workload,
                                      with_model_defaults, workload_warnings)
from sdagent.planning.layout import PlanRequest
from sdagent.planning.plan import Plan
from sdagent.planning.settings import BACKENDS, KNOBS, PRECISIONS, VAES, load_overrides_file, parse_assignments


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


#: `@pass_agent` hands a command the group's AgentContext (topology, facts, plan, lock), made once.
pass_agent = click.make_pass_decorator(AgentContext)


class OutputFile(click.ParamType):
    """A file the command writes: refused at parse time (exit 2, one line naming it) when empty, a
    directory, or in a directory that cannot take it (missing, read-only, unwritable, full) — so no
    work is done for a result that could not be kept. `checked=False` defers the directory check to
    the command (verify records bad input in its report first)."""

    name = "file"

    def __init__(self, checked: bool = True) -> None:
        self.checked = checked

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        v = str(value)
        if not v.strip():
            self.fail("empty path (an unset variable?): give a file name", param, ctx)
        if any(not c.isprintable() for c in v):
            self.fail(f"{v!r} holds a control character", param, ctx)
        if self.checked:
            try:
                atomicio.check_output(v)
            except BadInput as exc:
                self.fail(str(exc), param, ctx)
        return v


def spill_on_write_failure(result: Any, write: Callable[[], Any]) -> None:
    """Write an output; when the write fails (exit 7), the result goes to stdout as JSON first, so
    nothing measured is lost, then the one-line error."""
    try:
        write()
    except atomicio.OutputError:
        import json

        click.echo(json.dumps(result, indent=2, default=str))
        raise


def command_line() -> str:
    """How this process was invoked, for records beside figures."""
    return "sdagent " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0] else "sdagent"


def warn(plan: Plan) -> None:
    for w in plan.warnings:
        click.echo(f"sdagent: warning: {w}", err=True)


def progress_bar(label: str) -> Callable[[int], Any]:
    """A measuring.bench.ProgressBar over `total` UNet steps: a Click bar on a terminal's stderr; into
    a pipe, a log or the journal (where Click draws only the bare label), a line
    "<label>: <done>/<total> UNet steps" at each tenth of the way, at most 10 lines."""

    @contextlib.contextmanager
    def bar(total: int) -> Iterator[Progress]:
        if not sys.stderr.isatty():
            done = 0

            def step(n: int) -> None:
                nonlocal done
                before, done = done, done + n
                if 10 * done // max(1, total) > 10 * before // max(1, total):
                    click.echo(f"{label}: {done}/{total} UNet steps", err=True)

            yield step
            return
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


def resolve_plan(agent: AgentContext, plan_args: PlanArgs | None = None,
                 extra: dict[str, Any] | None = None) -> Plan:
    """The plan for this invocation: the plan in force, a new layout if asked, then overrides."""
    a = plan_args or PlanArgs()
    plan = agent.plan(a.request(), {**a.overrides(), **(extra or {})})
    warn(plan)
    return plan


# ---------------------------------------------------------------------------
# How the pipeline runs
# ---------------------------------------------------------------------------


def backend_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--backend/--precision/--compile/--vae/--artifacts: 'auto' or unset means the plan's value."""
    for decorator in reversed((
        click.option("--backend", type=click.Choice(["auto", *BACKENDS]), default="auto",
                     show_default=True, help="auto = the plan's (ipex where IPEX imports and matches torch). openvino: OpenVINO GenAI "
                          "on an export built once (the `openvino` extra's venv)."),
        click.option("--precision", type=click.Choice(["auto", *PRECISIONS]), default="auto",
                     show_default=True,
                     help="auto = the plan's (bf16 where the CPU has AMX-BF16 or AVX512-BF16)."),
        click.option("--compile/--no-compile", "compile_", default=None,
                     help="Run the UNet, the VAE decoder and the text encoder as AOTInductor packages "
                          "(torch.export, inductor with freezing; native backend). Default: the plan's."),
        click.option("--vae", type=click.Choice(["auto", *VAES]), default="auto", show_default=True,
                     help="auto = the plan's. " + KNOBS["vae"].help[0].upper() + KNOBS["vae"].help[1:] + "."),
        click.option("--artifacts", type=click.Path(file_okay=False), default=None,
                     help="Where the compiled packages are kept (default ~/.cache/sdagent/artifacts); a "
                          "missing one is built once (minutes for SD-1.5; `sdagent model compile` does it ahead)."),
    )):
        func = decorator(func)
    return func


def run_overrides(backend: str, precision: str, compile_: bool | None,
                  channels_last: bool | None = None, vae: str = "auto") -> dict[str, Any]:
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
    if vae != "auto":
        o["vae"] = vae
    return o


def check_vae(plan: Plan, model_dir: Any) -> None:
    """A plan with vae tiny needs the model's tiny autoencoder, fitting it: one line before any load."""
    if plan.vae == "tiny":
        from sdagent.pipeline.vae import check_tiny

        check_tiny(model_dir)


def check_backend_usable(backend: str) -> None:
    """Backend openvino needs OpenVINO GenAI in this Python: refused in one line before any work."""
    if backend == "openvino":
        from sdagent.pipeline.ov_backend import openvino_status, openvino_unusable_message

        st = openvino_status()
        if not st.usable:
            raise BadInput(openvino_unusable_message(st))


# ---------------------------------------------------------------------------
# The model and the workload: one decorator, one rule for the default size
# ---------------------------------------------------------------------------

#: The one rule for a missing --height/--width, in every command: the model's own resolution
#: (ModelDir.default_size: the UNet's sample size x the VAE's scale; 512 for SD-1.5, 64 for the tiny preset).
SIZE_RULE = ("default: the model's own resolution (512 for SD-1.5 and the Turbo models, 768 for SD 2.1, "
             "1024 for SDXL, 64 for the tiny presets)")

#: torch.Generator.manual_seed takes a signed or unsigned 64-bit seed; the agent keeps to the non-negative
#: int64 range, which every backend (and OpenVINO's peer) reads the same way.
SEED_RANGE = click.IntRange(min=0, max=2**63 - 1)


@dataclass(frozen=True)
class ModelArgs:
    """--model and the workload's fields as given (sizes None = the model's own: SIZE_RULE)."""

    model_dir: str
    wl: dict[str, Any]  # None = not given: the model family's default (steps, guidance) or its size
    default_steps: int = 20  # the command's --steps when the family has none of its own

    def checked(self, scheduler: str | None = None) -> tuple[ModelDir, Workload]:
        """The checked ModelDir (passed on from here, never re-checked) and the validated workload."""
        wl = dict(self.wl) if scheduler is None else {**self.wl, "scheduler": scheduler}
        return model_and_workload(self.model_dir, wl, self.default_steps)


def model_options(*, steps: int = 20, prompt_required: bool = False, scheduler: bool = True,
                  negative_prompt: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--model and the workload (run, bench, verify, model compile, tune, ladder): the command gets `model`
    (ModelArgs). Sizes follow SIZE_RULE in every command."""

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        opts = [
            click.option("--model", "model_dir", required=True, type=click.Path(),
                         help="A diffusers pipeline directory (`sdagent model create`, or a real SD 1.x, "
                              "SD 2.x, SD-Turbo, SDXL, SDXL-Turbo or LCM): its model_index.json decides the "
                              "family, the loader and the defaults."),
            click.option("--prompt", required=prompt_required, default=None if prompt_required else DEMO_PROMPT,
                         show_default=not prompt_required,
                         help="Text prompt (UTF-8; the text encoder reads its first 77 tokens)."),
        ]
        if negative_prompt:
            opts.append(click.option("--negative-prompt", default=None, help="What the image should not show."))
        opts += [
            click.option("--steps", type=int, default=None,
                         help=f"Denoising (UNet) steps (default: {steps}, or the distilled model family's own: "
                              f"{steps_help()}; more than a distilled model's range warns)."),
            click.option("--height", type=int, default=None, help=f"Image height, a multiple of 8 ({SIZE_RULE})."),
            click.option("--width", type=int, default=None, help=f"Image width, a multiple of 8 ({SIZE_RULE})."),
            click.option("--guidance", type=FiniteFloat(at_least=0), default=None,
                         help="Classifier-free guidance scale; above 1 the UNet runs at batch 2 (default: the "
                              f"model family's: {guidance_help()}). Given to a Turbo or LCM model, it warns."),
            click.option("--seed", type=SEED_RANGE, default=0, show_default=True,
                         help="Seed of the initial noise (0..2^63-1); every run uses it, so every run does "
                              "the same work."),
        ]
        if scheduler:
            opts.append(click.option("--scheduler", default="default", show_default=True,
                                     help=f"One of: {', '.join(SCHEDULERS)}. default = the model's own (PNDM "
                                          "for SD-1.5); dpm = DPM-Solver++."))

        @functools.wraps(func)
        def wrapper(*args: Any, model_dir: str, **kw: Any) -> Any:
            wl = {k: kw.pop(k) for k in ("prompt", "negative_prompt", "steps", "height", "width", "guidance",
                                         "seed", "scheduler") if k in kw}
            kw["model"] = ModelArgs(model_dir, wl, steps)
            return func(*args, **kw)

        for o in reversed(opts):
            wrapper = o(wrapper)
        return wrapper

    return deco


def model_and_workload(model_dir: str, wl: dict[str, Any] | Workload,
                       default_steps: int = 20) -> tuple[ModelDir, Workload]:
    """The checked model directory and the validated workload (missing sizes = the model's own, missing
    steps and guidance the family's: pipeline.workload.with_model_defaults), refused up front when one
    image of it would not fit in this host's memory; a guidance or steps the family ignores warns."""
    if isinstance(wl, Workload):
        validate_workload(wl)
    md = check_model_dir(model_dir)
    w = wl if isinstance(wl, Workload) else with_model_defaults(wl, md.default_size, md.family, default_steps)
    validate_workload(w)
    given = set() if isinstance(wl, Workload) else {k for k, v in wl.items() if v is not None}
    for note in workload_warnings(md.family, w, given):
        click.echo(f"sdagent: warning: {note}", err=True)
    check_fits_in_memory(md, w)
    note_prompt_cut(md, w)
    return md, w


#: CLIP's text encoder reads 77 tokens (its max_position_embeddings; SD-1.5's tokenizer_config model_max_length).
CLIP_MAX_TOKENS = 77


def prompt_tokens(md: ModelDir, text: str) -> tuple[int, int] | None:
    """(tokens with BOS/EOS, the tokenizer's limit) by the model's own tokenizer, or None when a prompt this
    short cannot exceed it (a token is at least one UTF-8 byte) or the tokenizer does not load here."""
    if len(text.encode("utf-8")) + 2 <= CLIP_MAX_TOKENS:
        return None
    try:
        from sdagent.pipeline.stack import quiet_libraries

        quiet_libraries()
        from transformers import CLIPTokenizer

        tok = CLIPTokenizer.from_pretrained(str(md.path / "tokenizer"), local_files_only=True)
        return len(tok(text).input_ids), int(min(tok.model_max_length, 10**6))
    except Exception:  # noqa: BLE001 - the pipeline's own load names a broken tokenizer
        return None


def note_prompt_cut(md: ModelDir, w: Workload) -> None:
    """Say once, before the work, that the text encoder will read only the first tokens of a long prompt
    (diffusers cuts the rest silently when its logging is quiet)."""
    for name, text in (("prompt", w.prompt), ("negative prompt", w.negative_prompt)):
        n = prompt_tokens(md, text) if text else None
        if n is not None and n[0] > n[1]:
            click.echo(f"sdagent: warning: the {name} is {n[0]} tokens; the text encoder reads the first {n[1]} "
                       f"and the rest is cut", err=True)


@dataclass(frozen=True)
class MeasureArgs:
    """--model, the workload and the per-process measurement knobs (tune and ladder)."""

    model: ModelArgs
    repeats: int
    warmup_steps: int | None  # None: a whole first image (--steps)
    timeout_s: float

    @property
    def model_dir(self) -> str:
        return self.model.model_dir

    @property
    def wl(self) -> dict[str, Any]:
        return self.model.wl

    def check(self) -> None:
        if self.repeats < 1:
            raise BadInput(f"invalid --repeats {self.repeats}: at least 1 timed call per process")
        if self.warmup_steps is not None and self.warmup_steps < 1:
            raise BadInput(f"invalid --warmup-steps {self.warmup_steps}: must be >= 1")

    def warmup_for(self, w: Workload) -> int:
        return w.steps if self.warmup_steps is None else self.warmup_steps


def measure_options(steps: int, repeats: int = 1,
                    warmup_steps: int | None = 2) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """model_options plus the per-process measurement knobs; the command gets `m` (MeasureArgs)."""

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        @model_options(steps=steps, scheduler=False)
        @click.option("--repeats", type=int, default=repeats, show_default=True,
                      help="Timed calls per process (the process's median counts).")
        @click.option("--warmup-steps", type=int, default=warmup_steps, show_default=warmup_steps is not None,
                      help="Steps of the one untimed warm-up call in each process"
                           + (" (default: --steps: a whole first image)." if warmup_steps is None else "."))
        @click.option("--timeout", "timeout_s", type=FiniteFloat(above=0), default=1800, show_default=True,
                      help="Seconds before one measurement process is killed and counted as failed.")
        @functools.wraps(func)
        def wrapper(*args: Any, model: ModelArgs, repeats: int, warmup_steps: int | None, timeout_s: float,
                    **kw: Any) -> Any:
            kw["m"] = MeasureArgs(model, repeats, warmup_steps, timeout_s)
            return func(*args, **kw)

        return wrapper

    return deco
