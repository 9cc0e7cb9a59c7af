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

import importlib
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ..engine.rows import Row
from ..errors import ConfigurationError, MissingDependencyError, StoreError
from ..limits import DEFAULT_TABLE, POSTGRES_MAX_ROWS_PER_CHUNK, POSTGRES_POOL_SIZE
from ..secrets import redact_dsn, scrub_dsn
from . import _flavour_async as flavour
from .postgres_admin_async import AsyncPostgresAdmin
from .postgres_pool_async import AsyncPostgresConnections
from .postgres_rows import EF_SEARCH_MAX
from .postgres_search_async import AsyncPostgresSearch
from .postgres_sync_async import AsyncPostgresSync
from .sync_async import AsyncSyncing
from .ingest_async import AsyncSectionStore
from ..engine.sections import canonical_id, ids_type
from .postgres_rows import (
    ID_ARRAY,
    chunks,
    prepare_rows,
    refresh_sql,
    refusal_reason,
    upsert_sql,
)
from .postgres_sql import INDEX_MEMORY_CAP, TableState
from .schema import (
    DEFAULT_DIMENSIONS,
    default_match_function,
    render_schema,
    validate_dimensions,
    validate_id_type,
    validate_identifier,
)

__all__ = ["INDEX_MEMORY_CAP", "MAX_ROWS_PER_CHUNK", "AsyncPostgresStore", "TableState"]

MAX_ROWS_PER_CHUNK = POSTGRES_MAX_ROWS_PER_CHUNK
SERVER_TROUBLE = ("53", "57P03")
"""SQLSTATEs a row cannot be blamed for: insufficient resources (53100 disk full, 53200 out of
memory, 53300 too many connections) and a server in recovery (57P03, e.g. after a full disk made it
PANIC). Failing the row and going on would fail every later section the same way (17,830 of them in
one measured disk-full run): the run stops instead, with its exact report. A session cut by a
restart (57P01) is not among them: its rows fail as "connection lost" and the pool reconnects."""


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


