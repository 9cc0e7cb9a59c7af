"""The SQL a section table is read and written with, shared by `PostgresStore` and `AsyncPostgresStore`:
typed binary parameters of a `Row`, the upsert statements, the search statement (through
the search function, or a `halfvec` scan), and the database's reason when it refuses one row."""

from __future__ import annotations

import array
import datetime as dt
import re
from typing import Any

from collections.abc import Iterator, Sequence

from ..engine.rows import Row, vector_literal
from ..engine.sections import canonical_id

__all__ = [
    "COLUMNS", "ID_ARRAY", "SEARCH_COLUMNS", "as_float32", "chunks", "refresh_sql", "prepare_rows",
    "refusal_reason", "row_params", "search_result", "search_sql", "upsert_sql",
]

COLUMNS = (
    "section_id", "title", "embedding", "model", "content_hash", "token_count", "updated_at", "content", "metadata",
    "source",
)
"""The table's columns, in the order every write sends them."""

_ARRAY_TYPES = ("%s[]", "text[]", "vector[]", "text[]", "text[]", "int4[]", "timestamptz[]", "text[]", "jsonb[]", "text[]")
"""Each column's array type in the unnest upsert (the id's depends on the table)."""
ID_ARRAY = {"bigint": "int8", "text": "text", "uuid": "uuid"}
"""The element type of an array of ids, per id type."""

EF_SEARCH_MAX = 1000
"""pgvector's upper bound for `hnsw.ef_search`."""



def as_float32(numpy: Any, vector: Any) -> Any:
    """`vector` as a float32 numpy array (zero copy from an ``array('f')``)."""
    if isinstance(vector, array.array) and vector.typecode == "f":
        return numpy.frombuffer(vector, dtype=numpy.float32)
    return numpy.asarray(vector, dtype=numpy.float32)


def row_params(numpy: Any, row: Row, id_type: str = "bigint") -> tuple[Any, ...]:
    """One row as typed parameters for the binary protocol, in `COLUMNS` order.

    Raises:
        TypeError, ValueError: If a field cannot be converted (the row fails alone).
    """
    from psycopg.types.json import Jsonb
    from psycopg.types.numeric import Int4, Int8

    key = canonical_id(row.section_id, id_type)
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
    embedding = as_float32(numpy, row.embedding)
    if embedding.ndim != 1:
        raise ValueError(f"embedding must be one-dimensional, got shape {embedding.shape}")
    # Explicit int widths: psycopg would otherwise pick int2/int4/int8 per value,
    # changing the statement's parameter types (and defeating prepared statements).
    token_count = None if row.token_count is None else Int4(row.token_count)
    metadata = Jsonb(dict(row.metadata) if row.metadata else {})
    return (
        Int8(key) if id_type == "bigint" else key,
        row.title, embedding, row.model, row.content_hash, token_count, updated_at, row.content, metadata, row.source,
    )


def prepare_rows(numpy: Any, rows: Any, id_type: str = "bigint") -> tuple[list[tuple[Any, tuple[Any, ...]]], dict[Any, str]]:
    """``([(section_id, params), ...], {section_id: reason})``: each row's parameters, or why not
    (keyed by the ids as given).

    When an id appears more than once, the last row wins (as sequential upserts would).
    """
    failures: dict[Any, str] = {}
    prepared: dict[Any, tuple[Any, ...]] = {}
    for row in rows:
        prepared.pop(row.section_id, None)
        failures.pop(row.section_id, None)
        try:
            prepared[row.section_id] = row_params(numpy, row, id_type)
        except (TypeError, ValueError) as exc:
            failures[row.section_id] = f"invalid row: {exc}"
    return list(prepared.items()), failures


def upsert_tail(table: str) -> str:
    """``on conflict (section_id) do update set`` every other column (a row written outside any sync,
    with no source, leaves the stored row's source as it was)."""
    updates = ", ".join(
        f"{c} = excluded.{c}" if c != "source" else f"source = coalesce(excluded.source, {table}.source)"
        for c in COLUMNS if c != "section_id"
    )
    return f"on conflict (section_id) do update set {updates}"


