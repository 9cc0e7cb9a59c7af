"""`AsyncPostgresStore`: sections stored straight into Postgres + pgvector with psycopg 3.

Written once, async; `PostgresStore` is generated from this file by `tools/async_to_sync.py`.

Vectors travel in pgvector's binary format (psycopg binary parameters and pgvector's
`register_vector`), never as text: a float32 goes over the wire as its 4 bytes instead of
~11 characters of decimal, and is stored bit for bit.

Connections come from a pool (`psycopg_pool`, psycopg's own; at most `pool_size`): every
read, write and search borrows one connection for its own transactions and gives it back,
so one store can be shared by concurrent callers (threads for the sync store, tasks for the
async one) and a row reported stored is committed, visible to any fresh connection. (One
shared connection lost rows: two callers' transactions nested into each other's savepoints
and were rolled back when the connection closed.)

How a batch is written: rows are upserted in chunks of `rows_per_chunk`, one transaction
each, as one statement that unnests one binary array per column::

    insert into t (cols) select * from unnest($1::int8[], ..., $3::vector[], ...)
    on conflict (section_id) do update set ... = excluded....

A chunk the database refuses is rolled back and retried row by row, each row under its
own savepoint, so only the bad rows fail, each with the database's reason; all other rows
are stored. Why unnest: of four binary paths measured by bench/bench_pg_paths.py it had the
best median in 3 runs of 4 (~10,000 new rows/s of 1536 dims on 2 vCPUs), with 7 parameters
whatever the chunk size, one cached statement and no temporary table.

For bulk loads: `table_state`, `drop_index`, `create_index` (with enough `maintenance_work_mem`),
from `AsyncPostgresAdmin`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ..engine.rows import Row
from ..errors import ConfigurationError, InvalidInputError, MissingDependencyError, StoreError
from ..limits import DEFAULT_MATCH_FUNCTION, DEFAULT_TABLE, POSTGRES_MAX_ROWS_PER_CHUNK, POSTGRES_POOL_SIZE
from ..secrets import redact_dsn, scrub_dsn
from . import _flavour_async as flavour
from . import postgres_admin_async as admin
from .postgres_admin_async import AsyncPostgresAdmin
from .ingest_async import AsyncSectionStore
from .postgres_rows import as_float32, chunks, ef_search, prepare_rows, refusal_reason, search_sql, upsert_sql
from .postgres_sql import INDEX_MEMORY_CAP, TableState
from .schema import DEFAULT_DIMENSIONS, render_schema, validate_dimensions, validate_identifier

__all__ = ["INDEX_MEMORY_CAP", "MAX_ROWS_PER_CHUNK", "AsyncPostgresStore", "TableState"]

MAX_ROWS_PER_CHUNK = POSTGRES_MAX_ROWS_PER_CHUNK


def _import_drivers() -> tuple[Any, Any, Any, Callable[[Any], Any]]:
    """(psycopg, psycopg_pool, numpy, pgvector's register function), or MissingDependencyError."""
    modules = []
    for package, name in (("psycopg", "psycopg"), ("psycopg-pool", "psycopg_pool"), ("pgvector", "pgvector.psycopg"), ("numpy", "numpy")):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise MissingDependencyError(package, "postgres", "AsyncPostgresStore") from None
    psycopg, psycopg_pool, pgvector_psycopg, numpy = modules
    return psycopg, psycopg_pool, numpy, pgvector_psycopg.register_vector_async


class AsyncPostgresStore(AsyncPostgresAdmin, AsyncSectionStore):
    """Section embeddings in a Postgres table with pgvector, through psycopg 3.

    Args:
        dsn: libpq URI or key=value string; defaults to the ``DATABASE_URL``
            environment variable.
        table: Table name (plain SQL identifier).
        dimensions: Vector size of the table.
        match_function: Name of the search function `search_vector` calls.
        rows_per_chunk: Rows per upsert transaction (1..9000).
        create_schema: On first connection, create the extension, table, index,
            function and RLS if they are not all in place (see `ensure_schema`).
        connect_timeout: Seconds to wait for a connection.
        halfvec_scan: Search by a full scan with `halfvec` cosine distances
            instead of the search function: for the embedded pgvector built for
            AVX-512 on a CPU without it (see `core.embedded.vector_math_problem`),
            where `vector` distances kill the server and `halfvec` ones work.
            Similarities are then half precision (about three digits).
        pool_size: Most connections open at once (concurrent callers each get one).
        embedding_service: Default service for `search`.

    Raises:
        MissingDependencyError: If psycopg, psycopg-pool, pgvector or numpy is not installed.
        ConfigurationError: If there is no DSN or a setting is invalid.

    Nothing connects until the first call that needs the database; connection
    failures then raise `StoreError`, whose message never holds the password.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        table: str = DEFAULT_TABLE,
        dimensions: int = DEFAULT_DIMENSIONS,
        match_function: str = DEFAULT_MATCH_FUNCTION,
        rows_per_chunk: int = 500,
        create_schema: bool = True,
        connect_timeout: int = 10,
        halfvec_scan: bool = False,
        pool_size: int = POSTGRES_POOL_SIZE,
        embedding_service: Any = None,
    ) -> None:
        self._psycopg, self._psycopg_pool, self._numpy, self._register_vector = _import_drivers()
        if dsn is None:
            dsn = os.environ.get("DATABASE_URL")
        if not dsn or not isinstance(dsn, str):
            raise ConfigurationError("AsyncPostgresStore needs a database: pass dsn=... or set DATABASE_URL")
        self.table = validate_identifier(table, "table")
        self.match_function = validate_identifier(match_function, "match function")
        self.dimensions = validate_dimensions(dimensions)
        for name, value, high in (
            ("rows_per_chunk", rows_per_chunk, MAX_ROWS_PER_CHUNK), ("connect_timeout", connect_timeout, None), ("pool_size", pool_size, None)
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high and value > high):
                raise ConfigurationError(f"{name} must be an int from 1{f' to {high}' if high else ''}, got {value!r}")
        self.rows_per_chunk = rows_per_chunk
        self.create_schema = create_schema
        self.connect_timeout = connect_timeout
        self.halfvec_scan = bool(halfvec_scan)
        self.pool_size = pool_size
        self.embedding_service = embedding_service
        self._dsn = dsn
        self._pool: Any = None
        self._pool_lock = flavour.Lock()
        self._schema_done = False
        self._statements: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return (
            f"AsyncPostgresStore(dsn={redact_dsn(self._dsn)!r}, table={self.table!r}, "
            f"dimensions={self.dimensions}, match_function={self.match_function!r})"
        )

    async def __aenter__(self) -> AsyncPostgresStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

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
            return pool

    @contextlib.asynccontextmanager
    async def _borrow(self) -> AsyncIterator[Any]:
        """A pooled connection, ready (schema checked, vector types registered), for one call."""
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

    def _render(self, *, with_index: bool) -> str:
        return render_schema(
            table=self.table, dimensions=self.dimensions, match_function=self.match_function, with_index=with_index
        )

    # --- the store -----------------------------------------------------------------------

    async def preflight(self, dimensions: int | None) -> None:
        """Before anything is paid for: the database answers and the table takes vectors of `dimensions`.

        Raises:
            StoreError: Unreachable; no table (with ``create_schema=False``); another vector size.
        """
        if dimensions is not None and dimensions != self.dimensions:
            raise StoreError(f"the embeddings have {dimensions} dimensions, table {self.table!r} takes {self.dimensions}")
        if self.create_schema and self._pool is None:
            await self._open_pool()  # creates the schema first
        state = await self.table_state()
        if not state.exists:
            raise StoreError(
                f"table {self.table!r} does not exist (create_schema=False: run ensure_schema() or apply the schema)"
            )
        if state.dimensions != self.dimensions:
            raise StoreError(f"table {self.table!r} holds {state.dimensions}-dimensional vectors, not {self.dimensions}")

    async def count(self) -> int:
        """Number of stored rows.

        Raises:
            StoreError: If the database is unreachable or the query fails.
        """
        return int((await self._query("cannot count rows", f"select count(*) from {self.table}", None))[0][0])

    async def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """`{section_id: (content_hash, model)}` for the ids already stored, in one query.

        Raises:
            StoreError: If the database is unreachable or the query fails.
        """
        ids = sorted({int(i) for i in section_ids})
        if not ids:
            return {}
        rows = await self._query(
            "cannot read stored hashes",
            f"select section_id, content_hash, model from {self.table} where section_id = any(%s::bigint[])",
            (ids,),
        )
        return {int(sid): (content_hash, model) for sid, content_hash, model in rows}

    async def search_vector(
        self, vector: Sequence[float], k: int = 5, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """The `k` rows nearest `vector` by cosine similarity, best first.

        Args:
            vector: Query vector of `dimensions` floats.
            k: How many rows at most (an HNSW scan returns at most 1,000).
            threshold: Only rows with similarity >= threshold.

        Returns:
            Dicts with `section_id`, `title`, `similarity`.

        Raises:
            InvalidInputError: If `vector` has the wrong size or `k` < 1.
            StoreError: If the database is unreachable or the query fails.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        query = as_float32(self._numpy, vector)
        if query.ndim != 1 or query.shape[0] != self.dimensions:
            raise InvalidInputError(
                f"query vector has {query.size} dimensions, table {self.table!r} has {self.dimensions}"
            )
        sql, params = search_sql(
            self.table, self.match_function, self.dimensions, query, k, threshold, halfvec_scan=self.halfvec_scan
        )
        widen = ef_search(k, halfvec_scan=self.halfvec_scan)
        async with self._borrow() as conn:
            try:
                async with conn.transaction():
                    if widen is not None:  # for this transaction only
                        await conn.execute("select set_config('hnsw.ef_search', %s, true)", (widen,))
                    rows = await (await conn.execute(sql, params)).fetchall()
            except self._psycopg.Error as exc:
                raise self._error("search failed", exc) from None
        return [{"section_id": int(sid), "title": title, "similarity": float(sim)} for sid, title, sim in rows]

    async def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        """Upsert `rows` (binary, chunked); return `{section_id: reason}` for rows not stored.

        A chunk the database refuses is retried row by row, so only its bad rows
        fail, each with the database's reason. If the connection itself is lost,
        every row not yet committed is returned as failed. When an id appears
        more than once, the last row wins (as sequential upserts would).

        Raises:
            StoreError: If the database cannot be reached at all.
        """
        items, failures = prepare_rows(self._numpy, rows)
        if not items:
            return failures
        async with self._borrow() as conn:
            for done, chunk in enumerate(chunks(items, self.rows_per_chunk)):
                try:
                    async with conn.transaction():
                        await self._write_chunk(conn, [params for _, params in chunk])
                    continue
                except self._psycopg.Error as exc:
                    if conn.broken or conn.closed:
                        return self._lost(failures, items[done * self.rows_per_chunk :], exc)
                try:
                    failures.update(await self._write_one_by_one(conn, chunk))
                except self._psycopg.Error as exc:
                    if conn.broken or conn.closed:
                        return self._lost(failures, items[done * self.rows_per_chunk :], exc)
                    # The retry's own transaction failed (e.g. at commit): none of this
                    # chunk is stored; later chunks still get their chance.
                    reason = self._reason(exc)
                    failures.update({section_id: reason for section_id, _ in chunk})
        return failures

    # --- writing -------------------------------------------------------------------------

    def _lost(self, failures: dict[int, str], remaining: Sequence[tuple[int, Any]], exc: BaseException) -> dict[int, str]:
        reason = "database connection lost: " + scrub_dsn(str(exc).strip(), self._dsn)
        for section_id, _ in remaining:
            failures[section_id] = reason
        return failures

    def _statement(self, kind: str) -> bytes:
        """`upsert_sql` for this table, built once per kind."""
        sql = self._statements.get(kind)
        if sql is None:
            sql = self._statements[kind] = upsert_sql(self.table, kind)
        return sql

    async def _write_chunk(self, conn: Any, chunk: Sequence[tuple[Any, ...]]) -> None:
        """Upsert one chunk in one statement, one binary array per column (the caller holds the transaction)."""
        await conn.execute(self._statement("unnest"), [list(values) for values in zip(*chunk, strict=True)])

    async def _write_one_by_one(self, conn: Any, chunk: Sequence[tuple[int, tuple[Any, ...]]]) -> dict[int, str]:
        """Upsert rows one at a time, each under a savepoint; `{id: reason}` for refused rows."""
        failures: dict[int, str] = {}
        sql = self._statement("row")
        async with conn.transaction():
            for section_id, params in chunk:
                try:
                    async with conn.transaction():
                        await conn.execute(sql, params)
                except self._psycopg.Error as exc:
                    if conn.broken:
                        raise
                    failures[section_id] = self._reason(exc)
        return failures

    def _reason(self, exc: Any) -> str:
        """The database's reason for refusing one row, naming the column when it can."""
        return scrub_dsn(refusal_reason(exc), self._dsn)
