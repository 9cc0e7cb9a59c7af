"""``ingest FILE --sync``: the options, the source's name, when deleting is forbidden, and what a sync says.

The sync itself is the library's (`store.sync_sections`): it stores, skips or fails every
section of FILE, then deletes the rows of FILE's source whose ids FILE no longer has, unless
something forbids it (an unreadable record, a file not read to its end, the guard). This
module decides the source's name, tells the library when the file was not read whole, and
turns the sync's report into summary lines, JSON fields and the exit status.

The default source name is FILE as given on the command line, normalised (``./docs.jsonl``
and ``docs.jsonl`` are one source), not its basename and not its absolute path: two files of
one name in two folders (``en/docs.jsonl``, ``de/docs.jsonl``) stored into one table would be
one source under their basename, and syncing either would delete the other's rows (the very
accident a sync must not have); an absolute path would make a new source of the same file
whenever the project folder moves or runs on another machine. A name that changes only ever
leaves old rows behind (the old source is not touched), never deletes the wrong ones; ``--source``
names a source stably.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .console import printable, prog
from .sources import Source
from .status import UsageError

__all__ = ["PlanOnly", "check", "failed_hint", "incomplete", "json_fields", "refused", "summary_lines"]

PREVIEW = 5
"""Ids to delete a dry run prints (the JSON has the library's preview, up to 10)."""


def check(args: argparse.Namespace, source: Source) -> str | None:
    """The source's name for ``--sync`` (None without it); options that do not go together refused first.

    Raises:
        UsageError: --source / --max-delete without --sync; --sync with --no-skip, --batch-api or
            standard input without --source; --no-content / --metadata-fields with --batch-api.
    """
    if args.batch_api and (args.sync or args.no_content or args.metadata_fields is not None):
        raise UsageError("--sync, --no-content and --metadata-fields do not go with --batch-api")
    if not args.sync:
        if args.source is not None:
            raise UsageError("--source names the source of a sync: it goes with --sync")
        if args.max_delete != "10%":
            raise UsageError("--max-delete goes with --sync")
        return None
    if args.no_skip:
        raise UsageError("--no-skip does not go with --sync (a sync re-embeds changed sections only)")
    if args.source is not None:
        if not args.source.strip() or "\x00" in args.source:
            raise UsageError("--source must be a name (not empty)")
        return str(args.source)
    if source.stdin:
        raise UsageError("--sync with standard input needs --source NAME (the name its rows are kept under)")
    return os.path.normpath(args.file)


def incomplete(records: int, unreadable: int, read_all: bool, source: Source) -> str | None:
    """Why nothing may be deleted (the library's ``check_complete``): unreadable records, or a file not read whole."""
    if unreadable:
        return f"{unreadable:,} of the {records:,} records of {source.label} could not be read (their ids are unknown)"
    if not read_all:
        return f"{source.label} was not read to its end"
    return None


def refused(result: dict[str, Any]) -> bool:
    """The guard (or an unreadable record) kept a sync from deleting rows it would have deleted."""
    return bool(result.get("delete_refused")) and int(result.get("would_delete") or 0) > 0


def json_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The sync's fields of ``--json``: source, deleted, would_delete, delete_refused, delete_preview."""
    return {
        "source": result.get("source"),
        "deleted": int(result.get("deleted") or 0),
        "would_delete": int(result.get("would_delete") or 0),
        "delete_refused": result.get("delete_refused"),
        "delete_preview": list(result.get("delete_preview") or []),
    }


def summary_lines(result: dict[str, Any], *, dry_run: bool = False) -> list[str]:
    """What the sync deleted (or would delete), or why it deleted nothing; then how to allow it."""
    name = printable(repr(result.get("source")))
    would = int(result.get("would_delete") or 0)
    preview = ", ".join(printable(str(i)) for i in (result.get("delete_preview") or [])[:PREVIEW])
    first = f" (first: {preview}{', ...' if would > PREVIEW else ''})" if would else ""
    if result.get("delete_refused") and would:
        return [f"source {name}: {would:,} row(s) no longer in it{first}",
                f"  {printable(str(result['delete_refused']))}"]
    if result.get("delete_refused"):
        return [f"source {name}: nothing to delete; {printable(str(result['delete_refused']))}"]
    if dry_run:
        return [f"source {name}: would delete {would:,} row(s) no longer in it{first}"]
    return [f"source {name}: deleted {int(result.get('deleted') or 0):,} row(s) no longer in it{first}"]


def failed_hint(failed_file: str) -> str:
    """How to store the failed sections of a sync: the failed file alone, never synced (it holds only them)."""
    return (f"fix them, then run: {prog()} ingest {failed_file} (without --sync: it holds only the failed "
            "sections), or fix them in FILE and sync it again")


class PlanOnly:
    """Stands for the embeddings service in ``--dry-run --sync``: its model and vector size, never a request."""

    def __init__(self, model: str, dimensions: int | None) -> None:
        self.model = model
        self.dimensions = dimensions

    def embed(self, *_args: Any, **_options: Any) -> Any:
        raise RuntimeError("a dry run embeds nothing")  # the library never embeds on a dry run

    def close(self) -> None:
        """Nothing to let go of."""
