"""The ingest pipeline every store shares: validate, skip unchanged, embed, write, account.

A store only says how to read stored hashes, how to write rows and how to search
(`fetch_hashes`, `write_rows`, `search_vector`); everything else lives here once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from .rows import Row

__all__ = ["SectionStore"]


class SectionStore(abc.ABC):
    """Base of `SupabaseStore` and `PostgresStore`."""

    table: str

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
