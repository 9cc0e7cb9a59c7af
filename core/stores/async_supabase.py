"""`AsyncSupabaseStore`: `SupabaseStore` for event loops, over supabase-py's `acreate_client`.

Settings, row payloads, retry policy and error messages are `SupabaseStore`'s (one
instance holds them, never used for I/O); the pipeline is the shared
`AsyncSectionStore`; rows are upserted one per request, `max_concurrency` at a time,
each retried by the async flavour of the one retry loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .async_ingest import AsyncSectionStore
from ..errors import StoreError
from ..limits import DEFAULT_MATCH_FUNCTION, DEFAULT_TABLE, SUPABASE_MAX_CONCURRENCY
from ..engine.retry import acall_with_retries
from ..engine.rows import Row, vector_literal
from .supabase_errors import preflight_problem
from .supabase import DEFAULT_ROW_RETRIES, SupabaseStore

__all__ = ["AsyncSupabaseStore"]

_COLUMNS = "section_id,content_hash,model,embedding"


class _NotYet:
    """Stands in for the client while the settings are checked: the async one is made on first use."""


class AsyncSupabaseStore(AsyncSectionStore):
    """Section embeddings in a Supabase table through PostgREST, from an event loop.

    Args:
        url, key, table, match_function, max_concurrency, row_retries: As `SupabaseStore`.
        client: A ready async supabase client (`await supabase.acreate_client(...)`).
        embedding_service: An `AsyncEmbeddingService`, for `search`.
        sleep: Async sleep between retries (injectable for tests).

    Raises:
        ConfigurationError: Missing URL or key, or a table name that is not a plain identifier.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        table: str = DEFAULT_TABLE,
        client: Any = None,
        match_function: str = DEFAULT_MATCH_FUNCTION,
        embedding_service: Any = None,
        max_concurrency: int = SUPABASE_MAX_CONCURRENCY,
        row_retries: int = DEFAULT_ROW_RETRIES,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        import os

        key = key or os.environ.get("SUPABASE_SERVICE_ROLE_KEY") or os.environ.get("SUPABASE_KEY")
        self._settings = SupabaseStore(
            url, key, table=table, client=_NotYet(), match_function=match_function,
            max_concurrency=max_concurrency, row_retries=row_retries,
        )
        if client is None and (not self._settings.url or not key):
            SupabaseStore(url, key)  # raises the same ConfigurationError as the sync store
        self.table = self._settings.table
        self.embedding_service = embedding_service
        self._client = client
        self._key = key
        self._sleep = sleep or asyncio.sleep

    def __repr__(self) -> str:
        return f"AsyncSupabaseStore(url={self._settings.url!r}, table={self.table!r}, key='***')"

    async def __aenter__(self) -> AsyncSupabaseStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def client(self) -> Any:
        """The async supabase client, created on first use."""
        if self._client is None:
            from supabase import acreate_client

            self._client = await acreate_client(self._settings.url, self._key)
        return self._client

    async def _retried(self, request: Callable[[], Awaitable[Any]]) -> Any:
        return await acall_with_retries(request, self._settings.retry_policy, sleep=self._sleep)

    # --- AsyncSectionStore -------------------------------------------------------------

    async def preflight(self, dimensions: int | None) -> None:
        """As `SupabaseStore.preflight`: reachable, table and columns there, vector width when it can tell.

        Raises:
            StoreError: One line naming the URL and the table (never the key).
        """
        client = await self.client()
        try:
            response = await self._retried(lambda: client.table(self.table).select(_COLUMNS).limit(1).execute())
        except Exception as exc:
            raise StoreError(
                preflight_problem(exc, self._settings._reason(exc), url=self._settings.url, table=self._settings.table)
            ) from None
        data = getattr(response, "data", None)
        if dimensions is None or not isinstance(data, list) or not data or not isinstance(data[0], dict):
            return
        embedding = data[0].get("embedding")
        width = len(embedding.strip("[]").split(",")) if isinstance(embedding, str) and embedding.strip("[]") else None
        if width is not None and width != dimensions:
            raise StoreError(
                f"table {self.table!r} on Supabase at {self._settings.url} holds {width}-dimensional vectors, "
                f"but the embeddings have {dimensions} dimensions"
            )

    async def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        client = await self.client()
        ids = list(section_ids)
        response = await self._retried(
            lambda: client.table(self.table).select("section_id,content_hash,model").in_("section_id", ids).execute()
        )
        return {
            int(record["section_id"]): (str(record.get("content_hash")), str(record.get("model")))
            for record in response.data or []
            if isinstance(record, dict) and "section_id" in record
        }

    async def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        """One upsert per row, `max_concurrency` at a time; `{section_id: reason}` for rows not stored."""
        client = await self.client()
        slots = asyncio.Semaphore(self._settings.max_concurrency)

        async def write(row: Row) -> tuple[int, str | None]:
            payload = SupabaseStore.row_payload(row)
            async with slots:
                try:
                    await self._retried(
                        lambda: client.table(self.table)
                        .upsert(payload, on_conflict="section_id", returning="minimal")
                        .execute()
                    )
                    return row.section_id, None
                except Exception as exc:  # every failure becomes this row's reason
                    return row.section_id, self._settings._reason(exc)

        results = await asyncio.gather(*(write(row) for row in rows))
        return {section_id: reason for section_id, reason in results if reason is not None}

    async def search_vector(self, vector: Sequence[float], k: int = 5, threshold: float | None = None) -> list[dict[str, Any]]:
        client = await self.client()
        params = {"query_embedding": vector_literal(vector), "match_count": k, "match_threshold": threshold}
        response = await client.rpc(self._settings.match_function, params).execute()
        return list(response.data or [])
