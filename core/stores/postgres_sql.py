"""The administration SQL of a section table, free of I/O: what the table-state and schema checks
ask, how much memory an HNSW build gets, and `TableState`, what a table holds.

`postgres_admin_async` (and `postgres_admin`, generated from it) run these statements on a
connection; `PostgresStore` / `AsyncPostgresStore` turn a database error into a `StoreError`
that names the table and never the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..limits import REBUILD_INDEX_MIN_SHARE
from .schema import count_function, exact_function, hybrid_function, id_type_of, index_name, metadata_index_name, render_schema

__all__ = [
    "INDEX_MEMORY_CAP",
    "INDEX_MEMORY_FLOOR",
    "TableState",
    "REBUILD_MODES",
    "index_memory",
    "index_strategy",
    "schema_current_query",
    "table_state_query",
]

INDEX_MEMORY_CAP = 1 << 30
"""Most `maintenance_work_mem` asked for an HNSW build (a measured 20,000 x 1536-dim build: 67 s
with the 64 MB default, 24 s with 1 GB); smaller tables ask for less."""
INDEX_MEMORY_FLOOR = 64 << 20
"""Least asked for (PostgreSQL's default); a server set higher keeps its own setting."""

@dataclass(frozen=True)
class TableState:
    """What a table holds, read before a load or a search."""

    exists: bool
    empty: bool
    index_exists: bool
    dimensions: int | None
    """Vector size of the `embedding` column; None when there is no table."""
    model: str | None
    """Model of one stored row; None when the table is empty."""
    id_type: str | None = None
    """`ID_TYPES` name of the `section_id` column; None when there is no table."""
    rows_estimate: int | None = None
    """PostgreSQL's own estimate of the row count (`pg_class.reltuples`, kept by autovacuum and
    ANALYZE; free to read, unlike count(*)); None when unknown (never analysed) or no table."""


def table_state_query(table: str) -> tuple[str, dict[str, Any]]:
    """Does `table` exist, has it its index, what is its `embedding` column's typmod."""
    return (
        "select to_regclass(%(t)s) is not null, to_regclass(%(i)s) is not null,"
        " (select a.atttypmod from pg_attribute a where a.attrelid = to_regclass(%(t)s)"
        "   and a.attname = 'embedding' and not a.attisdropped),"
        " (select format_type(a.atttypid, a.atttypmod) from pg_attribute a where a.attrelid = to_regclass(%(t)s)"
        "   and a.attname = 'section_id' and not a.attisdropped),"
        " (select c.reltuples::bigint from pg_class c where c.oid = to_regclass(%(t)s))",
        {"t": table, "i": index_name(table)},
    )


def table_state(row: tuple[Any, ...], stored: tuple[Any, ...] | None) -> TableState:
    """`TableState` from `table_state_query`'s row and one stored row's ``(model,)`` (None: empty)."""
    exists, index_exists, typmod, id_column, reltuples = row
    dimensions = int(typmod) if typmod is not None and int(typmod) > 0 else None
    estimate = int(reltuples) if reltuples is not None and reltuples >= 0 else None
    return TableState(
        bool(exists), stored is None, bool(index_exists), dimensions, stored[0] if stored else None, id_type_of(id_column),
        0 if stored is None and exists else estimate,
    )


def _function_body(table: str, dimensions: int, match_function: str) -> str:
    """The search function's body exactly as the rendered schema defines it."""
    sql = render_schema(table=table, dimensions=dimensions, match_function=match_function, with_index=False)
    match = re.search(rf"create or replace function {re.escape(match_function)}\(.*?\bas \$\$(.*?)\$\$;", sql, re.DOTALL)
    assert match is not None, "schema.sql: search function not found"
    return match.group(1)


def schema_current_query(*, table: str, dimensions: int, match_function: str) -> tuple[str, dict[str, Any]]:
    """One row: (table with that vector size and every column, RLS on, indexes there, search function
    with that body and five arguments, none of its older forms).

    Checked first so a store does not run DDL on every connection: DDL takes an
    exclusive lock on the table (``alter table ... enable row level security``)
    and would queue behind, and block, running queries.
    """
    sql = """
        select
          (select a.atttypmod = %(dimensions)s
             from pg_attribute a
            where a.attrelid = to_regclass(%(table)s) and a.attname = 'embedding'
              and not a.attisdropped and a.atttypid = to_regtype('vector'))
            and (select count(*) = 4 from pg_attribute a
                  where a.attrelid = to_regclass(%(table)s) and a.attname in ('content', 'metadata', 'source', 'fts')
                    and not a.attisdropped)
            and exists (select 1 from pg_proc p where p.proname = %(hybrid)s and p.pronargs = 8
                         and pg_function_is_visible(p.oid))
            and to_regclass(%(metadata_index)s) is not null
            and to_regprocedure('core_sync_lock(text,text,text,integer)') is not null
            and to_regprocedure(%(exact)s) is not null
            and to_regprocedure(%(count)s) is not null,
          (select c.relrowsecurity from pg_class c where c.oid = to_regclass(%(table)s)),
          to_regclass(%(index)s) is not null,
          exists (select 1 from pg_proc p
                   where p.proname = %(function)s and p.pronargs = 5
                     and pg_function_is_visible(p.oid) and p.prosrc = %(body)s)
            and not exists (select 1 from pg_proc p
                   where p.proname = %(function)s and p.pronargs in (3, 4) and pg_function_is_visible(p.oid))
        """
    return sql, {
        "dimensions": dimensions,
        "table": table,
        "index": index_name(table),
        "metadata_index": metadata_index_name(table),
        "function": match_function,
        "hybrid": hybrid_function(match_function),
        "exact": f"{exact_function(match_function)}(vector,integer,jsonb)",
        "count": f"{count_function(match_function)}(jsonb,integer)",
        "body": _function_body(table, dimensions, match_function),
    }


def index_memory(rows: int, dimensions: int, cap: int = INDEX_MEMORY_CAP) -> int:
    """Bytes of `maintenance_work_mem` that keep an HNSW build of `rows` vectors in memory (at most `cap`).

    Each graph element holds its vector plus neighbour lists (m = 16: up to 32
    on layer 0) and bookkeeping.
    """
    return min(cap, max(INDEX_MEMORY_FLOOR, int(rows * (dimensions * 4 + 1024) * 1.5)))


REBUILD_MODES = ("auto", "always", "never")
"""``--rebuild-index``: by the sizes; drop and rebuild for every load; insert into the index as it is."""


def index_strategy(mode: str, *, table_rows: int, incoming: int | None, index_exists: bool) -> tuple[bool, str]:
    """Whether a load of `incoming` rows (None: unknown) into a table of `table_rows` drops its HNSW
    index first (and builds it again after), and why, in words for the progress line.

    An empty table always loads without its index (one build after is much faster); an existing
    index is dropped when the load is large against the table (`REBUILD_INDEX_MIN_SHARE`), or always
    / never as asked. Searches still work meanwhile (an exact scan: slower, never wrong).
    """
    if mode not in REBUILD_MODES:
        raise ValueError(f"rebuild mode must be one of {', '.join(REBUILD_MODES)}, not {mode!r}")
    if not index_exists:
        return False, "no HNSW index yet: it is built after the load"
    if table_rows == 0:
        return True, "empty table: the HNSW index is dropped and built once after the load"
    if mode == "never":
        return False, f"--rebuild-index never: {incoming or 'the'} rows go into the HNSW index one by one"
    if mode == "always":
        return True, f"--rebuild-index always: the HNSW index of {table_rows:,} rows is dropped and built again after the load"
    if incoming is not None and incoming >= REBUILD_INDEX_MIN_SHARE * table_rows:
        return True, (
            f"{incoming:,} rows into {table_rows:,}: the HNSW index is dropped and built again after the load "
            "(faster than inserting into it; searches scan the table meanwhile)"
        )
    return False, f"{incoming if incoming is not None else 'an unknown number of'} rows into {table_rows:,}: inserted into the HNSW index"
