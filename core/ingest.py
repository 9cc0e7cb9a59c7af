"""The ingest pipeline every store shares: validate, skip unchanged, embed, write, account.

A store only says how to read stored hashes, how to write rows and how to search
(`fetch_hashes`, `write_rows`, `search_vector`); everything else lives here once.

Accounting is exact: every section given ends in exactly one of stored,
skipped (unchanged since it was stored) or failed (with its id and a reason),
so ``success_count + skipped_count + failed_count == len(sections)``.
"""

from __future__ import annotations

import abc
import array
import hashlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import ConfigurationError, CoreError, StoreError
from .limits import INGEST_WINDOW, model_dimensions
from .rows import Row

__all__ = [
    "SectionStore",
    "IngestProgress",
    "IngestInterrupted",
    "section_text",
    "content_hash",
    "validate_section",
]

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
DEFAULT_WINDOW = INGEST_WINDOW
HASH_LOOKUP_CHUNK = 500
"""Ids per stored-hash lookup (keeps PostgREST's `in.(...)` URL well under limits)."""


def section_text(title: str, content: str) -> str:
    """The text embedded for a section: title, blank line, content (title omitted when empty)."""
    return f"{title}\n\n{content}" if title else content


def content_hash(text: str) -> str:
    """SHA-256 hex of the embedded text: unchanged hash + model means nothing to redo."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_section(section: Any) -> str | None:
    """Why `section` cannot be stored, or None when it is fine."""
    if not isinstance(section, Mapping):
        return f"section must be a dict with id, title, content, not {type(section).__name__}"
    if "id" not in section:
        return "missing 'id'"
    section_id = section["id"]
    if isinstance(section_id, bool) or not isinstance(section_id, int):
        return f"'id' must be an integer, not {type(section_id).__name__}"
    if not BIGINT_MIN <= section_id <= BIGINT_MAX:
        return "'id' is outside the bigint range"
    for name in ("title", "content"):
        if name not in section:
            return f"missing {name!r}"
        value = section[name]
        if not isinstance(value, str):
            return f"{name!r} must be a string, not {type(value).__name__}"
        if "\x00" in value:
            return f"{name!r} contains a NUL byte (Postgres text cannot store it)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"{name!r} is not valid Unicode (lone surrogate at position {exc.start})"
    if not section["content"].strip() and not section["title"].strip():
        return "title and content are both empty"
    return None


@dataclass
class IngestProgress:
    """Running totals, passed to the `progress` callback whenever they move."""

    seen: int = 0
    stored: int = 0
    skipped: int = 0
    failed: int = 0
    tokens: int = 0
    embedded_inputs: int = 0
    embed_requests: int = 0

    @property
    def done(self) -> int:
        return self.stored + self.skipped + self.failed


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a signal turned into it) stopped an ingest; `report` says exactly what was stored.

    Requests not yet sent were cancelled; rows written before the interrupt stay
    written (vectors are stored as their requests complete, not window by window).
    """

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(f"interrupted after storing {report['success_count']} sections")
        self.report = report


