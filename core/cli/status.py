"""Exit statuses, the errors that end a command with one line, and how a stopped run is reported.

The bottom of `core.cli`: it imports nothing from the package, so every other
module can use it without a circle.
"""

from __future__ import annotations

from .. import errors

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "RUN_STOPPING",
    "CliError",
    "UsageError",
    "stopped_message",
]

EXIT_OK = 0
"""Every section stored or skipped (or: the command did what it was asked)."""
EXIT_FAILED = 1
"""Some sections failed (each with its reason), or a dry run found sections that would."""
EXIT_USAGE = 2
"""A problem to fix before anything can work: options, file, key, endpoint, database."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGTERM / SIGHUP: 128 + the signal's number, as a shell reports it)."""

RUN_STOPPING = (errors.StoreError, errors.ConfigurationError, errors.MissingDependencyError, errors.EndpointError)
"""Errors that stop a whole ingest and that the user must fix (exit 2, no failed-sections file)."""


class CliError(Exception):
    """Ends the command with one line on stderr and `exit_code`."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(CliError):
    """A problem the user can fix (option, file, key, database): exit status 2."""

    exit_code = EXIT_USAGE


def stopped_message(exc: BaseException) -> str:
    """`exc`'s message, and what stays stored (from the ingest's ``report`` on `exc`, when it has one)."""
    report = getattr(exc, "report", None)
    if not isinstance(report, dict):
        return f"{exc}; sections stored before it stay stored (re-run to continue: they are skipped)"
    stored = int(report.get("success_count", 0))
    if not stored:
        return f"{exc}; nothing was stored"
    return f"{exc}; the {stored:,} sections stored before it stay stored (re-run to continue: they are skipped)"
