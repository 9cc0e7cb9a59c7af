"""What a PostgREST failure means to `SupabaseStore`: retry it, halve the chunk, or say why.

* `error_code`: the failure's code (a SQLSTATE, PostgREST's own ``PGRSTnnn``, or the
  HTTP status when the body named none);
* `is_transient` / `is_transient_whole`: worth sending again (as it is, for a chunk);
* `row_retry_delay`: the wait before a row's next attempt;
* `ResponseError`: a supabase-py error together with the HTTP answer it came with;
* `preflight_problem`: the one-line message of a failed preflight.
"""

from __future__ import annotations

import httpx

from ..engine.retry import error_headers, retry_after_seconds

__all__ = [
    "ROW_RETRY_FIRST_DELAY",
    "ROW_RETRY_MAX_DELAY",
    "SHRINK_CODES",
    "ResponseError",
    "error_code",
    "is_transient",
    "is_transient_whole",
    "preflight_problem",
    "row_retry_delay",
    "PREFLIGHT_COLUMNS",
    "vector_width",
    "width_problem",
]

ROW_RETRY_FIRST_DELAY = 0.5
"""Seconds before the first retry of a row; doubles each retry, up to `ROW_RETRY_MAX_DELAY`."""
ROW_RETRY_MAX_DELAY = 4.0

# PostgREST answers transient trouble with these codes (its own PGRST00x for
# connection/pool problems, SQLSTATEs for timeouts, deadlocks, serialization).
_TRANSIENT_CODES = frozenset(
    {"57014", "40001", "40P01", "53300", "55P03", "PGRST000", "PGRST001", "PGRST002", "PGRST003"}
)
SHRINK_CODES = frozenset({"413", "57014"})  # too large / statement timeout: smaller chunks help
_NO_TABLE_CODES = frozenset({"PGRST205", "42P01"})  # PostgREST's schema cache / PostgreSQL: no such table
_NO_COLUMN_CODES = frozenset({"42703", "PGRST204"})


def row_retry_delay(attempt: int, exc: BaseException) -> float:
    """Seconds before retry number `attempt` (1-based) of a row or chunk that failed with `exc`.

    The server's ``retry-after-ms`` / ``retry-after`` wins when the answer carried
    one (capped by `core.limits.MAX_RETRY_AFTER`); otherwise 0.5, 1, 2, 4, 4... s.
    """
    server = retry_after_seconds(error_headers(exc))
    if server is not None:
        return server
    return min(ROW_RETRY_FIRST_DELAY * 2 ** (attempt - 1), ROW_RETRY_MAX_DELAY)


class ResponseError(Exception):
    """A PostgREST failure with the HTTP answer it came with: its code (the HTTP status when
    the body named none), message, status and headers (so a `Retry-After` is honoured)."""

    def __init__(self, cause: BaseException, response: httpx.Response) -> None:
        self.message = getattr(cause, "message", None) or str(cause) or type(cause).__name__
        super().__init__(self.message)
        self.code = error_code(cause) or str(response.status_code)
        self.status_code = response.status_code
        self.response = response


def error_code(exc: BaseException) -> str | None:
    """`exc`'s `code` as a string, None when it has none."""
    code = getattr(exc, "code", None)
    return str(code) if code is not None else None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: timeouts, dropped connections, 5xx/408/429, lock and pool trouble."""
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return True
    code = error_code(exc)
    if code is None:
        return False
    if code in _TRANSIENT_CODES or code.startswith("08"):
        return True
    # An HTTP status stands in for the code only when the body carried none: three
    # digits. SQLSTATEs are five characters and many are all digits (23505, 42501,
    # 22003): those are permanent unless listed above, not "status >= 500".
    return len(code) == 3 and code.isdigit() and (int(code) >= 500 or int(code) in (408, 429))


def is_transient_whole(exc: BaseException) -> bool:
    """Worth sending a multi-row chunk again as it is: transient, and not a sign it is too big."""
    return is_transient(exc) and error_code(exc) not in SHRINK_CODES


def preflight_problem(exc: BaseException, reason: str, *, url: str | None, table: str) -> str:
    """One line for a preflight that failed with `exc` (`reason`: its masked text), naming the URL and the table."""
    reason = _one_line(reason)
    where = f"Supabase at {url}" if url else "Supabase"
    code = error_code(exc)
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach {where}: {reason}"
    hint = "create it: paste the output of `python -m core schema` into Supabase's SQL editor"
    if code in _NO_TABLE_CODES:
        return f"table {table!r} does not exist on {where} ({hint}): {reason}"
    if code == "404":
        return f"{where} has no table {table!r} (or is not a Supabase project URL): {reason}"
    if code in _NO_COLUMN_CODES:
        return f"table {table!r} on {where} lacks a column the store uses ({hint}): {reason}"
    if code in ("401", "403", "42501") or (code or "").startswith("PGRST3"):
        return f"{where} refused the key for table {table!r}: {reason}"
    return f"cannot read table {table!r} on {where}: {reason}"


def _one_line(text: str, limit: int = 300) -> str:
    """`text` with its whitespace runs folded to one space, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


PREFLIGHT_COLUMNS = "section_id,title,content,metadata,content_hash,model,embedding"
"""What a store reads and writes: a select of these finds a missing column too."""


def vector_width(value: object) -> int | None:
    """Dimensions of a vector as PostgREST returns it (pgvector text ``[1,2,3]``), None if unknown."""
    if isinstance(value, list):
        return len(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    return text.count(",") + 1 if text[1:-1].strip() else 0


def width_problem(data: object, dimensions: int | None, *, url: str | None, table: str) -> str | None:
    """Why a preflight's answer `data` (one row, or none) shows the table cannot take `dimensions`, or None."""
    if dimensions is None or not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return None
    width = vector_width(data[0].get("embedding"))
    if width is None or width == dimensions:
        return None
    where = f"Supabase at {url}" if url else "Supabase"
    return f"table {table!r} on {where} holds {width}-dimensional vectors, but the embeddings have {dimensions} dimensions"