@dataclass
class _Outcome:
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped_ids: list[int] = field(default_factory=list)

    def fail(self, index: int, section_id: Any, code: str, reason: str, progress: IngestProgress) -> None:
        self.failures.append({"index": index, "id": section_id, "code": code, "reason": reason})
        progress.failed += 1

    def report(self, counters: IngestProgress) -> dict[str, Any]:
        # Validation failures are found before embedding and store failures:
        # put them back in input order, as documented.
        failures = sorted(self.failures, key=lambda failure: failure["index"])
        return {
            "success_count": counters.stored,
            "failed_count": counters.failed,
            "skipped_count": counters.skipped,
            "total_tokens": counters.tokens,
            "failed_ids": [failure["id"] for failure in failures],
            "failures": failures,
            "skipped_ids": self.skipped_ids,
        }


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
            embedding_service: An `EmbeddingService` (or anything with its `embed`).
            batch_size: Inputs per embeddings request (<= 2048).
            skip_unchanged: Skip sections whose stored hash and model match, without
                calling the API (so a re-run after a crash re-embeds nothing stored).
            window: Sections per embed-then-write window.
            progress: Called with running totals as they move.

        Returns:
            ``success_count``, ``failed_count``, ``skipped_count``, ``total_tokens``,
            ``failed_ids`` (one entry per failed section, input order; None where a
            section has no usable id), ``failures`` (``index``, ``id``, ``reason`` for
            each), ``skipped_ids``.

        Raises:
            ConfigurationError: `window` or `batch_size` out of range.
        """
        if window < 1:
            raise ConfigurationError(f"window must be >= 1, not {window}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 2048:
            raise ConfigurationError(f"batch_size must be an integer in 1..2048, not {batch_size!r}")
        counters = IngestProgress()
        outcome = _Outcome()
        seen_ids: dict[int, int] = {}
        iterator = iter(sections)
        offset = 0
        state = {"checked": False}
        try:
            while True:
                chunk = list(itertools.islice(iterator, window))
                if not chunk:
                    break
                self._ingest_window(
                    chunk, offset, embedding_service, batch_size, skip_unchanged, seen_ids, counters, outcome,
                    progress, state,
                )
                offset += len(chunk)
        except KeyboardInterrupt:
            raise IngestInterrupted(outcome.report(counters)) from None
        except CoreError as exc:  # a run-stopping error (endpoint, store): still say what was stored
            exc.report = outcome.report(counters)  # type: ignore[attr-defined]
            raise
        return outcome.report(counters)

    def _ingest_window(
        self,
        chunk: list[Any],
        offset: int,
        service: Any,
        batch_size: int,
        skip_unchanged: bool,
        seen_ids: dict[int, int],
        counters: IngestProgress,
        outcome: _Outcome,
        progress: Callable[[IngestProgress], None] | None,
        state: dict[str, bool],
    ) -> None:
        counters.seen += len(chunk)
        model = str(getattr(service, "model", ""))
        # 1. Validate; the first occurrence of an id wins, later ones fail.
        pending: list[tuple[int, int, str, str, str]] = []  # (index, id, title, text, hash)
        for position, section in enumerate(chunk):
            index = offset + position
            problem = validate_section(section)
            section_id = section.get("id") if isinstance(section, Mapping) else None
            code = "invalid_section"
            if problem is None and section_id in seen_ids:
                problem, code = f"duplicate id (first seen at index {seen_ids[section_id]})", "duplicate_id"
            if problem is not None:
                outcome.fail(index, section_id if _hashable(section_id) else None, code, problem, counters)
                continue
            seen_ids[section_id] = index
            text = section_text(section["title"], section["content"])
            pending.append((index, section_id, section["title"], text, content_hash(text)))

        # 2. Before the first paid request: can rows of this width be stored at all?
        if pending and not state["checked"]:
            self.preflight(model_dimensions(model, getattr(service, "dimensions", None)))
            state["checked"] = True

        # 3. Skip what is already stored unchanged (one lookup per chunk of ids). A store
        # that cannot answer stops the run here, before paying to embed what it may hold.
        if skip_unchanged and pending:
            stored: dict[int, tuple[str, str]] = {}
            ids = [item[1] for item in pending]
            try:
                for start in range(0, len(ids), HASH_LOOKUP_CHUNK):
                    stored.update(self.fetch_hashes(ids[start : start + HASH_LOOKUP_CHUNK]))
            except CoreError:
                raise
            except Exception as exc:
                raise StoreError(f"cannot read which sections are stored in {self.table!r}: {exc}") from None
            kept = []
            for item in pending:
                if stored.get(item[1]) == (item[4], model):
                    outcome.skipped_ids.append(item[1])
                    counters.skipped += 1
                else:
                    kept.append(item)
            pending = kept
        _notify(progress, counters)
        if not pending:
            return

        # 4. Embed, and write each request's rows as soon as it is back: embedding and
        # writing overlap, and an interrupt loses at most the requests in flight.
        updated_at = self._timestamp()

        def write(positions: list[int], vectors: dict[int, Any], errors: dict[int, str], tokens: list[int]) -> None:
            rows: list[Row] = []
            for position in positions:
                index, section_id, title, _text, digest = pending[position]
                if position not in vectors:
                    reason = f"embedding failed: {errors.get(position, 'no vector')}"
                    outcome.fail(index, section_id, "embedding_failed", reason, counters)
                    continue
                rows.append(Row(section_id, title, vectors[position], model, digest, tokens[position], updated_at))
            if rows:
                failures = self.write_rows(rows)
                index_of = {pending[p][1]: pending[p][0] for p in positions}
                for row in rows:
                    if row.section_id in failures:
                        reason = f"store failed: {failures[row.section_id]}"
                        outcome.fail(index_of[row.section_id], row.section_id, "store_failed", reason, counters)
                    else:
                        counters.stored += 1
            _notify(progress, counters)

        self._embed(service, [item[3] for item in pending], batch_size, counters, progress, write)

    @staticmethod
    def _embed(
        service: Any,
        texts: list[str],
        batch_size: int,
        counters: IngestProgress,
        progress: Callable[[IngestProgress], None] | None,
        write: Callable[[list[int], dict[int, Any], dict[int, str], list[int]], None],
    ) -> None:
        """Embed `texts`, calling `write(positions, vectors, errors, token_counts)` as results arrive.

        With an `EmbeddingService` (anything with `embed`), per request as it completes;
        with any other object offering the seed's `batch_generate_embeddings`, once.
        """
        if hasattr(service, "embed"):
            written: set[int] = set()

            def on_request(inputs: int, tokens: int) -> None:
                counters.embedded_inputs += inputs
                counters.embed_requests += 1
                _notify(progress, counters)

            def on_vectors(positions: list[int], batch: Any) -> None:
                written.update(positions)
                write(positions, batch.vectors, batch.errors, batch.token_counts)

            batch = service.embed(texts, max_batch_size=batch_size, progress=on_request, on_vectors=on_vectors)
            counters.tokens += batch.total_tokens
            # Inputs that never reached a request (invalid, too long) fail here.
            rest = [p for p in range(len(texts)) if p not in written]
            if rest:
                write(rest, batch.vectors, batch.errors, batch.token_counts)
            return
        # Any object with the seed's `batch_generate_embeddings` works too.
        everything = list(range(len(texts)))
        try:
            result = service.batch_generate_embeddings(texts, max_batch_size=batch_size)
        except Exception as exc:  # every input failed
            reason = f"{type(exc).__name__}: {exc}"
            write(everything, {}, {i: reason for i in everything}, [0] * len(texts))
            return
        failed = set(result.get("failed_indices", []))
        indices = result.get("indices") or [i for i in everything if i not in failed]
        embeddings = list(result.get("embeddings", []))
        counters.tokens += int(result.get("total_tokens", 0))
        if len(embeddings) != len(indices):
            # Pairing them in order would store vectors under the wrong sections.
            reason = f"service returned {len(embeddings)} vectors for {len(indices)} inputs; cannot tell which is whose"
            write(everything, {}, {i: reason for i in everything}, [0] * len(texts))
            return
        vectors = {i: array.array("f", v) for i, v in zip(indices, embeddings)}
        errors = {i: str(result.get("errors", {}).get(i, "failed")) for i in everything if i not in vectors}
        write(everything, vectors, errors, [0] * len(texts))

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


def _notify(progress: Callable[[IngestProgress], None] | None, counters: IngestProgress) -> None:
    if progress is not None:
        progress(counters)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
