"""One section, free of I/O: its text, hash and metadata, whether it can be stored, and how its id
is stored in a table of each id type. Shared by the ingest's bookkeeping (`ingest_run`), the
stores and the Batch API.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .rows import Row

__all__ = [
    "MAX_TEXT_ID_LENGTH",
    "RESERVED_FIELDS",
    "canonical_id",
    "content_hash",
    "ids_type",
    "section_metadata",
    "section_text",
    "validate_section",
    "width_refused",
]

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1



def section_text(title: str, content: str) -> str:
    """The text embedded for a section: title, blank line, content (title omitted when empty)."""
    return f"{title}\n\n{content}" if title else content


def content_hash(text: str) -> str:
    """SHA-256 hex of the embedded text: unchanged hash + model means nothing to redo."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


RESERVED_FIELDS = ("id", "title", "content")
"""The fields every section has; any other field of a section is its metadata."""
MAX_TEXT_ID_LENGTH = 2048
"""Longest string id accepted (a btree index entry must stay well under PostgreSQL's ~2.7 KB)."""


def _text_problem(name: str, value: str) -> str | None:
    if "\x00" in value:
        return f"{name!r} contains a NUL byte (Postgres text cannot store it)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{name!r} is not valid Unicode (lone surrogate at position {exc.start})"
    return None


def validate_section(section: Any) -> str | None:
    """Why `section` cannot be stored, or None when it is fine.

    ``id`` is an integer (bigint range) or a non-empty string; ``title`` and ``content`` are
    strings; every other field is metadata and must be JSON (no NaN or infinity: jsonb has none).
    """
    if not isinstance(section, Mapping):
        return f"section must be a dict with id, title, content, not {type(section).__name__}"
    if "id" not in section:
        return "missing 'id'"
    section_id = section["id"]
    if isinstance(section_id, str):
        if not section_id.strip():
            return "'id' is an empty string"
        if len(section_id) > MAX_TEXT_ID_LENGTH:
            return f"'id' is longer than {MAX_TEXT_ID_LENGTH} characters"
        if problem := _text_problem("id", section_id):
            return problem
    elif isinstance(section_id, bool) or not isinstance(section_id, int):
        return f"'id' must be an integer or a string, not {type(section_id).__name__}"
    elif not BIGINT_MIN <= section_id <= BIGINT_MAX:
        return "'id' is outside the bigint range"
    for name in ("title", "content"):
        if name not in section:
            return f"missing {name!r}"
        value = section[name]
        if not isinstance(value, str):
            return f"{name!r} must be a string, not {type(value).__name__}"
        if problem := _text_problem(name, value):
            return problem
    if not section["content"].strip() and not section["title"].strip():
        return "title and content are both empty"
    for name, value in section.items():
        if name in RESERVED_FIELDS:
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return f"metadata field {name!r} is not JSON: {exc}"
        if isinstance(value, str) and (problem := _text_problem(name, value)):
            return problem
    return None


def section_metadata(section: Mapping[str, Any], fields: Sequence[str] | None = None) -> dict[str, Any]:
    """The section's metadata: its fields other than id, title and content (only `fields`, if given),
    as JSON gives them back (so a stored copy compares equal)."""
    names = [name for name in section if name not in RESERVED_FIELDS] if fields is None else fields
    return json.loads(json.dumps({name: section[name] for name in names if name in section}))


def canonical_id(section_id: Any, id_type: str) -> Any:
    """`section_id` as a table with `id_type` ids stores it (bigint: the int; text: a str; uuid: the
    canonical lowercase form), so a lookup finds what a write stored.

    Raises:
        TypeError, ValueError: The id does not fit such a table (that section fails alone).
    """
    if id_type == "bigint":
        if isinstance(section_id, bool) or not isinstance(section_id, int):
            raise TypeError(f"id {section_id!r} is not an integer, and this table's ids are bigint")
        return section_id
    if id_type == "uuid":
        if not isinstance(section_id, str):
            raise TypeError(f"id {section_id!r} is not a UUID string, and this table's ids are uuid")
        try:
            return str(uuid.UUID(section_id))
        except ValueError:
            raise ValueError(f"id {section_id!r} is not a UUID, and this table's ids are uuid") from None
    if isinstance(section_id, bool) or not isinstance(section_id, (int, str)):
        raise TypeError(f"id {section_id!r} is neither a string nor an integer")
    return str(section_id)


def ids_type(ids: Sequence[Any]) -> str:
    """The id type a new table gets for these ids: bigint when all are integers (the seed's case), else text."""
    return "bigint" if all(isinstance(i, int) and not isinstance(i, bool) for i in ids) else "text"


_WIDTH_REFUSED = re.compile(r"expected (\d+) dimensions, not (\d+)")
"""pgvector's refusal of a vector of another width (SQLSTATE 22000), through psycopg or PostgREST."""


def width_refused(rows: Sequence[Row], failures: Mapping[Any, str]) -> str | None:
    """Why the table cannot take these vectors at all, when every row of a write was refused for its width.

    Through PostgREST an empty table's vector width cannot be read before paying, so the first
    write (the engine's small probe request) is the check: the run stops there, not after
    paying for every section.
    """
    if not rows or len(failures) < len(rows):
        return None
    widths = {_WIDTH_REFUSED.search(reason).groups() if _WIDTH_REFUSED.search(reason) else None for reason in failures.values()}
    if len(widths) != 1 or None in widths:
        return None
    expected, got = next(iter(widths))  # type: ignore[misc]
    return f"takes {expected}-dimensional vectors, but the embeddings have {got} dimensions"
