"""`sdagent verify`: prove, inside the serving process's own conditions, that this host meets its target."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import time
from typing import Any, Callable

import click

from sdagent import __version__, atomicio
from sdagent.cli import cli, last_words
from sdagent.cli.context import AgentContext
from sdagent.cli.options import (ModelArgs, OutputFile, PlanArgs, check_vae, model_options, pass_agent,
                                 plan_options, progress_bar, resolve_plan)
from sdagent.errors import BadInput, Exit, SdagentError, Terminated, exit_codes_help, one_line
from sdagent.host.process import process_state
from sdagent.measuring.bench import check_counts
from sdagent.tuning.rule import Rule
from sdagent.verifying import checks as C
from sdagent.verifying.report import in_progress_record, verify_table, write_in_progress, write_json_report, \
    write_prometheus
from sdagent.verifying.session import LocalMeasurer, VerifyRequest, verify as run_verify
from sdagent.verifying.targets import load_targets, select_target

#: Where each category's rule lives: the help below is made from these functions' own docstrings (and
#: PRIORITY, CATEGORY_EXIT and tune's Rule), so it cannot describe a rule the code no longer applies.
RULE_SOURCES: tuple[tuple[str, tuple[Callable[..., Any], ...]], ...] = (
    ("tuning", (C.process_checks, C.check_honoured, C.check_allocator, C.check_openmp, C.check_openmp_runtimes,
                C.check_child_affinity, C.check_observed, C.check_artifacts)),
    ("target", (select_target,)),
    ("latency", (C.latency_checks,)),
    ("throughput", (C.throughput_check,)),
    ("error", (C.image_checks, C.failed_run)),
    ("quality", (C.image_checks, C.check_bf16_diff, C.check_fidelity)),
    ("stock", (C.check_stock,)),
    ("validity", (C.latency_checks,)),
)


def _doc(fn: Callable[..., Any]) -> str:
    """A function's docstring, its paragraphs joined into one (Click rewraps the epilog)."""
    return " ".join((inspect.getdoc(fn) or "").split())


def rules_help() -> str:
    """The decision rules for `verify --help`: each category's exit code and its rule functions' docstrings."""
    lines = ["Checks, the exit code each category gives when it fails, and the rule (from the code's own "
             "docstrings):"]
    for category, fns in RULE_SOURCES:
        text = " ".join(_doc(f) for f in fns)
        if category == "stock":
            r = Rule()
            text += (f" Tune's rule there: a sequential probability ratio test on ln(candidate/best), alpha "
                     f"{r.alpha:g}, beta {r.beta:g}, between 'equal' and a {100 * r.design_gain:g}% change.")
        if category == "validity":  # the validity rule is latency_checks' "Valid: ..." sentence
            text = text[text.index("Valid:"):] + " Inconclusive is never a pass."
        lines.append(f"\n{category} ({int(C.CATEGORY_EXIT[category])}): {text}")
    order = " > ".join(str(int(c)) for c in C.PRIORITY) + " > 0"
    lines.append(f"\nWhen several fail, the most fundamental wins: {order}. Once the tuning is not in effect "
                 f"({int(Exit.TUNING_NOT_IN_EFFECT)}) or no target matches ({int(Exit.NO_TARGET)}), the costly "
                 "steps (benchmark, fp32 reference, stock run) are skipped: they cannot change the answer.")
    return "\n".join(lines) + "\n"


VERIFY_EPILOG = exit_codes_help() + "\n" + rules_help()


@cli.command("verify", epilog=VERIFY_EPILOG)
@model_options()
@plan_options
@click.option("--targets", "targets_file", required=True, type=click.Path(),
              help="YAML targets file (see examples/targets.yml); the first matching entry applies.")
@click.option("--runs", type=int, default=None,
              help="Timed runs (default: the matching target's min_runs; fewer makes the result inconclusive).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed runs first.")
@click.option("--instance", type=int, default=0, envvar="SDAGENT_INSTANCE", show_default=True,
              help="Which instance of the plan this process is (`sdagent exec --instance` sets SDAGENT_INSTANCE).")
