"""A minimal PostgREST stand-in (Supabase's ``/rest/v1``) over a real PostgreSQL, for tests and benchmarks.

No PostgREST binary can be installed here, so this server speaks the part of
PostgREST's HTTP API that supabase-py uses for tables and functions, and runs
the SQL PostgREST itself runs, through psycopg, against a real database:

* ``POST /rest/v1/<table>`` (insert / upsert): the body (one JSON object or an
  array of them) goes to PostgreSQL as one ``json`` parameter and is unpacked
  there, as PostgREST does::

      WITH pgrst_source AS (
        INSERT INTO "public"."t"("a", "b")
        SELECT pgrst_body."a", pgrst_body."b"
        FROM (SELECT $1::json AS json_data) pgrst_payload,
        LATERAL (SELECT CASE WHEN json_typeof(...) = 'array' THEN ... ELSE json_build_array(...) END AS val)
          pgrst_uniform_json,
        LATERAL (SELECT "a", "b" FROM json_to_recordset(pgrst_uniform_json.val) AS _("a" bigint, "b" text)) pgrst_body
        ON CONFLICT ("id") DO UPDATE SET "a" = EXCLUDED."a", "b" = EXCLUDED."b"
        RETURNING 1)
      SELECT count(*) FROM pgrst_source

  The columns are the ``columns=`` query parameter (supabase-py sends it with a
  list body) or the keys of the body, typed from the catalog (PostgREST's schema
  cache). ``Prefer: resolution=merge-duplicates`` (+ ``on_conflict=``, default the
  primary key) makes it an upsert, ``resolution=ignore-duplicates`` a ``DO
  NOTHING``; ``return=minimal`` answers 201 with an empty body,
  ``return=representation`` the stored rows.
* ``GET /rest/v1/<table>?select=a,b&a=in.(1,2)&b=eq.x&order=a.desc&limit=10``:
  a JSON array built by ``json_agg`` in PostgreSQL (vectors come back in
  pgvector's text form, as from PostgREST). Filters: eq, neq, gt, gte, lt, lte,
  like, ilike, is, in, each optionally ``not.``-prefixed.
* ``POST /rest/v1/rpc/<function>`` with named arguments as a JSON object:
  ``select * from fn(arg := ...)`` as a JSON array (a scalar function: its value).
* Errors in PostgREST's shape, ``{"code", "message", "details", "hint"}``, with
  its SQLSTATE -> HTTP status table (400 for data and constraint errors, 409
  for 23505/23503, 500 for the rest of the server's trouble, 503 for lost
  connections...), ``PGRST*`` codes for what PostgREST refuses itself (bad JSON,
  unknown column / table / function, schema not exposed), and a gateway's
  codeless 413 when the body exceeds ``max_body_bytes``. Every request must
  carry an ``apikey`` header, as Supabase's gateway demands.

Each request runs in its own transaction on a connection from a bounded pool
(``pool_size``, 10 like PostgREST's ``db-pool``), after the same per-request
``set_config`` calls PostgREST makes (search_path, request.method/path/headers,
jwt claims). The connecting role is the DSN's (a superuser under pgserver, so
row level security is bypassed as for Supabase's service-role key).

Config (``FakePostgREST(dsn, latency=0.02, ...)``, changeable live with
``configure``): ``latency`` seconds added to every API request (a network round
trip; no pool connection is held meanwhile), ``fail_ids`` section ids whose
writes the "database" refuses (the whole request, as a constraint violation
would: SQLSTATE ``fail_code``, default 23514 -> 400; ``fail_times`` limits how
often each id fails, for transient codes), ``max_body_bytes``, ``api_key`` (the
only key accepted; default any non-empty), ``statement_timeout_ms``.

The schema cache is loaded on first use of a table or function and kept, as
PostgREST keeps it: after DDL, call ``reload_schema()`` (PostgREST's ``NOTIFY
pgrst, 'reload schema'``). Control plane on the same port: ``GET/POST
/_control/config``, ``GET /_control/stats``, ``POST /_control/reset`` (stats and
fault counters), ``POST /_control/reload``.

Run it by hand (the DSN comes from the environment, never the command line)::

    cd test && FAKE_POSTGREST_DSN=postgresql://... python -m servers.postgrest_server --port 0 --config '{"latency": 0.02}'

It prints ``LISTENING http://127.0.0.1:PORT`` as its first stdout line.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import socketserver
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from core.testing._process import ServerProcess, read_request_body, watch_stdin_eof

__all__ = ["DEFAULT_CONFIG", "DSN_ENV", "FakePostgREST", "main", "status_for_sqlstate"]

DSN_ENV = "FAKE_POSTGREST_DSN"
"""Environment variable the server process reads its DSN from (kept off the command line)."""

DEFAULT_CONFIG: dict[str, Any] = {
    "latency": 0.0,  # seconds added to every API request
    "fail_ids": [],  # section ids whose writes are refused
    "fail_code": "23514",  # SQLSTATE of that refusal (23514 check_violation -> 400)
    "fail_times": None,  # refusals per id before it goes through; None = always
    "fail_column": "section_id",  # the body key holding the id
    "max_body_bytes": None,  # bodies above this get the gateway's 413; None = no limit
    "api_key": None,  # the only apikey accepted; None = any non-empty key
    "statement_timeout_ms": None,  # `set local statement_timeout` per request
}

_API_PREFIX = "/rest/v1"
_LOG_SIZE = 10_000
_CAST = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]*(\(\d+(,\d+)?\))?(\[\])?$")
_FILTER_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE", "ilike": "ILIKE"}
_READ_RESERVED = {"select", "order", "limit", "offset", "columns", "on_conflict"}


# ---------------------------------------------------------------------------------------
# PostgREST's error shape and status table
# ---------------------------------------------------------------------------------------


def status_for_sqlstate(code: str | None) -> int:
    """The HTTP status PostgREST answers a PostgreSQL error with (docs: references/errors)."""
    if not code:
        return 500
    exact = {
        "23503": 409, "23505": 409, "25006": 405, "53400": 500, "57P01": 503, "P0001": 400,
        "42883": 404, "42P01": 404, "42P17": 500, "42501": 403,
    }
    if code in exact:
        return exact[code]
    by_class = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
        "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
        "P0": 500, "XX": 500,
    }
    if code.startswith("PT") and code[2:].isdigit():
        return int(code[2:])
    return by_class.get(code[:2], 400)


class PgrstError(Exception):
    """An answer in PostgREST's error shape."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        details: str | None = None,
        hint: str | None = None,
        *,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body if body is not None else {"code": code, "details": details, "hint": hint, "message": message}

    @classmethod
    def from_db(cls, exc: Exception) -> PgrstError:
        code = getattr(exc, "sqlstate", None)
        diag = getattr(exc, "diag", None)
        message = (getattr(diag, "message_primary", None) or str(exc)).strip()
        if code is None:  # no answer from the server: a lost connection
            return cls(503, "PGRST001", "Database client error. Retrying the connection.", message)
        return cls(
            status_for_sqlstate(code), code, message,
            getattr(diag, "message_detail", None), getattr(diag, "message_hint", None),
        )

    def headers(self) -> list[tuple[str, str]]:
        if self.code and self.code.startswith("PGRST"):
            return [("Proxy-Status", f"PostgREST; error={self.code}")]
        return []


