"""``delete --ids ID... | --source NAME``: delete stored rows, or count them with ``--dry-run``.

The deleting is the store's (`delete(ids)`, `delete_source(name)`); this module opens the
table, reads ids typed on the command line as the table keeps them (digits are a number in
a table of bigint ids, as a CSV's are at ingest), and prints the counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
from typing import Any

from ..limits import DEFAULT_MODEL, MODEL_DIMENSIONS
from .console import Note, printable
from .settings import check_table
from .status import EXIT_OK, UsageError
from .targets import database, open_supabase, postgres_store, select_target

__all__ = ["run"]

_INTEGER = re.compile(r"[+-]?\d+")


def run(args: argparse.Namespace) -> int:
    check_table(args)
    if args.source is not None and (not args.source.strip() or "\x00" in args.source):
        raise UsageError("--source must be a name (not empty)")
    target = select_target(args)
    with contextlib.ExitStack() as stack:
        if target.kind == "supabase":
            store = open_supabase(target, args.table, None)
        else:
            dsn = stack.enter_context(database(target, Note(True), must_exist=True))
            store = _open_postgres(dsn, args.table, target.describe())
            stack.callback(store.close)
        if args.source is not None:
            count = len(store.source_ids(args.source)) if args.dry_run else store.delete_source(args.source)
            what = f"source {printable(repr(args.source))}"
            asked = None
        else:
            ids = _ids(args.ids, store.table_id_type)
            count = len(store.fetch_hashes(ids)) if args.dry_run else store.delete(ids)
            what = f"{len(ids):,} id(s) given"
            asked = len(ids)
    if args.json:
        print(json.dumps({"dry_run": bool(args.dry_run), "table": args.table, "source": args.source, "ids": asked,
                          "would_delete" if args.dry_run else "deleted": count}))
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {count:,} row(s) of table {args.table} ({what}){'; nothing deleted' if args.dry_run else ''}")
    return EXIT_OK


def _open_postgres(dsn: str, table: str, where: str) -> Any:
    """The store at the table's own vector size, its id type read (`preflight`)."""
    with postgres_store(dsn, table, MODEL_DIMENSIONS[DEFAULT_MODEL]) as probe:
        state = probe.table_state()
    if not state.exists:
        raise UsageError(f"table {table!r} does not exist in {where}: nothing to delete")
    store = postgres_store(dsn, table, int(state.dimensions or MODEL_DIMENSIONS[DEFAULT_MODEL]))
    store.preflight(None)  # learns the id column's type
    return store


def _ids(given: list[str], id_type: str | None) -> list[Any]:
    """The ids as the table keeps them, each once: digits are a number in a table of bigint ids."""
    ids: list[Any] = []
    for text in given:
        value: Any = int(text) if id_type == "bigint" and _INTEGER.fullmatch(text.strip()) else text
        if value not in ids:
            ids.append(value)
    return ids
