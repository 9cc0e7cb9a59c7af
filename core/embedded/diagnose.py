"""What went wrong with the embedded server, from its log and the error a client saw.

When the disk under the data folder fills up, PostgreSQL refuses to extend a table
("could not extend file ...: No space left on device", SQLSTATE 53100) or, when it
cannot write WAL, PANICs and restarts; clients then read "FATAL: the database
system is in recovery mode" (57P03), which says nothing about the disk (issue #15).
`diagnose` turns the error and the log written since the server was started into
one line that says so and where the log is. Pure functions over text, so the
classification is tested without filling a disk; `EmbeddedPostgres.problem` reads
the log for them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["DISK_FULL", "RECOVERING", "LOG_TAIL_BYTES", "classify", "diagnose", "disk_full_message", "read_log"]

DISK_FULL = "disk_full"
RECOVERING = "recovering"
LOG_TAIL_BYTES = 256 * 1024
"""How much of the end of the server's log is read: a full disk logs a few lines per refused
statement, so the cause is in the last few hundred KB even after thousands of refusals."""

_DISK_FULL_MARKS = ("no space left on device", "could not extend file", "disk full", "sqlstate 53100")
_RECOVERY_MARKS = (
    "the database system is in recovery mode",
    "terminating connection because of crash of another server process",
    "the database system is starting up",
    "server process was terminated",
)


def classify(text: str, sqlstate: str | None = None) -> str | None:
    """`DISK_FULL`, `RECOVERING` or None for an error's text (and SQLSTATE, when known).

    A server log that mentions a full disk makes the verdict `DISK_FULL` even when the
    client only saw the restart that followed it: classify the client's error and
    the log together (`diagnose`).
    """
    lowered = text.lower()
    if sqlstate == "53100" or any(mark in lowered for mark in _DISK_FULL_MARKS):
        return DISK_FULL
    if sqlstate in ("57P01", "57P02", "57P03") or any(mark in lowered for mark in _RECOVERY_MARKS):
        return RECOVERING
    return None


def read_log(log: Path, start: int = 0) -> str:
    """The log written from byte `start` on (at most its last `LOG_TAIL_BYTES`); '' when unreadable."""
    try:
        size = log.stat().st_size
        with open(log, "rb") as handle:
            handle.seek(max(start, size - LOG_TAIL_BYTES, 0))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def disk_full_message(folder: Path) -> str:
    """One line: the disk under `folder` is full, how much is free, and where the log is."""
    try:
        free = shutil.disk_usage(folder).free
        room = f" ({free / 2**20:,.0f} MB free)"
    except OSError:
        room = ""
    return (
        f"the disk holding the embedded database {folder} is full{room}: free some space (or use "
        f"--data-dir on a disk with room) and run again; the server's log: {folder / 'log'}"
    )


def diagnose(folder: Path, error: str = "", sqlstate: str | None = None, log_text: str | None = None) -> str | None:
    """One line saying what really happened to the embedded server in `folder`, or None.

    Args:
        folder: The data folder (its ``log`` is the server's log).
        error: What the client saw (an exception's text), if anything.
        sqlstate: Its SQLSTATE, if known.
        log_text: The server's log since it started (default: read from ``folder/log``).
    """
    log_text = read_log(Path(folder) / "log") if log_text is None else log_text
    verdict = classify(error, sqlstate)
    logged = classify(log_text)
    if DISK_FULL in (verdict, logged):
        return disk_full_message(Path(folder))
    if verdict == RECOVERING or (logged == RECOVERING and "PANIC" in log_text):
        return (
            f"the embedded database in {folder} crashed and is recovering: run again in a moment; "
            f"the server's log: {Path(folder) / 'log'}"
        )
    return None


def log_size(folder: Path) -> int:
    """The server log's size now: where `diagnose` starts reading for this run."""
    try:
        return os.stat(Path(folder) / "log").st_size
    except OSError:
        return 0
