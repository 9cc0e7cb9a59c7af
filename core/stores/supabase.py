"""`SupabaseStore`: one PostgREST upsert per vector, concurrently, every failure with its id.

One row per request means one bad row never sinks its neighbours and every
failure names its section; running the requests concurrently makes row by row
cost little more than the database's own per-row time. `rows_per_request=N`
opts into bulk requests, which fall back to row by row for a failed chunk (to
find the bad rows) and halve a chunk answered 413 or a statement timeout.

Each row is turned into JSON by the worker thread that sends it, just before
its request: nothing is built ahead (a window of 8,192 rows would otherwise hold
~170 MB of vector text before the first request left), and the formatting of
one row overlaps the requests of the others in flight. Retries go through the
library's one retry loop (`core.engine.retry.call_with_retries`) with the store's own
`RetryPolicy` (which failures are transient, and the waits: `core.stores.supabase_errors`);
failure reasons pass through `core.secrets.redact`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
from supabase import create_client

from ..errors import ConfigurationError, StoreError
from .ingest import SectionStore
from ..limits import DEFAULT_MATCH_FUNCTION, DEFAULT_TABLE, SUPABASE_MAX_CONCURRENCY
from ..engine.retry import RetryPolicy, call_with_retries
from ..engine.rows import Row, vector_literal
from .schema import validate_identifier
from ..secrets import redact
from .supabase_errors import (
    SHRINK_CODES,
    ResponseError,
    error_code,
    is_transient,
    is_transient_whole,
    preflight_problem,
    row_retry_delay,
)

__all__ = ["SupabaseStore"]

T = TypeVar("T")

DEFAULT_ROW_RETRIES = 2
"""Retries of a row (or chunk) after a transient error."""
_PREFLIGHT_COLUMNS = "section_id,content_hash,model,embedding"
"""What the store reads and writes: a select of these finds a missing column too."""


class SupabaseStore(SectionStore):
    """Stores section embeddings in a Supabase table through PostgREST.

    Args:
        url: Project URL; default `SUPABASE_URL`.
        key: Service-role key; default `SUPABASE_SERVICE_ROLE_KEY`, then `SUPABASE_KEY`.
            Never logged or shown.
        table: Table name (a plain SQL identifier); create it with
            ``python -m core schema``.
        client: A ready supabase client (then `url`/`key` are unused). It keeps its own
            settings: supabase-py retries reads itself (GET, 503 / network errors, real
            sleeps) unless it was created with ``postgrest_client_retry=False``, as the
            store's own client is.
        match_function: The search RPC created by the schema.
        embedding_service: Default service for `search`.
        max_concurrency: Upsert requests in flight at once.
        rows_per_request: 1 (default) for one row per request; N > 1 for bulk requests.
        row_retries: Retries of a row (or chunk) on transient errors.
        sleep: Sleep function between retries (injectable for tests).

    Raises:
        ConfigurationError: Missing URL or key, or a table name that is not a plain identifier.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        table: str = DEFAULT_TABLE,
        client: Any = None,
        match_function: str = DEFAULT_MATCH_FUNCTION,
        embedding_service: Any = None,
        max_concurrency: int = SUPABASE_MAX_CONCURRENCY,
        rows_per_request: int = 1,
        row_retries: int = DEFAULT_ROW_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table = validate_identifier(table, "table")
        self.match_function = validate_identifier(match_function, "match_function")
        if max_concurrency < 1 or rows_per_request < 1 or row_retries < 0:
            raise ConfigurationError(
                "max_concurrency and rows_per_request must be >= 1 and row_retries >= 0 "
                f"(got {max_concurrency}, {rows_per_request}, {row_retries})"
            )
        self.embedding_service = embedding_service
        self.max_concurrency = max_concurrency
        self.rows_per_request = rows_per_request
        self.row_retries = row_retries
        self._sleep = sleep
        self._local = threading.local()  # per thread: the last HTTP answer PostgREST gave
        self._watched: Any = None
        self._own_client = client is None
        self.url = url or os.environ.get("SUPABASE_URL")
        if client is not None:
            self.client = client
            self._key: str | None = key
            self._prepare_client()
            return
        key = key or os.environ.get("SUPABASE_SERVICE_ROLE_KEY") or os.environ.get("SUPABASE_KEY")
        if not self.url or not key:
            raise ConfigurationError(
                "SupabaseStore needs a project URL and a service-role key: pass url=... and key=..., "
                "or set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_KEY)"
            )
        self._key = key
        try:
            self.client = create_client(self.url, key)
        except Exception as exc:  # supabase-py's SupabaseException: bad URL, key not a string...
            raise ConfigurationError(
                f"cannot create a Supabase client for {self.url!r}: {self._reason(exc)}"
            ) from None
        self._prepare_client()

    def __repr__(self) -> str:
        return f"SupabaseStore(url={self.url!r}, table={self.table!r}, key='***')"

    def _timestamp(self) -> str:
        # Through this module's `datetime`, so tests can pin the clock.
        return datetime.now(timezone.utc).isoformat()

    # --- retries -------------------------------------------------------------------------

    @property
    def retry_policy(self) -> RetryPolicy:
        """How a row (or a one-row chunk) is retried: transient errors, `row_retries` times."""
        return RetryPolicy(max_retries=self.row_retries, retryable=is_transient, delay=row_retry_delay)

    @property
    def _chunk_policy(self) -> RetryPolicy:
        # A chunk answered 413 / statement timeout is halved at once, not sent again as it is.
        return RetryPolicy(max_retries=self.row_retries, retryable=is_transient_whole, delay=row_retry_delay)

    # --- SectionStore --------------------------------------------------------------------

    def preflight(self, dimensions: int | None) -> None:
        """Before any embedding is paid for: the table answers, has the store's columns and,
        when a stored row can tell, holds vectors of `dimensions`.

        One ``select section_id,content_hash,model,embedding ... limit 1`` through
        supabase-py (transient failures retried like a row). Through PostgREST the
        vector width of an empty table cannot be read, so then only the rest is checked.

        Raises:
            StoreError: One line naming the URL and the table (never the key): unreachable,
                no such table or column, key refused, or vectors of another width.
        """
        self._prepare_client()

        def select_one() -> Any:
            return self._call(lambda: self.client.table(self.table).select(_PREFLIGHT_COLUMNS).limit(1).execute())

        try:
            response = call_with_retries(select_one, self.retry_policy, sleep=self._sleep)
        except Exception as exc:
            raise StoreError(preflight_problem(exc, self._reason(exc), url=self.url, table=self.table)) from None
        data = getattr(response, "data", None)
        if dimensions is None or not isinstance(data, list) or not data or not isinstance(data[0], dict):
            return
        width = _vector_width(data[0].get("embedding"))
        if width is not None and width != dimensions:
            where = f"Supabase at {self.url}" if self.url else "Supabase"
            raise StoreError(
                f"table {self.table!r} on {where} holds {width}-dimensional vectors, "
                f"but the embeddings have {dimensions} dimensions"
            )

    def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """`{section_id: (content_hash, model)}` for the ids already stored (one request).

        Transient failures are retried like a row's; then errors propagate as the
        client raised them (an answer without a code carries its HTTP status as
        `code`): the ingest turns them into a `StoreError` and stops before paying
        for embeddings.
        """
        ids = list(section_ids)

        def select() -> Any:
            return self._call(
                lambda: self.client.table(self.table)
                .select("section_id,content_hash,model")
                .in_("section_id", ids)
                .execute()
            )

        response = call_with_retries(select, self.retry_policy, sleep=self._sleep)
        found: dict[int, tuple[str, str]] = {}
        for record in response.data or []:
            if isinstance(record, dict) and "section_id" in record:
                found[int(record["section_id"])] = (str(record.get("content_hash")), str(record.get("model")))
        return found

    def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        self._prepare_client()  # before the threads: supabase-py may have dropped it
        if self.rows_per_request == 1:
            return self._concurrently(self._write_row, rows)
        n = self.rows_per_request
        chunks = [rows[i : i + n] for i in range(0, len(rows), n)]
        return self._concurrently(lambda chunk: self._write_chunk([self.row_payload(r) for r in chunk]), chunks)

    def search_vector(
        self, vector: Sequence[float], k: int = 5, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        params = {"query_embedding": vector_literal(vector), "match_count": k, "match_threshold": threshold}
        response = self.client.rpc(self.match_function, params).execute()
        return list(response.data or [])

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
        }

    def _prepare_client(self) -> None:
        """Build supabase-py's PostgREST client now, once, and watch its answers.

        supabase-py builds `client.postgrest` lazily with no lock (and drops it on
        auth events): left to the first concurrent upserts, each thread built its own
        PostgREST client and HTTP connection pool, all but one leaked. On the store's
        own client, postgrest-py's own retries of reads are turned off (the store
        retries). And PostgREST's `APIError` keeps no HTTP status or headers: a
        gateway's 502/503/504/429 or 413 with a JSON body but no `code`
        (``{"message": "..."}``) would look permanent, and a `Retry-After` would be
        lost. A response hook on the session records each thread's last answer instead.
        """
        try:
            postgrest = getattr(self.client, "postgrest", None)
            session = getattr(postgrest, "session", None)
        except Exception:  # an unusual client: no hook, codes as the errors carry them
            return
        if not isinstance(session, httpx.Client) or session is self._watched:
            return
        if self._own_client and hasattr(postgrest, "retry_enabled"):
            # One retry loop: the store's. postgrest-py would otherwise retry reads itself,
            # with real sleeps (1, 2, 4 s), under the store's retries.
            postgrest.retry_enabled = False
        hooks = dict(session.event_hooks)
        hooks["response"] = [*hooks.get("response", []), self._observe_response]
        session.event_hooks = hooks
        self._watched = session

    def _observe_response(self, response: httpx.Response) -> None:
        self._local.response = response

    def _call(self, request: Callable[[], T]) -> T:
        """Run one supabase-py request; a failure answered over HTTP comes back with its status and headers."""
        self._local.response = None
        try:
            return request()
        except Exception as exc:
            response = getattr(self._local, "response", None)
            if isinstance(response, httpx.Response) and response.status_code >= 400:
                raise ResponseError(exc, response) from exc
            raise

    def _upsert(self, body: dict[str, Any] | list[dict[str, Any]]) -> None:
        self._call(
            lambda: self.client.table(self.table).upsert(body, on_conflict="section_id", returning="minimal").execute()
        )

    def _concurrently(self, write: Callable[[T], dict[int, str]], items: Sequence[T]) -> dict[int, str]:
        """`write` each item (a row or a chunk) on up to `max_concurrency` threads; the merged failures."""
        failures: dict[int, str] = {}
        workers = min(self.max_concurrency, len(items))
        if workers <= 1:
            for item in items:
                failures.update(write(item))
            return failures
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="supabase-write") as pool:
            for result in pool.map(write, items):
                failures.update(result)
        return failures

    def _write_row(self, row: Row) -> dict[int, str]:
        reason = self._write_one(self.row_payload(row))
        return {} if reason is None else {row.section_id: reason}

    def _write_each(self, payloads: list[dict[str, Any]]) -> dict[int, str]:
        def write(payload: dict[str, Any]) -> dict[int, str]:
            reason = self._write_one(payload)
            return {} if reason is None else {payload["section_id"]: reason}

        return self._concurrently(write, payloads)

    def _write_one(self, payload: dict[str, Any]) -> str | None:
        """Upsert one row, retried per `retry_policy`; the reason if it failed for good."""
        try:
            call_with_retries(lambda: self._upsert(payload), self.retry_policy, sleep=self._sleep)
            return None
        except Exception as exc:  # every failure becomes this row's reason
            return self._reason(exc)

    def _write_chunk(self, payloads: list[dict[str, Any]]) -> dict[int, str]:
        """Bulk upsert; halve on 413/timeout; row by row to isolate other failures."""
        policy = self._chunk_policy if len(payloads) > 1 else self.retry_policy
        try:
            call_with_retries(lambda: self._upsert(payloads), policy, sleep=self._sleep)
            return {}
        except Exception as exc:
            if len(payloads) == 1:
                return {payloads[0]["section_id"]: self._reason(exc)}
            if error_code(exc) in SHRINK_CODES:
                half = len(payloads) // 2
                failures = self._write_chunk(payloads[:half])
                failures.update(self._write_chunk(payloads[half:]))
                return failures
            return self._write_each(payloads)

    def _reason(self, exc: BaseException) -> str:
        code = error_code(exc)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        text = f"{code}: {message}" if code else f"{type(exc).__name__}: {message}"
        return redact(text, self._key)


def _vector_width(value: Any) -> int | None:
    """Dimensions of a vector as PostgREST returns it (pgvector text ``[1,2,3]``), None if unknown."""
    if isinstance(value, list):
        return len(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    return text.count(",") + 1 if text[1:-1].strip() else 0
