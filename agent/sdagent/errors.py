"""Exit codes (one table) and the exceptions that carry them.

Every user-facing failure is an :class:`SdagentError` with a one-line message;
the CLI prints ``sdagent: error: <message>`` and exits with its code, never a
traceback. :data:`EXIT_CODES` is the single source of what each code means:
`sdagent --help`, `sdagent verify --help`, the verdict in every report and the
README's table are made from it (a test checks the README against it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True)
class ExitCode:
    code: int
    name: str
    verdict: str  # the word reports and the fleet report show
    meaning: str  # one line, for --help and the README


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(0, "OK", "pass", "success; verify passed"),
    ExitCode(1, "TARGET_MISSED", "target missed", "a latency, throughput or quality target missed (verify)"),
    ExitCode(2, "USAGE", "bad input", "usage error or bad input (one line names the bad value)"),
    ExitCode(3, "TUNING_NOT_IN_EFFECT", "tuning not in effect",
             "tuning not in effect: the process runs other than planned (verify)"),
    ExitCode(4, "NO_TARGET", "no target", "no target matches this host (verify)"),
    ExitCode(5, "INCONCLUSIVE", "inconclusive",
             "inconclusive: too noisy, too few runs, or the host lock timed out"),
    ExitCode(6, "SLOWER_THAN_STOCK", "slower than stock", "the plan in effect is slower than stock on this host"),
    ExitCode(7, "ERROR", "error", "error: the run did not complete (crash, killed worker, full disk)"),
    ExitCode(126, "NOT_EXECUTABLE", "not executable",
             "exec: COMMAND exists but cannot be executed (as a POSIX shell says)"),
    ExitCode(127, "COMMAND_NOT_FOUND", "command not found",
             "exec: COMMAND is not found on the plan's PATH (as a POSIX shell says)"),
    ExitCode(130, "INTERRUPTED", "interrupted", "interrupted by SIGINT (Ctrl-C); no verdict"),
    ExitCode(143, "TERMINATED", "terminated", "terminated by SIGTERM (e.g. a unit's timeout); no verdict"),
)

#: The codes as an enum (Exit.USAGE == 2), made from the table.
Exit = IntEnum("Exit", {e.name: e.code for e in EXIT_CODES})  # type: ignore[misc]

_BY_CODE = {e.code: e for e in EXIT_CODES}


def verdict(code: int) -> str:
    """The report word for an exit code ("error" for a code the table does not know)."""
    e = _BY_CODE.get(int(code))
    return e.verdict if e else "error"


def exit_codes_help() -> str:
    """The exit-code section of `--help` (Click keeps \\b paragraphs as written)."""
    return "\b\nExit codes:\n" + "\n".join(f"  {e.code:<3}  {e.meaning}" for e in EXIT_CODES) + "\n"


def exit_codes_markdown() -> str:
    """The README's table."""
    rows = ["| code | meaning |", "|---|---|"] + [f"| {e.code} | {e.meaning} |" for e in EXIT_CODES]
    return "\n".join(rows) + "\n"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Class: the message's first line`, for a crash reported as a reason rather than a traceback."""
    first = (str(exc).strip().splitlines() or [""])[0][:limit]
    return f"{exc.__class__.__name__}: {first}"


class SdagentError(Exception):
    """A failure with a one-line message and an exit code."""

    exit_code: int = Exit.USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = int(exit_code)


class BadInput(SdagentError):
    """The user gave a value we cannot use (exit 2)."""

    exit_code = Exit.USAGE


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so every `finally` (a worker's process group, a lock,
    a report's error record) runs before the process exits 143."""
