"""`AsyncPostgresStore`: `PostgresStore` for event loops, over psycopg's async connection.

The SQL, row encoding and refusal reasons are `PostgresStore`'s (`core.stores.postgres_rows`),
the pipeline is the shared `AsyncSectionStore`; only the waiting differs. One-time
administration (creating the schema, the preflight's table checks) runs the sync
store's code in a worker thread: it happens once per store, not per row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .async_ingest import AsyncSectionStore
from ..errors import InvalidInputError, StoreError
from .postgres_rows import as_float32, prepare_rows, refusal_reason, upsert_sql
from .postgres import PostgresStore
from ..engine.rows import Row
from ..secrets import redact_dsn, scrub_dsn

__all__ = ["AsyncPostgresStore"]


class AsyncPostgresStore(AsyncSectionStore):
    """Section embeddings in Postgres + pgvector, from an event loop.

    Takes the same arguments as `PostgresStore` (``dsn``, ``table``, ``dimensions``,
    ``match_function``, ``rows_per_chunk``, ``create_schema``, ``connect_timeout``)
    plus ``embedding_service`` (an `AsyncEmbeddingService`, for `search`).

    Raises:
        MissingDependencyError: psycopg, pgvector or numpy is not installed.
        ConfigurationError: No DSN, or a setting is invalid.
    """

    def __init__(self, dsn: str | None = None, *, embedding_service: Any = None, **options: Any) -> None:
        self._sync = PostgresStore(dsn, **options)  # validation, settings, admin SQL: once
        self.table = self._sync.table
        self.dimensions = self._sync.dimensions
        self.embedding_service = embedding_service
        self._numpy = self._sync._numpy
        self._psycopg = self._sync._psycopg
        self._dsn = self._sync._dsn
        self._conn: Any = None
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"AsyncPostgresStore(dsn={redact_dsn(self._dsn)!r}, table={self.table!r}, dimensions={self.dimensions})"

    async def __aenter__(self) -> AsyncPostgresStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (a later call opens new ones)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        await asyncio.to_thread(self._sync.close)

    def _error(self, doing: str, exc: BaseException) -> StoreError:
        return self._sync._error(doing, exc)

    async def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        if self._sync.create_schema:
            await asyncio.to_thread(self._sync._connection)  # creates the schema once, if asked
        from pgvector.psycopg import register_vector_async

        try:
            conn = await self._psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=self._sync.connect_timeout
            )
            await register_vector_async(conn)
        except self._psycopg.Error as exc:
            raise self._error("cannot connect to the database", exc) from None
        self._conn = conn
        return conn

    # --- AsyncSectionStore -------------------------------------------------------------

    async def preflight(self, dimensions: int | None) -> None:
        """As `PostgresStore.preflight` (run once, in a worker thread)."""
        await asyncio.to_thread(self._sync.preflight, dimensions)

    async def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        ids = sorted({int(i) for i in section_ids})
        if not ids:
            return {}
        conn = await self._connection()
        sql = f"select section_id, content_hash, model from {self.table} where section_id = any(%s::bigint[])"
        try:
            cursor = await conn.execute(sql, (ids,))
            rows = await cursor.fetchall()
        except self._psycopg.Error as exc:
            raise self._error("cannot read stored hashes", exc) from None
        return {int(sid): (content_hash, model) for sid, content_hash, model in rows}

    async def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        """Upsert `rows` in chunks; a refused chunk is retried row by row (see `PostgresStore.write_rows`)."""
        items, failures = prepare_rows(self._numpy, rows)
        if not items:
            return failures
        conn = await self._connection()
        size = self._sync.rows_per_chunk
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            try:
                async with conn.transaction():
                    await conn.execute(upsert_sql(self.table, "unnest"), [list(c) for c in zip(*(p for _, p in chunk))])
                continue
            except self._psycopg.Error as exc:
                if conn.broken or conn.closed:
                    return self._lost(failures, items[start:], exc)
            failures.update(await self._write_one_by_one(conn, chunk))
        return failures

    async def _write_one_by_one(self, conn: Any, chunk: Sequence[tuple[int, tuple[Any, ...]]]) -> dict[int, str]:
        failures: dict[int, str] = {}
        sql = upsert_sql(self.table, "row")
        try:
            async with conn.transaction():
                for section_id, params in chunk:
                    try:
                        async with conn.transaction():
                            await conn.execute(sql, params)
                    except self._psycopg.Error as exc:
                        if conn.broken:
                            raise
                        failures[section_id] = scrub_dsn(refusal_reason(exc), self._dsn)
        except self._psycopg.Error as exc:
            return self._lost(failures, chunk, exc)
        return failures

    def _lost(self, failures: dict[int, str], remaining: Sequence[tuple[int, Any]], exc: BaseException) -> dict[int, str]:
        reason = "database connection lost: " + scrub_dsn(str(exc).strip(), self._dsn)
        for section_id, _ in remaining:
            failures.setdefault(section_id, reason)
        return failures

    async def search_vector(self, vector: Sequence[float], k: int = 5, threshold: float | None = None) -> list[dict[str, Any]]:
        """The `k` rows nearest `vector` by cosine similarity, best first (through the match function).

        Raises:
            InvalidInputError: `vector` has the wrong size or `k` < 1.
            StoreError: The database is unreachable or the query fails.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        query = as_float32(self._numpy, vector)
        if query.ndim != 1 or query.shape[0] != self.dimensions:
            raise InvalidInputError(f"query vector has {query.size} dimensions, table {self.table!r} has {self.dimensions}")
        conn = await self._connection()
        sql = f"select section_id, title, similarity from {self._sync.match_function}(%b, %s, %s)"
        try:
            async with conn.transaction():
                if k > 40:  # an HNSW scan yields at most ef_search rows (default 40): widen it here
                    await conn.execute("select set_config('hnsw.ef_search', %s, true)", (str(min(k, 1000)),))
                cursor = await conn.execute(sql, (query, k, threshold))
                rows = await cursor.fetchall()
        except self._psycopg.Error as exc:
            raise self._error("search failed", exc) from None
        return [{"section_id": int(sid), "title": title, "similarity": float(sim)} for sid, title, sim in rows]

    async def count(self) -> int:
        """Number of stored rows."""
        conn = await self._connection()
        cursor = await conn.execute(f"select count(*) from {self.table}")
        return int((await cursor.fetchone())[0])