def _bad_request(code: str, message: str, details: str | None = None, hint: str | None = None) -> PgrstError:
    return PgrstError(400, code, message, details, hint)


def _unsupported(what: str) -> PgrstError:
    return _bad_request("PGRST100", f"not supported by the PostgREST stand-in: {what}")


# ---------------------------------------------------------------------------------------
# State shared by the server's threads
# ---------------------------------------------------------------------------------------


def _validate_config(changes: dict[str, Any]) -> None:
    unknown = set(changes) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    if "latency" in changes:
        value = changes["latency"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 3600:
            raise ValueError(f"latency must be seconds >= 0, not {value!r}")
    if "fail_ids" in changes:
        ids = changes["fail_ids"]
        if not isinstance(ids, (list, tuple, set, frozenset)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise ValueError(f"fail_ids must be a collection of integers, not {ids!r}")
    if "fail_code" in changes and not (isinstance(changes["fail_code"], str) and len(changes["fail_code"]) == 5):
        raise ValueError(f"fail_code must be a 5-character SQLSTATE, not {changes['fail_code']!r}")
    for key in ("fail_times", "max_body_bytes", "statement_timeout_ms"):
        if key in changes:
            value = changes[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive integer or None, not {value!r}")
    if "fail_column" in changes and not (isinstance(changes["fail_column"], str) and changes["fail_column"]):
        raise ValueError("fail_column must be a non-empty string")
    if "api_key" in changes and changes["api_key"] is not None and not (
        isinstance(changes["api_key"], str) and changes["api_key"]
    ):
        raise ValueError("api_key must be a non-empty string or None")


def _normalise(changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(changes)
    if "fail_ids" in out:
        out["fail_ids"] = sorted(set(out["fail_ids"]))
    if "latency" in out:
        out["latency"] = float(out["latency"])
    return out


class _State:
    def __init__(self, config: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.config = copy.deepcopy(DEFAULT_CONFIG)
        self.fail_set: frozenset[int] = frozenset()
        self.fail_counts: dict[int, int] = {}
        self.in_flight = 0
        self.merge(config)
        self.reset_stats()

    def merge(self, changes: dict[str, Any]) -> dict[str, Any]:
        _validate_config(changes)
        with self.lock:
            self.config.update(_normalise(changes))
            self.fail_set = frozenset(self.config["fail_ids"])
            if "fail_ids" in changes or "fail_times" in changes:
                self.fail_counts = {}
            return copy.deepcopy(self.config)

    def reset_stats(self) -> None:
        self.requests = 0
        self.by_status: dict[str, int] = {}
        self.by_kind: dict[str, int] = {}
        self.rows_written = 0
        self.body_bytes = 0
        self.write_body_bytes = 0
        self.max_body_seen = 0
        self.max_in_flight = self.in_flight  # requests under way stay counted
        self.injected_failures = 0
        self.connections = 0
        self.log: deque[list[Any]] = deque(maxlen=_LOG_SIZE)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "by_kind": dict(self.by_kind),
                "rows_written": self.rows_written,
                "body_bytes": self.body_bytes,
                "write_body_bytes": self.write_body_bytes,
                "max_body_bytes_seen": self.max_body_seen,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "injected_failures": self.injected_failures,
                "connections": self.connections,
                "log": list(self.log),
            }

    def begin(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, start: float, method: str, target: str, kind: str, status: int, body_len: int, rows: int) -> None:
        with self.lock:
            self.in_flight -= 1
            self.requests += 1
            self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            self.body_bytes += body_len
            self.max_body_seen = max(self.max_body_seen, body_len)
            if kind == "write":
                self.write_body_bytes += body_len
                if status < 300:
                    self.rows_written += rows
            self.log.append([start, time.monotonic(), method, target, status, body_len, rows])

    def should_fail(self, ids: Iterable[Any]) -> int | None:
        """The first id of `ids` to refuse now (counting it), or None."""
        with self.lock:
            if not self.fail_set:
                return None
            limit = self.config["fail_times"]
            for section_id in ids:
                if isinstance(section_id, int) and section_id in self.fail_set:
                    seen = self.fail_counts.get(section_id, 0)
                    if limit is None or seen < limit:
                        self.fail_counts[section_id] = seen + 1
                        self.injected_failures += 1
                        return section_id
            return None


# ---------------------------------------------------------------------------------------
# Database access: a bounded pool and the schema cache
# ---------------------------------------------------------------------------------------


class _Pool:
    """At most `size` autocommit connections, opened on demand, reused LIFO."""

    def __init__(self, dsn: str, size: int, timeout: float) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self._idle: list[Any] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self.opened = 0

    @contextmanager
    def connection(self) -> Iterator[Any]:
        import psycopg

        if not self._slots.acquire(timeout=self.timeout):
            raise PgrstError(504, "PGRST003", "Timed out acquiring connection from connection pool.")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                try:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                except psycopg.Error as exc:
                    raise PgrstError(
                        503, "PGRST000", "Could not connect with the database.", str(exc).strip()
                    ) from None
                with self._lock:
                    self.opened += 1
            yield conn
        finally:
            if conn is not None and not conn.closed and conn.info.transaction_status == 0:  # IDLE
                with self._lock:
                    self._idle.append(conn)
            elif conn is not None:
                conn.close()
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Table:
    def __init__(self, schema: str, name: str, columns: dict[str, str], primary_key: list[str]) -> None:
        self.schema = schema
        self.name = name
        self.columns = columns  # name -> format_type
        self.primary_key = primary_key
        self.qualified = f"{_quote(schema)}.{_quote(name)}"
        self.statements: dict[tuple[Any, ...], str] = {}  # write SQL by shape (dropped with the table)


class _Function:
    def __init__(self, schema: str, name: str, row: Sequence[Any]) -> None:
        arg_names, all_types, modes, n_defaults, self.returns_set, self.returns_rows = row
        self.schema = schema
        self.name = name
        self.qualified = f"{_quote(schema)}.{_quote(name)}"
        modes = list(modes) if modes else ["i"] * len(all_types)
        names = list(arg_names) if arg_names else [""] * len(all_types)
        self.inputs = [(names[i], all_types[i]) for i in range(len(all_types)) if modes[i] in ("i", "b", "v")]
        required = len(self.inputs) - int(n_defaults)
        self.required = {name for name, _ in self.inputs[:required]}
        self.types = dict(self.inputs)


_TABLE_SQL = """
select a.attname::text, format_type(a.atttypid, a.atttypmod),
       coalesce((select array_agg(k.attname::text order by k.attnum)
                 from pg_index i join pg_attribute k on k.attrelid = i.indrelid and k.attnum = any(i.indkey)
                 where i.indrelid = c.oid and i.indisprimary), '{}')
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p', 'v', 'm', 'f')
order by a.attnum
"""

_FUNCTION_SQL = """
select p.proargnames::text[],
       array(select format_type(t, null) from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
             with ordinality u(t, i) order by i),
       p.proargmodes::text[],
       p.pronargdefaults,
       p.proretset,
       (t.typtype = 'c' or p.prorettype = 'record'::regtype)
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type t on t.oid = p.prorettype
where n.nspname = %s and p.proname = %s and p.prokind = 'f'
"""


class _SchemaCache:
    """Tables and functions as PostgREST's schema cache knows them: loaded once, kept until reload."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], _Table] = {}
        self._functions: dict[tuple[str, str], list[_Function]] = {}

    def reload(self) -> None:
        with self._lock:
            self._tables.clear()
            self._functions.clear()

    def table(self, conn: Any, schema: str, name: str) -> _Table:
        with self._lock:
            found = self._tables.get((schema, name))
        if found is not None:
            return found
        rows = conn.execute(_TABLE_SQL, (schema, name)).fetchall()
        if not rows:
            raise PgrstError(
                404, "PGRST205", f"Could not find the table '{schema}.{name}' in the schema cache",
                hint="If a new table was created in the database, try reloading the schema cache.",
            )
        table = _Table(schema, name, {r[0]: r[1] for r in rows}, list(rows[0][2]))
        with self._lock:
            self._tables[(schema, name)] = table
        return table

    def functions(self, conn: Any, schema: str, name: str) -> list[_Function]:
        with self._lock:
            found = self._functions.get((schema, name))
        if found is not None:
            return found
        functions = [_Function(schema, name, row) for row in conn.execute(_FUNCTION_SQL, (schema, name)).fetchall()]
        if functions:
            with self._lock:
                self._functions[(schema, name)] = functions
        return functions


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _array_literal(values: Sequence[str]) -> str:
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def _split_list(text: str) -> list[str]:
    """Items of PostgREST's ``(a,"b,c",d)`` lists (the parentheses already removed)."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items] if text.strip() else []


def _prefer(headers: Any) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for header in headers.get_all("Prefer") or []:
        for token in header.split(","):
            key, _, value = token.strip().partition("=")
            if key:
                prefs[key.strip().lower()] = value.strip()
    return prefs


def _jwt_claims(headers: Any) -> str:
    """The JWT's payload, unverified (the stand-in trusts its callers); `{}` when there is none."""
    auth = headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    parts = token.split(".") if scheme.lower() == "bearer" else []
    if len(parts) == 3:
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            if isinstance(payload, dict):
                return json.dumps(payload)
        except ValueError:
            pass
    return "{}"


# ---------------------------------------------------------------------------------------
# The HTTP server
# ---------------------------------------------------------------------------------------


class _Headers:
    """Request headers, case-insensitive; what the handler needs of `email.message.Message`, parsed
    in a fraction of its time (the stand-in shares the client's cores in benchmarks)."""

    __slots__ = ("_pairs", "_index")

    def __init__(self) -> None:
        self._pairs: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}

    def add(self, name: str, value: str) -> None:
        self._pairs.append((name, value))
        self._index.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: Any = None) -> Any:
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str] | None:
        return self._index.get(name.lower())

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


_MAX_HEADERS = 100


_REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 300: "Multiple Choices", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "postgrest-standin"
    timeout = 600
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def parse_request(self) -> bool:
        """The request line and headers (HTTP/1.x), without the stdlib's email parser."""
        self.command = None  # type: ignore[assignment]  # as the stdlib does, for send_error
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_error(400, f"Bad request line {self.requestline!r}")
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("iso-8859-1").partition(":")
            if not sep or len(raw) > 65536:
                self.send_error(400, "Bad header line")
                return False
            headers.add(name.strip(), value.strip())
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = (headers.get("Connection") or "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        if (headers.get("Expect") or "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET  # noqa: N815

    # -- plumbing ------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        return read_request_body(self)

    def _send(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n",
            f"Date: {formatdate(usegmt=True)}\r\n",
            f"Content-Length: {len(body)}\r\n",
        ]
        if body:
            head.append("Content-Type: application/json; charset=utf-8\r\n")
        head += [f"{k}: {v}\r\n" for k, v in headers]
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        self.wfile.write("".join(head).encode("latin-1") + (body if self.command != "HEAD" else b""))

    def _send_json(self, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path.rstrip("/") or "/"
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            error = {"code": "PGRST102", "details": None, "hint": None, "message": "Malformed request body"}
            self._send_json(400, error)
            return
        if path.startswith("/_control/"):
            self._control(path, body)
            return
        self._api(path, parsed.query, body)

    # -- control plane -------------------------------------------------------------------
    def _control(self, path: str, body: bytes) -> None:
        server = self.server
        method = self.command
        try:
            if path == "/_control/config" and method == "GET":
                with server.state.lock:
                    self._send_json(200, copy.deepcopy(server.state.config))
            elif path == "/_control/config" and method == "POST":
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("config must be a JSON object")
                self._send_json(200, server.state.merge(changes))
            elif path == "/_control/stats" and method == "GET":
                stats = server.state.stats()
                stats["pool_connections_opened"] = server.pool.opened
                self._send_json(200, stats)
            elif path == "/_control/reset" and method == "POST":
                with server.state.lock:
                    server.state.reset_stats()
                    server.state.fail_counts = {}
                self._send_json(200, {"ok": True})
            elif path == "/_control/reload" and method == "POST":
                server.schema.reload()
                self._send_json(200, {"ok": True})
            else:
                self._send_json(404, {"error": f"unknown control endpoint {method} {path}"})
        except ValueError as exc:
            self._send_json(400, {"error": str(exc)})

    # -- the API -------------------------------------------------------------------------
    def _api(self, path: str, query: str, body: bytes) -> None:
        state = self.server.state
        start = time.monotonic()
        state.begin()
        status, rows = 500, 0
        if path.startswith(_API_PREFIX + "/rpc/"):
            kind = "rpc"
        else:
            kind = {"POST": "write", "GET": "read", "HEAD": "read"}.get(self.command, "other")
        try:
            config = state.config  # live: `configure` updates it in place
            try:
                limit = config["max_body_bytes"]
                if limit is not None and len(body) > limit:
                    # A gateway in front of PostgREST refuses it: its JSON carries no code.
                    message = "Request size limit exceeded"
                    raise PgrstError(413, None, message, body={"message": message})
                if config["latency"]:
                    time.sleep(config["latency"])
                self._check_key(config)
                status, payload, headers, rows = self._route(path, query, body, config)
            except PgrstError as exc:
                status, payload, headers = exc.status, json.dumps(exc.body).encode(), exc.headers()
            except Exception as exc:  # a bug of ours: answer, don't drop the connection
                print(f"PostgREST stand-in: internal error: {exc!r}", file=sys.stderr, flush=True)
                status = 500
                payload = json.dumps({"code": "PGRSTX00", "details": None, "hint": None,
                                      "message": f"internal error in the stand-in: {exc!r}"}).encode()
                headers = []
        finally:
            state.end(start, self.command, path + ("?" + query if query else ""), kind, status, len(body), rows)
        self._send(status, payload, headers)

    def _check_key(self, config: dict[str, Any]) -> None:
        key = self.headers.get("apikey")
        if not key:
            raise PgrstError(401, None, "No API key found in request", body={
                "message": "No API key found in request",
                "hint": "No `apikey` request header or url param was found.",
            })
        if config["api_key"] is not None and key != config["api_key"]:
            raise PgrstError(401, None, "Invalid API key", body={
                "message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key.",
            })

    def _route(
        self, path: str, query: str, body: bytes, config: dict[str, Any]
    ) -> tuple[int, bytes, list[tuple[str, str]], int]:
        if not path.startswith(_API_PREFIX + "/"):
            raise PgrstError(404, None, f"no route for {path}", body={"message": "no Route matched with those values"})
        rest = path[len(_API_PREFIX) + 1 :]
        params = urllib.parse.parse_qsl(query, keep_blank_values=True)
        method = self.command
        if rest.startswith("rpc/"):
            if method != "POST":
                raise PgrstError(405, "PGRST117", f"Unsupported HTTP method: {method}")
            return (*self._rpc(urllib.parse.unquote(rest[4:]), body), 0)
        table = urllib.parse.unquote(rest)
        if method in ("GET", "HEAD"):
            return (*self._select(table, params), 0)
        if method == "POST":
            return self._insert(table, params, body, config)
        if method == "PATCH":
            return self._update(table, params, body, config)
        if method == "DELETE":
            return self._delete(table, params, config)
        raise PgrstError(405, "PGRST117", f"Unsupported HTTP method: {method}", hint="the stand-in serves GET, POST, PATCH, DELETE")

    def _schema_name(self, header: str) -> str:
        schema = self.headers.get(header) or self.server.db_schema
        if schema != self.server.db_schema:
            raise PgrstError(406, "PGRST106", f"Invalid schema: {schema}",
                             hint=f"Only the following schemas are exposed: {self.server.db_schema}")
        return schema

    @contextmanager
    def _transaction(self, config: dict[str, Any], *, read_only: bool = False) -> Iterator[Any]:
        """A pool connection inside one transaction, set up as PostgREST sets up each request."""
        import psycopg

        server = self.server
        try:
            with server.pool.connection() as conn:
                with conn.transaction():
                    if read_only:
                        conn.execute("set transaction isolation level read committed read only")
                    headers = json.dumps({k.lower(): v for k, v in self.headers.items()
                                          if k.lower() not in ("apikey", "authorization")})
                    conn.execute(
                        "select set_config('search_path', %s, true), set_config('request.method', %s, true),"
                        " set_config('request.path', %s, true), set_config('request.headers', %s, true),"
                        " set_config('request.jwt.claims', %s, true)",
                        (_quote(server.db_schema), self.command, self.path.split("?", 1)[0], headers,
                         _jwt_claims(self.headers)),
                    )
                    if config["statement_timeout_ms"]:
                        conn.execute(f"set local statement_timeout = {int(config['statement_timeout_ms'])}")
                    yield conn
        except psycopg.Error as exc:
            error = PgrstError.from_db(exc)
            if error.code and error.code.startswith("42"):
                server.schema.reload()  # an object changed under the cache
            raise error from None

    # -- GET /table ----------------------------------------------------------------------
    def _select(self, name: str, params: list[tuple[str, str]]) -> tuple[int, bytes, list[tuple[str, str]]]:
        schema = self._schema_name("Accept-Profile")
        config = self.server.state.config
        with self._transaction(config, read_only=True) as conn:
            table = self.server.schema.table(conn, schema, name)
            columns, where, args, order, limit, offset = self._read_plan(table, params)
            sql = (
                f"select pg_catalog.count(_postgrest_t), coalesce(json_agg(_postgrest_t), '[]')::text "
                f"from (select {columns} from {table.qualified}"
                + (f" where {' and '.join(where)}" if where else "")
                + (f" order by {', '.join(order)}" if order else "")
                + (f" limit {limit}" if limit is not None else "")
                + (f" offset {offset}" if offset is not None else "")
                + ") _postgrest_t"
            )
            count, body = conn.execute(sql, args).fetchone()
        if "application/vnd.pgrst.object+json" in self.headers.get("Accept", ""):
            if count != 1:
                raise PgrstError(406, "PGRST116", "Cannot coerce the result to a single JSON object",
                                 f"The result contains {count} rows")
            return 200, json.dumps(json.loads(body)[0]).encode(), []
        last = f"{(offset or 0) + count - 1}" if count else ""
        content_range = f"{offset or 0}-{last}/*" if count else "*/*"
        return 200, body.encode(), [("Content-Range", content_range)]

    def _read_plan(
        self, table: _Table, params: list[tuple[str, str]]
    ) -> tuple[str, list[str], list[Any], list[str], int | None, int | None]:
        columns = "*"
        where: list[str] = []
        args: list[Any] = []
        order: list[str] = []
        limit = offset = None
        for key, value in params:
            if key == "select":
                columns = self._select_list(table, value)
            elif key == "order":
                order = [self._order_term(table, term) for term in value.split(",") if term]
            elif key in ("limit", "offset"):
                if not value.isdigit():
                    raise _bad_request("PGRST100", f"\"failed to parse {key} parameter ({value})\"")
                if key == "limit":
                    limit = int(value)
                else:
                    offset = int(value)
            elif key in ("or", "and", "not.or", "not.and"):
                raise _unsupported(f"logical filter {key}=")
            elif key in _READ_RESERVED:
                continue
            else:
                clause, clause_args = self._filter(table, key, value)
                where.append(clause)
                args += clause_args
        return columns, where, args, order, limit, offset

    def _column(self, table: _Table, name: str) -> str:
        if name not in table.columns:
            raise PgrstError(400, "42703", f"column {table.name}.{name} does not exist")
        return f"{table.qualified}.{_quote(name)}"

    def _select_list(self, table: _Table, value: str) -> str:
        items = []
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            if item == "*":
                items.append(f"{table.qualified}.*")
                continue
            head, _, cast = item.partition("::")
            alias, _, field = head.rpartition(":")  # PostgREST's alias:column::cast
            if "(" in field or "->" in field:
                raise _unsupported(f"select item {item!r} (embedding, json paths)")
            expr = self._column(table, field)
            if cast:
                if not _CAST.match(cast):
                    raise _bad_request("PGRST100", f"invalid cast {cast!r}")
                expr = f"{expr}::{cast}"
            items.append(f"{expr} as {_quote(alias or field)}")
        return ", ".join(items) or f"{table.qualified}.*"

    def _order_term(self, table: _Table, term: str) -> str:
        parts = term.split(".")
        sql = self._column(table, parts[0])
        for modifier in parts[1:]:
            words = {"asc": "asc", "desc": "desc", "nullsfirst": "nulls first", "nullslast": "nulls last"}
            if modifier not in words:
                raise _bad_request("PGRST100", f"\"failed to parse order ({term})\"")
            sql += " " + words[modifier]
        return sql

    def _filter(self, table: _Table, column: str, value: str) -> tuple[str, list[Any]]:
        target = self._column(table, column)
        negate = value.startswith("not.")
        if negate:
            value = value[4:]
        op, _, operand = value.partition(".")
        if op in _FILTER_OPS:
            if op in ("like", "ilike"):
                operand = operand.replace("*", "%")
            clause, args = f"{target} {_FILTER_OPS[op]} %s", [operand]
        elif op == "in":
            if not (operand.startswith("(") and operand.endswith(")")):
                raise _bad_request("PGRST100", f"\"failed to parse filter (in.{operand})\"")
            clause, args = f"{target} = any(%s)", [_array_literal(_split_list(operand[1:-1]))]
        elif op == "is":
            words = {"null": "null", "true": "true", "false": "false", "unknown": "unknown", "not_null": "not null"}
            if operand.lower() not in words:
                raise _bad_request("PGRST100", f"\"failed to parse filter (is.{operand})\"")
            clause, args = f"{target} is {words[operand.lower()]}", []
        else:
            raise _unsupported(f"filter operator {op!r}")
        return (f"not ({clause})" if negate else clause), args

    # -- POST /table ---------------------------------------------------------------------
    def _insert(
        self, name: str, params: list[tuple[str, str]], raw: bytes, config: dict[str, Any]
    ) -> tuple[int, bytes, list[tuple[str, str]], int]:
        schema = self._schema_name("Content-Profile")
        query = dict(params)
        prefs = _prefer(self.headers)
        if prefs.get("missing") == "default":
            raise _unsupported("Prefer: missing=default")
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise _bad_request("PGRST102", "Empty or invalid json", str(exc)) from None
        if isinstance(body, dict):
            rows = [body]
        elif isinstance(body, list) and all(isinstance(row, dict) for row in body):
            rows = body
        else:
            raise _bad_request("PGRST102", "Empty or invalid json")
        if "columns" in query:
            names = [c.strip().strip('"') for c in query["columns"].split(",") if c.strip()]
        else:
            names = list(rows[0]) if rows else []
            first = set(names)
            if any(set(row) != first for row in rows[1:]):
                raise _bad_request("PGRST102", "All object keys must match")
        fail_column = config["fail_column"]
        failing = self.server.state.should_fail(row.get(fail_column) for row in rows)
        if failing is not None:
            code = config["fail_code"]
            raise PgrstError(
                status_for_sqlstate(code), code,
                f'new row for relation "{name}" violates check constraint "fake_postgrest_fail_ids"',
                f"Failing row contains ({fail_column})=({failing}).",
            )
        returning = prefs.get("return", "minimal")
        resolution = prefs.get("resolution")
        with self._transaction(config) as conn:
            table = self.server.schema.table(conn, schema, name)
            for column in names:
                if column not in table.columns:
                    raise _bad_request(
                        "PGRST204", f"Could not find the '{column}' column of '{name}' in the schema cache"
                    )
            if not rows:
                return 201, (b"[]" if returning == "representation" else b""), [("Content-Range", "*/*")], 0
            if resolution not in ("merge-duplicates", "ignore-duplicates"):
                resolution = None
            target = [c.strip().strip('"') for c in query.get("on_conflict", "").split(",") if c.strip()]
            shape = (tuple(names), resolution, tuple(target), returning == "representation")
            sql = table.statements.get(shape)
            if sql is None:
                sql = self._insert_sql(table, names, resolution, target or table.primary_key, returning)
                table.statements[shape] = sql
            count, representation = conn.execute(sql, (raw.decode("utf-8"),)).fetchone()
        headers = [("Content-Range", f"*/{count}" if prefs.get("count") == "exact" else "*/*")]
        if returning == "representation":
            return 201, representation.encode(), headers, len(rows)
        return 201, b"", headers, len(rows)

    def _update(
        self, name: str, params: list[tuple[str, str]], raw: bytes, config: dict[str, Any]
    ) -> tuple[int, bytes, list[tuple[str, str]], int]:
        """``PATCH /table?filters`` with a JSON object: PostgREST's update of the rows the filters
        match (all rows without a filter); 204 with no body, or 200 and the rows with
        ``Prefer: return=representation``."""
        schema = self._schema_name("Content-Profile")
        prefs = _prefer(self.headers)
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise _bad_request("PGRST102", "Empty or invalid json", str(exc)) from None
        if not isinstance(body, dict) or not body:
            raise _bad_request("PGRST102", "Empty or invalid json")
        with self._transaction(config) as conn:
            table = self.server.schema.table(conn, schema, name)
            for column in body:
                if column not in table.columns:
                    raise _bad_request(
                        "PGRST204", f"Could not find the '{column}' column of '{name}' in the schema cache"
                    )
            _, where, args, _, _, _ = self._read_plan(table, [(k, v) for k, v in params if k != "columns"])
            cols = ", ".join(_quote(c) for c in body)
            typed = ", ".join(f"{_quote(c)} {table.columns[c]}" for c in body)
            sets = ", ".join(f"{_quote(c)} = pgrst_body.{_quote(c)}" for c in body)
            sql = (
                f"with pgrst_source as (update {table.qualified} set {sets} "
                "from (select %s::json as json_data) pgrst_payload, "
                f"lateral (select {cols} from json_to_record(pgrst_payload.json_data) as _({typed})) pgrst_body"
                + (f" where {' and '.join(where)}" if where else "")
                + f" returning {table.qualified}.*) "
                "select pg_catalog.count(_postgrest_t), coalesce(json_agg(_postgrest_t), '[]')::text "
                "from (select * from pgrst_source) _postgrest_t"
            )
            count, representation = conn.execute(sql, (raw.decode("utf-8"), *args)).fetchone()
        headers = [("Content-Range", f"0-{count - 1}/*" if count else "*/*")]
        if prefs.get("return") == "representation":
            return 200, representation.encode(), headers, count
        return 204, b"", headers, count

    def _delete(
        self, name: str, params: list[tuple[str, str]], config: dict[str, Any]
    ) -> tuple[int, bytes, list[tuple[str, str]], int]:
        """``DELETE /table?filters``: PostgREST's delete of the rows the filters match; 204 with no
        body (``Content-Range: */N`` with ``Prefer: count=exact``), or 200 and the rows with
        ``Prefer: return=representation``."""
        schema = self._schema_name("Content-Profile")
        prefs = _prefer(self.headers)
        with self._transaction(config) as conn:
            table = self.server.schema.table(conn, schema, name)
            _, where, args, _, _, _ = self._read_plan(table, params)
            sql = (
                f"with pgrst_source as (delete from {table.qualified}"
                + (f" where {' and '.join(where)}" if where else "")
                + f" returning {table.qualified}.*) "
                "select pg_catalog.count(_postgrest_t), coalesce(json_agg(_postgrest_t), '[]')::text "
                "from (select * from pgrst_source) _postgrest_t"
            )
            count, representation = conn.execute(sql, args).fetchone()
        headers = [("Content-Range", f"*/{count}" if prefs.get("count") == "exact" else "*/*")]
        if prefs.get("return") == "representation":
            return 200, representation.encode(), headers, count
        return 204, b"", headers, count

    @staticmethod
    def _insert_sql(table: _Table, names: list[str], resolution: str | None, target: list[str], returning: str) -> str:
        """PostgREST's insert / upsert statement for this table and body shape."""
        cols = ", ".join(_quote(c) for c in names)
        typed = ", ".join(f"{_quote(c)} {table.columns[c]}" for c in names)
        sql = (
            f"with pgrst_source as (insert into {table.qualified}({cols}) "
            f"select {', '.join('pgrst_body.' + _quote(c) for c in names)} "
            "from (select %s::json as json_data) pgrst_payload, "
            "lateral (select case when json_typeof(pgrst_payload.json_data) = 'array' "
            "then pgrst_payload.json_data else json_build_array(pgrst_payload.json_data) end as val) "
            "pgrst_uniform_json, "
            f"lateral (select {cols} from json_to_recordset(pgrst_uniform_json.val) as _({typed})) pgrst_body"
        )
        if resolution is not None:
            for column in target:
                if column not in table.columns:
                    raise _bad_request(
                        "PGRST204", f"Could not find the '{column}' column of '{table.name}' in the schema cache"
                    )
            conflict = ", ".join(_quote(c) for c in target)
            if resolution == "ignore-duplicates":
                sql += f" on conflict ({conflict}) do nothing"
            else:
                sets = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in names)
                sql += f" on conflict ({conflict}) do update set {sets}"
        if returning == "representation":
            return sql + (f" returning {table.qualified}.*) select pg_catalog.count(_postgrest_t), "
                          "coalesce(json_agg(_postgrest_t), '[]')::text from (select * from pgrst_source) _postgrest_t")
        return sql + " returning 1) select pg_catalog.count(*), null::text from pgrst_source"

    # -- POST /rpc/fn --------------------------------------------------------------------
    def _rpc(self, name: str, raw: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
        schema = self._schema_name("Content-Profile")
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise _bad_request("PGRST102", "Empty or invalid json", str(exc)) from None
        if not isinstance(args, dict):
            raise _unsupported("rpc with a non-object body")
        config = self.server.state.config
        with self._transaction(config) as conn:
            candidates = [
                fn for fn in self.server.schema.functions(conn, schema, name)
                if set(args) <= set(fn.types) and fn.required <= set(args)
            ]
            if not candidates:
                signature = ", ".join(sorted(args))
                raise PgrstError(
                    404, "PGRST202",
                    f"Could not find the function {schema}.{name}({signature}) in the schema cache",
                    hint="If a new function was created in the database with this name and parameters, "
                    "try reloading the schema cache.",
                )
            if len(candidates) > 1:
                raise PgrstError(
                    300, "PGRST203", f"Could not choose the best candidate function between: {schema}.{name}"
                )
            fn = candidates[0]
            keys = list(args)
            call_args = ", ".join(f"{_quote(k)} := pgrst_body.{_quote(k)}" for k in keys)
            source = "from (select %s::json as json_data) pgrst_payload"
            if keys:
                typed = ", ".join(f"{_quote(k)} {fn.types[k]}" for k in keys)
                source += (
                    ", lateral (select * from json_to_recordset(json_build_array(pgrst_payload.json_data))"
                    f" as _({typed}) limit 1) pgrst_body"
                )
            if fn.returns_rows:
                sql = (f"select coalesce(json_agg(_postgrest_t), '[]')::text from "
                       f"(select pgrst_call.* {source}, lateral {fn.qualified}({call_args}) pgrst_call) _postgrest_t")
            else:
                sql = (f"select coalesce(json_agg(_postgrest_t.pgrst_scalar), '[]')::text from "
                       f"(select pgrst_call.pgrst_scalar {source}, "
                       f"lateral {fn.qualified}({call_args}) pgrst_call(pgrst_scalar)) _postgrest_t")
            (body,) = conn.execute(sql, (raw.decode("utf-8") if raw.strip() else "{}",)).fetchone()
        if not fn.returns_set:
            values = json.loads(body)
            body = json.dumps(values[0] if values else None)
        return 200, body.encode(), []


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
    state: _State
    pool: _Pool
    schema: _SchemaCache
    db_schema: str

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's getfqdn (a DNS lookup)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.state.lock:
            self.state.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, BrokenPipeError)):
            return  # a client went away
        super().handle_error(request, client_address)


def _serve(port: int, dsn: str, config: dict[str, Any], *, pool_size: int, pool_timeout: float, schema: str) -> _Server:
    server = _Server(("127.0.0.1", port), _Handler)
    server.state = _State(config)
    server.pool = _Pool(dsn, pool_size, pool_timeout)
    server.schema = _SchemaCache()
    server.db_schema = schema
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="PostgREST stand-in over a real PostgreSQL (127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = any free port)")
    parser.add_argument("--config", default="{}", help="JSON object of config keys (see DEFAULT_CONFIG)")
    parser.add_argument("--pool-size", type=int, default=10, help="database connections (PostgREST's db-pool)")
    parser.add_argument("--pool-timeout", type=float, default=10.0, help="seconds to wait for a pool connection")
    parser.add_argument("--schema", default="public", help="the exposed schema")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (the parent ended)")
    args = parser.parse_args(argv)
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        print(f"error: set {DSN_ENV} to the database's connection string", file=sys.stderr, flush=True)
        return 2
    try:
        import psycopg

        config = json.loads(args.config)
        if not isinstance(config, dict):
            raise ValueError("--config must be a JSON object")
        if args.pool_size < 1:
            raise ValueError("--pool-size must be >= 1")
        with psycopg.connect(dsn, connect_timeout=10) as conn:  # fail now, not on the first request
            conn.execute("select 1")
        server = _serve(args.port, dsn, config, pool_size=args.pool_size, pool_timeout=args.pool_timeout,
                        schema=args.schema)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # psycopg.Error: the database is unreachable
        print(f"error: cannot connect to the database: {type(exc).__name__}", file=sys.stderr, flush=True)
        return 2
    print(f"LISTENING http://127.0.0.1:{server.server_address[1]}", flush=True)
    if args.exit_on_stdin_eof:
        watch_stdin_eof()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.pool.close()
    return 0


