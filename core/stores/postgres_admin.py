"""What a bulk load asks of a section table beyond reads and writes, over one psycopg connection.

* `read_table_state`: does the table exist, is it empty, has it its HNSW index,
  what vector size and model does it hold;
* `schema_is_current`: are table, search function, RLS and index all in place
  (checked before running any DDL: see its doc);
* `build_index`: the HNSW index, built once after a load with enough
  `maintenance_work_mem` for pgvector to keep its graph in memory;
* `drop_index`.

Every function raises whatever psycopg raises; `PostgresStore` turns that into a
`StoreError` that names the table and never the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .schema import apply_schema_sql, index_name, indexable, render_index, render_schema

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "INDEX_MEMORY_CAP",
    "INDEX_MEMORY_FLOOR",
    "TableState",
    "build_index",
    "drop_index",
    "read_table_state",
    "schema_is_current",
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


def read_table_state(conn: psycopg.Connection[Any], table: str) -> TableState:
    """The state of `table` (reads only: creates nothing)."""
    row = conn.execute(
        "select to_regclass(%(t)s) is not null, to_regclass(%(i)s) is not null,"
        " (select a.atttypmod from pg_attribute a where a.attrelid = to_regclass(%(t)s)"
        "   and a.attname = 'embedding' and not a.attisdropped)",
        {"t": table, "i": index_name(table)},
    ).fetchone()
    assert row is not None
    exists, index_exists, typmod = row
    stored = conn.execute(f"select model from {table} limit 1").fetchone() if exists else None
    dimensions = int(typmod) if typmod is not None and int(typmod) > 0 else None
    return TableState(bool(exists), stored is None, bool(index_exists), dimensions, stored[0] if stored else None)


def _function_body(table: str, dimensions: int, match_function: str) -> str:
    """The search function's body exactly as the rendered schema defines it."""
    sql = render_schema(table=table, dimensions=dimensions, match_function=match_function, with_index=False)
    match = re.search(r"create or replace function .*?\bas \$\$(.*?)\$\$;", sql, re.DOTALL)
    assert match is not None, "schema.sql: search function not found"
    return match.group(1)


def schema_is_current(conn: psycopg.Connection[Any], *, table: str, dimensions: int, match_function: str) -> bool:
    """True if table (same vector size), search function (same body), RLS and index are all in place.

    Checked first so a store does not run DDL on every connection: DDL takes an
    exclusive lock on the table (``alter table ... enable row level security``)
    and would queue behind, and block, running queries.
    """
    row = conn.execute(
        """
        select
          (select a.atttypmod = %(dimensions)s
             from pg_attribute a
            where a.attrelid = to_regclass(%(table)s) and a.attname = 'embedding'
              and not a.attisdropped and a.atttypid = to_regtype('vector')),
          (select c.relrowsecurity from pg_class c where c.oid = to_regclass(%(table)s)),
          to_regclass(%(index)s) is not null,
          exists (select 1 from pg_proc p
                   where p.proname = %(function)s and p.pronargs = 3
                     and pg_function_is_visible(p.oid) and p.prosrc = %(body)s)
        """,
        {
            "dimensions": dimensions,
            "table": table,
            "index": index_name(table),
            "function": match_function,
            "body": _function_body(table, dimensions, match_function),
        },
    ).fetchone()
    assert row is not None
    table_ok, rls_ok, index_ok, function_ok = row
    return bool(table_ok and rls_ok and function_ok and (index_ok or not indexable(dimensions)))


def index_memory(rows: int, dimensions: int, cap: int = INDEX_MEMORY_CAP) -> int:
    """Bytes of `maintenance_work_mem` that keep an HNSW build of `rows` vectors in memory (at most `cap`).

    Each graph element holds its vector plus neighbour lists (m = 16: up to 32
    on layer 0) and bookkeeping.
    """
    return min(cap, max(INDEX_MEMORY_FLOOR, int(rows * (dimensions * 4 + 1024) * 1.5)))


def build_index(conn: psycopg.Connection[Any], *, table: str, dimensions: int, memory_cap: int = INDEX_MEMORY_CAP) -> None:
    """Create the HNSW index if missing (nothing above 4,000 dimensions), with memory sized for the build.

    `maintenance_work_mem` is raised for this transaction only, and never lowered.
    """
    if not indexable(dimensions):
        return
    with conn.transaction():
        rows = conn.execute(f"select count(*) from {table}").fetchone()
        current = conn.execute(
            "select setting::bigint * 1024 from pg_settings where name = 'maintenance_work_mem'"
        ).fetchone()
        assert rows is not None and current is not None
        wanted = index_memory(int(rows[0]), dimensions, memory_cap)
        if wanted > int(current[0]):
            conn.execute(f"set local maintenance_work_mem = '{wanted >> 20}MB'")
        apply_schema_sql(conn, render_index(table=table, dimensions=dimensions), table=table)


def drop_index(conn: psycopg.Connection[Any], table: str) -> None:
    """Drop `table`'s HNSW index if it has one."""
    conn.execute(f"drop index if exists {index_name(table)}")
