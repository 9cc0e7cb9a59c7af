"""The shipped SQL rendered and validated without a database (core.stores.schema).

The same SQL applied to a real PostgreSQL is in test/integration/test_schema_sql.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ConfigurationError
from core.stores.schema import (
    index_name,
    render_index,
    render_schema,
    validate_dimensions,
    validate_identifier,
)


# --- rendering and validation (no database) -------------------------------


@pytest.mark.parametrize("name", ["section_embeddings", "_t", "docs2", "a" * 63, "match_sections"])
def test_validate_identifier_accepts_plain_names(name: str) -> None:
    assert validate_identifier(name, "table") == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Docs",
        "1docs",
        "docs-2",
        "docs;drop table x",
        'do"cs',
        "a" * 64,
        "select",
        "table",
        "user",
        "values",
        None,
        3,
    ],
)
def test_validate_identifier_rejects(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="invalid table name"):
        validate_identifier(name, "table")


@pytest.mark.parametrize("dimensions", [0, -1, 16001, True, 1.5, "1536"])
def test_bad_dimensions_rejected(dimensions: Any) -> None:
    with pytest.raises(ConfigurationError, match="dimensions"):
        validate_dimensions(dimensions)
    with pytest.raises(ConfigurationError):
        render_schema(dimensions=dimensions)


def test_render_rejects_bad_names() -> None:
    with pytest.raises(ConfigurationError, match="table"):
        render_schema(table="x; drop table users")
    with pytest.raises(ConfigurationError, match="match function"):
        render_schema(match_function="Match")
    with pytest.raises(ConfigurationError, match="table"):
        render_index(table="bad name")


def test_rendered_sql_is_plain_commented_sql() -> None:
    sql = render_schema()
    assert "{{" not in sql and "}}" not in sql and "index:begin" not in sql
    assert sql.startswith("-- ")
    for needle in (
        "create extension if not exists vector;",
        "create table if not exists section_embeddings (",
        "embedding vector(1536) not null",
        "create index if not exists section_embeddings_embedding_hnsw_idx",
        "using hnsw (embedding vector_cosine_ops)",
        "create or replace function match_sections(",
        "language sql stable",
        "alter table section_embeddings enable row level security;",
    ):
        assert needle in sql
    assert "create policy" not in sql
    without = render_schema(with_index=False)
    assert "using hnsw" not in without and "create or replace function" in without
    assert render_index().strip().endswith("using hnsw (embedding vector_cosine_ops);")


def test_render_halfvec_above_2000_and_no_index_above_4000() -> None:
    sql = render_schema(dimensions=3072, table="docs", match_function="match_docs")
    assert "using hnsw ((embedding::halfvec(3072)) halfvec_cosine_ops);" in sql
    # The function orders by the indexed expression, or the index would not be used.
    assert "order by (t.embedding::halfvec(3072)) <=> (query_embedding::halfvec(3072))" in sql
    big = render_schema(dimensions=5000)
    assert "using hnsw" not in big and "No HNSW index" in big
    assert "create index" not in render_index(dimensions=5000)


def test_index_name_stays_within_63_characters() -> None:
    assert index_name("docs") == "docs_embedding_hnsw_idx"
    a, b = "a" * 60 + "xyz", "a" * 60 + "xzz"
    assert len(index_name(a)) <= 63 and len(index_name(b)) <= 63
    assert index_name(a) != index_name(b)