class AsyncPostgresStore(
    AsyncPostgresConnections, AsyncPostgresAdmin, AsyncPostgresSearch, AsyncPostgresSync, AsyncSyncing, AsyncSectionStore
):
    """Section embeddings in a Postgres table with pgvector, through psycopg 3.

    Args:
        dsn: libpq URI or key=value string; defaults to the ``DATABASE_URL``
            environment variable.
        table: Table name (plain SQL identifier).
        dimensions: Vector size of the table.
        match_function: Name of the search function `search_vector` calls (default: the
            table's own, `core.stores.schema.default_match_function`).
        rows_per_chunk: Rows per upsert transaction (1..9000).
        create_schema: On first connection, create the extension, table, index,
            function and RLS if they are not all in place (see `ensure_schema`).
        connect_timeout: Seconds to wait for a connection.
        halfvec_scan: Search by a full scan with `halfvec` cosine distances
            instead of the search function: for the embedded pgvector built for
            AVX-512 on a CPU without it (see `core.embedded.vector_math_problem`),
            where `vector` distances kill the server and `halfvec` ones work.
            Similarities are then half precision (about three digits).
        ef_search: Candidates an HNSW search keeps (`hnsw.ef_search`, per search): more is slower
            and finds more of the true nearest rows (default: the schema's
            `core.limits.SEARCH_EF_SEARCH`, 400, and `SEARCH_EF_SEARCH_FILTERED`, 800, with a filter; at least k).
        pool_size: Most connections open at once (concurrent callers each get one).
        id_type: The id column's type for a new table (``"bigint"``, ``"text"``, ``"uuid"``);
            default: bigint when the first ids ingested are integers, else text. An
            existing table keeps its own (another one given here is refused).
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
        match_function: str | None = None,
        rows_per_chunk: int = 500,
        create_schema: bool = True,
        connect_timeout: int = 10,
        halfvec_scan: bool = False,
        ef_search: int | None = None,
        pool_size: int = POSTGRES_POOL_SIZE,
        id_type: str | None = None,
        embedding_service: Any = None,
    ) -> None:
        self._psycopg, self._psycopg_pool, self._numpy, self._register_vector = _import_drivers()
        if dsn is None:
            dsn = os.environ.get("DATABASE_URL")
        if not dsn or not isinstance(dsn, str):
            raise ConfigurationError("AsyncPostgresStore needs a database: pass dsn=... or set DATABASE_URL")
        self.table = validate_identifier(table, "table")
        self.match_function = validate_identifier(match_function or default_match_function(self.table), "match function")
        self.id_type = None if id_type is None else validate_id_type(id_type)
        self.table_id_type: str | None = None
        self._id_hint: str | None = None
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
        if ef_search is not None and (isinstance(ef_search, bool) or not isinstance(ef_search, int) or not 1 <= ef_search <= EF_SEARCH_MAX):
            raise ConfigurationError(f"ef_search must be an int from 1 to 1000, got {ef_search!r}")
        self.ef_search = ef_search
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

    def _render(self, *, with_index: bool) -> str:
        return render_schema(
            table=self.table, dimensions=self.dimensions, match_function=self.match_function, with_index=with_index,
            id_type=self.table_id_type or self.id_type or self._id_hint or "bigint",
        )

    async def claim_ids(self, ids: Sequence[Any]) -> None:
        """A new table's id type follows the first ids ingested (integers: bigint, else text)."""
        if self.id_type is None and ids and self._pool is None:
            self._id_hint = ids_type(ids)

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
        if self.id_type and state.id_type and state.id_type != self.id_type:
            raise StoreError(f"table {self.table!r} has {state.id_type} ids, not {self.id_type}")
        self.table_id_type = state.id_type

    async def count(self) -> int:
        """Number of stored rows.

        Raises:
            StoreError: If the database is unreachable or the query fails.
        """
        return int((await self._query("cannot count rows", f"select count(*) from {self.table}", None))[0][0])

    async def fetch_hashes(self, section_ids: Sequence[Any]) -> dict[Any, tuple[Any, ...]]:
        """`{section_id: (content_hash, model, metadata, has_content, source)}` for the ids already stored
        (keyed by the ids as given), in one query.

        Raises:
            StoreError: If the database is unreachable or the query fails.
        """
        id_type = self.table_id_type or "bigint"
        given = {}
        for section_id in section_ids:
            try:
                given[canonical_id(section_id, id_type)] = section_id
            except (TypeError, ValueError):
                continue  # cannot be stored here, so is not
        if not given:
            return {}
        rows = await self._query(
            "cannot read stored hashes",
            f"select section_id, content_hash, model, metadata, content is not null, source from {self.table}"
            f" where section_id = any(%s::{ID_ARRAY[id_type]}[])",
            (list(given),),
        )
        found: dict[Any, tuple[Any, ...]] = {}
        for key, content_hash, model, metadata, has_content, source in rows:
            found[given[key if id_type != "uuid" else str(key)]] = (content_hash, model, metadata or {}, has_content, source)
        return found

    async def refresh_rows(self, items: Sequence[Any], updated_at: str) -> dict[Any, str]:
        """Update content and metadata of rows whose text is unchanged (one statement, no vector sent).

        Raises:
            StoreError: If the database is unreachable.
        """
        from psycopg.types.json import Jsonb

        id_type = self.table_id_type or "bigint"
        stamp = datetime.fromisoformat(updated_at)
        params = [
            [canonical_id(item.section_id, id_type) for item in items],
            [item.content for item in items],
            [Jsonb(item.metadata) for item in items],
            [item.source for item in items],
            [stamp] * len(items),
        ]
        async with self._borrow() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(refresh_sql(self.table, id_type), params)
            except self._psycopg.Error as exc:
                reason = self._reason(exc)
                return {item.section_id: reason for item in items}
        return {}

    async def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        """Upsert `rows` (binary, chunked); return `{section_id: reason}` for rows not stored.

        A chunk the database refuses is retried row by row, so only its bad rows
        fail, each with the database's reason. If the connection itself is lost,
        every row not yet committed is returned as failed. When an id appears
        more than once, the last row wins (as sequential upserts would).

        Raises:
            StoreError: If the database cannot be reached at all, or refuses every row for a reason
                no row can fix (out of disk, memory or connections; shutting down or recovering):
                the run stops there instead of failing every section after it.
        """
        items, failures = prepare_rows(self._numpy, rows, self.table_id_type or "bigint")
        if not items:
            return failures
        async with self._borrow() as conn:
            for done, chunk in enumerate(chunks(items, self.rows_per_chunk)):
                try:
                    async with conn.transaction():
                        await self._write_chunk(conn, [params for _, params in chunk])
                    continue
                except self._psycopg.Error as exc:
                    self._stop_if_server_trouble(exc)
                    if conn.broken or conn.closed:
                        return self._lost(failures, items[done * self.rows_per_chunk :], exc)
                try:
                    failures.update(await self._write_one_by_one(conn, chunk))
                except self._psycopg.Error as exc:
                    self._stop_if_server_trouble(exc)
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

    def _stop_if_server_trouble(self, exc: BaseException) -> None:
        """Raise a run-stopping `StoreError` for a refusal no row can fix (`SERVER_TROUBLE`)."""
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        if sqlstate.startswith(SERVER_TROUBLE):
            raise self._error("the database cannot store rows now", exc)

    def _statement(self, kind: str) -> bytes:
        """`upsert_sql` for this table and its id type, built once per kind."""
        id_type = self.table_id_type or "bigint"
        sql = self._statements.get(kind + id_type)
        if sql is None:
            sql = self._statements[kind + id_type] = upsert_sql(self.table, kind, id_type)
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
                    self._stop_if_server_trouble(exc)
                    if conn.broken:
                        raise
                    failures[section_id] = self._reason(exc)
        return failures

    def _reason(self, exc: Any) -> str:
        """The database's reason for refusing one row, naming the column when it can."""
        return scrub_dsn(refusal_reason(exc), self._dsn)
