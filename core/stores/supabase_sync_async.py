"""What a sync needs of `AsyncSupabaseStore` (a mixin): the ids of a source (page by page: PostgREST
answers at most `max_rows` rows, 1,000 on Supabase), deleting rows chunk by chunk, and the lock of
(table, source) as a row (`core_sync_lock()` in the shipped schema), renewed after each window and
expiring `SYNC_LOCK_TTL_SECONDS` after the last renewal if the run dies.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..limits import SYNC_LOCK_TTL_SECONDS
from ..engine.ingest_run import HASH_LOOKUP_CHUNK

__all__ = ["AsyncSupabaseSync"]

PAGE_ROWS = 1000
"""Rows asked for per page: Supabase's default `max_rows`, so no page is cut short by the server."""


class AsyncSupabaseSync:
    """`source_ids`, `delete_rows` and `_sync_lock` for `AsyncSupabaseStore`."""

    table: str
    url: str | None
    _renew_lock: Callable[[], Any] | None = None

    if TYPE_CHECKING:

        async def _client(self) -> Any: ...

        async def _retried(self, request: Callable[[], Any], policy: Any = None) -> Any: ...

        def _reason(self, exc: BaseException) -> str: ...

    def _failed(self, doing: str, exc: BaseException) -> StoreError:
        where = f"Supabase at {self.url}" if self.url else "Supabase"
        return StoreError(f"{doing} (table {self.table!r} on {where}): {self._reason(exc)}")

    async def source_ids(self, source: str) -> list[Any]:
        """The ids of the rows of `source`.

        Raises:
            StoreError: The table cannot be read.
        """
        client = await self._client()
        ids: list[Any] = []
        while True:
            start = len(ids)
            try:
                response = await self._retried(
                    lambda: client.table(self.table).select("section_id").eq("source", source)
                    .order("section_id").range(start, start + PAGE_ROWS - 1).execute()
                )
            except Exception as exc:
                raise self._failed("cannot read the source's rows", exc) from None
            page = [row["section_id"] for row in response.data or [] if isinstance(row, dict) and "section_id" in row]
            ids.extend(page)
            if len(page) < PAGE_ROWS:
                return ids

    async def delete_rows(self, ids: Sequence[Any], *, source: str | None = None) -> int:
        """Delete these ids (only rows of `source`, when given), a request per chunk; the rows deleted.

        Raises:
            StoreError: A delete failed (chunks deleted before stay deleted).
        """
        client = await self._client()
        deleted = 0
        for start in range(0, len(ids), HASH_LOOKUP_CHUNK):  # the ids travel in the URL, as lookups do
            chunk = list(ids[start : start + HASH_LOOKUP_CHUNK])

            def request() -> Any:
                query = client.table(self.table).delete(count="exact", returning="minimal").in_("section_id", chunk)
                return (query.eq("source", source) if source is not None else query).execute()

            try:
                response = await self._retried(request)
            except Exception as exc:
                raise self._failed(f"cannot delete rows ({deleted} deleted before)", exc) from None
            deleted += int(getattr(response, "count", None) or 0)
        return deleted

    @contextlib.asynccontextmanager
    async def _sync_lock(self, source: str) -> AsyncIterator[None]:
        """Hold the lock row of (table, `source`) for the block, renewed after each window.

        Raises:
            StoreError: Another run holds it (named as it named itself: host, pid), or the lock
                functions are missing (the schema predates syncs: apply it again).
        """
        client = await self._client()
        me = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"
        key = {"lock_table": self.table, "lock_source": source}

        async def take() -> None:
            try:
                response = await self._retried(
                    lambda: client.rpc("core_sync_lock", {**key, "lock_holder": me, "ttl_seconds": SYNC_LOCK_TTL_SECONDS}).execute()
                )
            except Exception as exc:
                raise self._failed("cannot take the sync lock (apply the schema again: it ships core_sync_lock)", exc) from None
            if response.data != me:
                raise StoreError(
                    f"another sync of source {source!r} into table {self.table!r} is running ({response.data}): "
                    f"wait for it to end (a dead run's lock frees {SYNC_LOCK_TTL_SECONDS} s after it stopped)"
                )

        await take()
        self._renew_lock = take
        try:
            yield
        finally:
            self._renew_lock = None
            with contextlib.suppress(Exception):  # not released: it expires on its own
                await self._retried(lambda: client.rpc("core_sync_unlock", {**key, "lock_holder": me}).execute())

    async def _window_done(self) -> None:
        if self._renew_lock is not None:
            await self._renew_lock()
