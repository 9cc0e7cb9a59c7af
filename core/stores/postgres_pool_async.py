"""How `AsyncPostgresStore` gets its connections: a pool (`psycopg_pool`, psycopg's own), opened on
first use after one connection of its own has checked the database (so a failure names its cause)
and created the schema when asked. A mixin: the store provides the attributes below.

Every read, write and search borrows one connection for its own transactions and gives it back,
so one store can be shared by concurrent callers (threads for the sync store, tasks for the async
one) and a row reported stored is committed, visible to any fresh connection. The pool checks a
connection before lending it, so one killed by a server restart is replaced, not used.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..secrets import redact_dsn, scrub_dsn
from . import _flavour_async as flavour
from . import postgres_admin_async as admin

__all__ = ["AsyncPostgresConnections"]


class AsyncPostgresConnections:
    """The connection methods of `AsyncPostgresStore`."""

    table: str
    dimensions: int
    match_function: str
    create_schema: bool
    connect_timeout: int
    pool_size: int
    _dsn: str
    _pool: Any
    _pool_lock: Any
    _pool_loop: Any = None
    _schema_done: bool
    _psycopg: Any
    _psycopg_pool: Any
    _register_vector: Any

    if TYPE_CHECKING:

        def _render(self, *, with_index: bool) -> str: ...

        async def _settle_id_type(self, conn: Any) -> None: ...

    async def aclose(self) -> None:
        """Close the connections (a later call opens new ones)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _error(self, doing: str, exc: BaseException) -> StoreError:
        """A StoreError for `exc` that names the table and never the password."""
        message = f"{doing} (table {self.table!r} on {redact_dsn(self._dsn)}): {str(exc).strip()}"
        return StoreError(scrub_dsn(message, self._dsn))

    # --- connections -------------------------------------------------------------------

    async def _connect(self, doing: str = "cannot connect to the database") -> Any:
        """A new connection of our own (not from the pool), autocommit, nothing set up on it."""
        try:
            return await self._psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=self.connect_timeout
            )
        except self._psycopg.Error as exc:
            # from None: the driver's exception may quote the connection string.
            raise self._error(doing, exc) from None

    async def _open_pool(self) -> Any:
        """The pool, opened on first use: the schema first (when asked), then the pool's connections."""
        async with self._pool_lock:
            if self._pool is not None:
                return self._pool
            conn = await self._connect()  # a failure here names its cause (the pool's would not)
            try:
                await self._settle_id_type(conn)
                if self.create_schema and not self._schema_done:
                    if not await admin.schema_is_current(
                        conn, table=self.table, dimensions=self.dimensions, match_function=self.match_function
                    ):
                        await admin.apply_script(conn, self._render(with_index=True), table=self.table)
                    self._schema_done = True
                await self._register_vector(conn)
            except self._psycopg.Error as exc:
                hint = "" if self.create_schema else " (create_schema=False: run ensure_schema() or apply the schema first)"
                raise self._error("cannot set up the database" + hint, exc) from None
            finally:
                await conn.close()
            pool = self._psycopg_pool.AsyncConnectionPool(
                self._dsn,
                min_size=1,
                max_size=self.pool_size,
                open=False,
                kwargs={"autocommit": True, "connect_timeout": self.connect_timeout},
                configure=self._register_vector,
                check=self._psycopg_pool.AsyncConnectionPool.check_connection,
                timeout=self.connect_timeout,
                name=f"core:{self.table}",
            )
            try:
                await pool.open(wait=True, timeout=self.connect_timeout)
            except self._psycopg_pool.PoolTimeout as exc:
                await pool.close()
                raise self._error("cannot connect to the database", exc) from None
            self._pool = pool
            self._pool_loop = flavour.current_loop()
            return pool

    @contextlib.asynccontextmanager
    async def _borrow(self) -> AsyncIterator[Any]:
        """A pooled connection, ready (schema checked, vector types registered), for one call."""
        if self._pool is not None and self._pool_loop not in (None, flavour.current_loop()):
            # Opened under an event loop that has ended: its connections went with it.
            self._pool, self._pool_lock = None, flavour.Lock()
        pool = self._pool or await self._open_pool()
        try:
            async with pool.connection(timeout=self.connect_timeout) as conn:
                yield conn
        except self._psycopg_pool.PoolTimeout as exc:  # only checking out raises it
            raise self._error("cannot connect to the database", exc) from None

    async def _query(self, doing: str, sql: Any, params: Any) -> list[tuple[Any, ...]]:
        async with self._borrow() as conn:
            try:
                cursor = await conn.execute(sql, params)
                return list(await cursor.fetchall())
            except self._psycopg.Error as exc:
                raise self._error(doing, exc) from None
