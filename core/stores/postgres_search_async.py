"""How `AsyncPostgresStore` searches (a mixin): by vector through the table's search function (or a
`halfvec` scan), and hybrid, full-text and vector ranks fused, through its `_hybrid` twin.

With a metadata filter the search function's HNSW scan goes on until it has k matching rows
(pgvector 0.8's iterative scan); the function sets `hnsw.ef_search` for its own call (at least
k; the store's `ef_search`, else the schema's `SEARCH_EF_SEARCH`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, InvalidInputError, StoreError
from .postgres_rows import SEARCH_COLUMNS, as_float32, search_result, search_sql
from .schema import hybrid_function

__all__ = ["AsyncPostgresSearch"]


def _jsonb(filter: Mapping[str, Any] | None) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(dict(filter)) if filter else None


class AsyncPostgresSearch:
    """`search_vector` and `search_hybrid` for `AsyncPostgresStore`."""

    table: str
    dimensions: int
    match_function: str
    halfvec_scan: bool
    ef_search: int | None
    _numpy: Any
    _psycopg: Any

    if TYPE_CHECKING:

        def _borrow(self) -> Any: ...

        def _error(self, doing: str, exc: BaseException) -> StoreError: ...

    def _query_vector(self, vector: Sequence[float]) -> Any:
        query = as_float32(self._numpy, vector)
        if query.ndim != 1 or query.shape[0] != self.dimensions:
            raise InvalidInputError(f"query vector has {query.size} dimensions, table {self.table!r} has {self.dimensions}")
        return query

    async def _search(self, sql: str, params: Any) -> list[dict[str, Any]]:
        async with self._borrow() as conn:
            try:
                rows = await (await conn.execute(sql, params)).fetchall()
            except self._psycopg.Error as exc:
                raise self._error("search failed", exc) from None
        return [search_result(row) for row in rows]

    async def search_vector(
        self, vector: Sequence[float], k: int = 5, threshold: float | None = None, *, filter: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The `k` rows nearest `vector` by cosine similarity, best first.

        Args:
            vector: Query vector of `dimensions` floats.
            k: How many rows at most.
            threshold: Only rows with similarity >= threshold.
            filter: Only rows whose metadata contains this (``metadata @> filter``).

        Returns:
            Dicts with `id` (and `section_id`, the same), `title`, `content`, `metadata`, `similarity`.

        Raises:
            InvalidInputError: If `vector` has the wrong size or `k` < 1.
            StoreError: If the database is unreachable or the query fails.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        query = self._query_vector(vector)
        sql, params = search_sql(
            self.table, self.match_function, self.dimensions, query, k, threshold, halfvec_scan=self.halfvec_scan,
            filter=_jsonb(filter), ef_search=self.ef_search,
        )
        return await self._search(sql, params)

    async def search_hybrid(
        self, text: str, vector: Sequence[float], k: int = 5, *, filter: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The `k` best rows by full-text rank of `text` and vector rank of `vector`, fused by
        reciprocal rank (the `_hybrid` search function); `similarity` is still the cosine one.

        Raises:
            ConfigurationError: With ``halfvec_scan`` (the function computes `vector` distances).
            InvalidInputError: If `vector` has the wrong size or `k` < 1.
            StoreError: If the database is unreachable or the query fails (e.g. a schema that
                predates hybrid search: apply it again).
        """
        if self.halfvec_scan:
            raise ConfigurationError("hybrid search computes vector distances, which halfvec_scan avoids")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        sql = (f"select {', '.join(SEARCH_COLUMNS)} from {hybrid_function(self.match_function)}"
               "(%s, %b, %s, %s, ef_search => %s)")
        return await self._search(sql, (text, self._query_vector(vector), k, _jsonb(filter), self.ef_search))
