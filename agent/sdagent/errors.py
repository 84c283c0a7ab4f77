"""Exit codes and the exceptions that carry them.

Every user-facing failure is an :class:`SdagentError` with a one-line message;
the CLI prints ``sdagent: error: <message>`` and exits with its code, never a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """Documented exit codes (``sdagent --help``, README)."""

    OK = 0
    TARGET_MISSED = 1  # a latency or quality target missed
    USAGE = 2  # usage error or bad input
    TUNING_NOT_IN_EFFECT = 3
    NO_TARGET = 4  # no target entry matches this host
    INCONCLUSIVE = 5  # too noisy to decide
    SLOWER_THAN_STOCK = 6  # the plan in effect is slower than the stock environment


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
