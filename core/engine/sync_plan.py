"""What a sync may delete, free of I/O: the rows of one source whose ids its new version no longer
has, and the guard that refuses a deletion too large to be anything but an accident.

A sync (`store.sync_sections`, `ingest FILE --sync`) first stores, skips or fails every section
of the new version; only then does it compare the source's stored ids with the ids it saw, and
only when it saw every record of the source. The decisions are here so that the sync and async
stores, the CLI and the dry run make them alike.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError
from ..limits import SYNC_MAX_DELETE_FRACTION

__all__ = ["MaxDelete", "SyncDecision", "decide_deletions", "parse_max_delete"]


@dataclass(frozen=True)
class MaxDelete:
    """The guard: at most `fraction` of the source's stored rows, or at most `count` rows."""

    fraction: float | None = SYNC_MAX_DELETE_FRACTION
    count: int | None = None

    def allows(self, deleting: int, stored: int) -> bool:
        if self.count is not None:
            return deleting <= self.count
        assert self.fraction is not None
        return deleting <= self.fraction * stored

    def __str__(self) -> str:
        return f"{self.count} rows" if self.count is not None else f"{self.fraction * 100:g}%"


def parse_max_delete(value: Any) -> MaxDelete:
    """`max_delete` as given: a float 0..1 is a fraction of the source's rows, an int >= 0 a count of
    rows, a string ``"10%"`` a percentage or ``"50"`` a count (the CLI's form).

    Raises:
        ConfigurationError: Anything else (a bool, a negative number, a fraction above 1).
    """
    if isinstance(value, MaxDelete):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                value = float(text[:-1]) / 100
            else:
                value = int(text)
        except ValueError:
            raise ConfigurationError(f"max_delete must be a percentage (10%) or a count of rows (50), not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"max_delete must be a fraction (0.1), a percentage or a count, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigurationError(f"max_delete must not be negative, not {value}")
        return MaxDelete(fraction=None, count=value)
    if not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"max_delete as a fraction must be between 0 and 1 (0% to 100%), not {value}")
    return MaxDelete(fraction=float(value))


@dataclass
class SyncDecision:
    """The deletions a sync makes (`to_delete`), or why it makes none (`refused`)."""

    stored: int
    """Rows the source had before the sync deleted anything."""
    to_delete: list[Any] = field(default_factory=list)
    refused: str | None = None

    @property
    def would_delete(self) -> int:
        return len(self.to_delete)


def decide_deletions(
    stored_ids: Collection[Any], present: Iterable[Any], guard: MaxDelete, *, source: str, blockers: Iterable[str] = ()
) -> SyncDecision:
    """The stored ids of `source` its new version no longer has, unless something forbids deleting.

    Args:
        stored_ids: The source's ids in the table (as the table keeps them).
        present: Every id the new version holds (stored, skipped, or failed with a known id: a
            section that failed is still part of its source), in the table's form.
        guard: How many deletions are plausible.
        source: Its name, for the messages.
        blockers: Reasons nothing may be deleted (a record whose id is unknown, a file not read
            to its end): any one refuses every deletion.
    """
    seen = set(present)
    decision = SyncDecision(stored=len(stored_ids), to_delete=sorted((i for i in stored_ids if i not in seen), key=str))
    reasons = list(blockers)
    if reasons:
        decision.refused = f"nothing deleted from source {source!r}: " + "; ".join(reasons)
    elif decision.to_delete and not guard.allows(len(decision.to_delete), decision.stored):
        decision.refused = (
            f"nothing deleted: source {source!r} would lose {len(decision.to_delete)} of its {decision.stored} rows, "
            f"more than the guard's {guard}; allow it with max_delete (--max-delete {len(decision.to_delete)} "
            "or --max-delete 100%) if the source really shrank"
        )
    return decision
