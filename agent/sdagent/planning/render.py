"""Render a plan as an EnvironmentFile, a shell snippet or a systemd drop-in (Jinja2 templates)."""

from __future__ import annotations

import shlex

import jinja2

from sdagent import __version__
from sdagent.errors import BadInput
from sdagent.planning.plan import Plan
from sdagent.resources import data_dir

FORMATS = {
    "env": "tuned.env.j2",  # systemd EnvironmentFile / docker --env-file style KEY="VALUE"
    "shell": "tuned.sh.j2",  # `. tuned.sh` in a POSIX shell
    "systemd": "tuned.conf.j2",  # a unit drop-in: Environment= plus CPUAffinity=/NUMAPolicy=
}


def _systemd_quote(value: str) -> str:
    """Double-quoted for systemd's EnvironmentFile parser (backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unit_quote(value: str) -> str:
    """Quoted for a unit file's Environment=, where % starts a specifier."""
    return _systemd_quote(value).replace("%", "%%")


def _oneline(value: object) -> str:
    """For comments: a value can never start a line of its own (control characters become spaces)."""
    return "".join(c if c.isprintable() else " " for c in str(value))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["shquote"] = shlex.quote
    env.filters["sdquote"] = _systemd_quote
    env.filters["unitquote"] = _unit_quote
    env.filters["oneline"] = _oneline
    return env


def render(plan: Plan, fmt: str = "env", instance: int = 0) -> str:
    """The plan's environment for one instance, in one of FORMATS."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    inst = plan.instance(instance)
    env = plan.env(instance)
    if plan.plan_file:
        env["SDAGENT_PLAN_FILE"] = plan.plan_file
    tpl = _environment().get_template(FORMATS[fmt])
    return tpl.render(
        plan=plan,
        instance=inst,
        env=env,
        launcher=plan.launcher(instance),
        version=__version__,
        decisions=plan.decisions,
    )
