"""``search QUERY``: the stored sections nearest to a query, best first.

The query is embedded with the model the table's sections were stored with
(unless --model says otherwise) and at the table's vector size; the search
itself is the store's (`search`, with ``filter=`` and ``hybrid=``), one path
per store. Each result prints as its similarity, id and title, and below them
the start of its content (escaped, as every printed input is).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any

from ..errors import CoreError
from ..limits import DEFAULT_MODEL, MODEL_DIMENSIONS
from .console import Note, printable
from .settings import check_table, dimensions, make_service, model, require_key
from .status import EXIT_OK, UsageError
from .targets import database, embedded_problem, open_supabase, postgres_store, select_target

__all__ = ["FIELDS", "preview", "run"]

FIELDS = ("id", "section_id", "title", "content", "metadata", "similarity")
"""What ``--json`` prints of each result (``section_id``: the same as ``id``, as before ids were text)."""
INDENT = 8
PREVIEW_WIDTH = 80 - INDENT
"""The content preview fits 80 columns under its result line."""


def run(args: argparse.Namespace) -> int:
    check_table(args)
    if not args.query.strip():
        raise UsageError("the query is empty")
    metadata_filter = _metadata_filter(args.filter)
    note = Note(args.json)
    target = select_target(args)
    require_key()
    with contextlib.ExitStack() as stack:
        if target.kind == "supabase":
            service = make_service(model(args), dimensions=args.dimensions)
            stack.callback(service.close)
            store = open_supabase(target, args.table, args.dimensions, match_function=args.match_function)
        else:
            dsn = stack.enter_context(database(target, Note(True), must_exist=True))
            store, service = _open_postgres(args, target, dsn, note, stack)
        note.release()
        try:
            hits = store.search(args.query, k=args.k, threshold=args.threshold, filter=metadata_filter,
                                hybrid=args.hybrid, embedding_service=service)
        except CoreError:
            raise  # StoreError, or the query could not be embedded: main() says so in one line
        except Exception as exc:  # PostgREST's errors (Supabase) have no common base
            raise UsageError(f"search failed: {exc}") from None
    if args.json:
        print(json.dumps([{name: hit.get(name) for name in FIELDS} for hit in hits], default=str))
        return EXIT_OK
    if not hits:
        print("no sections found" + (f" with similarity >= {args.threshold}" if args.threshold is not None else "")
              + (" matching the filter" if metadata_filter else ""))
    for hit in hits:
        print(printable(f"{float(hit['similarity']):.4f}  {hit['section_id']!s:>8}  {hit.get('title') or ''}"))
        if hit.get("content"):
            print(printable(" " * INDENT + preview(str(hit["content"]))))
    return EXIT_OK


def preview(content: str, width: int = PREVIEW_WIDTH) -> str:
    """The start of `content` on one line (whitespace runs as one space), cut to `width` with "…"."""
    text = " ".join(content.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _metadata_filter(pairs: list[tuple[str, Any]]) -> dict[str, Any] | None:
    """The ``--filter`` pairs as one metadata dict (None: no filter)."""
    wanted: dict[str, Any] = {}
    for key, value in pairs:
        if key in wanted and wanted[key] != value:
            raise UsageError(f"--filter names {key!r} twice: a section's metadata holds one value per key")
        wanted[key] = value
    return wanted or None


def _open_postgres(
    args: argparse.Namespace, target: Any, dsn: str, note: Note, stack: contextlib.ExitStack
) -> tuple[Any, Any]:
    """The store at the table's own vector size, and a service embedding queries to match it."""
    with postgres_store(dsn, args.table, args.dimensions or dimensions_or_default(args)) as probe:
        state = probe.table_state()
    if not state.exists:
        raise UsageError(f"table {args.table!r} does not exist in {target.describe()}: ingest sections first")
    size = state.dimensions or dimensions(args)
    if args.dimensions is not None and args.dimensions != size:
        raise UsageError(f"table {args.table!r} holds {size}-dimensional vectors, not {args.dimensions}")
    query_model = args.model or state.model or DEFAULT_MODEL
    if state.model and query_model != state.model:
        note(f"note: the table's sections were embedded with {state.model}, the query with {query_model}")
    options: dict[str, Any] = {}
    if args.dimensions is not None or MODEL_DIMENSIONS.get(query_model) != size:
        options["dimensions"] = size
    service = make_service(query_model, **options)
    stack.callback(service.close)
    # pgvector built for AVX-512 on a CPU without it: `vector` distances crash, `halfvec` ones work.
    store = postgres_store(dsn, args.table, size, halfvec_scan=bool(embedded_problem(target)),
                           match_function=args.match_function)
    stack.callback(store.close)
    return store, service


def dimensions_or_default(args: argparse.Namespace) -> int:
    """A vector size to open the table with before reading its own (any valid size does)."""
    try:
        return dimensions(args)
    except UsageError:
        return MODEL_DIMENSIONS[DEFAULT_MODEL]
