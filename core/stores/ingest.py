"""The ingest pipeline every store shares: validate, skip unchanged, embed, write, account.

A store only says how to read stored hashes, how to write rows and how to search
(`fetch_hashes`, `write_rows`, `search_vector`) and what to check before paying
(`preflight`); the bookkeeping lives once in `core.engine.ingest_run` (shared with the async
pipeline and the Batch API), and this module only does the I/O around it, in windows
of `INGEST_WINDOW` sections so memory stays flat on any corpus size.

Rows are written as each embeddings request completes (embedding and writing
overlap), so an interrupt or a crash loses at most the requests in flight, and a
re-run skips everything already stored.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..errors import ConfigurationError, CoreError, StoreError
from ..engine.ingest_run import (
    HASH_LOOKUP_CHUNK,
    IngestProgress,
    IngestRun,
    Window,
    content_hash,
    section_text,
    seed_result_vectors,
    validate_section,
)
from ..limits import INGEST_WINDOW, MAX_INPUTS_PER_REQUEST, model_dimensions
from ..engine.rows import Row

__all__ = [
    "SectionStore",
    "IngestProgress",
    "IngestInterrupted",
    "section_text",
    "content_hash",
    "validate_section",
    "HASH_LOOKUP_CHUNK",
]

DEFAULT_WINDOW = INGEST_WINDOW


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a signal turned into it) stopped an ingest; `report` says exactly what was stored.

    Requests not yet sent were cancelled; rows written before the interrupt stay
    written (vectors are stored as their requests complete, not window by window).
    """

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(f"interrupted after storing {report['success_count']} sections")
        self.report = report


