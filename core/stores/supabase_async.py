"""`AsyncSupabaseStore`: one PostgREST upsert per vector, concurrently, every failure with its id.

The async flavour is written by hand and the sync one (`SupabaseStore`) generated from it
by `tools/async_to_sync.py`; what differs (creating the client, running writes at once,
sleeping) lives in `_flavour_async` / `_flavour`.

One row per request means one bad row never sinks its neighbours and every failure names
its section; running the requests concurrently makes row by row cost little more than the
database's own per-row time. `rows_per_request=N` opts into bulk requests, which fall back
to row by row for a failed chunk (to find the bad rows) and halve a chunk answered 413 or a
statement timeout.

Each row is turned into JSON by the worker that sends it, just before its request: nothing
is built ahead (a window of 8,192 rows would otherwise hold ~170 MB of vector text before
the first request left). Retries go through the library's one retry loop
(`core.engine.retry`) with the store's own `RetryPolicy` (which failures are transient, and
the waits: `core.stores.supabase_errors`); failure reasons pass through `core.secrets.redact`.
A store may be shared by concurrent callers: supabase-py's HTTP client is safe to share, and
each request's answer is recorded per caller (a context variable).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import httpx
from supabase import acreate_client

from ..engine.retry import RetryPolicy, acall_with_retries
from ..engine.rows import Row, vector_literal
from ..errors import ConfigurationError, StoreError
from ..limits import DEFAULT_TABLE, SUPABASE_MAX_CONCURRENCY, SUPABASE_ROW_RETRIES
from ..secrets import redact
from . import _flavour_async as flavour
from .ingest_async import AsyncSectionStore
from .supabase_search_async import AsyncSupabaseSearch
from .supabase_sync_async import AsyncSupabaseSync
from .sync_async import AsyncSyncing
from .schema import default_match_function, validate_identifier
from .supabase_errors import (
    PREFLIGHT_COLUMNS,
    SHRINK_CODES,
    ResponseError,
    error_code,
    is_transient,
    is_transient_whole,
    preflight_problem,
    row_retry_delay,
    width_problem,
)

__all__ = ["AsyncSupabaseStore"]

DEFAULT_ROW_RETRIES = SUPABASE_ROW_RETRIES


class AsyncSupabaseStore(AsyncSupabaseSearch, AsyncSupabaseSync, AsyncSyncing, AsyncSectionStore):
    """Stores section embeddings in a Supabase table through PostgREST.

    Args:
        url: Project URL; default `SUPABASE_URL`.
        key: Service-role key; default `SUPABASE_SERVICE_ROLE_KEY`, then `SUPABASE_KEY`.
            Never logged or shown.
        table: Table name (a plain SQL identifier); create it with
            ``python -m core schema``.
        client: A ready supabase client of this store's flavour (then `url`/`key` are
            unused). It keeps its own settings: supabase-py retries reads itself (GET,
            503 / network errors, real sleeps) unless it was created with
            ``postgrest_client_retry=False``, as the store's own client is.
        match_function: The search RPC created by the schema (default: the table's own,
            `core.stores.schema.default_match_function`).
        embedding_service: Default service for `search`.
        max_concurrency: Upsert requests in flight at once.
        rows_per_request: 1 (default) for one row per request; N > 1 for bulk requests.
        row_retries: Retries of a row (or chunk) on transient errors.
        sleep: Sleep function between retries (injectable for tests).

    Raises:
        ConfigurationError: Missing URL or key, a URL supabase-py refuses, or a table
            name that is not a plain identifier.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        table: str = DEFAULT_TABLE,
        client: Any = None,
        match_function: str | None = None,
        embedding_service: Any = None,
        max_concurrency: int = SUPABASE_MAX_CONCURRENCY,
        rows_per_request: int = 1,
        row_retries: int = DEFAULT_ROW_RETRIES,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        self.table = validate_identifier(table, "table")
        self.match_function = validate_identifier(match_function or default_match_function(self.table), "match_function")
        if max_concurrency < 1 or rows_per_request < 1 or row_retries < 0:
            raise ConfigurationError(
                "max_concurrency and rows_per_request must be >= 1 and row_retries >= 0 "
                f"(got {max_concurrency}, {rows_per_request}, {row_retries})"
            )
        self.embedding_service = embedding_service
        self.max_concurrency = max_concurrency
        self.rows_per_request = rows_per_request
        self.row_retries = row_retries
        self._sleep = sleep or flavour.sleep
        self._response: contextvars.ContextVar[httpx.Response | None] = contextvars.ContextVar("response", default=None)
        self._watched: Any = None
        self._own_client = client is None
        self._client_lock = flavour.Lock()
        self._client_loop: Any = None
        self.url = url or os.environ.get("SUPABASE_URL")
        self._key: str | None = key
        self.client: Any = client
        if client is None:
            self._key = key or os.environ.get("SUPABASE_SERVICE_ROLE_KEY") or os.environ.get("SUPABASE_KEY")
            if not self.url or not self._key:
                raise ConfigurationError(
                    "SupabaseStore needs a project URL and a service-role key: pass url=... and key=..., "
                    "or set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_KEY)"
                )
            self.client = self._checked(flavour.client_at_init, acreate_client, self.url, self._key)
        if self.client is not None:
            self._prepare_client()

    def __repr__(self) -> str:
        return f"AsyncSupabaseStore(url={self.url!r}, table={self.table!r}, key='***')"

    async def __aenter__(self) -> AsyncSupabaseStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def _timestamp(self) -> str:
        # Through this module's `datetime`, so tests can pin the clock.
        return datetime.now(timezone.utc).isoformat()

    def _checked(self, make: Callable[..., Any], *args: Any) -> Any:
        try:
            return make(*args)
        except Exception as exc:  # supabase-py's SupabaseException: bad URL, key not a string...
            raise ConfigurationError(f"cannot create a Supabase client for {self.url!r}: {self._reason(exc)}") from None

    async def _client(self) -> Any:
        """The supabase client, created on first use where the flavour cannot make it up front (and
        made again when the store's own client belongs to an event loop that has ended)."""
        if self._own_client and self.client is not None and self._client_loop not in (None, flavour.current_loop()):
            self.client, self._watched, self._client_lock = None, None, flavour.Lock()
        if self.client is None:
            async with self._client_lock:
                if self.client is None:
                    try:
                        client = await acreate_client(self.url, self._key)
                    except Exception as exc:
                        raise ConfigurationError(
                            f"cannot create a Supabase client for {self.url!r}: {self._reason(exc)}"
                        ) from None
                    self.client = client
                    self._client_loop = flavour.current_loop()
        self._prepare_client()
        return self.client

    # --- retries -------------------------------------------------------------------------

    @property
    def retry_policy(self) -> RetryPolicy:
        """How a row (or a one-row chunk) is retried: transient errors, `row_retries` times."""
        return RetryPolicy(max_retries=self.row_retries, retryable=is_transient, delay=row_retry_delay)

    @property
    def _chunk_policy(self) -> RetryPolicy:
        # A chunk answered 413 / statement timeout is halved at once, not sent again as it is.
        return RetryPolicy(max_retries=self.row_retries, retryable=is_transient_whole, delay=row_retry_delay)

    async def _retried(self, request: Callable[[], Any], policy: RetryPolicy | None = None) -> Any:
        """One supabase-py request through the retry loop; failures answered over HTTP keep status and headers."""
        return await acall_with_retries(lambda: self._call(request), policy or self.retry_policy, sleep=self._sleep)

    # --- the store -----------------------------------------------------------------------

    async def preflight(self, dimensions: int | None) -> None:
        """Before any embedding is paid for: the table answers, has the store's columns and,
        when a stored row can tell, holds vectors of `dimensions`.

        One ``select section_id,content_hash,model,embedding ... limit 1`` through
        supabase-py (transient failures retried like a row). Through PostgREST the
        vector width of an empty table cannot be read, so then only the rest is checked.

        Raises:
            StoreError: One line naming the URL and the table (never the key): unreachable,
                no such table or column, key refused, or vectors of another width.
        """
        client = await self._client()
        try:
            response = await self._retried(lambda: client.table(self.table).select(PREFLIGHT_COLUMNS).limit(1).execute())
        except Exception as exc:
            raise StoreError(preflight_problem(exc, self._reason(exc), url=self.url, table=self.table)) from None
        data = getattr(response, "data", None)
        problem = width_problem(data, dimensions, url=self.url, table=self.table)
        if problem:
            raise StoreError(problem)
        if isinstance(data, list) and data and isinstance(data[0], dict):  # a stored id tells integer ids
            self.table_id_type = "bigint" if isinstance(data[0].get("section_id"), int) else None

    async def fetch_hashes(self, section_ids: Sequence[Any]) -> dict[Any, tuple[Any, ...]]:
        """`{section_id: (content_hash, model, metadata, True, source)}` for the ids already stored (one
        request; keyed by the ids as given).

        Transient failures are retried like a row's; then errors propagate as the
        client raised them (an answer without a code carries its HTTP status as
        `code`): the ingest turns them into a `StoreError` and stops before paying
        for embeddings.
        """
        client = await self._client()
        ids = list(section_ids)
        response = await self._retried(
            lambda: client.table(self.table).select("section_id,content_hash,model,metadata,source").in_("section_id", ids).execute()
        )
        given = {str(section_id): section_id for section_id in ids}
        found: dict[Any, tuple[Any, ...]] = {}
        for record in response.data or []:
            if isinstance(record, dict) and str(record.get("section_id")) in given:
                # Whether content is stored is not read (it would bring every text back): taken as yes.
                found[given[str(record["section_id"])]] = (
                    str(record.get("content_hash")), str(record.get("model")), record.get("metadata") or {}, True,
                    record.get("source"),
                )
        return found

    async def refresh_rows(self, items: Sequence[Any], updated_at: str) -> dict[Any, str]:
        """Update content and metadata of rows whose text is unchanged: one PATCH per row (no vector sent)."""
        client = await self._client()

        async def patch(item: Any) -> dict[Any, str]:
            body = {"content": item.content, "metadata": item.metadata, "updated_at": updated_at}
            if item.source is not None:
                body["source"] = item.source
            try:
                await self._retried(
                    lambda: client.table(self.table).update(body, returning="minimal").eq("section_id", item.section_id).execute()
                )
                return {}
            except Exception as exc:  # every failure becomes this row's reason
                return {item.section_id: self._reason(exc)}

        failures: dict[Any, str] = {}
        for result in await flavour.map_limited(patch, items, self.max_concurrency):
            failures.update(result)
        return failures

    async def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        """Upsert `rows` (one per request, or in chunks of `rows_per_request`), `max_concurrency`
        at a time; `{section_id: reason}` for the rows not stored."""
        await self._client()
        if self.rows_per_request == 1:
            results = await flavour.map_limited(self._write_row, rows, self.max_concurrency)
        else:
            n = self.rows_per_request
            chunks = [rows[i : i + n] for i in range(0, len(rows), n)]
            results = await flavour.map_limited(self._write_rows_chunk, chunks, self.max_concurrency)
        failures: dict[int, str] = {}
        for result in results:
            failures.update(result)
        return failures

    # --- rows on the wire ----------------------------------------------------------------

    @staticmethod
    def row_payload(row: Row) -> dict[str, Any]:
        """The JSON object PostgREST receives for `row` (the vector in pgvector's text form)."""
        return {
            "section_id": row.section_id,
            "title": row.title,
            "embedding": vector_literal(row.embedding),
            "model": row.model,
            "content_hash": row.content_hash,
            "token_count": row.token_count,
            "updated_at": row.updated_at,
            "content": row.content,
            "metadata": dict(row.metadata) if row.metadata else {},
            # Without a source (outside any sync) the key is left out: an upsert keeps the stored one.
            **({"source": row.source} if row.source is not None else {}),
        }

    def _prepare_client(self) -> None:
        """Watch supabase-py's PostgREST answers, once per HTTP session.

        supabase-py builds `client.postgrest` lazily (and drops it on auth events):
        built here, before any concurrent upsert, each caller shares one. On the store's
        own client, postgrest-py's own retries of reads are turned off (the store
        retries). And PostgREST's `APIError` keeps no HTTP status or headers: a
        gateway's 502/503/504/429 or 413 with a JSON body but no `code`
        (``{"message": "..."}``) would look permanent, and a `Retry-After` would be
        lost. A response hook on the session records each caller's last answer instead.
        """
        try:
            postgrest = getattr(self.client, "postgrest", None)
            session = getattr(postgrest, "session", None)
        except Exception:  # an unusual client: no hook, codes as the errors carry them
            return
        if not isinstance(session, httpx.AsyncClient) or session is self._watched:
            return
        if self._own_client and hasattr(postgrest, "retry_enabled"):
            # One retry loop: the store's. postgrest-py would otherwise retry reads itself,
            # with real sleeps (1, 2, 4 s), under the store's retries.
            postgrest.retry_enabled = False
        hooks = dict(session.event_hooks)
        hooks["response"] = [*hooks.get("response", []), self._observe_response]
        session.event_hooks = hooks
        self._watched = session

    async def _observe_response(self, response: httpx.Response) -> None:
        self._response.set(response)

    async def _call(self, request: Callable[[], Any]) -> Any:
        """Run one supabase-py request; a failure answered over HTTP comes back with its status and headers."""
        self._response.set(None)
        try:
            return await request()
        except Exception as exc:
            response = self._response.get()
            if isinstance(response, httpx.Response) and response.status_code >= 400:
                raise ResponseError(exc, response) from exc
            raise

    async def _upsert(self, body: dict[str, Any] | list[dict[str, Any]], policy: RetryPolicy) -> None:
        await self._retried(
            lambda: self.client.table(self.table).upsert(body, on_conflict="section_id", returning="minimal").execute(),
            policy,
        )

    async def _write_row(self, row: Row) -> dict[int, str]:
        return await self._write_payload(self.row_payload(row))

    async def _write_payload(self, payload: dict[str, Any]) -> dict[int, str]:
        """Upsert one row, retried per `retry_policy`; `{section_id: reason}` if it failed for good."""
        try:
            await self._upsert(payload, self.retry_policy)
            return {}
        except Exception as exc:  # every failure becomes this row's reason
            return {payload["section_id"]: self._reason(exc)}

    async def _write_rows_chunk(self, rows: Sequence[Row]) -> dict[int, str]:
        return await self._write_chunk([self.row_payload(r) for r in rows])

    async def _write_chunk(self, payloads: list[dict[str, Any]]) -> dict[int, str]:
        """Bulk upsert; halve on 413/timeout; row by row to isolate other failures."""
        try:
            await self._upsert(payloads, self._chunk_policy if len(payloads) > 1 else self.retry_policy)
            return {}
        except Exception as exc:
            if len(payloads) == 1:
                return {payloads[0]["section_id"]: self._reason(exc)}
            if error_code(exc) in SHRINK_CODES:
                half = len(payloads) // 2
                failures = await self._write_chunk(payloads[:half])
                failures.update(await self._write_chunk(payloads[half:]))
                return failures
        failures = {}
        for result in await flavour.map_limited(self._write_payload, payloads, self.max_concurrency):
            failures.update(result)
        return failures

    def _reason(self, exc: BaseException) -> str:
        code = error_code(exc)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        text = f"{code}: {message}" if code else f"{type(exc).__name__}: {message}"
        return redact(text, self._key)
