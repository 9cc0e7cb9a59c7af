"""How `AsyncSupabaseStore` searches (a mixin): the table's search function and its `_hybrid` twin,
as PostgREST RPCs. A failure is a `StoreError` with the key masked: postgrest's `APIError` may
quote a gateway's echo of the key, so it is never raised as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..engine.rows import vector_literal
from ..errors import StoreError
from .schema import hybrid_function

__all__ = ["AsyncSupabaseSearch"]


class AsyncSupabaseSearch:
    """`search_vector` and `search_hybrid` for `AsyncSupabaseStore`."""

    url: str | None
    match_function: str

    if TYPE_CHECKING:

        async def _client(self) -> Any: ...

        async def _retried(self, request: Callable[[], Any], policy: Any = None) -> Any: ...

        def _reason(self, exc: BaseException) -> str: ...

    async def search_vector(
        self, vector: Sequence[float], k: int = 5, threshold: float | None = None, *, filter: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The `k` rows nearest `vector`, through the search function (an RPC), among the rows whose
        metadata contains `filter`. Dicts with `id` (and `section_id`), `title`, `content`,
        `metadata`, `similarity`.

        Raises:
            StoreError: The search failed (one line naming the URL and the function, never the key).
        """
        client = await self._client()
        params: dict[str, Any] = {"query_embedding": vector_literal(vector), "match_count": k, "match_threshold": threshold}
        if filter:
            params["filter"] = dict(filter)
        try:
            response = await self._retried(lambda: client.rpc(self.match_function, params).execute())
        except Exception as exc:  # postgrest's APIError may quote a gateway's echo of the key: never raised as is
            where = f"Supabase at {self.url}" if self.url else "Supabase"
            raise StoreError(f"search through {self.match_function}() on {where} failed: {self._reason(exc)}") from None
        return [{"id": row.get("section_id"), **row} for row in response.data or [] if isinstance(row, dict)]

    async def search_hybrid(
        self, text: str, vector: Sequence[float], k: int = 5, *, filter: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Full-text and vector ranks fused (the schema's `<match_function>_hybrid` RPC).

        Raises:
            StoreError: The search failed (one line, never the key).
        """
        client = await self._client()
        params = {"query_text": text, "query_embedding": vector_literal(vector), "match_count": k, "filter": dict(filter or {})}
        try:
            response = await self._retried(lambda: client.rpc(hybrid_function(self.match_function), params).execute())
        except Exception as exc:
            where = f"Supabase at {self.url}" if self.url else "Supabase"
            raise StoreError(f"hybrid search on {where} failed: {self._reason(exc)}") from None
        return [{"id": row.get("section_id"), **row} for row in response.data or [] if isinstance(row, dict)]
