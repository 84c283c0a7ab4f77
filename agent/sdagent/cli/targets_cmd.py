"""`sdagent targets check`: validate a targets file with the same loader `verify` reads it with.

Why a command of its own: a fleet writes the targets at provision time and reads
them at verify time, maybe days later. Checking them with the installed agent
when they are written (the Ansible role pipes them in on stdin before it writes
the file) turns "bad input" at verify time into a failed provisioning that names
the bad key.
"""

from __future__ import annotations

import json
import os
import tempfile

import click

from sdagent.cli import cli
from sdagent.errors import BadInput
from sdagent.verifying.targets import Target, load_targets

#: How standard input is named in messages (FILE "-").
STDIN_NAME = "<stdin>"


@cli.group()
def targets() -> None:
    """Latency targets files (the format `sdagent verify --targets` reads)."""


@targets.command("check")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the parsed entries as JSON.")
def check(file: str, as_json: bool) -> None:
    """Check FILE ("-" for standard input) as `sdagent verify` would read it.

    \b
    Exit 0 and a summary when every entry is valid; exit 2 with one line
    naming the file, the entry and the key otherwise (e.g. min_runs below 5).
    """
    parsed = _load_stdin() if file == "-" else load_targets(file)
    if as_json:
        click.echo(json.dumps({"file": STDIN_NAME if file == "-" else file,
                               "targets": [t.to_dict() for t in parsed]}, indent=2))
        return
    click.echo(f"{STDIN_NAME if file == '-' else file}: {len(parsed)} valid target(s): "
               + ", ".join(t.name for t in parsed))


def _load_stdin() -> tuple[Target, ...]:
    """Standard input through the file loader itself (a private temporary copy), so both read alike.

    Errors: BadInput (exit 2) with the temporary path replaced by "<stdin>".
    """
    data = click.get_binary_stream("stdin").read()
    with tempfile.TemporaryDirectory(prefix="sdagent-targets-") as tmp:
        path = os.path.join(tmp, "targets.yml")
        with open(path, "wb") as fh:  # bytes as given: the loader's own decoding error names them
            fh.write(data)
        try:
            return load_targets(path)
        except BadInput as exc:
            raise BadInput(str(exc).replace(path, STDIN_NAME), exc.exit_code) from None
