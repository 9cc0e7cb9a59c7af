"""`PostgresStore`: sections stored straight into Postgres + pgvector with psycopg 3.

Vectors travel in pgvector's binary format (psycopg binary parameters and
`pgvector.psycopg.register_vector`), never as text: a float32 goes over the
wire as its 4 bytes instead of ~11 characters of decimal, and is stored bit for
bit. One connection, opened on first use and reused; not for concurrent use
from several threads (give each thread its own store).

How a batch is written: rows are upserted in chunks of `rows_per_chunk`, one
transaction each, as one statement that unnests one binary array per column::

    insert into t (cols) select * from unnest($1::int8[], ..., $3::vector[], ...)
    on conflict (section_id) do update set ... = excluded....

A chunk the database refuses is rolled back and retried row by row, each row
under its own savepoint, so only the bad rows fail, each with the database's
reason; all other rows are stored.

Why unnest: measured with bench/bench_pg_paths.py (20,000 rows x 1536 dims,
500 rows per chunk, no HNSW index, local PostgreSQL 18 + pgvector 0.8.2 on a
2-vCPU machine shared with other jobs; best [median] of 5, rows/s):

    path                                  new rows         existing rows
    unnest of binary arrays              10245 [8008]      9105 [6808]
    multi-row VALUES, binary (RawCursor)  7925 [7628]      8219 [6458]
    binary COPY to temp + INSERT SELECT   9362 [6992]      6785 [5837]
    executemany, pipeline mode            7943 [6482]      6574 [5754]

The server's work (TOASTing 6 KB per vector, WAL) dominates and is the same for
every path; unnest had the best median in 3 runs of 4 (the 4th, on a busier
machine, was a tie within noise), executemany was last every time (87 µs of
client CPU per row against ~40 for the others). unnest also needs 7 parameters
whatever the chunk size (VALUES needs 7 per row, capped at 65,535), one cached
statement for every chunk, and no temporary table.
"""

from __future__ import annotations

import array
import datetime as dt
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, InvalidInputError, MissingDependencyError, StoreError
from .ingest import SectionStore
from .rows import Row
from .schema import (
    DEFAULT_DIMENSIONS,
    DEFAULT_MATCH_FUNCTION,
    DEFAULT_TABLE,
    apply_schema_sql,
    index_name,
    render_index,
    render_schema,
    validate_dimensions,
    validate_identifier,
)

if TYPE_CHECKING:
    import numpy
    import psycopg

__all__ = ["MAX_ROWS_PER_CHUNK", "PostgresStore", "redact_dsn", "scrub_secret"]

_COLUMNS = ("section_id", "title", "embedding", "model", "content_hash", "token_count", "updated_at")
_COPY_TYPES = ("int8", "text", "vector", "text", "text", "int4", "timestamptz")

MAX_ROWS_PER_CHUNK = 9000
"""A statement takes at most 65,535 parameters: 9,000 rows x 7 columns stays under it."""

_EF_SEARCH_DEFAULT = 40  # pgvector's hnsw.ef_search default: an HNSW scan returns at most this many rows
_EF_SEARCH_MAX = 1000  # pgvector's upper bound for hnsw.ef_search


# --- DSN redaction ---------------------------------------------------------

_URI_USERINFO = re.compile(r"^(?P<head>\s*postgres(?:ql)?://[^@/?#:]*:)(?P<secret>[^@/]*)(?P<tail>@)", re.IGNORECASE)
_URI_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&#]*)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:\\.|[^'\\])*'|\S*)", re.IGNORECASE)


def _is_uri(dsn: str) -> bool:
    return re.match(r"postgres(?:ql)?://", dsn.lstrip(), re.IGNORECASE) is not None


def _patterns(dsn: str) -> tuple[re.Pattern[str], ...]:
    return (_URI_USERINFO, _URI_QUERY_PASSWORD) if _is_uri(dsn) else (_KV_PASSWORD,)


