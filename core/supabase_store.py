"""`SupabaseStore`: one PostgREST upsert per vector, concurrently, every failure with its id.

One row per request means one bad row never sinks its neighbours and every
failure names its section; running the requests concurrently makes row by row
cost little more than the database's own per-row time. `rows_per_request=N`
opts into bulk requests, which fall back to row by row for a failed chunk (to
find the bad rows) and halve a chunk answered 413 or a statement timeout.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import httpx
from supabase import create_client

from .errors import ConfigurationError
from .ingest import SectionStore
from .rows import Row, vector_literal
from .schema import validate_identifier

__all__ = ["SupabaseStore"]

DEFAULT_TABLE = "section_embeddings"
DEFAULT_MAX_CONCURRENCY = 16
"""Upserts in flight at once: enough to hide ~20 ms of round trip per row."""
DEFAULT_ROW_RETRIES = 2

# PostgREST answers transient trouble with these codes (its own PGRST00x for
# connection/pool problems, SQLSTATEs for timeouts, deadlocks, serialization).
_TRANSIENT_CODES = frozenset(
    {"57014", "40001", "40P01", "53300", "55P03", "PGRST000", "PGRST001", "PGRST002", "PGRST003"}
)
_SHRINK_CODES = frozenset({"413", "57014"})  # too large / statement timeout: smaller chunks help


class SupabaseStore(SectionStore):
    """Stores section embeddings in a Supabase table through PostgREST.

    Args:
        url: Project URL; default `SUPABASE_URL`.
        key: Service-role key; default `SUPABASE_SERVICE_ROLE_KEY`, then `SUPABASE_KEY`.
            Never logged or shown.
        table: Table name (a plain SQL identifier); create it with
            ``python -m core schema``.
        client: A ready supabase client (then `url`/`key` are unused).
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
        match_function: str = "match_sections",
        embedding_service: Any = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
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
        self._local = threading.local()  # per thread: HTTP status of the last PostgREST answer
        self._watched: Any = None
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

    # --- SectionStore --------------------------------------------------------------------

    def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        response = (
            self.client.table(self.table)
            .select("section_id,content_hash,model")
            .in_("section_id", list(section_ids))
            .execute()
        )
        found: dict[int, tuple[str, str]] = {}
        for record in response.data or []:
            if isinstance(record, dict) and "section_id" in record:
                found[int(record["section_id"])] = (str(record.get("content_hash")), str(record.get("model")))
        return found

    def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        self._prepare_client()  # before the threads: supabase-py may have dropped it
        payloads = [self.row_payload(row) for row in rows]
        if self.rows_per_request == 1:
            return self._write_each(payloads)
        chunks = [payloads[i : i + self.rows_per_request] for i in range(0, len(payloads), self.rows_per_request)]
        failures: dict[int, str] = {}
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(chunks))) as pool:
            for result in pool.map(self._write_chunk, chunks):
                failures.update(result)
        return failures

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
        """Build supabase-py's PostgREST client now, once, and watch its answers' statuses.

        supabase-py builds `client.postgrest` lazily with no lock (and drops it on
        auth events): left to the first concurrent upserts, each thread built its own
        PostgREST client and HTTP connection pool, all but one leaked. And PostgREST's
        `APIError` keeps no HTTP status: a gateway's 502/503/504/429 or 413 with a
        JSON body but no `code` (``{"message": "..."}``) would look permanent. A
        response hook on the session records each thread's last status instead.
        """
        try:
            session = getattr(getattr(self.client, "postgrest", None), "session", None)
        except Exception:  # an unusual client: no hook, codes as the errors carry them
            return
        if not isinstance(session, httpx.Client) or session is self._watched:
            return
        hooks = dict(session.event_hooks)
        hooks["response"] = [*hooks.get("response", []), self._observe_status]
        session.event_hooks = hooks
        self._watched = session

    def _observe_status(self, response: httpx.Response) -> None:
        self._local.status = response.status_code

    def _upsert(self, body: dict[str, Any] | list[dict[str, Any]]) -> None:
        self._local.status = None
        try:
            self.client.table(self.table).upsert(body, on_conflict="section_id", returning="minimal").execute()
        except Exception as exc:
            status = getattr(self._local, "status", None)
            if _error_code(exc) is None and isinstance(status, int) and status >= 400:
                message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                raise _HTTPStatusError(status, message) from exc
            raise

    def _write_each(self, payloads: list[dict[str, Any]]) -> dict[int, str]:
        failures: dict[int, str] = {}
        if len(payloads) == 1 or self.max_concurrency == 1:
            results = [self._write_one(p) for p in payloads]
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(payloads))) as pool:
                results = list(pool.map(self._write_one, payloads))
        for payload, reason in zip(payloads, results):
            if reason is not None:
                failures[payload["section_id"]] = reason
        return failures

    def _write_one(self, payload: dict[str, Any]) -> str | None:
        """Upsert one row with retries on transient errors; the reason if it failed for good."""
        attempt = 0
        while True:
            try:
                self._upsert(payload)
                return None
            except Exception as exc:  # every failure becomes this row's reason
                if attempt >= self.row_retries or not _is_transient(exc):
                    return self._reason(exc)
                attempt += 1
                self._sleep(min(0.25 * 2**attempt, 4.0))

    def _write_chunk(self, payloads: list[dict[str, Any]]) -> dict[int, str]:
        """Bulk upsert; halve on 413/timeout; row by row to isolate other failures."""
        attempt = 0
        while True:
            try:
                self._upsert(payloads)
                return {}
            except Exception as exc:
                code = _error_code(exc)
                if code in _SHRINK_CODES and len(payloads) > 1:
                    half = len(payloads) // 2
                    failures = self._write_chunk(payloads[:half])
                    failures.update(self._write_chunk(payloads[half:]))
                    return failures
                if _is_transient(exc) and attempt < self.row_retries:
                    attempt += 1
                    self._sleep(min(0.25 * 2**attempt, 4.0))
                    continue
                if len(payloads) == 1:
                    return {payloads[0]["section_id"]: self._reason(exc)}
                return self._write_each(payloads)

    def _reason(self, exc: BaseException) -> str:
        code = _error_code(exc)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        text = f"{code}: {message}" if code else f"{type(exc).__name__}: {message}"
        if self._key:
            text = text.replace(self._key, "***")
        return text


class _HTTPStatusError(Exception):
    """A PostgREST failure whose body named no error code: its HTTP status stands in."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.code = str(status)
        self.message = message


def _error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    return str(code) if code is not None else None


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: timeouts, dropped connections, 5xx/408/429, lock and pool trouble."""
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return True
    code = _error_code(exc)
    if code is None:
        return False
    if code in _TRANSIENT_CODES or code.startswith("08"):
        return True
    # An HTTP status stands in for the code only when the body carried none: three
    # digits. SQLSTATEs are five characters and many are all digits (23505, 42501,
    # 22003): those are permanent unless listed above, not "status >= 500".
    return len(code) == 3 and code.isdigit() and (int(code) >= 500 or int(code) in (408, 429))