@click.option("--against-stock", is_flag=True,
              help="Also run the workload in a fresh stock process and fail (6) if the plan is slower beyond noise.")
@click.option("--artifacts", type=click.Path(file_okay=False), default=None,
              help="Where the compiled packages are kept (default ~/.cache/sdagent/artifacts).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
@click.option("--report", type=OutputFile(checked=False), default=None,
              help="Write the JSON report to this file (atomically).")
@click.option("--prometheus", type=OutputFile(checked=False), default=None,
              help="Write a node_exporter textfile-collector file (*.prom), atomically.")
@pass_agent
def verify(agent: AgentContext, model: ModelArgs, plan_args: PlanArgs, targets_file: str,
           runs: int | None, warmup: int, instance: int, against_stock: bool, artifacts: str | None,
           as_json: bool, report: str | None, prometheus: str | None) -> int:
    """Check that the tuning is in effect in this process, that the output is sane,
    and that latency meets the target entry matching this host.

    \b
    Run it the way the service runs, so that it sees what the service gets:
      sdagent exec -- sdagent verify --model DIR --targets targets.yml
    Without `exec` (or the rendered env) the preloads are missing: exit 3.

    \b
    Outputs: a table (or --json) on stdout, --report JSON, --prometheus
    textfile (sdagent_verify_exit_code, sdagent_check_ok{check=...},
    sdagent_latency_seconds{quantile=...}, ...). Before any work both files
    are replaced with an "incomplete" record (no verdict, the start time and
    pid), and at the end with the outcome, also on bad input (2), the host lock
    not obtained (5), a crash (7), SIGINT (130) or SIGTERM (143): a verify
    killed outright (SIGKILL, the OOM killer) leaves "incomplete", and a fleet
    never reads a stale pass.
    """
    started = time.time()
    try:
        check_report_paths(report, prometheus)
    except BadInput as exc:  # record the refusal in whichever file can take it, then one line, exit 2
        res = C.failed_run(Exit.USAGE, str(exc), instance=instance, model=model.model_dir, started=started,
                           version=__version__)
        if not (report and prometheus and os.path.realpath(report) == os.path.realpath(prometheus)):
            for path, write in ((report, write_json_report), (prometheus, write_prometheus)):
                with contextlib.suppress(SdagentError, OSError):
                    if path:
                        atomicio.check_output(path)
                        write(path, res)
        raise

    def record(code: int, reason: str) -> None:
        res = C.failed_run(code, reason, instance=instance, model=model.model_dir, started=started,
                           version=__version__)
        if as_json:  # a fleet reads stdout: the record, then the one-line error on stderr
            click.echo(json.dumps(res.to_dict(), indent=2))
        _write(res, report, prometheus)

    _write_in_progress(report, prometheus, instance, model.model_dir, started)
    # SIGTERM while the main thread is stuck in one long native call: the watchdog's last words
    last_words.register(lambda: record(Exit.TERMINATED, "terminated by SIGTERM during a native call"))
    try:
        res = _run(agent, model, plan_args, targets_file, runs, warmup, instance, against_stock, artifacts,
                   started)
    except SdagentError as exc:  # bad input (2), the lock not obtained (5): recorded, then one line
        record(exc.exit_code, str(exc))
        raise
    except KeyboardInterrupt:
        record(Exit.INTERRUPTED, "interrupted by SIGINT before a verdict")
        raise
    except Terminated:
        record(Exit.TERMINATED, "terminated by SIGTERM before a verdict (a unit's timeout?)")
        raise
    except Exception as exc:  # noqa: BLE001 - a crash is recorded as "no verdict" (7), never a stale pass
        why = one_line(exc)
        record(Exit.ERROR, why)
        raise SdagentError(f"verify did not complete: {why}", Exit.ERROR) from None
    finally:
        last_words.clear()
    if as_json:  # stdout first: a report that cannot be written loses nothing measured
        click.echo(json.dumps(res.to_dict(), indent=2))
    _write(res, report, prometheus, spill=not as_json)
    if not as_json:
        click.echo(verify_table(res), nl=False)
    return int(res.exit_code)


def _raw_option(args: list[str], flag: str) -> str | None:
    """The value of `flag` in a raw argv (`--flag V` or `--flag=V`; the last one wins, as Click's)."""
    found = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            found = args[i + 1]
        elif a.startswith(flag + "="):
            found = a[len(flag) + 1:]
    return found


def record_usage_error(args: list[str], reason: str) -> None:
    """A verify that Click refused before it ran (an unknown option, a value of the wrong type) still
    replaces its --report and --prometheus with a bad-input record (exit 2): a typo in a unit's arguments
    must not leave the last run's pass in place. Best effort: the paths are read from the raw argv."""
    report, prometheus = _raw_option(args, "--report"), _raw_option(args, "--prometheus")
    if report and prometheus and os.path.realpath(report) == os.path.realpath(prometheus):
        return
    try:
        instance = int(_raw_option(args, "--instance") or os.environ.get("SDAGENT_INSTANCE") or 0)
    except ValueError:
        instance = 0
    res = C.failed_run(Exit.USAGE, reason, instance=instance, model=_raw_option(args, "--model"),
                       started=time.time(), version=__version__)
    for path, write in ((report, write_json_report), (prometheus, write_prometheus)):
        with contextlib.suppress(SdagentError, OSError):
            if path:
                atomicio.check_output(path)
                write(path, res)


def check_report_paths(report: str | None, prometheus: str | None) -> None:
    """Both outputs writable, and not one file for both (the textfile would overwrite the JSON)."""
    if report and prometheus and os.path.realpath(report) == os.path.realpath(prometheus):
        raise BadInput(f"--report and --prometheus name the same file {report}: give each its own")
    if report:
        atomicio.check_output(report, "--report")
    if prometheus:
        atomicio.check_output(prometheus, "--prometheus")


def _run(agent: AgentContext, model: ModelArgs, plan_args: PlanArgs, targets_file: str, runs: int | None,
         warmup: int, instance: int, against_stock: bool, artifacts: str | None, started: float) -> C.VerifyResult:
    """Every input checked (targets, counts, model, workload, plan, instance), then the measured verify."""
    targets = load_targets(targets_file)
    check_counts(runs if runs is not None else 1, warmup)
    md, w = model.checked()
    plan = resolve_plan(agent, plan_args)
    plan.instance(instance)  # BadInput when out of range
    check_vae(plan, md.path)  # vae tiny: the model's tiny autoencoder, fitting it
    req = VerifyRequest(md, w, plan, instance, targets, agent.topology(), runs, warmup, against_stock)
    measurer = LocalMeasurer(md, w, environ=os.environ, plan=plan, artifacts_dir=artifacts,
                             bar=progress_bar("verify"))
    with agent.bench_lock("verify") as held:
        measurer.lock_wait_s = held.waited_s  # another benchmark's time is not this process's start-up
        return run_verify(req, measurer, process_state(), started=started, lock_wait_s=held.waited_s)


def _write_in_progress(report: str | None, prometheus: str | None, instance: int, model: str,
                       started: float) -> None:
    rec = in_progress_record(instance=instance, model=model, started=started, pid=os.getpid(),
                             version=__version__)
    try:
        write_in_progress(report, prometheus, rec)
    except atomicio.OutputError as exc:
        raise SdagentError(f"{exc}; no verify was run", Exit.ERROR) from None


def _write(res: C.VerifyResult, report: str | None, prometheus: str | None, spill: bool = False) -> None:
    """Both files replaced atomically; if writing fails (a full disk), the old ones are removed rather
    than left to be read as today's verdict, and (`spill`) the result goes to stdout as JSON."""
    try:
        if report:
            write_json_report(report, res)
        if prometheus:
            write_prometheus(prometheus, res)
    except atomicio.OutputError as exc:
        for path in (report, prometheus):
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if spill:
            click.echo(json.dumps(res.to_dict(), indent=2))
        raise SdagentError(f"{exc}; the previous report was removed", Exit.ERROR) from None