def _secrets(dsn: str) -> list[str]:
    """Every spelling of the DSN's password(s) that could show up in a message."""
    found: list[str] = []
    for pattern in _patterns(dsn):
        for match in pattern.finditer(dsn):
            raw = match.group("secret")
            found.append(raw)
            found.append(urllib.parse.unquote(raw))
            if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
                found.append(re.sub(r"\\(.)", r"\1", raw[1:-1]))
    # Longest first, so a password containing another spelling is replaced whole.
    return sorted({s for s in found if s}, key=len, reverse=True)


def redact_dsn(dsn: str) -> str:
    """`dsn` with its password replaced by ``***`` (URI or key=value form)."""
    if not _is_uri(dsn):
        return _KV_PASSWORD.sub(lambda m: m.group("head") + "***", dsn)
    text = _URI_USERINFO.sub(lambda m: m.group("head") + "***" + m.group("tail"), dsn)
    return _URI_QUERY_PASSWORD.sub(lambda m: m.group("head") + "***", text)


def scrub_secret(text: str, dsn: str) -> str:
    """`text` with any spelling of `dsn`'s password replaced by ``***``.

    libpq quotes pieces of a malformed connection string in its errors, so
    driver messages are scrubbed before they go into ours.
    """
    for secret in _secrets(dsn):
        text = text.replace(secret, "***")
    return text


# --- optional dependencies -------------------------------------------------


