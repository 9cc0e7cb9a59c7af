"""The write paths bench/bench_pg_paths.py measures against `PostgresStore`'s own, for benchmarks only.

`PostgresStore` upserts each chunk as one statement that unnests one binary
array per column (`PostgresStore._write_chunk`). `PathStore` is a store whose
chunk writer is chosen by name among that one and three alternatives:

* ``values``: one multi-row ``insert ... values (...), (...)`` per chunk, binary,
  through a `psycopg.RawCursor` (psycopg does not parse a statement that long);
* ``executemany``: the one-row upsert, ``executemany`` in pipeline mode;
* ``copy``: binary ``COPY`` into a temporary table, then ``insert ... select``.

Everything else (row conversion, the row-by-row fallback under savepoints,
connection handling) is the store's own, so only the chunk path differs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from core.stores.postgres_rows import COLUMNS, upsert_tail  # noqa: E402
from core.stores.postgres import PostgresStore  # noqa: E402

__all__ = ["PATHS", "PathStore"]

PATHS = ("unnest", "values", "executemany", "copy")
"""Chunk writers by name; ``unnest`` is the store's own."""

_COPY_TYPES = ("int8", "text", "vector", "text", "text", "int4", "timestamptz")


class PathStore(PostgresStore):
    """A `PostgresStore` that writes chunks through `write_path` (one of `PATHS`)."""

    def __init__(self, *args: Any, write_path: str = "unnest", **kwargs: Any) -> None:
        if write_path not in PATHS:
            raise ValueError(f"unknown write path {write_path!r}: one of {', '.join(PATHS)}")
        super().__init__(*args, **kwargs)
        self.write_path = write_path
        self._values_sql: dict[int, bytes] = {}

    def _write_chunk(self, conn: Any, chunk: Sequence[tuple[Any, ...]]) -> None:
        if self.write_path == "unnest":
            super()._write_chunk(conn, chunk)
        elif self.write_path == "values":
            self._write_values(conn, chunk)
        elif self.write_path == "executemany":
            with conn.cursor() as cur:  # psycopg runs executemany in pipeline mode (one round trip)
                cur.executemany(self._statement("row"), chunk)
        else:
            self._write_copy(conn, chunk)

    def _values_statement(self, nrows: int) -> bytes:
        """``insert ... values ($1, ...), ... on conflict`` for `nrows` rows, ``$n`` placeholders (cached)."""
        sql = self._values_sql.get(nrows)
        if sql is None:
            width = len(COLUMNS)
            groups = ["(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")" for r in range(nrows)]
            sql = f"insert into {self.table} ({', '.join(COLUMNS)}) values {', '.join(groups)} {upsert_tail(self.table)}".encode()
            self._values_sql[nrows] = sql
        return sql

    def _write_values(self, conn: Any, chunk: Sequence[tuple[Any, ...]]) -> None:
        params = [value for row in chunk for value in row]
        # RawCursor: psycopg does not parse (nor cache) a statement this long, and
        # parsing 3,500 %b placeholders per chunk costs more than sending it. Its
        # placeholders take the last registered dumper, pgvector's binary one.
        with self._psycopg.RawCursor(conn) as cur:
            cur.execute(self._values_statement(len(chunk)), params)

    def _write_copy(self, conn: Any, chunk: Sequence[tuple[Any, ...]]) -> None:
        stage = f"pg_temp.{self.table}_stage"
        # In the chunk's transaction: a failed chunk rolls the creation back, so
        # "if not exists" on every chunk rather than a flag. Every commit empties it.
        conn.execute(
            f"create temp table if not exists {self.table}_stage "
            f"(like {self.table} including defaults) on commit delete rows"
        )
        cols = ", ".join(COLUMNS)
        with conn.cursor() as cur:
            with cur.copy(f"copy {stage} ({cols}) from stdin (format binary)") as copy:
                copy.set_types(list(_COPY_TYPES))
                for row in chunk:
                    copy.write_row(row)
            cur.execute(f"insert into {self.table} ({cols}) select {cols} from {stage} {upsert_tail(self.table)}")
