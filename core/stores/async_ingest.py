"""The ingest pipeline for event loops: `AsyncSectionStore`, base of the async stores.

The same steps, accounting and errors as `core.stores.ingest` (the bookkeeping is the same
`IngestRun`), awaited instead of blocking: rows are written as each embeddings
request of an `AsyncEmbeddingService` completes, Ctrl-C/cancellation stops with
the exact report, a store or endpoint that cannot be used stops before paying.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..errors import ConfigurationError, CoreError
from .ingest import DEFAULT_WINDOW, IngestInterrupted, check_ingest_args, lookup_errors, windows
from ..engine.ingest_run import IngestProgress, IngestRun, Window
from ..limits import model_dimensions
from ..engine.rows import Row

__all__ = ["AsyncSectionStore"]


class AsyncSectionStore(abc.ABC):
    """Base of `AsyncSupabaseStore` and `AsyncPostgresStore`: the shared async ingest pipeline."""

    table: str
    embedding_service: Any = None

    @abc.abstractmethod
    async def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """`{section_id: (content_hash, model)}` for the ids already stored."""

    @abc.abstractmethod
    async def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        """Upsert `rows`; return `{section_id: reason}` for each row NOT stored."""

    @abc.abstractmethod
    async def search_vector(self, vector: Sequence[float], k: int = 5, threshold: float | None = None) -> list[dict[str, Any]]:
        """Nearest rows: dicts with `section_id`, `title`, `similarity`, best first."""

    async def preflight(self, dimensions: int | None) -> None:
        """Check, before anything is paid for, that rows of `dimensions` can be stored (raise `StoreError`)."""

    def _timestamp(self) -> str:
        return datetime.now(timezone.utc).isoformat()

    async def batch_ingest_embeddings(
        self,
        sections: Iterable[Mapping[str, Any]],
        embedding_service: Any,
        batch_size: int = 2048,
        *,
        skip_unchanged: bool = True,
        window: int = DEFAULT_WINDOW,
        progress: Callable[[IngestProgress], None] | None = None,
    ) -> dict[str, Any]:
        """Embed sections with an `AsyncEmbeddingService` and upsert one row per vector.

        Same arguments, result and errors as `SectionStore.batch_ingest_embeddings`;
        cancellation raises `IngestInterrupted` (a `KeyboardInterrupt`) with the report
        only for Ctrl-C — `asyncio.CancelledError` propagates as is, as asyncio expects.
        """
        check_ingest_args(batch_size, window)
        run = IngestRun(str(getattr(embedding_service, "model", "")), progress)
        try:
            for chunk in windows(sections, window):
                await self._ingest_window(run, run.take_window(chunk), embedding_service, batch_size, skip_unchanged)
        except KeyboardInterrupt:
            raise IngestInterrupted(run.report()) from None
        except CoreError as exc:
            exc.report = run.report()  # type: ignore[attr-defined]
            raise
        return run.report()

    async def _ingest_window(
        self, run: IngestRun, window: Window, service: Any, batch_size: int, skip_unchanged: bool
    ) -> None:
        if window.items and not run.checked:
            await self.preflight(model_dimensions(run.model, getattr(service, "dimensions", None)))
            run.checked = True
        if skip_unchanged and window.items:
            stored: dict[int, tuple[str, str]] = {}
            with lookup_errors(self.table):
                for ids in window.lookup_chunks():
                    stored.update(await self.fetch_hashes(ids))
            run.skip_stored(window, stored)
        run.notify()
        if not window.items:
            return
        updated_at = self._timestamp()
        written: set[int] = set()

        async def write(positions: list[int], batch: Any) -> None:
            written.update(positions)
            rows = run.rows(window, positions, batch.vectors, batch.errors, batch.token_counts, updated_at)
            run.written(window, rows, await self.write_rows(rows) if rows else {})

        batch = await service.embed(
            window.texts,
            max_batch_size=batch_size,
            progress=lambda inputs, _tokens: run.embedded(inputs),
            on_vectors=write,
        )
        run.counters.tokens += batch.total_tokens
        rest = [p for p in range(len(window.items)) if p not in written]  # never sent: invalid, too long
        if rest:
            await write(rest, batch)

    async def search(
        self, query: str, k: int = 5, threshold: float | None = None, *, embedding_service: Any = None
    ) -> list[dict[str, Any]]:
        """The `k` stored sections nearest to `query` (cosine), best first.

        Raises:
            ConfigurationError: No embedding service to embed the query with.
            EmbeddingAPIError: The query could not be embedded.
        """
        service = embedding_service or self.embedding_service
        if service is None:
            raise ConfigurationError("search needs an embedding service: pass embedding_service=...")
        vector = await service.generate_embedding(query)
        return await self.search_vector(vector, k=k, threshold=threshold)