def upsert_sql(table: str, kind: str, id_type: str = "bigint") -> bytes:
    """The upsert of a chunk as one binary array per column (``"unnest"``: 9 parameters whatever
    the chunk's size), or of one row (``"row"``), with ``%b`` (binary) placeholders."""
    if kind == "unnest":
        types = [t % ID_ARRAY[id_type] if "%s" in t else t for t in _ARRAY_TYPES]
        source = "select * from unnest(" + ", ".join(f"%b::{t}" for t in types) + ")"
    else:
        source = "values (" + ", ".join(["%b"] * len(COLUMNS)) + ")"
    return f"insert into {table} ({', '.join(COLUMNS)}) {source} {upsert_tail(table)}".encode()


def refresh_sql(table: str, id_type: str = "bigint") -> bytes:
    """Set `content`, `metadata`, `source` and `updated_at` of existing rows whose text is unchanged:
    the vector is not sent again (5 binary arrays: ids, contents, metadata, sources, timestamps)."""
    return (
        f"update {table} t set content = u.content, metadata = u.metadata,"
        " source = coalesce(u.source, t.source), updated_at = u.updated_at"
        f" from unnest(%b::{ID_ARRAY[id_type]}[], %b::text[], %b::jsonb[], %b::text[], %b::timestamptz[])"
        " as u(section_id, content, metadata, source, updated_at) where t.section_id = u.section_id"
    ).encode()


def refusal_reason(exc: Any) -> str:
    """The database's reason for refusing one row, naming the column when it can (not yet scrubbed)."""
    diag = getattr(exc, "diag", None)
    message = (getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]).strip()
    context = getattr(diag, "context", None) or ""
    column = re.search(r"parameter \$(\d+)", context)
    if column and 1 <= int(column.group(1)) <= len(COLUMNS):
        message += f" (column {COLUMNS[int(column.group(1)) - 1]})"
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        message += f" [SQLSTATE {sqlstate}]"
    return message


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


SEARCH_COLUMNS = ("section_id", "title", "content", "metadata", "similarity")
"""What a search returns per row (as `search_result` shapes it)."""


def search_sql(
    table: str,
    match_function: str,
    dimensions: int,
    query: Any,
    k: int,
    threshold: float | None,
    *,
    halfvec_scan: bool,
    filter: Any = None,
    ef_search: int | None = None,
) -> tuple[str, Any]:
    """The statement (and its parameters) for the `k` rows nearest `query`, a float32 numpy vector,
    among the rows whose metadata contains `filter` (a `Jsonb`, or None for all).

    Through the search function (`ef_search`: its HNSW candidates, None for the schema's
    `SEARCH_EF_SEARCH`), or with ``halfvec_scan`` by a full scan with
    `halfvec` distances, the query sent as text and cast straight to halfvec: no
    `vector` arithmetic anywhere (for the pgvector build whose `vector` distances crash).
    """
    columns = ", ".join(SEARCH_COLUMNS)
    if not halfvec_scan:
        return f"select {columns} from {match_function}(%b, %s, %s, %s, %s)", (query, k, threshold, filter, ef_search)
    distance = f"embedding::halfvec({dimensions}) <=> %(q)s::halfvec({dimensions})"
    sql = (
        f"select section_id, title, content, metadata, 1 - ({distance}) as similarity from {table} "
        f"where metadata @> coalesce(%(f)s::jsonb, '{{}}'::jsonb) "
        f"and (%(t)s::float8 is null or 1 - ({distance}) >= %(t)s::float8) order by similarity desc limit %(k)s"
    )
    return sql, {"q": vector_literal(query.tolist()), "t": threshold, "k": k, "f": filter}


def search_result(row: Sequence[Any]) -> dict[str, Any]:
    """One search answer: ``id`` (as stored), ``section_id`` (the same: the seed's name), ``title``,
    ``content``, ``metadata``, ``similarity``."""
    section_id, title, content, metadata, similarity = row
    if not isinstance(section_id, (int, str)):  # a UUID comes back as uuid.UUID
        section_id = str(section_id)
    return {
        "id": section_id, "section_id": section_id, "title": title, "content": content,
        "metadata": metadata if metadata is not None else {}, "similarity": float(similarity),
    }
