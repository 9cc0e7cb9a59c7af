"""The SQL schema shipped with the package: table, HNSW index, search function, RLS.

`render_schema` fills `core/stores/sql/schema.sql` in for one table and vector size and
returns plain, commented SQL (users paste it into Supabase's SQL editor);
`apply_schema` runs it through psycopg. `render_index` is the HNSW index alone,
for a bulk load that creates it after the rows are in (building an index once is
much faster than maintaining it row by row).

pgvector's HNSW index takes at most 2,000 dimensions of `vector` and 4,000 of
`halfvec`: above 2,000 the index is on the expression `embedding::halfvec(D)`
and the search function orders by (and reports the similarity of) that same
expression so the planner uses it; half precision costs about 1e-3 of
similarity. Above 4,000 there is no index and searches scan the table.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, MissingDependencyError, StoreError
from ..limits import (
    DEFAULT_MATCH_FUNCTION,
    DEFAULT_MODEL,
    DEFAULT_TABLE,
    MAX_VECTOR_DIMENSIONS,
    MODEL_DIMENSIONS,
    SEARCH_EF_SEARCH,
    SEARCH_EF_SEARCH_FILTERED,
    SEARCH_EXACT_BELOW_MATCHES,
    SEARCH_EXACT_BELOW_ROWS,
)
from ..secrets import redact_dsn, scrub_dsn
from .identifiers import validate_identifier

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_DIMENSIONS",
    "DEFAULT_MATCH_FUNCTION",
    "DEFAULT_TABLE",
    "MAX_DIMENSIONS",
    "ID_TYPES",
    "apply_schema",
    "apply_schema_sql",
    "default_match_function",
    "count_function",
    "exact_function",
    "hybrid_function",
    "metadata_index_name",
    "validate_id_type",
    "index_name",
    "indexable",
    "render_index",
    "render_schema",
    "validate_dimensions",
    "validate_identifier",
]

DEFAULT_DIMENSIONS = MODEL_DIMENSIONS[DEFAULT_MODEL]
"""Vector size of the default model (the table's, unless told otherwise)."""

MAX_DIMENSIONS = MAX_VECTOR_DIMENSIONS

ID_TYPES = ("bigint", "text", "uuid")
"""Types a table's `section_id` can have: integer ids (the seed's), any string (slugs, paths), UUIDs."""

_MAX_VECTOR_INDEX_DIMENSIONS = 2000  # HNSW over `vector`
_MAX_HALFVEC_INDEX_DIMENSIONS = 4000  # HNSW over `halfvec`

_INDEX_BEGIN = "-- index:begin"
_INDEX_END = "-- index:end"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def validate_dimensions(dimensions: int) -> int:
    """Check a vector size (1..16000, pgvector's limit) and return it.

    Raises:
        ConfigurationError: If `dimensions` is not an int in range.
    """
    # bool is an int subclass; True dimensions is a bug, not a size.
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise ConfigurationError(f"dimensions must be an int, got {type(dimensions).__name__}")
    if not 1 <= dimensions <= MAX_DIMENSIONS:
        raise ConfigurationError(f"dimensions must be between 1 and {MAX_DIMENSIONS}, got {dimensions}")
    return dimensions


def _derived_name(table: str, prefix: str, suffix: str) -> str:
    """``prefix + table + suffix`` kept within PostgreSQL's 63 characters.

    PostgreSQL would truncate a longer name silently; a digest of the full table
    name keeps two long table names that share a prefix from colliding.
    """
    validate_identifier(table, "table")
    name = prefix + table + suffix
    if len(name) <= 63:
        return name
    digest = hashlib.sha1(table.encode()).hexdigest()[:8]
    return f"{prefix}{table[: 63 - len(prefix) - len(suffix) - 9]}_{digest}{suffix}"


def index_name(table: str) -> str:
    """Name of `table`'s HNSW index.

    Raises:
        ConfigurationError: If `table` is not a valid identifier.
    """
    return _derived_name(table, "", "_embedding_hnsw_idx")


def metadata_index_name(table: str) -> str:
    """Name of `table`'s GIN index on `metadata` (for filters)."""
    return _derived_name(table, "", "_metadata_idx")


def default_match_function(table: str) -> str:
    """The search function of `table`: ``match_sections`` for the default table (as ever), else
    ``match_<table>``, so that searching one table never goes through another's function.

    Raises:
        ConfigurationError: If `table` is not a valid identifier.
    """
    return DEFAULT_MATCH_FUNCTION if table == DEFAULT_TABLE else _derived_name(table, "match_", "")


def _companion(match_function: str, suffix: str) -> str:
    """`match_function` + `suffix`, kept within PostgreSQL's 63-byte names: a long name is cut to
    62 bytes with a hash of the whole (the form the hybrid function's name has always had)."""
    if len(match_function) + len(suffix) <= 63:
        return match_function + suffix
    return match_function[: 62 - 9 - len(suffix)] + "_" + hashlib.sha1(match_function.encode()).hexdigest()[:8] + suffix


def exact_function(match_function: str) -> str:
    """The exact-scan helper of `match_function` (every distance computed; the planner's own scan)."""
    return _companion(match_function, "_exact")


def count_function(match_function: str) -> str:
    """The filter-counting helper of `match_function` (how many rows a filter matches, up to a bound)."""
    return _companion(match_function, "_matches")


def hybrid_function(match_function: str) -> str:
    """The hybrid (full-text + vector) search function that goes with `match_function`."""
    return _companion(match_function, "_hybrid")


def validate_id_type(id_type: str) -> str:
    """Check an id column type (`ID_TYPES`) and return it.

    Raises:
        ConfigurationError: Another value.
    """
    if id_type not in ID_TYPES:
        raise ConfigurationError(f"id type must be one of {', '.join(ID_TYPES)}, not {id_type!r}")
    return id_type


def indexable(dimensions: int) -> bool:
    """True when pgvector can build an HNSW index on vectors of this size (up to 4,000, as halfvec)."""
    return validate_dimensions(dimensions) <= _MAX_HALFVEC_INDEX_DIMENSIONS


def _index_parts(table: str, dimensions: int) -> dict[str, str]:
    """Index statement and the matching ORDER BY key for this vector size."""
    name = index_name(table)
    if dimensions <= _MAX_VECTOR_INDEX_DIMENSIONS:
        return {
            "index_comment": "-- HNSW index for cosine distance, the order the search function uses.",
            "index_statement": (
                f"create index if not exists {name}\n  on {table} using hnsw (embedding vector_cosine_ops);"
            ),
            "order_key": "t.embedding",
            "order_query": "query_embedding",
        }
    if dimensions <= _MAX_HALFVEC_INDEX_DIMENSIONS:
        cast = f"halfvec({dimensions})"
        return {
            "index_comment": (
                f"-- pgvector indexes at most {_MAX_VECTOR_INDEX_DIMENSIONS} dimensions of vector: the HNSW\n"
                f"-- index is on the half-precision cast, and the search function computes distance\n"
                f"-- on the same expression so the planner can use it (similarity to ~1e-3)."
            ),
            "index_statement": (
                f"create index if not exists {name}\n  on {table} using hnsw ((embedding::{cast}) halfvec_cosine_ops);"
            ),
            "order_key": f"(t.embedding::{cast})",
            "order_query": f"(query_embedding::{cast})",
        }
    return {
        "index_comment": (
            f"-- No HNSW index: pgvector indexes at most {_MAX_HALFVEC_INDEX_DIMENSIONS} dimensions "
            f"(as halfvec);\n-- searches scan the whole table."
        ),
        "index_statement": "",
        "order_key": "t.embedding",
        "order_query": "query_embedding",
    }


def _template() -> str:
    return importlib.resources.files("core.stores").joinpath("sql/schema.sql").read_text(encoding="utf-8")


def _fill(text: str, values: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        # A KeyError here means the template and this module disagree: a bug.
        return values[match.group(1)]

    return _PLACEHOLDER.sub(sub, text)


def _tidy(sql: str) -> str:
    """Drop trailing spaces and runs of blank lines left by empty placeholders."""
    lines = [line.rstrip() for line in sql.splitlines()]
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue
        out.append(line)
    return "\n".join(out).strip("\n") + "\n"


def render_schema(
    *,
    table: str = DEFAULT_TABLE,
    dimensions: int = DEFAULT_DIMENSIONS,
    match_function: str | None = None,
    with_index: bool = True,
    id_type: str = "bigint",
) -> str:
    """The full schema as plain, commented SQL, idempotent (safe to run twice).

    Args:
        table: Table name (plain identifier).
        dimensions: Vector size, 1..16000.
        match_function: Name of the search function (plain identifier); default
            `default_match_function(table)`.
        with_index: Include the HNSW index; leave it out for a bulk load that
            creates it afterwards with `render_index`.
        id_type: Type of a new table's `section_id` (`ID_TYPES`); an existing
            table keeps its own, and the search function must be rendered with it.

    Returns:
        The SQL script.

    Raises:
        ConfigurationError: If a name or the dimensions are invalid, or `table`
            and `match_function` are the same name.
    """
    validate_identifier(table, "table")
    match_function = validate_identifier(match_function or default_match_function(table), "match function")
    validate_dimensions(dimensions)
    values = {
        "table": table,
        "dimensions": str(dimensions),
        "match_function": match_function,
        "id_type": validate_id_type(id_type),
        "metadata_index": metadata_index_name(table),
        "source_index": _derived_name(table, "", "_source_idx"),
        "fts_index": _derived_name(table, "", "_fts_idx"),
        "hybrid_function": hybrid_function(match_function),
        "exact_function": exact_function(match_function),
        "ef_search": str(SEARCH_EF_SEARCH),
        "exact_below": str(SEARCH_EXACT_BELOW_ROWS),
        "exact_below_matches": str(SEARCH_EXACT_BELOW_MATCHES),
        "ef_search_filtered": str(SEARCH_EF_SEARCH_FILTERED),
        "count_function": count_function(match_function),
    }
    values.update(_index_parts(table, dimensions))
    template = _template()
    head, rest = template.split(_INDEX_BEGIN + "\n", 1)
    index_part, tail = rest.split(_INDEX_END + "\n", 1)
    text = head + (index_part if with_index else "") + tail
    return _tidy(_fill(text, values))


def render_index(*, table: str = DEFAULT_TABLE, dimensions: int = DEFAULT_DIMENSIONS) -> str:
    """The HNSW index statement alone (idempotent), with its comment.

    Above 4,000 dimensions pgvector cannot index the column: the result is then
    only a comment, and running it does nothing.

    Raises:
        ConfigurationError: If `table` or `dimensions` is invalid.
    """
    validate_identifier(table, "table")
    validate_dimensions(dimensions)
    parts = _index_parts(table, dimensions)
    template = _template()
    index_part = template.split(_INDEX_BEGIN + "\n", 1)[1].split(_INDEX_END + "\n", 1)[0]
    return _tidy(_fill(index_part, {"table": table, "dimensions": str(dimensions), **parts}))


def _import_psycopg(purpose: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise MissingDependencyError("psycopg", "postgres", purpose) from None
    return psycopg


SCHEMA_LOCK_SQL = "select pg_advisory_xact_lock(hashtext(%s))"
"""Taken (keyed by `schema_lock_key`) before a schema script: two workers applying it at once would
otherwise race on ``create or replace function`` ("tuple concurrently updated")."""


def schema_lock_key(table: str) -> str:
    """The advisory lock's key for `table`'s schema scripts (the same in every version and flavour)."""
    return "core.schema:" + table


ID_TYPE_SQL = (
    "select format_type(a.atttypid, a.atttypmod) from pg_attribute a"
    " where a.attrelid = to_regclass(%s) and a.attname = 'section_id' and not a.attisdropped"
)
"""The type of an existing table's `section_id` (no row when there is no table)."""


def id_type_of(column_type: str | None) -> str | None:
    """`ID_TYPES` name of a `section_id` column type as PostgreSQL formats it (None: no table)."""
    if column_type is None:
        return None
    return {"bigint": "bigint", "integer": "bigint", "text": "text", "character varying": "text", "uuid": "uuid"}.get(
        column_type.split("(")[0], column_type
    )


def existing_id_type(conn: Any, table: str) -> str | None:
    """The `ID_TYPES` name of `table`'s id column, None when there is no such table."""
    row = conn.execute(ID_TYPE_SQL, (table,)).fetchone()
    return id_type_of(row[0]) if row else None


def apply_schema_sql(conn: psycopg.Connection[Any], sql: str, *, table: str) -> None:
    """Run a rendered script on `conn` in one transaction, serialised per table.

    Two workers applying the schema at once would otherwise race on
    ``create or replace function`` ("tuple concurrently updated"); a transaction
    advisory lock keyed on the table name makes the second wait for the first.

    Args:
        conn: An open psycopg connection (autocommit or not; it is left idle).
        sql: Output of `render_schema` / `render_index`.
        table: The table the script is for (the lock key).

    Raises:
        psycopg.Error: Whatever the server answers; the transaction is rolled back.
    """
    with conn.transaction():
        conn.execute(SCHEMA_LOCK_SQL, (schema_lock_key(table),))
        # No parameters: psycopg sends the script as is, so several statements run.
        conn.execute(sql.encode("utf-8"))


def apply_schema(
    dsn: str,
    *,
    table: str = DEFAULT_TABLE,
    dimensions: int = DEFAULT_DIMENSIONS,
    match_function: str | None = None,
    with_index: bool = True,
    connect_timeout: int = 10,
    id_type: str | None = None,
) -> None:
    """Create (or bring up to date) the schema in the database at `dsn`.

    Args:
        dsn: libpq connection string or URI.
        table: Table name.
        dimensions: Vector size.
        match_function: Search function name.
        with_index: Also create the HNSW index.
        connect_timeout: Seconds to wait for the connection.

    Raises:
        ConfigurationError: If a name or the dimensions are invalid.
        MissingDependencyError: If psycopg is not installed.
        StoreError: If the database cannot be reached or refuses the script; the
            message never contains the DSN's password.
    """
    psycopg = _import_psycopg("apply_schema")
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout) as conn:
            existing = existing_id_type(conn, table)
            if existing and id_type and existing != id_type:
                raise StoreError(f"table {table!r} already exists with {existing} ids, not {id_type}")
            sql = render_schema(
                table=table, dimensions=dimensions, match_function=match_function, with_index=with_index,
                id_type=existing or id_type or "bigint",
            )
            apply_schema_sql(conn, sql, table=table)
    except psycopg.Error as exc:
        message = f"could not apply the schema for table {table!r} on {redact_dsn(dsn)}: {str(exc).strip()}"
        # from None: the driver's own exception may quote the connection string.
        raise StoreError(scrub_dsn(message, dsn)) from None
