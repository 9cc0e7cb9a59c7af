"""Keeping a table equal to its source (issue #18): `sync_sections`, `delete`, `delete_source`.

The async flavour is written by hand; the sync one is generated (`tools/async_to_sync.py`).

A sync stores, skips or fails every section of the new version of a source (as any ingest does:
changed sections are embedded again, unchanged ones cost nothing, metadata-only changes update the
row), and only then deletes the rows of that source whose ids the new version no longer has:
never when the run was interrupted or stopped, when a record's id was unknown, when the caller says
the input was not read to its end, or when the guard finds the deletion implausibly large
(`core.engine.sync_plan`). Deletions come after the upserts, one transaction per chunk of
`SYNC_DELETE_CHUNK` ids, so a re-run after a crash finishes them. Two syncs of the same source into
the same table take turns (a lock per table and source); different sources sync at once.
Rows written outside any sync have no source and are never deleted by one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..engine.ingest_run import IngestProgress, IngestRun, check_ingest_args
from ..engine.sections import canonical_id, ids_type
from ..engine.sync_plan import decide_deletions, parse_max_delete
from ..errors import ConfigurationError
from ..limits import INGEST_WINDOW, SYNC_MAX_DELETE_FRACTION

__all__ = ["AsyncSyncing", "check_source"]

DELETE_PREVIEW = 10
"""Ids to delete a report names (a dry run's "first ids to delete")."""


def check_source(source: Any) -> str:
    """A source name: a non-empty string without NUL.

    Raises:
        ConfigurationError: Anything else.
    """
    if not isinstance(source, str) or not source.strip() or "\x00" in source:
        raise ConfigurationError(f"source must be a non-empty string, not {source!r}")
    return source


class AsyncSyncing:
    """The sync methods of a store (a mixin over `AsyncSectionStore`; each store provides
    `source_ids`, `delete_rows`, `delete`, `delete_source` and `_sync_lock`)."""

    table: str
    table_id_type: str | None

    async def source_ids(self, source: str) -> list[Any]:
        """The ids of the rows of `source` (as the table keeps them)."""
        raise NotImplementedError

    async def delete_rows(self, ids: Sequence[Any], *, source: str | None = None) -> int:
        """Delete these ids (only rows of `source`, when given), a transaction per chunk; the rows deleted."""
        raise NotImplementedError

    def _sync_lock(self, source: str) -> Any:
        """An async context manager holding the lock of (this table, `source`) (raises `StoreError`
        naming the holder when another run has it)."""
        raise NotImplementedError

    async def delete(self, ids: Iterable[Any]) -> int:
        """Delete the rows of these ids, whatever their source; how many were deleted.

        Raises:
            StoreError: The store is unreachable or refuses.
        """
        keys = []
        for section_id in ids:
            try:
                keys.append(canonical_id(section_id, self.table_id_type or ids_type([section_id])))
            except (TypeError, ValueError):
                continue  # cannot be stored here, so is not
        return await self.delete_rows(keys) if keys else 0

    async def delete_source(self, source: str) -> int:
        """Delete every row of `source`; how many were deleted.

        Raises:
            StoreError: The store is unreachable or refuses.
        """
        source = check_source(source)
        return await self.delete_rows(await self.source_ids(source), source=source)

    async def sync_sections(
        self,
        sections: Iterable[Mapping[str, Any]],
        embedding_service: Any,
        *,
        source: str,
        max_delete: Any = SYNC_MAX_DELETE_FRACTION,
        dry_run: bool = False,
        check_complete: Callable[[], str | None] | None = None,
        batch_size: int = 2048,
        window: int = INGEST_WINDOW,
        progress: Callable[[IngestProgress], None] | None = None,
        store_content: bool = True,
        metadata_fields: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Make the rows of `source` equal to `sections`: store what is new or changed, delete what
        is gone (see the module doc for when nothing is deleted).

        Args:
            sections: Every section of the source, as for `batch_ingest_embeddings`.
            embedding_service: As for `batch_ingest_embeddings`.
            source: The source's name (a file's name, a URL...); recorded on each row.
            max_delete: The guard: a fraction of the source's rows (0.1: 10 %), a count of
                rows (an int), or the CLI's ``"10%"`` / ``"50"``; more deletions than that
                delete nothing (``delete_refused`` says why and how to allow it).
            dry_run: Embed, write and delete nothing; report what would be embedded
                (``would_embed``, ``would_embed_tokens``), updated (``would_update``) and
                deleted (``would_delete``, ``delete_preview``).
            check_complete: Called after the last section: a reason the input was not read
                to its end (None if it was); any reason deletes nothing.
            batch_size, window, progress, store_content, metadata_fields: As for
                `batch_ingest_embeddings`.

        Returns:
            `batch_ingest_embeddings`'s report plus ``source``, ``deleted``, ``would_delete``,
            ``delete_refused`` (None, or why nothing was deleted) and ``delete_preview``.

        Raises:
            ConfigurationError: A bad `source` or `max_delete`.
            StoreError: The store cannot be used, or another sync of this source into this
                table holds the lock (the message names it).
            EndpointError, IngestInterrupted: As `batch_ingest_embeddings`; nothing is deleted.
        """
        source = check_source(source)
        guard = parse_max_delete(max_delete)
        check_ingest_args(batch_size, window)
        run = IngestRun(
            str(getattr(embedding_service, "model", "")), progress, store_content=store_content,
            metadata_fields=metadata_fields, source=source, dry_run=dry_run,
        )
        async with contextlib.nullcontext() if dry_run else self._sync_lock(source):
            report = await self._ingest(run, sections, embedding_service, batch_size, True, window)  # type: ignore[attr-defined]
            blockers = []
            if run.unknown_ids():
                blockers.append(f"{run.unknown_ids()} record(s) could not be read, so their ids are unknown")
            incomplete = check_complete() if check_complete is not None else None
            if incomplete:
                blockers.append(incomplete)
            stored = await self.source_ids(source)
            present = []
            for section_id in run.present_ids():
                try:
                    present.append(canonical_id(section_id, self.table_id_type or ids_type([section_id])))
                except (TypeError, ValueError):
                    continue  # failed alone as not fitting the table: it is not stored either
            decision = decide_deletions(stored, present, guard, source=source, blockers=blockers)
            deleted = 0
            if decision.to_delete and decision.refused is None and not dry_run:
                deleted = await self.delete_rows(decision.to_delete, source=source)
        report.update(
            source=source,
            deleted=deleted,
            would_delete=decision.would_delete,
            delete_refused=decision.refused,
            delete_preview=decision.to_delete[:DELETE_PREVIEW],
        )
        return report

