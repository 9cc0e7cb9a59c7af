"""One ingest's bookkeeping, free of I/O: validation, skips, rows, failures, the report.

The ingest pipeline (`core.stores.ingest_async`, and `core.stores.ingest` generated from it) and the Batch
API path drive an `IngestRun` and only do the I/O around it (looking up stored
hashes, embedding, writing rows), so accounting lives here once and is exact:
every section given ends in exactly one of stored, skipped (unchanged since it was
stored) or failed (with its index, id, a code and a reason), so
``success_count + skipped_count + failed_count == sections seen``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError, CoreError, StoreError
from ..limits import MAX_INPUTS_PER_REQUEST
from .rows import Row
from .sections import (
    RESERVED_FIELDS,
    canonical_id,
    content_hash,
    ids_type,
    section_metadata,
    section_text,
    validate_section,
    width_refused,
)

__all__ = [
    "IngestProgress",
    "IngestRun",
    "Pending",
    "Window",
    "RESERVED_FIELDS",
    "canonical_id",
    "content_hash",
    "ids_type",
    "section_metadata",
    "section_text",
    "validate_section",
    "HASH_LOOKUP_CHUNK",
    "check_ingest_args",
    "lookup_errors",
    "width_refused",
    "windows",
]

HASH_LOOKUP_CHUNK = 500
"""Ids per stored-hash lookup (keeps PostgREST's `in.(...)` URL well under limits)."""


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


@dataclass(frozen=True)
class Pending:
    """A valid section waiting to be embedded and stored."""

    index: int
    section_id: Any
    title: str
    text: str
    digest: str
    content: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None


@dataclass
class Window:
    """The valid sections of one window, still to embed (position = index into `items`)."""

    items: list[Pending]
    refresh: list[Pending] = field(default_factory=list)
    """Sections stored with the same text and model but other metadata (or no content yet):
    their rows are updated without an embedding request."""

    @property
    def texts(self) -> list[str]:
        return [item.text for item in self.items]

    def lookup_chunks(self) -> list[list[Any]]:
        """The ids to look up, in chunks of `HASH_LOOKUP_CHUNK`."""
        ids = [item.section_id for item in self.items]
        return [ids[start : start + HASH_LOOKUP_CHUNK] for start in range(0, len(ids), HASH_LOOKUP_CHUNK)]


@dataclass
class IngestRun:
    """Counters, failures and skips of one ingest call.

    Args:
        model: The embedding model (stored with each row; part of "unchanged").
        progress: Called with the running totals whenever they move.
        store_content: Keep each section's content in its row (False: only title and vector).
        metadata_fields: The fields kept as metadata (None: every field but id, title, content).
    """

    model: str
    progress: Callable[[IngestProgress], None] | None = None
    store_content: bool = True
    metadata_fields: Sequence[str] | None = None
    source: str | None = None
    """Recorded with every row written (a sync's source); None outside any sync."""
    dry_run: bool = False
    """Count what would be embedded and updated (`would_embed`, `would_update`); write nothing."""
    would_embed: int = 0
    would_embed_tokens: int = 0
    would_update: int = 0
    refreshed: int = 0
    """Rows updated without an embedding (metadata or content only); counted as stored too."""
    counters: IngestProgress = field(default_factory=IngestProgress)
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped_ids: list[Any] = field(default_factory=list)
    checked: bool = False
    """True once the store's preflight passed (done once, before the first paid request)."""
    _seen_ids: dict[Any, int] = field(default_factory=dict)
    _canonical_seen: dict[Any, int] = field(default_factory=dict)

    def notify(self) -> None:
        if self.progress is not None:
            self.progress(self.counters)

    def fail(self, index: int, section_id: Any, code: str, reason: str) -> None:
        self.failures.append({"index": index, "id": section_id, "code": code, "reason": reason})
        self.counters.failed += 1

    def take_window(self, chunk: Sequence[Any]) -> Window:
        """Validate a window of sections; the first occurrence of an id wins, later ones fail."""
        offset = self.counters.seen
        self.counters.seen += len(chunk)
        items: list[Pending] = []
        for position, section in enumerate(chunk):
            index = offset + position
            problem = validate_section(section)
            section_id = section.get("id") if isinstance(section, Mapping) else None
            code = "invalid_section"
            if problem is None and section_id in self._seen_ids:
                problem, code = f"duplicate id (first seen at index {self._seen_ids[section_id]})", "duplicate_id"
            if problem is not None:
                self.fail(index, section_id if _hashable(section_id) else None, code, problem)
                continue
            self._seen_ids[section_id] = index
            text = section_text(section["title"], section["content"])
            content = section["content"] if self.store_content else None
            metadata = section_metadata(section, self.metadata_fields)
            items.append(
                Pending(index, section_id, section["title"], text, content_hash(text), content, metadata, self.source)
            )
        return Window(items)

    def fit_ids(self, window: Window, id_type: str | None) -> None:
        """Fail the window's sections whose id does not fit a table of `id_type` ids (None: unknown,
        all pass), and those whose id is stored as another's (``5`` and ``"5"`` in a text table)."""
        if id_type is None:
            return
        kept = []
        for item in window.items:
            try:
                key = canonical_id(item.section_id, id_type)
            except (TypeError, ValueError) as exc:
                self.fail(item.index, item.section_id, "invalid_section", str(exc))
                continue
            if key == item.section_id and type(key) is type(item.section_id):
                # Stored as it is (an int in a bigint table: most ids): take_window already fails
                # a repeat of it, so only another id stored as the same key can have come first.
                # Not recorded: a second map of every id cost ~70 MB per million sections.
                first = self._canonical_seen.get(key, item.index)
            else:
                first = self._canonical_seen.setdefault(key, item.index)
                same = self._seen_ids.get(key)  # the key itself, seen as an id ("5" before 5)
                if same is not None and same < first:
                    first = same
            if first != item.index:
                self.fail(item.index, item.section_id, "duplicate_id", f"duplicate id (first seen at index {first})")
                continue
            kept.append(item)
        window.items = kept

    def skip_stored(self, window: Window, stored: Mapping[Any, tuple[Any, ...]], *, refresh: bool = False) -> None:
        """Drop from `window` the sections stored with the same hash and model.

        A stored entry is ``(content_hash, model)`` or ``(content_hash, model, metadata, has_content)``;
        with the latter, a section whose text and model match but whose metadata differs (or whose
        row has no content yet, when content is kept) is stale: with `refresh` it moves to
        `window.refresh` (its row is updated without embedding it again), else it stays to embed.
        """
        kept = []
        for item in window.items:
            entry = stored.get(item.section_id)
            if entry is None or tuple(entry[:2]) != (item.digest, self.model):
                kept.append(item)
            elif len(entry) > 2 and (
                entry[2] != item.metadata
                or (self.store_content and not entry[3])
                or (self.source is not None and len(entry) > 4 and entry[4] != self.source)
            ):
                (window.refresh if refresh else kept).append(item)
            else:
                self.skipped_ids.append(item.section_id)
                self.counters.skipped += 1
        window.items = kept

    def refreshed_rows(self, window: Window, failures: Mapping[Any, str]) -> None:
        """Account for the rows of `window.refresh` updated in place (`failures`: those not updated)."""
        for item in window.refresh:
            if item.section_id in failures:
                self.fail(item.index, item.section_id, "store_failed", f"store failed: {failures[item.section_id]}")
            else:
                self.counters.stored += 1
                self.refreshed += 1
        window.refresh = []
        self.notify()

    def rows(
        self,
        window: Window,
        positions: Sequence[int],
        vectors: Mapping[int, Any],
        errors: Mapping[int, str],
        token_counts: Sequence[int],
        updated_at: str,
    ) -> list[Row]:
        """Rows for the `positions` that have a vector; the others fail as not embedded."""
        rows: list[Row] = []
        for position in positions:
            item = window.items[position]
            if position not in vectors:
                reason = f"embedding failed: {errors.get(position, 'no vector')}"
                self.fail(item.index, item.section_id, "embedding_failed", reason)
                continue
            rows.append(
                Row(item.section_id, item.title, vectors[position], self.model, item.digest,
                    token_counts[position], updated_at, item.content, item.metadata, item.source)
            )
        return rows

    def written(self, window: Window, rows: Sequence[Row], failures: Mapping[Any, str]) -> None:
        """Account for a `write_rows` call: a section is stored only if its own row was."""
        if failures:
            index_of = {item.section_id: item.index for item in window.items}
        for row in rows:
            if row.section_id in failures:
                self.fail(index_of[row.section_id], row.section_id, "store_failed",
                          f"store failed: {failures[row.section_id]}")
            else:
                self.counters.stored += 1
        self.notify()

    def embedded(self, inputs: int) -> None:
        """One embeddings request came back with `inputs` inputs."""
        self.counters.embedded_inputs += inputs
        self.counters.embed_requests += 1
        self.notify()

    def report(self) -> dict[str, Any]:
        """The result dict: counts, failures in input order, skipped ids."""
        failures = sorted(self.failures, key=lambda failure: failure["index"])
        return {
            "success_count": self.counters.stored,
            "failed_count": self.counters.failed,
            "skipped_count": self.counters.skipped,
            "total_tokens": self.counters.tokens,
            "failed_ids": [failure["id"] for failure in failures],
            "failures": failures,
            "skipped_ids": self.skipped_ids,
            "updated_count": self.refreshed,
            **({"would_embed": self.would_embed, "would_embed_tokens": self.would_embed_tokens,
                "would_update": self.would_update} if self.dry_run else {}),
        }

    def present_ids(self) -> list[Any]:
        """Every id this run saw that belongs to its source: valid sections, and failed ones whose id
        is known (a section that failed is still part of the source)."""
        ids = list(self._seen_ids)
        ids.extend(f["id"] for f in self.failures if f["id"] is not None and f["code"] != "duplicate_id")
        return ids

    def unknown_ids(self) -> int:
        """Failed records whose id is unknown (unreadable, no id): a sync deletes nothing then."""
        return sum(1 for f in self.failures if f["id"] is None)


def seed_result_vectors(result: Mapping[str, Any], count: int) -> tuple[dict[int, Any], dict[int, str]]:
    """Vectors and errors by position from a seed-API `batch_generate_embeddings` result.

    A service that returns a different number of vectors than indices cannot be
    paired (pairing in order would store vectors under the wrong sections): then
    every position fails with that reason.
    """
    import array

    everything = range(count)
    failed = set(result.get("failed_indices", []))
    indices = result.get("indices") or [i for i in everything if i not in failed]
    embeddings = list(result.get("embeddings", []))
    if len(embeddings) != len(indices):
        reason = f"service returned {len(embeddings)} vectors for {len(indices)} inputs; cannot tell which is whose"
        return {}, {i: reason for i in everything}
    vectors = {i: array.array("f", v) for i, v in zip(indices, embeddings)}
    errors = {i: str(result.get("errors", {}).get(i, "failed")) for i in everything if i not in vectors}
    return vectors, errors


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


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
