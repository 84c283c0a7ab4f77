"""Render a plan as an EnvironmentFile, a shell snippet or a systemd drop-in (Jinja2 templates)."""

from __future__ import annotations

import re
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
    return check_rendered(fmt, len(env), tpl.render(
        plan=plan,
        instance=inst,
        env=env,
        launcher=plan.launcher(instance),
        version=__version__,
        decisions=plan.decisions,
    ))


#: Every line a format may hold: a comment, a blank, or one of its statements. An assignment is one line:
#: a value with a newline (a plan-file path, an injected setting) would start a statement of its own.
LINE_GRAMMAR: dict[str, re.Pattern[str]] = {
    "env": re.compile(r'#[^\n]*|[A-Z_][A-Z0-9_]*="(?:[^"\\\x00-\x1f]|\\.)*"'),
    "shell": re.compile(r"#[^\n]*|(?:export )?[A-Z_][A-Z0-9_]*=(?:'[^'\x00-\x1f]*'|[A-Za-z0-9_@%+=:,./-]*)"
                        r"|export [A-Z_][A-Z0-9_]*"),
    "systemd": re.compile(r'#[^\n]*|\[Service\]|Environment="(?:[^"\\\x00-\x1f]|\\.)*"'
                          r"|CPUAffinity=[0-9 ]+|NUMAPolicy=bind|NUMAMask=[0-9]+(?: [0-9]+)*"),
}
ASSIGNMENT = {"env": re.compile(r"[A-Z_]"), "shell": re.compile(r"export [A-Z_][A-Z0-9_]*="),
              "systemd": re.compile(r"Environment=")}


def check_rendered(fmt: str, assignments: int, text: str) -> str:
    """The rendered text, checked line by line against its format's grammar (LINE_GRAMMAR), with exactly
    one assignment line per environment variable; BadInput naming the first line that is not."""
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if line.strip() and not LINE_GRAMMAR[fmt].fullmatch(line):
            raise BadInput(f"refusing to render the plan as {fmt}: line {n} would be {line[:120]!r}, not a "
                           f"{fmt} statement (a control character in a setting or the plan file's path?)")
    got = sum(1 for line in lines if ASSIGNMENT[fmt].match(line))
    if got != assignments:
        raise BadInput(f"refusing to render the plan as {fmt}: {got} assignment lines for {assignments} variables")
    return text
