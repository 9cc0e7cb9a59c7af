"""What a bulk load asks of a section table beyond reads and writes, over one psycopg connection.

* `read_table_state`: does the table exist, is it empty, has it its HNSW index,
  what vector size and model does it hold;
* `schema_is_current`: are table, search function, RLS and index all in place
  (checked before running any DDL: see `postgres_sql.schema_current_query`);
* `apply_script`: a rendered schema script, serialised per table;
* `build_index`: the HNSW index, built once after a load with enough
  `maintenance_work_mem` for pgvector to keep its graph in memory;
* `drop_index`.

The SQL is `postgres_sql`'s (pure); this module only runs it. Every function raises
whatever psycopg raises; the store turns that into a `StoreError` that names the table
and never the password.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .postgres_sql import (
    INDEX_MEMORY_CAP,
    INDEX_MEMORY_FLOOR,
    TableState,
    index_memory,
    schema_current_query,
    table_state,
    table_state_query,
)
from ..errors import StoreError
from .schema import ID_TYPE_SQL, SCHEMA_LOCK_SQL, id_type_of, index_name, indexable, render_index, schema_lock_key

__all__ = [
    "AsyncPostgresAdmin",
    "INDEX_MEMORY_CAP",
    "INDEX_MEMORY_FLOOR",
    "TableState",
    "apply_script",
    "build_index",
    "drop_index",
    "index_memory",
    "read_id_type",
    "read_table_state",
    "schema_is_current",
]


async def read_id_type(conn: Any, table: str) -> str | None:
    """The `ID_TYPES` name of `table`'s id column, None when there is no such table."""
    row = await (await conn.execute(ID_TYPE_SQL, (table,))).fetchone()
    return id_type_of(row[0]) if row else None


async def read_table_state(conn: Any, table: str) -> TableState:
    """The state of `table` (reads only: creates nothing)."""
    cursor = await conn.execute(*table_state_query(table))
    row = await cursor.fetchone()
    assert row is not None
    stored = None
    if row[0]:
        cursor = await conn.execute(f"select model from {table} limit 1")
        stored = await cursor.fetchone()
    return table_state(row, stored)


async def schema_is_current(conn: Any, *, table: str, dimensions: int, match_function: str) -> bool:
    """True if table (same vector size), search function (same body), RLS and index are all in place."""
    cursor = await conn.execute(*schema_current_query(table=table, dimensions=dimensions, match_function=match_function))
    row = await cursor.fetchone()
    assert row is not None
    table_ok, rls_ok, index_ok, function_ok = row
    return bool(table_ok and rls_ok and function_ok and (index_ok or not indexable(dimensions)))


async def apply_script(conn: Any, sql: str, *, table: str) -> None:
    """Run a rendered script (`render_schema` / `render_index`) in one transaction, serialised per table."""
    async with conn.transaction():
        await conn.execute(SCHEMA_LOCK_SQL, (schema_lock_key(table),))
        # No parameters: psycopg sends the script as is, so several statements run.
        await conn.execute(sql.encode("utf-8"))


async def build_index(conn: Any, *, table: str, dimensions: int, memory_cap: int = INDEX_MEMORY_CAP) -> None:
    """Create the HNSW index if missing (nothing above 4,000 dimensions), with memory sized for the build.

    `maintenance_work_mem` is raised for this transaction only, and never lowered.
    """
    if not indexable(dimensions):
        return
    async with conn.transaction():
        rows = await (await conn.execute(f"select count(*) from {table}")).fetchone()
        current = await (await conn.execute(
            "select setting::bigint * 1024 from pg_settings where name = 'maintenance_work_mem'"
        )).fetchone()
        assert rows is not None and current is not None
        wanted = index_memory(int(rows[0]), dimensions, memory_cap)
        if wanted > int(current[0]):
            await conn.execute(f"set local maintenance_work_mem = '{wanted >> 20}MB'")
        await apply_script(conn, render_index(table=table, dimensions=dimensions), table=table)


async def drop_index(conn: Any, table: str) -> None:
    """Drop `table`'s HNSW index if it has one."""
    await conn.execute(f"drop index if exists {index_name(table)}")


class AsyncPostgresAdmin:
    """The administration methods of `AsyncPostgresStore` (a mixin: the store provides the attributes below).

    Each runs on a connection of its own, outside the pool: the schema (and so pgvector's types,
    which pooled connections register) may not exist yet.
    """

    table: str
    dimensions: int
    id_type: str | None
    table_id_type: str | None
    _schema_done: bool
    _psycopg: Any

    if TYPE_CHECKING:

        async def _connect(self, doing: str = ...) -> Any: ...

        def _error(self, doing: str, exc: BaseException) -> Any: ...

        def _render(self, *, with_index: bool) -> str: ...

    async def _admin(self, doing: str, action: Callable[[Any], Any]) -> Any:
        """`action(conn)` on a connection of its own, with nothing set up (the schema may not exist yet)."""
        conn = await self._connect()
        try:
            return await action(conn)
        except self._psycopg.Error as exc:
            raise self._error(doing, exc) from None
        finally:
            await conn.close()

    async def _settle_id_type(self, conn: Any) -> None:
        """Learn an existing table's id type (refusing another one asked for); a new table's is decided later."""
        existing = await read_id_type(conn, self.table)
        if existing and self.id_type and existing != self.id_type:
            raise StoreError(f"table {self.table!r} already exists with {existing} ids, not {self.id_type}")
        if existing:
            self.table_id_type = existing

    async def ensure_schema(self, with_index: bool = True) -> None:
        """Apply the schema (extension, table, function, RLS; index if asked).

        Always runs the script (idempotent). For a bulk load, create the store
        with ``create_schema=False``, call ``ensure_schema(with_index=False)``,
        write, then `create_index`.

        Raises:
            StoreError: If the database is unreachable or refuses the script
                (e.g. the table exists with another vector size).
        """

        async def apply(conn: Any) -> None:
            await self._settle_id_type(conn)
            await apply_script(conn, self._render(with_index=with_index), table=self.table)

        await self._admin("cannot apply the schema", apply)
        self._schema_done = True

    async def create_index(self, *, memory_cap: int = INDEX_MEMORY_CAP) -> None:
        """Create the HNSW index if it does not exist (no-op above 4,000 dimensions).

        The build gets enough `maintenance_work_mem` to keep pgvector's graph in
        memory (sized from the row count, at most `memory_cap` bytes), for its
        own transaction only.

        Raises:
            StoreError: If the database is unreachable or the build fails.
        """
        await self._admin("cannot create the index", lambda conn: build_index(
            conn, table=self.table, dimensions=self.dimensions, memory_cap=memory_cap
        ))

    async def drop_index(self) -> None:
        """Drop the HNSW index if there is one (before loading an empty table: one build after is faster).

        Raises:
            StoreError: If the database is unreachable or refuses.
        """
        await self._admin("cannot drop the index", lambda conn: drop_index(conn, self.table))

    async def table_state(self) -> TableState:
        """Whether the table exists, is empty, has its index; its vector size; a stored row's model.

        Reads only (never creates the schema, whatever `create_schema` says).

        Raises:
            StoreError: If the database is unreachable or the query fails.
        """
        return await self._admin("cannot read the table", lambda conn: read_table_state(conn, self.table))

