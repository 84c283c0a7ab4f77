"""`sdagent verify`: prove, inside the serving process's own conditions, that this host meets its target."""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import click

from sdagent.atomicio import check_parent
from sdagent.cli import cli
from sdagent.cli.options import (PlanArgs, model_and_workload, plan_options, progress_bar, resolve_plan,
                                 workload_options)
from sdagent import __version__
from sdagent.errors import Exit, SdagentError, Terminated, exit_codes_help, one_line
from sdagent.host.process import process_state
from sdagent.measuring.bench import check_counts
from sdagent.verifying.checks import VerifyResult, failed_run
from sdagent.verifying.report import verify_table, write_json_report, write_prometheus
from sdagent.verifying.session import LocalMeasurer, VerifyRequest, verify as run_verify
from sdagent.verifying.targets import load_targets

VERIFY_EPILOG = exit_codes_help() + """\b
Checks, and the exit code each category gives when it fails:
  tuning    3  planned allocator and libiomp5 mapped (/proc/self/maps, realpaths),
               one OpenMP runtime per family, torch threads = plan, CPU affinity
               = plan (the process's, and a child's started after torch's first
               op), backend and precision as seen inside the UNet's call = plan;
               all against the plan in force, after its recorded substitutions.
               plan_honoured: a tuned plan's setting that fell back here (a
               library missing with no host copy, numactl absent) fails (3); a
               tuned plan's library replaced by the host's own copy is a warning
               (its figures were measured with the other file); a derived plan
               passes
  target    4  an entry of --targets matches this host and workload
  latency   1  median <= p50_s; p90 <= p90_s (nearest rank; below 10 runs the
               slowest run, which bounds the p90)
  error     7  the run did not complete, or the image is not finite (NaN/Inf)
  quality   1  image not blank; bf16 plans: mean |bf16 - fp32| pixel
               difference (same seed, [0,1] scale) <= bf16_max_diff
  stock     6  the plan is slower than stock beyond noise (its fastest run slower
               than stock's slowest): from the plan file's tune results, and with
               --against-stock (or stock_check: true) from a fresh stock process
  validity  5  at least min_runs timed runs; (max-min)/median <= max_spread
               (inconclusive is never a pass)
\b
When several fail, the most fundamental wins: 2 > 7 > 3 > 4 > 1 > 6 > 5 > 0.
Once the tuning is not in effect (3) or no target matches (4), the costly
steps (benchmark, fp32 reference, stock run) are skipped: they cannot change
the answer.
"""


@cli.command("verify", epilog=VERIFY_EPILOG)
@workload_options
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
@click.option("--report", type=click.Path(dir_okay=False, readable=False), default=None,
              help="Write the JSON report to this file (atomically).")
@click.option("--prometheus", type=click.Path(dir_okay=False, readable=False), default=None,
              help="Write a node_exporter textfile-collector file (*.prom), atomically.")
@click.pass_context
def verify(ctx: click.Context, model_dir: str, wl: dict[str, Any], plan_args: PlanArgs, targets_file: str,
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
    sdagent_latency_seconds{quantile=...}, ...). Both files are replaced
    atomically on every outcome: bad input (2), the host lock not obtained (5),
    a crash (7), SIGINT (130) or SIGTERM (143) leave an `error` record with the
    exit code, reason and time, so a fleet never reads a stale pass.
    """
    started = time.time()
    # Everything that can be wrong with the outputs, before any long work.
    for path in (report, prometheus):
        if path:
            check_parent(path)

    def record(code: int, reason: str) -> None:
        res = failed_run(code, reason, instance=instance, model=model_dir, started=started, version=__version__)
        if as_json:  # a fleet reads stdout: the record, then the one-line error on stderr
            click.echo(json.dumps(res.to_dict(), indent=2))
        _write(res, report, prometheus)

    try:
        targets = load_targets(targets_file)
        check_counts(runs if runs is not None else 1, warmup)
        md, w = model_and_workload(model_dir, wl)
        plan = resolve_plan(ctx, plan_args)
        plan.instance(instance)  # BadInput when out of range
        req = VerifyRequest(md, w, plan, instance, targets, ctx.obj.topology(), runs, warmup, against_stock)
        measurer = LocalMeasurer(md, w, environ=os.environ, plan=plan, artifacts_dir=artifacts,
                                 bar=progress_bar("verify"))
        with ctx.obj.bench_lock("verify") as held:
            measurer.lock_wait_s = held.waited_s  # another benchmark's time is not this process's start-up
            res = run_verify(req, measurer, process_state(), started=started, lock_wait_s=held.waited_s)
        _write(res, report, prometheus)
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
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
    else:
        click.echo(verify_table(res), nl=False)
    return int(res.exit_code)


def _write(res: VerifyResult, report: str | None, prometheus: str | None) -> None:
    """Both files replaced atomically; if writing fails (a full disk), the old ones are removed rather
    than left to be read as today's verdict."""
    try:
        if report:
            write_json_report(report, res)
        if prometheus:
            write_prometheus(prometheus, res)
    except OSError as exc:
        for path in (report, prometheus):
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        raise SdagentError(f"cannot write the verify report ({exc.strerror}); the previous report was removed",
                           Exit.ERROR) from None