def check_ingest_args(batch_size: Any, window: Any) -> None:
    """Raises ConfigurationError: `window` or `batch_size` out of range."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigurationError(f"window must be an integer >= 1, not {window!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_INPUTS_PER_REQUEST:
        raise ConfigurationError(f"batch_size must be an integer in 1..{MAX_INPUTS_PER_REQUEST}, not {batch_size!r}")


def windows(sections: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """`sections` in lists of `size` (the last one shorter), read lazily."""
    iterator = iter(sections)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


@contextlib.contextmanager
def lookup_errors(table: str) -> Iterator[None]:
    """Around a store's stored-hash lookups: a failure stops the run before paying, as `StoreError`.

    Raises:
        StoreError: For any non-library exception raised inside (library errors pass as they are).
    """
    try:
        yield
    except CoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot read which sections are stored in {table!r}: {exc}") from None


def stored_hashes(store: Any, window: Window) -> dict[int, tuple[str, str]]:
    """`{section_id: (content_hash, model)}` of the window's sections already in `store`.

    Raises:
        StoreError: The store cannot answer (the run stops before paying to embed what it may hold).
    """
    stored: dict[int, tuple[str, str]] = {}
    with lookup_errors(getattr(store, "table", "?")):
        for ids in window.lookup_chunks():
            stored.update(store.fetch_hashes(ids))
    return stored


class SectionStore(abc.ABC):
    """Base of `SupabaseStore` and `PostgresStore`: the shared ingest pipeline."""

    table: str
    embedding_service: Any = None

    # --- what each store provides ------------------------------------------------------

    @abc.abstractmethod
    def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """`{section_id: (content_hash, model)}` for the ids already stored (absent ids omitted)."""

    @abc.abstractmethod
    def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        """Upsert `rows`; return `{section_id: reason}` for each row NOT stored.

        Every row absent from the returned dict must have been stored, its own
        vector under its own id.
        """

    @abc.abstractmethod
    def search_vector(
        self, vector: Sequence[float], k: int = 5, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """Nearest rows: dicts with `section_id`, `title`, `similarity`, best first."""

    def preflight(self, dimensions: int | None) -> None:
        """Check, before anything is paid for, that rows of `dimensions` can be stored.

        Stores override this (reachable? table there? vector width?); raise `StoreError`.
        """

    def _timestamp(self) -> str:
        """`updated_at` for rows written now (stores may override the clock)."""
        return datetime.now(timezone.utc).isoformat()

    # --- the shared pipeline -------------------------------------------------------------

    def batch_ingest_embeddings(
        self,
        sections: Iterable[Mapping[str, Any]],
        embedding_service: Any,
        batch_size: int = 2048,
        *,
        skip_unchanged: bool = True,
        window: int = DEFAULT_WINDOW,
        progress: Callable[[IngestProgress], None] | None = None,
    ) -> dict[str, Any]:
        """Embed sections and upsert one row per vector; report exactly what happened.

        Each section is a dict with ``id`` (int), ``title`` and ``content`` (str);
        its text is ``title + "\\n\\n" + content`` (just ``content`` when the title is
        empty). Sections are processed in windows of `window`, so an iterator of
        any length runs in bounded memory.

        Args:
            sections: The sections (a list or any iterable).
            embedding_service: An `EmbeddingService` (or anything with its `embed`,
                or the seed's `batch_generate_embeddings`).
            batch_size: Inputs per embeddings request (<= 2048).
            skip_unchanged: Skip sections whose stored hash and model match, without
                calling the API (so a re-run after a crash re-embeds nothing stored).
            window: Sections validated and looked up per window.
            progress: Called with running totals as they move.

        Returns:
            ``success_count``, ``failed_count``, ``skipped_count``, ``total_tokens``,
            ``failed_ids`` (one entry per failed section, input order; None where a
            section has no usable id), ``failures`` (``index``, ``id``, ``code``,
            ``reason`` for each), ``skipped_ids``.

        Raises:
            ConfigurationError: `window` or `batch_size` out of range.
            StoreError: The store cannot be used (checked before the first paid
                request); carries ``report``, what was stored until then.
            EndpointError: The embeddings endpoint is unusable; carries ``report``.
            IngestInterrupted: Ctrl-C; carries ``report``.
        """
        check_ingest_args(batch_size, window)
        run = IngestRun(str(getattr(embedding_service, "model", "")), progress)
        try:
            for chunk in windows(sections, window):
                self._ingest_window(run, run.take_window(chunk), embedding_service, batch_size, skip_unchanged)
        except KeyboardInterrupt:
            raise IngestInterrupted(run.report()) from None
        except CoreError as exc:  # a run-stopping error (endpoint, store): still say what was stored
            exc.report = run.report()  # type: ignore[attr-defined]
            raise
        return run.report()

    def _ingest_window(
        self, run: IngestRun, window: Window, service: Any, batch_size: int, skip_unchanged: bool
    ) -> None:
        if window.items and not run.checked:  # before the first paid request: can rows be stored at all?
            self.preflight(model_dimensions(run.model, getattr(service, "dimensions", None)))
            run.checked = True
        if skip_unchanged and window.items:
            run.skip_stored(window, stored_hashes(self, window))
        run.notify()
        if not window.items:
            return
        updated_at = self._timestamp()

        def write(positions: list[int], vectors: Mapping[int, Any], errors: Mapping[int, str], tokens: Sequence[int]) -> None:
            rows = run.rows(window, positions, vectors, errors, tokens, updated_at)
            run.written(window, rows, self.write_rows(rows) if rows else {})

        texts = window.texts
        if not hasattr(service, "embed"):  # any object with the seed's batch_generate_embeddings
            try:
                result = service.batch_generate_embeddings(texts, max_batch_size=batch_size)
            except Exception as exc:  # every input failed
                reason = f"{type(exc).__name__}: {exc}"
                write(list(range(len(texts))), {}, dict.fromkeys(range(len(texts)), reason), [0] * len(texts))
                return
            run.counters.tokens += int(result.get("total_tokens", 0))
            vectors, errors = seed_result_vectors(result, len(texts))
            write(list(range(len(texts))), vectors, errors, [0] * len(texts))
            return
        # Write each request's rows as soon as it is back.
        written: set[int] = set()

        def on_vectors(positions: list[int], batch: Any) -> None:
            written.update(positions)
            write(positions, batch.vectors, batch.errors, batch.token_counts)

        batch = service.embed(
            texts, max_batch_size=batch_size, progress=lambda inputs, _tokens: run.embedded(inputs), on_vectors=on_vectors
        )
        run.counters.tokens += batch.total_tokens
        rest = [p for p in range(len(texts)) if p not in written]  # never sent: invalid, too long
        if rest:
            write(rest, batch.vectors, batch.errors, batch.token_counts)

    # --- search --------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 5,
        threshold: float | None = None,
        *,
        embedding_service: Any = None,
    ) -> list[dict[str, Any]]:
        """The `k` stored sections nearest to `query` (cosine), best first.

        Args:
            query: Text to search for.
            k: How many results.
            threshold: Minimum cosine similarity, or None.
            embedding_service: Service to embed the query (default: the store's).

        Raises:
            ConfigurationError: No embedding service to embed the query with.
            EmbeddingAPIError: The query could not be embedded.
        """
        service = embedding_service or self.embedding_service
        if service is None:
            raise ConfigurationError("search needs an embedding service: pass embedding_service=...")
        vector = service.generate_embedding(query)
        return self.search_vector(vector, k=k, threshold=threshold)
