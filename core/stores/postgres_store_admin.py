"""`PostgresStore`'s table administration for bulk loads: `ensure_schema`, `create_index`,
`drop_index`, `table_state`.

The SQL is `core.stores.postgres_admin`'s; these methods run it on the store's connection
through `PostgresStore._admin`, which turns a database error into a `StoreError`
naming the table and never the password. A mixin: `PostgresStore` is its only user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import postgres_admin as admin
from .postgres_admin import INDEX_MEMORY_CAP, TableState
from .schema import apply_schema_sql

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStoreAdmin"]

_T = TypeVar("_T")


class PostgresStoreAdmin:
    """The administration methods of `PostgresStore` (which provides the attributes below)."""

    table: str
    dimensions: int
    _ready: bool
    _schema_done: bool
    _register_vector: Callable[[Any], None]

    if TYPE_CHECKING:

        def _admin(self, doing: str, action: Callable[[psycopg.Connection[Any]], _T]) -> _T: ...

        def _render(self, *, with_index: bool) -> str: ...

    def ensure_schema(self, with_index: bool = True) -> None:
        """Apply the schema (extension, table, function, RLS; index if asked).

        Always runs the script (idempotent). For a bulk load, create the store
        with ``create_schema=False``, call ``ensure_schema(with_index=False)``,
        write, then `create_index`.

        Raises:
            StoreError: If the database is unreachable or refuses the script
                (e.g. the table exists with another vector size).
        """

        def apply(conn: psycopg.Connection[Any]) -> None:
            apply_schema_sql(conn, self._render(with_index=with_index), table=self.table)
            self._schema_done = True
            if not self._ready:
                self._register_vector(conn)
                self._ready = True

        self._admin("cannot apply the schema", apply)

    def create_index(self, *, memory_cap: int = INDEX_MEMORY_CAP) -> None:
        """Create the HNSW index if it does not exist (no-op above 4,000 dimensions).

        The build gets enough `maintenance_work_mem` to keep pgvector's graph in
        memory (sized from the row count, at most `memory_cap` bytes), for its
        own transaction only.

        Raises:
            StoreError: If the database is unreachable or the build fails.
        """
        self._admin("cannot create the index", lambda conn: admin.build_index(
            conn, table=self.table, dimensions=self.dimensions, memory_cap=memory_cap
        ))

    def drop_index(self) -> None:
        """Drop the HNSW index if there is one (before loading an empty table: one build after is faster).

        Raises:
            StoreError: If the database is unreachable or refuses.
        """
        self._admin("cannot drop the index", lambda conn: admin.drop_index(conn, self.table))

    def table_state(self) -> TableState:
        """Whether the table exists, is empty, has its index; its vector size; a stored row's model.

        Reads only (never creates the schema, whatever `create_schema` says).

        Raises:
            StoreError: If the database is unreachable or the query fails.
        """
        return self._admin("cannot read the table", lambda conn: admin.read_table_state(conn, self.table))