def _import_drivers() -> tuple[Any, Any, Callable[[Any], None]]:
    """(psycopg, numpy, pgvector.psycopg.register_vector), or MissingDependencyError."""
    purpose = "PostgresStore"
    try:
        import psycopg
    except ImportError:
        raise MissingDependencyError("psycopg", "postgres", purpose) from None
    try:
        from pgvector.psycopg import register_vector
    except ImportError:
        raise MissingDependencyError("pgvector", "postgres", purpose) from None
    try:
        import numpy
    except ImportError:
        raise MissingDependencyError("numpy", "postgres", purpose) from None
    return psycopg, numpy, register_vector


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class PostgresStore(SectionStore):
    """Section embeddings in a Postgres table with pgvector, through psycopg 3.

    Args:
        dsn: libpq URI or key=value string; defaults to the ``DATABASE_URL``
            environment variable.
        table: Table name (plain SQL identifier).
        dimensions: Vector size of the table.
        match_function: Name of the search function `search_vector` calls.
        rows_per_chunk: Rows per upsert transaction (1..9000).
        create_schema: On first connection, create the extension, table, index,
            function and RLS if they are not all in place (see `ensure_schema`).
        connect_timeout: Seconds to wait for the connection.

    Raises:
        MissingDependencyError: If psycopg, pgvector or numpy is not installed.
        ConfigurationError: If there is no DSN or a setting is invalid.

    Nothing connects until the first call that needs the database; connection
    failures then raise `StoreError`, whose message never holds the password.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        table: str = DEFAULT_TABLE,
        dimensions: int = DEFAULT_DIMENSIONS,
        match_function: str = DEFAULT_MATCH_FUNCTION,
        rows_per_chunk: int = 500,
        create_schema: bool = True,
        connect_timeout: int = 10,
    ) -> None:
        self._psycopg, self._numpy, self._register_vector = _import_drivers()
        if dsn is None:
            dsn = os.environ.get("DATABASE_URL")
        if not dsn or not isinstance(dsn, str):
            raise ConfigurationError("PostgresStore needs a database: pass dsn=... or set DATABASE_URL")
        self.table = validate_identifier(table, "table")
        self.match_function = validate_identifier(match_function, "match function")
        self.dimensions = validate_dimensions(dimensions)
        if (
            isinstance(rows_per_chunk, bool)
            or not isinstance(rows_per_chunk, int)
            or not 1 <= rows_per_chunk <= MAX_ROWS_PER_CHUNK
        ):
            raise ConfigurationError(
                f"rows_per_chunk must be an int from 1 to {MAX_ROWS_PER_CHUNK}, got {rows_per_chunk!r}"
            )
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int) or connect_timeout < 1:
            raise ConfigurationError(f"connect_timeout must be a positive int (seconds), got {connect_timeout!r}")
        self.rows_per_chunk = rows_per_chunk
        self.create_schema = create_schema
        self.connect_timeout = connect_timeout
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._ready = False  # schema checked (if asked) and vector types registered on _conn
        self._schema_done = False
        self._write_path = "unnest"
        self._statements: dict[tuple[str, int], bytes] = {}

    # --- connection --------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"PostgresStore(dsn={redact_dsn(self._dsn)!r}, table={self.table!r}, "
            f"dimensions={self.dimensions}, match_function={self.match_function!r})"
        )

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        conn, self._conn = self._conn, None
        self._ready = False
        if conn is not None:
            conn.close()

    def _error(self, doing: str, exc: BaseException) -> StoreError:
        """A StoreError for `exc` that names the table and never the password."""
        message = f"{doing} (table {self.table!r} on {redact_dsn(self._dsn)}): {str(exc).strip()}"
        return StoreError(scrub_secret(message, self._dsn))

    def _open(self) -> psycopg.Connection[Any]:
        """The connection, opened if needed, with no setup done on it."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self.close()
        try:
            self._conn = self._psycopg.connect(self._dsn, autocommit=True, connect_timeout=self.connect_timeout)
        except self._psycopg.Error as exc:
            # from None: the driver's exception may quote the connection string.
            raise self._error("cannot connect to the database", exc) from None
        return self._conn

    def _connection(self) -> psycopg.Connection[Any]:
        """The connection, ready: schema checked (if create_schema) and vector types registered."""
        conn = self._open()
        if self._ready:
            return conn
        try:
            if self.create_schema and not self._schema_done:
                if not self._schema_is_current(conn):
                    apply_schema_sql(conn, self._render(with_index=True), table=self.table)
                self._schema_done = True
            self._register_vector(conn)
        except self._psycopg.Error as exc:
            self.close()
            hint = "" if self.create_schema else " (create_schema=False: run ensure_schema() or apply the schema first)"
            raise self._error("cannot set up the database" + hint, exc) from None
        self._ready = True
        return conn

    def _discard_if_broken(self) -> bool:
        """Drop a connection the server or network broke; True if it was broken."""
        if self._conn is not None and (self._conn.broken or self._conn.closed):
            self.close()
            return True
        return False

    # --- schema ------------------------------------------------------------

    def _render(self, *, with_index: bool) -> str:
        return render_schema(
            table=self.table, dimensions=self.dimensions, match_function=self.match_function, with_index=with_index
        )

    def _function_body(self) -> str:
        """The search function's body exactly as the rendered schema defines it."""
        sql = self._render(with_index=False)
        match = re.search(r"create or replace function .*?\bas \$\$(.*?)\$\$;", sql, re.DOTALL)
        assert match is not None, "schema.sql: search function not found"
        return match.group(1)

    def _schema_is_current(self, conn: psycopg.Connection[Any]) -> bool:
        """True if table, function (same body), RLS and index are all in place.

        Checked first so a store does not run DDL on every connection: DDL takes
        an exclusive lock on the table (``alter table ... enable row level
        security``) and would queue behind, and block, running queries.
        """
        expect_index = "create index" in render_index(table=self.table, dimensions=self.dimensions)
        row = conn.execute(
            """
            select
              (select a.atttypmod = %(dimensions)s
                 from pg_attribute a
                where a.attrelid = to_regclass(%(table)s) and a.attname = 'embedding'
                  and not a.attisdropped and a.atttypid = to_regtype('vector')),
              (select c.relrowsecurity from pg_class c where c.oid = to_regclass(%(table)s)),
              to_regclass(%(index)s) is not null,
              exists (select 1 from pg_proc p
                       where p.proname = %(function)s and p.pronargs = 3
                         and pg_function_is_visible(p.oid) and p.prosrc = %(body)s)
            """,
            {
                "dimensions": self.dimensions,
                "table": self.table,
                "index": index_name(self.table),
                "function": self.match_function,
                "body": self._function_body(),
            },
        ).fetchone()
        assert row is not None
        table_ok, rls_ok, index_ok, function_ok = row
        return bool(table_ok and rls_ok and function_ok and (index_ok or not expect_index))

    def ensure_schema(self, with_index: bool = True) -> None:
        """Apply the schema (extension, table, function, RLS; index if asked).

        Always runs the script (idempotent). For a bulk load, create the store
        with ``create_schema=False``, call ``ensure_schema(with_index=False)``,
        write, then `create_index`.

        Raises:
            StoreError: If the database is unreachable or refuses the script
                (e.g. the table exists with another vector size).
        """
        conn = self._open()
        try:
            apply_schema_sql(conn, self._render(with_index=with_index), table=self.table)
            self._schema_done = True
            if not self._ready:
                self._register_vector(conn)
                self._ready = True
        except self._psycopg.Error as exc:
            self._discard_if_broken()
            raise self._error("cannot apply the schema", exc) from None

    def create_index(self) -> None:
        """Create the HNSW index if it does not exist (no-op above 4,000 dimensions).

        Raises:
            StoreError: If the database is unreachable or the build fails.
        """
        conn = self._open()
        try:
            apply_schema_sql(conn, render_index(table=self.table, dimensions=self.dimensions), table=self.table)
        except self._psycopg.Error as exc:
            self._discard_if_broken()
            raise self._error("cannot create the index", exc) from None

    def count(self) -> int:
        """Number of stored rows.

        Raises:
            StoreError: If the database is unreachable or the query fails.
        """
        row = self._query("cannot count rows", f"select count(*) from {self.table}", None)
        return int(row[0][0])

    def _query(self, doing: str, sql: str, params: Any) -> list[tuple[Any, ...]]:
        conn = self._connection()
        try:
            return conn.execute(sql, params).fetchall()
        except self._psycopg.Error as exc:
            self._discard_if_broken()
            raise self._error(doing, exc) from None

    # --- SectionStore --------------------------------------------------------

    def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """`{section_id: (content_hash, model)}` for the ids already stored, in one query.

        Raises:
            StoreError: If the database is unreachable or the query fails.
        """
        ids = sorted({int(i) for i in section_ids})
        if not ids:
            return {}
        rows = self._query(
            "cannot read stored hashes",
            f"select section_id, content_hash, model from {self.table} where section_id = any(%s::bigint[])",
            (ids,),
        )
        return {int(sid): (content_hash, model) for sid, content_hash, model in rows}

    def search_vector(
        self, vector: Sequence[float], k: int = 5, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """The `k` rows nearest `vector` by cosine similarity, best first.

        Args:
            vector: Query vector of `dimensions` floats.
            k: How many rows at most (an HNSW scan returns at most 1,000).
            threshold: Only rows with similarity >= threshold.

        Returns:
            Dicts with `section_id`, `title`, `similarity`.

        Raises:
            InvalidInputError: If `vector` has the wrong size or `k` < 1.
            StoreError: If the database is unreachable or the query fails.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        query = self._as_float32(vector)
        if query.ndim != 1 or query.shape[0] != self.dimensions:
            raise InvalidInputError(
                f"query vector has {query.size} dimensions, table {self.table!r} has {self.dimensions}"
            )
        conn = self._connection()
        try:
            with conn.transaction():
                if k > _EF_SEARCH_DEFAULT:
                    # An HNSW scan yields at most ef_search rows: widen it for this transaction.
                    conn.execute("select set_config('hnsw.ef_search', %s, true)", (str(min(k, _EF_SEARCH_MAX)),))
                rows = conn.execute(
                    f"select section_id, title, similarity from {self.match_function}(%b, %s, %s)",
                    (query, k, threshold),
                ).fetchall()
        except self._psycopg.Error as exc:
            self._discard_if_broken()
            raise self._error("search failed", exc) from None
        return [{"section_id": int(sid), "title": title, "similarity": float(sim)} for sid, title, sim in rows]

    def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        """Upsert `rows` (binary, chunked); return `{section_id: reason}` for rows not stored.

        A chunk the database refuses is retried row by row, so only its bad rows
        fail, each with the database's reason. If the connection itself is lost,
        every row not yet committed is returned as failed. When an id appears
        more than once, the last row wins (as sequential upserts would).

        Raises:
            StoreError: If the database cannot be reached at all.
        """
        failures: dict[int, str] = {}
        prepared: dict[int, tuple[Any, ...]] = {}
        for row in rows:
            prepared.pop(row.section_id, None)
            failures.pop(row.section_id, None)
            try:
                prepared[row.section_id] = self._row_params(row)
            except (TypeError, ValueError) as exc:
                failures[row.section_id] = f"invalid row: {exc}"
        if not prepared:
            return failures
        conn = self._connection()
        items = list(prepared.items())
        write_chunk = _WRITE_PATHS[self._write_path]
        for done, chunk in enumerate(_chunks(items, self.rows_per_chunk)):
            try:
                with conn.transaction():
                    write_chunk(self, conn, [params for _, params in chunk])
                continue
            except self._psycopg.Error as exc:
                if self._discard_if_broken():
                    return self._lost(failures, items[done * self.rows_per_chunk :], exc)
            try:
                failures.update(self._write_one_by_one(conn, chunk))
            except self._psycopg.Error as exc:
                if self._discard_if_broken():
                    return self._lost(failures, items[done * self.rows_per_chunk :], exc)
                # The retry's own transaction failed (e.g. at commit): none of this
                # chunk is stored; later chunks still get their chance.
                reason = self._reason(exc)
                failures.update({section_id: reason for section_id, _ in chunk})
        return failures

    # --- writing -------------------------------------------------------------

    def _lost(
        self, failures: dict[int, str], remaining: Sequence[tuple[int, Any]], exc: BaseException
    ) -> dict[int, str]:
        reason = "database connection lost: " + scrub_secret(str(exc).strip(), self._dsn)
        for section_id, _ in remaining:
            failures[section_id] = reason
        return failures

    def _as_float32(self, vector: Any) -> numpy.ndarray[Any, Any]:
        np = self._numpy
        if isinstance(vector, array.array) and vector.typecode == "f":
            # Zero copy: the array's buffer already holds float32 values.
            return np.frombuffer(vector, dtype=np.float32)
        return np.asarray(vector, dtype=np.float32)

    def _row_params(self, row: Row) -> tuple[Any, ...]:
        """One row as typed parameters for the binary protocol.

        Raises:
            TypeError, ValueError: If a field cannot be converted (the row fails alone).
        """
        from psycopg.types.numeric import Int4, Int8

        if isinstance(row.section_id, bool) or not isinstance(row.section_id, int):
            raise TypeError(f"section_id must be an int, got {type(row.section_id).__name__}")
        raw_stamp: Any = row.updated_at
        if isinstance(raw_stamp, dt.datetime):
            updated_at = raw_stamp
        elif isinstance(raw_stamp, str):
            updated_at = dt.datetime.fromisoformat(raw_stamp)
        else:
            raise TypeError(f"updated_at must be an ISO-8601 string, got {type(raw_stamp).__name__}")
        if updated_at.tzinfo is None:
            # Rows are stamped in UTC; a naive stamp would otherwise take the session's time zone.
            updated_at = updated_at.replace(tzinfo=dt.timezone.utc)
        embedding = self._as_float32(row.embedding)
        if embedding.ndim != 1:
            raise ValueError(f"embedding must be one-dimensional, got shape {embedding.shape}")
        # Explicit int widths: psycopg would otherwise pick int2/int4/int8 per value,
        # changing the statement's parameter types (and defeating prepared statements).
        return (
            Int8(row.section_id),
            row.title,
            embedding,
            row.model,
            row.content_hash,
            None if row.token_count is None else Int4(row.token_count),
            updated_at,
        )

    def _upsert_tail(self) -> str:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "section_id")
        return f"on conflict (section_id) do update set {updates}"

    def _insert_sql(self, nrows: int, *, raw: bool = False) -> bytes:
        """``insert ... values (...), ... on conflict`` for `nrows` rows (cached).

        `raw` spells the placeholders ``$1, $2, ...`` for a `psycopg.RawCursor`,
        else ``%b`` (binary) for a normal cursor.
        """
        key = ("raw" if raw else "values", nrows)
        sql = self._statements.get(key)
        if sql is None:
            width = len(_COLUMNS)
            if raw:
                groups = ["(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")" for r in range(nrows)]
            else:
                groups = ["(" + ", ".join(["%b"] * width) + ")"] * nrows
            sql = (
                f"insert into {self.table} ({', '.join(_COLUMNS)}) values "
                + ", ".join(groups)
                + " "
                + self._upsert_tail()
            ).encode()
            self._statements[key] = sql
        return sql

    def _write_values(self, conn: psycopg.Connection[Any], chunk: Sequence[tuple[Any, ...]]) -> None:
        params = [value for row in chunk for value in row]
        # RawCursor: psycopg does not parse (nor cache) a statement this long, and
        # parsing 3,500 %b placeholders per chunk costs more than sending it. Its
        # placeholders take the last registered dumper, pgvector's binary one.
        with self._psycopg.RawCursor(conn) as cur:
            cur.execute(self._insert_sql(len(chunk), raw=True), params)

    def _write_unnest(self, conn: psycopg.Connection[Any], chunk: Sequence[tuple[Any, ...]]) -> None:
        # One binary array per column, unnested server side: 7 parameters per chunk.
        columns = [list(values) for values in zip(*chunk, strict=True)]
        cols = ", ".join(_COLUMNS)
        conn.execute(
            f"insert into {self.table} ({cols}) select * from unnest("
            "%b::int8[], %b::text[], %b::vector[], %b::text[], %b::text[], %b::int4[], %b::timestamptz[]) "
            + self._upsert_tail(),
            columns,
        )

    def _write_executemany(self, conn: psycopg.Connection[Any], chunk: Sequence[tuple[Any, ...]]) -> None:
        # psycopg runs executemany in pipeline mode (one round trip for the batch).
        with conn.cursor() as cur:
            cur.executemany(self._insert_sql(1), chunk)

    def _write_copy(self, conn: psycopg.Connection[Any], chunk: Sequence[tuple[Any, ...]]) -> None:
        stage = f"pg_temp.{self.table}_stage"
        # In the chunk's transaction: a failed chunk rolls the creation back, so
        # "if not exists" on every chunk rather than a flag. Every commit empties it.
        conn.execute(
            f"create temp table if not exists {self.table}_stage "
            f"(like {self.table} including defaults) on commit delete rows"
        )
        cols = ", ".join(_COLUMNS)
        with conn.cursor() as cur:
            with cur.copy(f"copy {stage} ({cols}) from stdin (format binary)") as copy:
                copy.set_types(list(_COPY_TYPES))
                for row in chunk:
                    copy.write_row(row)
            cur.execute(f"insert into {self.table} ({cols}) select {cols} from {stage} {self._upsert_tail()}")

    def _write_one_by_one(
        self, conn: psycopg.Connection[Any], chunk: Sequence[tuple[int, tuple[Any, ...]]]
    ) -> dict[int, str]:
        """Upsert rows one at a time, each under a savepoint; `{id: reason}` for refused rows."""
        failures: dict[int, str] = {}
        sql = self._insert_sql(1)
        with conn.transaction():
            for section_id, params in chunk:
                try:
                    with conn.transaction():
                        conn.execute(sql, params)
                except self._psycopg.Error as exc:
                    if conn.broken:
                        raise
                    failures[section_id] = self._reason(exc)
        return failures

    def _reason(self, exc: Any) -> str:
        """The database's reason for refusing one row, naming the column when it can."""
        diag = getattr(exc, "diag", None)
        message = (getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]).strip()
        context = getattr(diag, "context", None) or ""
        column = re.search(r"parameter \$(\d+)", context)
        if column and 1 <= int(column.group(1)) <= len(_COLUMNS):
            message += f" (column {_COLUMNS[int(column.group(1)) - 1]})"
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate:
            message += f" [SQLSTATE {sqlstate}]"
        return scrub_secret(message, self._dsn)


# The measured candidates (module doc); `PostgresStore._write_path` picks one ("unnest").
_WRITE_PATHS: dict[str, Callable[[PostgresStore, Any, Sequence[tuple[Any, ...]]], None]] = {
    "values": PostgresStore._write_values,
    "executemany": PostgresStore._write_executemany,
    "copy": PostgresStore._write_copy,
    "unnest": PostgresStore._write_unnest,
}
