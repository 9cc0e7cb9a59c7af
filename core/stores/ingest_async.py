"""The ingest pipeline every store shares: validate, skip unchanged, embed, write, account.

Written once, for event loops (`AsyncSectionStore`); `tools/async_to_sync.py` generates the
blocking twin (`core.stores.ingest.SectionStore`) from this file.

A store only says how to read stored hashes, how to write rows and how to search
(`fetch_hashes`, `write_rows`, `search_vector`) and what to check before paying
(`preflight`); the bookkeeping lives once in `core.engine.ingest_run` (shared with the
Batch API), and this module only does the I/O around it, in windows of `INGEST_WINDOW`
sections so memory stays flat on any corpus size.

Rows are written as each embeddings request completes (embedding and writing overlap),
so an interrupt or a crash loses at most the requests in flight, and a re-run skips
everything already stored. A store object may be shared by concurrent callers: each
call keeps its own `IngestRun`, and the stores give each write its own connection.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..engine.ingest_run import (
    HASH_LOOKUP_CHUNK,
    IngestProgress,
    IngestRun,
    Window,
    check_ingest_args,
    content_hash,
    lookup_errors,
    section_text,
    seed_result_vectors,
    validate_section,
    width_refused,
    windows,
)
from ..engine.rows import Row
from ..engine.tokens import count_tokens_batch
from ..errors import ConfigurationError, CoreError, IngestInterrupted, StoreError
from ..limits import INGEST_WINDOW, model_dimensions
from . import _flavour_async as flavour

__all__ = [
    "AsyncSectionStore",
    "DEFAULT_WINDOW",
    "HASH_LOOKUP_CHUNK",
    "IngestInterrupted",
    "IngestProgress",
    "check_ingest_args",
    "content_hash",
    "lookup_errors",
    "section_text",
    "stored_hashes",
    "validate_section",
    "windows",
]

DEFAULT_WINDOW = INGEST_WINDOW


async def stored_hashes(store: Any, window: Window) -> dict[Any, tuple[Any, ...]]:
    """`{section_id: (content_hash, model)}` of the window's sections already in `store`.

    Raises:
        StoreError: The store cannot answer (the run stops before paying to embed what it may hold).
    """
    stored: dict[Any, tuple[Any, ...]] = {}
    with lookup_errors(getattr(store, "table", "?")):
        for ids in window.lookup_chunks():
            stored.update(await store.fetch_hashes(ids))
    return stored


class AsyncSectionStore(abc.ABC):
    """Base of `AsyncSupabaseStore` and `AsyncPostgresStore`: the shared ingest pipeline."""

    table: str
    embedding_service: Any = None
    table_id_type: str | None = None
    """The table's id type once known (`core.stores.schema.ID_TYPES`); ids that do not fit fail alone."""

    # --- what each store provides ------------------------------------------------------

    @abc.abstractmethod
    async def fetch_hashes(self, section_ids: Sequence[Any]) -> dict[Any, tuple[Any, ...]]:
        """`{section_id: (content_hash, model)}` for the ids already stored (absent ids omitted)."""

    @abc.abstractmethod
    async def write_rows(self, rows: Sequence[Row]) -> dict[Any, str]:
        """Upsert `rows`; return `{section_id: reason}` for each row NOT stored.

        Every row absent from the returned dict must have been stored, its own
        vector under its own id, and committed: a fresh connection sees it.
        """

    @abc.abstractmethod
    async def search_vector(
        self, vector: Sequence[float], k: int = 5, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """Nearest rows, best first: dicts with `id`, `section_id`, `title`, `content`, `metadata`,
        `similarity` (stores also take ``filter=``, a metadata dict the rows must contain)."""

    async def preflight(self, dimensions: int | None) -> None:
        """Check, before anything is paid for, that rows of `dimensions` can be stored.

        Stores override this (reachable? table there? vector width?); raise `StoreError`.
        """

    async def claim_ids(self, ids: Sequence[Any]) -> None:
        """Told the first window's ids before `preflight`: a store that creates its table may choose
        the id column's type from them (integers: bigint, else text)."""

    async def refresh_rows(self, items: Sequence[Any], updated_at: str) -> dict[Any, str]:
        """Update the content and metadata of stored rows whose text is unchanged (no new vector);
        `{section_id: reason}` for rows not updated. Stores that read metadata back override it."""
        return dict.fromkeys((item.section_id for item in items), "this store cannot update rows in place")

    def _timestamp(self) -> str:
        """`updated_at` for rows written now (stores may override the clock)."""
        return datetime.now(timezone.utc).isoformat()

    # --- the shared pipeline -------------------------------------------------------------

    async def batch_ingest_embeddings(
        self,
        sections: Iterable[Mapping[str, Any]],
        embedding_service: Any,
        batch_size: int = 2048,
        *,
        skip_unchanged: bool = True,
        window: int = DEFAULT_WINDOW,
        progress: Callable[[IngestProgress], None] | None = None,
        store_content: bool = True,
        metadata_fields: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Embed sections and upsert one row per vector; report exactly what happened.

        Each section is a dict with ``id`` (an int, or a string), ``title`` and ``content``
        (str); every other field is its metadata (stored as JSON, for filters). Its text is
        ``title + "\\n\\n" + content`` (just ``content`` when the title is empty).
        Sections are processed in windows of `window`, so an iterator of any length runs in
        bounded memory.

        Args:
            sections: The sections (a list or any iterable).
            embedding_service: An embedding service of this store's flavour (or
                anything with its `embed`, or the seed's `batch_generate_embeddings`).
            batch_size: Inputs per embeddings request (<= 2048).
            skip_unchanged: Skip sections whose stored hash and model match, without
                calling the API (so a re-run after a crash re-embeds nothing stored).
            window: Sections validated and looked up per window.
            progress: Called with running totals as they move.
            store_content: Keep each section's content in its row.
            metadata_fields: Keep only these fields as metadata (default: all but id, title, content).

        Returns:
            ``success_count``, ``failed_count``, ``skipped_count``, ``total_tokens``,
            ``failed_ids`` (one entry per failed section, input order; None where a
            section has no usable id), ``failures`` (``index``, ``id``, ``code``,
            ``reason`` for each), ``skipped_ids``, ``updated_count`` (rows whose text was
            unchanged but whose metadata was not, updated without an embedding; part of
            ``success_count``).

        Raises:
            ConfigurationError: `window` or `batch_size` out of range.
            StoreError: The store cannot be used (checked before the first paid
                request); carries ``report``, what was stored until then.
            EndpointError: The embeddings endpoint is unusable; carries ``report``.
            IngestInterrupted: Ctrl-C (also when ``asyncio.run`` turned it into a
                cancellation); carries ``report``. Any other cancellation propagates.
        """
        check_ingest_args(batch_size, window)
        run = IngestRun(
            str(getattr(embedding_service, "model", "")), progress, store_content=store_content,
            metadata_fields=metadata_fields,
        )
        return await self._ingest(run, sections, embedding_service, batch_size, skip_unchanged, window)

    async def _ingest(
        self, run: IngestRun, sections: Iterable[Any], service: Any, batch_size: int, skip_unchanged: bool, window: int
    ) -> dict[str, Any]:
        """Every window of `sections` through `run`; the report (run-stopping errors carry it too)."""
        with flavour.interrupt_watch() as interrupted:
            try:
                for chunk in windows(sections, window):
                    await self._ingest_window(run, run.take_window(chunk), service, batch_size, skip_unchanged)
                    await self._window_done()
            except KeyboardInterrupt:
                raise IngestInterrupted(run.report()) from None
            except flavour.Cancelled:
                if interrupted():
                    raise IngestInterrupted(run.report()) from None
                raise
            except CoreError as exc:  # a run-stopping error (endpoint, store): still say what was stored
                exc.report = run.report()  # type: ignore[attr-defined]
                raise
        return run.report()

    async def _window_done(self) -> None:
        """After each window (a sync renews its lock here)."""

    async def _ingest_window(
        self, run: IngestRun, window: Window, service: Any, batch_size: int, skip_unchanged: bool
    ) -> None:
        if window.items and not run.checked:  # before the first paid request: can rows be stored at all?
            await self.claim_ids([item.section_id for item in window.items])
            await self.preflight(model_dimensions(run.model, getattr(service, "dimensions", None)))
            run.checked = True
        run.fit_ids(window, self.table_id_type)
        updated_at = self._timestamp()
        if skip_unchanged and window.items:
            run.skip_stored(window, await stored_hashes(self, window), refresh=True)
            if window.refresh and not run.dry_run:
                run.refreshed_rows(window, await self.refresh_rows(window.refresh, updated_at))
        if run.dry_run:  # count, write nothing, pay nothing
            run.would_update += len(window.refresh)
            run.would_embed += len(window.items)
            run.would_embed_tokens += sum(count_tokens_batch(window.texts)) if window.items else 0
            window.items, window.refresh = [], []
        run.notify()
        if not window.items:
            return

        async def write(positions: list[int], vectors: Mapping[int, Any], errors: Mapping[int, str], tokens: Sequence[Any]) -> None:
            rows = run.rows(window, positions, vectors, errors, tokens, updated_at)
            failures = await self.write_rows(rows) if rows else {}
            run.written(window, rows, failures)
            if run.counters.stored == 0 and (problem := width_refused(rows, failures)):
                raise StoreError(f"table {self.table!r} {problem}: nothing more is embedded")

        texts = window.texts
        if not hasattr(service, "embed"):  # any object with the seed's batch_generate_embeddings
            try:
                result = await service.batch_generate_embeddings(texts, max_batch_size=batch_size)
            except Exception as exc:  # every input failed
                reason = f"{type(exc).__name__}: {exc}"
                await write(list(range(len(texts))), {}, dict.fromkeys(range(len(texts)), reason), [0] * len(texts))
                return
            run.counters.tokens += int(result.get("total_tokens", 0))
            vectors, errors = seed_result_vectors(result, len(texts))
            await write(list(range(len(texts))), vectors, errors, [0] * len(texts))
            return
        # Write each request's rows as soon as it is back.
        written: set[int] = set()

        async def on_vectors(positions: list[int], batch: Any) -> None:
            written.update(positions)
            await write(positions, batch.vectors, batch.errors, batch.token_counts)

        batch = await service.embed(
            texts, max_batch_size=batch_size, progress=lambda inputs, _tokens: run.embedded(inputs), on_vectors=on_vectors
        )
        run.counters.tokens += batch.total_tokens
        rest = [p for p in range(len(texts)) if p not in written]  # never sent: invalid, too long
        if rest:
            await write(rest, batch.vectors, batch.errors, batch.token_counts)

    # --- search --------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        k: int = 5,
        threshold: float | None = None,
        *,
        filter: Mapping[str, Any] | None = None,
        hybrid: bool = False,
        embedding_service: Any = None,
    ) -> list[dict[str, Any]]:
        """The `k` stored sections nearest to `query` (cosine), best first.

        Args:
            query: Text to search for.
            k: How many results.
            threshold: Minimum cosine similarity, or None.
            filter: Only rows whose metadata contains this (JSON containment:
                ``{"lang": "de"}``); k rows come back whenever k rows match.
            hybrid: Rank by full-text match of `query` (title and content, websearch
                syntax) and by vector similarity, fused by reciprocal rank: finds exact
                terms (codes, names) that vectors blur. `threshold` still applies to the
                cosine similarity.
            embedding_service: Service to embed the query (default: the store's).

        Returns:
            Dicts with ``id`` (and ``section_id``, the same), ``title``, ``content``,
            ``metadata``, ``similarity``.

        Raises:
            ConfigurationError: No embedding service to embed the query with.
            EmbeddingAPIError: The query could not be embedded.
            StoreError: The search itself failed.
        """
        service = embedding_service or self.embedding_service
        if service is None:
            raise ConfigurationError("search needs an embedding service: pass embedding_service=...")
        vector = await service.generate_embedding(query)
        if hybrid:
            hits = await self.search_hybrid(query, vector, k, filter=filter)  # type: ignore[attr-defined]
            return [hit for hit in hits if threshold is None or hit["similarity"] >= threshold]
        if filter is None:  # stores written for the seed's search_vector(vector, k, threshold) keep working
            return await self.search_vector(vector, k=k, threshold=threshold)
        return await self.search_vector(vector, k=k, threshold=threshold, filter=filter)