# ---------------------------------------------------------------------------------------
# The process handle
# ---------------------------------------------------------------------------------------


class FakePostgREST(ServerProcess):
    """Handle of one PostgREST stand-in process on 127.0.0.1, serving the database at `dsn`.

    ``with FakePostgREST(dsn, latency=0.02) as rest:`` starts ``python -m
    servers.postgrest_server`` (with ``test/`` on its PYTHONPATH) and stops it on exit; give :attr:`url` to
    supabase-py as the project URL, with any non-empty key.

    Args:
        dsn: libpq connection string of the database (passed through the
            environment, never the command line).
        latency: Seconds added to every API request.
        pool_size: Database connections of the server (PostgREST's default: 10).
        pool_timeout: Seconds a request waits for one before a 504 PGRST003.
        schema: The exposed schema.
        **config: Other keys of :data:`DEFAULT_CONFIG` (``fail_ids``, ``max_body_bytes``...).
    """

    module = "servers.postgrest_server"
    label = "PostgREST stand-in"
    import_roots = (str(Path(__file__).resolve().parent.parent),)  # test/, whose `servers` package holds us

    def __init__(
        self,
        dsn: str,
        *,
        latency: float = 0.0,
        pool_size: int = 10,
        pool_timeout: float = 10.0,
        schema: str = "public",
        startup_timeout: float = 30.0,
        control_timeout: float = 30.0,
        **config: Any,
    ) -> None:
        config["latency"] = latency
        if "fail_ids" in config:
            config["fail_ids"] = sorted(set(config["fail_ids"]))
        _validate_config(config)
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        super().__init__(startup_timeout=startup_timeout, control_timeout=control_timeout)
        self.dsn = dsn
        self.config = config
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.schema = schema

    def _arguments(self) -> list[str]:
        return [
            "--config", json.dumps(self.config), "--pool-size", str(self.pool_size),
            "--pool-timeout", str(self.pool_timeout), "--schema", self.schema,
        ]

    def _environment(self) -> dict[str, str]:
        return {DSN_ENV: self.dsn}  # the DSN may carry a password: never on the command line

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into the live config (``fail_ids`` may be any collection of ints);
        setting ``fail_ids`` or ``fail_times`` restarts the per-id failure counts. Returns the config."""
        if "fail_ids" in changes:
            changes["fail_ids"] = sorted(set(changes["fail_ids"]))
        _validate_config(changes)
        return self._call("POST", "/_control/config", changes)

    def reset_config(self) -> dict[str, Any]:
        """Back to DEFAULT_CONFIG (no latency, no faults, no body limit)."""
        return self.configure(**copy.deepcopy(DEFAULT_CONFIG))

    def stats(self) -> dict[str, Any]:
        """``requests``, ``by_status`` {"201": n}, ``by_kind`` {"write"|"read"|"rpc"|"other": n},
        ``rows_written`` (rows of successful writes), ``body_bytes`` / ``write_body_bytes`` (request
        bodies), ``max_body_bytes_seen``, ``in_flight``, ``max_in_flight``, ``injected_failures``,
        ``connections`` (TCP connections accepted), ``pool_connections_opened``, ``log`` [[t_start,
        t_end, method, path?query, status, body_bytes, rows], ...] (times: the server's time.monotonic())."""
        return super().stats()

    def reset_stats(self) -> None:
        """Zero the stats and the per-id failure counts."""
        self._call("POST", "/_control/reset", {})

    def reload_schema(self) -> None:
        """Forget the cached tables and functions (PostgREST's ``NOTIFY pgrst, 'reload schema'``)."""
        self._call("POST", "/_control/reload", {})


if __name__ == "__main__":
    raise SystemExit(main())
