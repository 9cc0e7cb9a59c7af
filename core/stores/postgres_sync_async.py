"""What a sync needs of `AsyncPostgresStore` (a mixin): the ids of a source, deleting rows a
transaction per chunk, and a session advisory lock per (table, source) held for the run.

The lock is `pg_try_advisory_lock` on a connection of the sync's own, named by its
`application_name` so that a second run can say who holds it; the server frees it when that
session ends, so a killed run never leaves it behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..limits import SYNC_DELETE_CHUNK
from .postgres_rows import ID_ARRAY, chunks

__all__ = ["AsyncPostgresSync"]


class AsyncPostgresSync:
    """`source_ids`, `delete_rows` and `_sync_lock` for `AsyncPostgresStore`."""

    table: str
    table_id_type: str | None
    _psycopg: Any

    if TYPE_CHECKING:

        def _borrow(self) -> Any: ...

        async def _connect(self, doing: str = ...) -> Any: ...

        def _error(self, doing: str, exc: BaseException) -> StoreError: ...

    async def source_ids(self, source: str) -> list[Any]:
        """The ids of the rows of `source`, as the table keeps them (a uuid as its text).

        Raises:
            StoreError: If the database is unreachable or the query fails.
        """
        async with self._borrow() as conn:
            try:
                cursor = await conn.execute(f"select section_id from {self.table} where source = %s", (source,))
                rows = await cursor.fetchall()
            except self._psycopg.Error as exc:
                raise self._error("cannot read the source's rows", exc) from None
        return [key if isinstance(key, (int, str)) else str(key) for (key,) in rows]

    async def delete_rows(self, ids: Sequence[Any], *, source: str | None = None) -> int:
        """Delete these ids (only rows of `source`, when given), one transaction per chunk; the rows deleted.

        Raises:
            StoreError: If the database is unreachable or refuses (chunks deleted before stay deleted).
        """
        deleted = 0
        async with self._borrow() as conn:
            kind = ID_ARRAY[self.table_id_type or "bigint"]
            where = f"section_id = any(%s::{kind}[])" + (" and source = %s" if source is not None else "")
            for chunk in chunks(list(ids), SYNC_DELETE_CHUNK):
                params = (list(chunk), source) if source is not None else (list(chunk),)
                try:
                    async with conn.transaction():
                        cursor = await conn.execute(f"delete from {self.table} where {where}", params)
                        deleted += max(cursor.rowcount, 0)
                except self._psycopg.Error as exc:
                    raise self._error(f"cannot delete rows ({deleted} deleted before)", exc) from None
        return deleted

    @contextlib.asynccontextmanager
    async def _sync_lock(self, source: str) -> AsyncIterator[None]:
        """Hold the advisory lock of (table, `source`) for the block.

        Raises:
            StoreError: Another session holds it (named by its backend pid, address and start).
        """
        conn = await self._connect()
        name = f"core sync {self.table} {source}"[:63]  # PostgreSQL keeps 63 bytes of it
        try:
            try:
                await conn.execute("select set_config('application_name', %s, false)", (name,))
                cursor = await conn.execute("select pg_try_advisory_lock(hashtext(%s), hashtext(%s))", (self.table, source))
                taken = (await cursor.fetchone())[0]
                holder = None
                if not taken:
                    cursor = await conn.execute(
                        "select pid, coalesce(host(client_addr), 'a local socket'), backend_start::timestamp(0)"
                        " from pg_stat_activity where application_name = %s and pid <> pg_backend_pid()"
                        " order by backend_start limit 1",
                        (name,),
                    )
                    holder = await cursor.fetchone()
            except self._psycopg.Error as exc:
                raise self._error("cannot take the sync lock", exc) from None
            if not taken:
                who = f" (PostgreSQL backend pid {holder[0]} from {holder[1]}, since {holder[2]})" if holder else ""
                raise StoreError(
                    f"another sync of source {source!r} into table {self.table!r} is running{who}: "
                    "wait for it to end, or stop it"
                )
            yield
        finally:
            await conn.close()  # the session's end frees its advisory lock
