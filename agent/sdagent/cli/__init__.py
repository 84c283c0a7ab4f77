"""The `sdagent` command line: a Click group; each subcommand lives in its own module."""

from __future__ import annotations

import signal
import sys

import click

from sdagent import __version__
from sdagent.cli import last_words
from sdagent.cli.context import AgentContext
from sdagent.cli.options import FiniteFloat
from sdagent.envvars import PLAN_ENV
from sdagent.errors import Exit, SdagentError, Terminated, exit_codes_help


def _input_path(what: str):
    """A path option read by the agent (and, for --plan-file, rendered into units): refused when empty or
    holding a control character (a newline would start a line of its own in a systemd drop-in)."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise click.BadParameter(f"empty {what} path (an unset variable?)", ctx, param)
        if any(not c.isprintable() for c in value):
            raise click.BadParameter(f"{value!r} holds a control character", ctx, param)
        return value

    return check


@click.group(
    context_settings={"auto_envvar_prefix": "SDAGENT", "help_option_names": ["-h", "--help"]},
    epilog=exit_codes_help(),
)
@click.option("--sysroot", type=click.Path(file_okay=False), default=None, callback=_input_path("sysroot"),
              help="Read /proc and /sys under this directory instead of the host's (fixture trees).")
@click.option("--topology-file", type=click.Path(dir_okay=False), default=None,
              callback=_input_path("topology file"), help="Use this topology JSON (from `sdagent topology --json`) instead of detecting one.")
@click.option("--plan-file", type=click.Path(dir_okay=False), default=None, callback=_input_path("plan file"),
              help="Use this plan (from `sdagent plan -o` or `sdagent tune -o`) instead of deriving one.")
@click.option("--lock-timeout", type=FiniteFloat(at_least=0), default=1800.0, show_default=True, metavar="SECONDS",
              help="How long bench, verify, tune and ladder wait for the host's benchmark lock (another "
                   "measurement running) before giving up with exit 5.")
@click.version_option(__version__, prog_name="sdagent")
@click.pass_context
def cli(ctx: click.Context, sysroot: str | None, topology_file: str | None, plan_file: str | None,
        lock_timeout: float) -> None:
    """Tune, run, benchmark and verify Stable Diffusion inference on this CPU host.

    \b
    The usual path:
      sdagent topology              what this host is
      sdagent plan                  the tuning derived from it, each choice with its reason
      sdagent tune --model DIR      measure candidate plans here, keep the fastest
      sdagent env -o tuned.env      render the plan for systemd or a shell
      sdagent exec -- CMD ...       run CMD under the plan (preloads, threads, pinning)
      sdagent model create DIR      write a random-weights pipeline of a preset
                                    (`sdagent model create --help` lists them)
      sdagent run / bench / verify  generate, measure, prove

    Every option can also be set as an environment variable: SDAGENT_<OPTION>
    for group options (e.g. SDAGENT_PLAN_FILE) and SDAGENT_<COMMAND>_<OPTION>
    for a subcommand's (SDAGENT_ENV_FORMAT=shell; SDAGENT_MODEL_CREATE_PRESET);
    `plan --json` alone is SDAGENT_PLAN_AS_JSON: SDAGENT_PLAN_JSON is the plan
    that `exec` hands its command.
    """
    ctx.obj = AgentContext(sysroot=sysroot, topology_file=topology_file, plan_file=plan_file,
                           lock_timeout=lock_timeout)


def _register() -> None:
    # Each subcommand module does `from sdagent.cli import cli`; importing them here,
    # after `cli` exists, registers them without an import cycle.
    from sdagent.cli import (bench_cmd, hostcmds, ladder_cmd, model_cmd,  # noqa: F401
                             run_cmd, targets_cmd, tune_cmd, verify_cmd)


_register()


def name_envvars(group: click.Group, prefix: str = "SDAGENT", reserved: frozenset[str] = frozenset()) -> None:
    """Give every option the variable the help promises: SDAGENT_<COMMAND>_<OPTION>, from its long flag.

    Click's auto_envvar_prefix names a variable after the parameter's Python name (`--format` stored
    as `fmt` would read SDAGENT_ENV_FMT, `--json` as `as_json` SDAGENT_PLAN_AS_JSON); this names it
    after the flag a user types. A name the agent itself uses for another purpose (`reserved`: exec's
    SDAGENT_PLAN_JSON hand-off) keeps Click's own name, so the two can never be confused.
    """
    for name, cmd in group.commands.items():
        at = f"{prefix}_{name.upper().replace('-', '_')}"
        if isinstance(cmd, click.Group):
            name_envvars(cmd, at, reserved)
            continue
        for param in cmd.params:
            longs = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
            if isinstance(param, click.Option) and param.envvar is None and longs:
                var = f"{at}_{longs[0][2:].upper().replace('-', '_')}"
                if var not in reserved:
                    param.envvar = var


name_envvars(cli, reserved=frozenset({PLAN_ENV}))


def _terminate(signum: int, frame: object) -> None:
    last_words.handled()
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with documented exit codes, no tracebacks.

    SIGTERM (a unit's timeout, `kill`) is handled like SIGINT: unwinding runs every cleanup; while the
    main thread is stuck in one native call, cli.last_words ends the process within seconds (143).
    """
    signal.signal(signal.SIGTERM, _terminate)
    last_words.install()
    try:
        rv = cli.main(args=argv, prog_name="sdagent", standalone_mode=False)
    except SdagentError as exc:
        click.echo(f"sdagent: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # Click's form of KeyboardInterrupt
        click.echo("sdagent: interrupted", err=True)
        sys.exit(Exit.INTERRUPTED)
    except click.UsageError as exc:
        # one line naming the bad value, like every other bad input (Click's own form takes four)
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        msg = " ".join(exc.format_message().split())  # Click lists a Choice's values one per line
        click.echo(f"sdagent: error: {msg}{where}", err=True)
        if exc.ctx is not None and exc.ctx.command.name == "verify":
            from sdagent.cli.verify_cmd import record_usage_error

            record_usage_error(list(sys.argv[1:] if argv is None else argv), msg)
        sys.exit(Exit.USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(Exit.USAGE if exc.exit_code == 2 else exc.exit_code)
    except KeyboardInterrupt:
        click.echo("sdagent: interrupted", err=True)
        sys.exit(Exit.INTERRUPTED)
    except Terminated:
        click.echo("sdagent: terminated", err=True)
        sys.exit(Exit.TERMINATED)
    sys.exit(rv if isinstance(rv, int) else 0)
