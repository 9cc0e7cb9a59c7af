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
import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError, CoreError, StoreError
from ..limits import MAX_INPUTS_PER_REQUEST
from .rows import Row

__all__ = [
    "IngestProgress",
    "IngestRun",
    "Pending",
    "Window",
    "content_hash",
    "section_text",
    "validate_section",
    "HASH_LOOKUP_CHUNK",
    "check_ingest_args",
    "lookup_errors",
    "width_refused",
    "windows",
]

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
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


@dataclass(frozen=True)
class Pending:
    """A valid section waiting to be embedded and stored."""

    index: int
    section_id: int
    title: str
    text: str
    digest: str


@dataclass
class Window:
    """The valid sections of one window, still to embed (position = index into `items`)."""

    items: list[Pending]

    @property
    def texts(self) -> list[str]:
        return [item.text for item in self.items]

    def lookup_chunks(self) -> list[list[int]]:
        """The ids to look up, in chunks of `HASH_LOOKUP_CHUNK`."""
        ids = [item.section_id for item in self.items]
        return [ids[start : start + HASH_LOOKUP_CHUNK] for start in range(0, len(ids), HASH_LOOKUP_CHUNK)]


@dataclass
class IngestRun:
    """Counters, failures and skips of one ingest call.

    Args:
        model: The embedding model (stored with each row; part of "unchanged").
        progress: Called with the running totals whenever they move.
    """

    model: str
    progress: Callable[[IngestProgress], None] | None = None
    counters: IngestProgress = field(default_factory=IngestProgress)
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped_ids: list[int] = field(default_factory=list)
    checked: bool = False
    """True once the store's preflight passed (done once, before the first paid request)."""
    _seen_ids: dict[int, int] = field(default_factory=dict)

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
            items.append(Pending(index, section_id, section["title"], text, content_hash(text)))
        return Window(items)

    def skip_stored(self, window: Window, stored: Mapping[int, tuple[str, str]]) -> None:
        """Drop from `window` the sections stored with the same hash and model."""
        kept = []
        for item in window.items:
            if stored.get(item.section_id) == (item.digest, self.model):
                self.skipped_ids.append(item.section_id)
                self.counters.skipped += 1
            else:
                kept.append(item)
        window.items = kept

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
                    token_counts[position], updated_at)
            )
        return rows

    def written(self, window: Window, rows: Sequence[Row], failures: Mapping[int, str]) -> None:
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
        }


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


_WIDTH_REFUSED = re.compile(r"expected (\d+) dimensions, not (\d+)")
"""pgvector's refusal of a vector of another width (SQLSTATE 22000), through psycopg or PostgREST."""


def width_refused(rows: Sequence[Row], failures: Mapping[Any, str]) -> str | None:
    """Why the table cannot take these vectors at all, when every row of a write was refused for its width.

    Through PostgREST an empty table's vector width cannot be read before paying, so the first
    write (the engine's small probe request) is the check: the run stops there, not after
    paying for every section.
    """
    if not rows or len(failures) < len(rows):
        return None
    widths = {_WIDTH_REFUSED.search(reason).groups() if _WIDTH_REFUSED.search(reason) else None for reason in failures.values()}
    if len(widths) != 1 or None in widths:
        return None
    expected, got = next(iter(widths))  # type: ignore[misc]
    return f"takes {expected}-dimensional vectors, but the embeddings have {got} dimensions"
