"""``search QUERY``: the stored sections nearest to a query, best first.

The query is embedded with the model the table's sections were stored with
(unless --model says otherwise) and at the table's vector size; the search
itself is the store's (`search`), one path per store.
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

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    check_table(args)
    if not args.query.strip():
        raise UsageError("the query is empty")
    note = Note(args.json)
    target = select_target(args)
    require_key()
    with contextlib.ExitStack() as stack:
        if target.kind == "supabase":
            service = make_service(model(args), dimensions=args.dimensions)
            stack.callback(service.close)
            store = open_supabase(target, args.table, args.dimensions)
        else:
            dsn = stack.enter_context(database(target, Note(True), must_exist=True))
            store, service = _open_postgres(args, target, dsn, note, stack)
        note.release()
        try:
            hits = store.search(args.query, k=args.k, threshold=args.threshold, embedding_service=service)
        except CoreError:
            raise  # StoreError, or the query could not be embedded: main() says so in one line
        except Exception as exc:  # PostgREST's errors (Supabase) have no common base
            raise UsageError(f"search failed: {exc}") from None
    if args.json:
        print(json.dumps(hits))
        return EXIT_OK
    if not hits:
        print("no sections found" + (f" with similarity >= {args.threshold}" if args.threshold is not None else ""))
    for hit in hits:
        print(printable(f"{float(hit['similarity']):.4f}  {hit['section_id']:>8}  {hit.get('title') or ''}"))
    return EXIT_OK


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
    store = postgres_store(dsn, args.table, size, halfvec_scan=bool(embedded_problem(target)))
    stack.callback(store.close)
    return store, service


def dimensions_or_default(args: argparse.Namespace) -> int:
    """A vector size to open the table with before reading its own (any valid size does)."""
    try:
        return dimensions(args)
    except UsageError:
        return MODEL_DIMENSIONS[DEFAULT_MODEL]
