"""The shipped SQL (core/sql/schema.sql via core.stores.schema) on a real PostgreSQL + pgvector.

Rows are also written exactly as PostgREST writes them for supabase-py's
``upsert(..., on_conflict="section_id")``, to check that the JSON text form of a
vector (`core.engine.rows.vector_literal`) lands bit for bit. Rendering and validation
without a database are in test/unit/test_schema_render.py.

On this project's machines pgvector's `vector` distances crash from 16
dimensions up and HNSW crashes at all (see test/support/fixtures_pg.py): searches over
`vector` use 4 dimensions, searches above 2,000 dimensions go through `halfvec`,
and tests that need the HNSW index itself take the `pg_hnsw` fixture.
"""

from __future__ import annotations

import array
import datetime as dt
import json
from typing import Any

import numpy as np
import psycopg
import pytest

from core.errors import StoreError
from core.engine.rows import vector_literal
from core.stores.schema import (
    apply_schema,
    index_name,
)

COLUMNS = ("section_id", "title", "embedding", "model", "content_hash", "token_count", "updated_at")


def unit_vectors(n: int, dimensions: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dimensions)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))


def insert_binary(conn: psycopg.Connection[Any], table: str, vectors: np.ndarray, start_id: int = 1) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            f"insert into {table} (section_id, title, embedding, model, content_hash) values (%s, %s, %b, 'm', 'h')",
            [(start_id + i, f"Section {start_id + i}", v) for i, v in enumerate(vectors)],
        )


def postgrest_upsert(conn: psycopg.Connection[Any], table: str, body: str) -> int:
    """The statement PostgREST runs for ``POST /rest/v1/<table>?on_conflict=section_id``
    with ``Prefer: resolution=merge-duplicates``: the JSON body is one parameter,
    expanded by json_populate_recordset into the table's row type."""
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    body_cols = ", ".join(f'"pgrst_body"."{c}"' for c in COLUMNS)
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in COLUMNS)
    sql = f"""
        WITH pgrst_source AS (
          INSERT INTO "public"."{table}"({cols})
          SELECT {body_cols}
          FROM (SELECT %s::json AS json_data) pgrst_payload,
          LATERAL (SELECT CASE WHEN json_typeof(pgrst_payload.json_data) = 'array'
                               THEN pgrst_payload.json_data
                               ELSE json_build_array(pgrst_payload.json_data) END AS val) pgrst_uniform_json,
          LATERAL (SELECT * FROM json_populate_recordset(NULL::"public"."{table}", pgrst_uniform_json.val)) pgrst_body
          ON CONFLICT("section_id") DO UPDATE SET {updates}
          RETURNING 1)
        SELECT pg_catalog.count(*) FROM pgrst_source
    """
    row = conn.execute(sql, (body,)).fetchone()
    assert row is not None
    return int(row[0])


def supabase_json(rows: list[dict[str, Any]]) -> str:
    # supabase-py (postgrest-py) sends the list through httpx's JSON encoder.
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


# --- on PostgreSQL ------------------------------------------------------------


@pytest.mark.integration
def test_schema_applies_twice_and_catalog_matches(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    apply_schema(pg_dsn)
    apply_schema(pg_dsn)  # idempotent

    columns = pg_conn.execute(
        """select attname, format_type(atttypid, atttypmod), attnotnull
           from pg_attribute where attrelid = 'section_embeddings'::regclass and attnum > 0 and not attisdropped
           order by attnum"""
    ).fetchall()
    assert columns == [  # content and metadata: the corpus store (issue #17)
        ("section_id", "bigint", True),
        ("title", "text", False),
        ("content", "text", False),
        ("metadata", "jsonb", True),
        ("source", "text", False),  # a sync's source (issue #18)
        ("embedding", "vector(1536)", True),
        ("model", "text", True),
        ("content_hash", "text", True),
        ("token_count", "integer", False),
        ("updated_at", "timestamp with time zone", True),
        ("fts", "tsvector", False),  # hybrid search's full text (issue #17), generated from title and content
    ]
    pk = pg_conn.execute(
        """select pg_get_constraintdef(oid) from pg_constraint
           where conrelid = 'section_embeddings'::regclass and contype = 'p'"""
    ).fetchone()
    assert pk == ("PRIMARY KEY (section_id)",)
    default = pg_conn.execute(
        """select pg_get_expr(adbin, adrelid) from pg_attrdef
           where adrelid = 'section_embeddings'::regclass"""
    ).fetchall()
    assert sorted(default) == [
        ("'{}'::jsonb",),
        ("now()",),
        ("to_tsvector('simple'::regconfig, ((COALESCE(title, ''::text) || ' '::text) || COALESCE(content, ''::text)))",),
    ]

    indexes = pg_conn.execute(
        "select indexname, indexdef from pg_indexes where tablename = 'section_embeddings' order by indexname"
    ).fetchall()
    assert len(indexes) == 5  # primary key + HNSW + GIN on metadata + source + GIN on fts
    hnsw = dict(indexes)["section_embeddings_embedding_hnsw_idx"]
    assert "USING hnsw (embedding vector_cosine_ops)" in hnsw
    assert "USING gin (metadata jsonb_path_ops)" in dict(indexes)["section_embeddings_metadata_idx"]

    fn = pg_conn.execute(
        """select pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), p.provolatile,
                  l.lanname, p.prosecdef
           from pg_proc p join pg_language l on l.oid = p.prolang
           where p.proname = 'match_sections'"""
    ).fetchall()
    assert fn == [
        (
            "query_embedding vector, match_count integer DEFAULT 5, "
            "match_threshold double precision DEFAULT NULL::double precision, filter jsonb DEFAULT '{}'::jsonb, "
            "ef_search integer DEFAULT NULL::integer",
            "TABLE(section_id bigint, title text, content text, metadata jsonb, similarity double precision)",
            "s",
            "sql",
            False,
        )
    ]
    rls = pg_conn.execute("select relrowsecurity from pg_class where oid = 'section_embeddings'::regclass").fetchone()
    assert rls == (True,)
    policies = pg_conn.execute("select count(*) from pg_policies where tablename = 'section_embeddings'").fetchone()
    assert policies == (0,)


@pytest.mark.integration
def test_rls_without_policy_hides_everything_from_other_roles(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    apply_schema(pg_dsn, dimensions=4, with_index=False)
    insert_binary(pg_conn, "section_embeddings", unit_vectors(3, 4, seed=1))
    role = "core_test_anon"
    pg_conn.execute(f"drop role if exists {role}")
    pg_conn.execute(f"create role {role} nologin")
    try:
        pg_conn.execute(f"grant select, insert on section_embeddings to {role}")
        pg_conn.execute(f"grant execute on function match_sections(vector, int, double precision, jsonb, int) to {role}")
        with pg_conn.transaction():
            pg_conn.execute(f"set local role {role}")
            assert pg_conn.execute("select count(*) from section_embeddings").fetchone() == (0,)
            found = pg_conn.execute("select * from match_sections(%b, 10)", (unit_vectors(1, 4, seed=2)[0],))
            assert found.fetchall() == []
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
                pg_conn.transaction(),
            ):
                pg_conn.execute(
                    "insert into section_embeddings (section_id, embedding, model, content_hash) "
                    "values (99, '[1,0,0,0]', 'm', 'h')"
                )
        # The owner (as the service role would) still sees the rows.
        assert pg_conn.execute("select count(*) from section_embeddings").fetchone() == (3,)
    finally:
        pg_conn.execute("drop table if exists section_embeddings cascade")
        pg_conn.execute(f"drop owned by {role}")
        pg_conn.execute(f"drop role {role}")


@pytest.mark.integration
def test_existing_table_with_other_dimensions_is_refused(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    apply_schema(pg_dsn, table="docs", dimensions=4, with_index=False)
    with pytest.raises(StoreError, match=r"not vector\(8\)"):
        apply_schema(pg_dsn, table="docs", dimensions=8, with_index=False)


@pytest.mark.integration
def test_apply_schema_error_names_no_password(pg_dsn: str) -> None:
    # Trust authentication accepts any password: the one in the URI must still not leak.
    dsn = pg_dsn.replace("postgres:@", "postgres:Sup3r-s3cret@").replace("/postgres?", "/no_such_db?")
    assert "Sup3r-s3cret" in dsn
    with pytest.raises(StoreError, match="no_such_db") as info:
        apply_schema(dsn)
    assert "Sup3r-s3cret" not in str(info.value)


@pytest.mark.integration
def test_match_sections_order_similarity_threshold(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    dims = 4  # `vector` distances: see the module doc
    apply_schema(pg_dsn, table="docs", dimensions=dims, match_function="match_docs", with_index=False)
    vectors = unit_vectors(40, dims, seed=3)
    insert_binary(pg_conn, "docs", vectors)
    query = unit_vectors(1, dims, seed=4)[0]
    expected = sorted(((cosine(v, query), i + 1) for i, v in enumerate(vectors)), reverse=True)

    rows = pg_conn.execute("select section_id, title, similarity from match_docs(%b)", (query,)).fetchall()
    assert [r[0] for r in rows] == [sid for _, sid in expected[:5]]  # default match_count 5
    for (sid, title, similarity), (want, _) in zip(rows, expected[: len(rows)], strict=True):
        assert title == f"Section {sid}"
        assert similarity == pytest.approx(want, abs=1e-6)

    rows = pg_conn.execute("select section_id from match_docs(%b, 12)", (query,)).fetchall()
    assert [r[0] for r in rows] == [sid for _, sid in expected[:12]]

    threshold = (expected[6][0] + expected[7][0]) / 2  # exactly 7 rows above it
    rows = pg_conn.execute("select section_id, similarity from match_docs(%b, 30, %s)", (query, threshold)).fetchall()
    assert [r[0] for r in rows] == [sid for _, sid in expected[:7]]
    assert all(sim >= threshold for _, sim in rows)
    assert pg_conn.execute("select count(*) from match_docs(%b, 30, 1.01)", (query,)).fetchone() == (0,)


@pytest.mark.integration
def test_above_2000_dimensions_uses_halfvec_and_match_works(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    dims = 3072
    apply_schema(pg_dsn, table="large", dimensions=dims, match_function="match_large")
    indexdef = pg_conn.execute(
        "select indexdef from pg_indexes where indexname = %s", (index_name("large"),)
    ).fetchone()
    assert indexdef is not None
    assert "hnsw (((embedding)::halfvec(3072)) halfvec_cosine_ops)" in indexdef[0]

    # Rows go in without the index where HNSW cannot run (module doc); the
    # function is the same either way.
    pg_conn.execute(f"drop index {index_name('large')}")
    vectors = unit_vectors(30, dims, seed=5)
    insert_binary(pg_conn, "large", vectors)
    query = unit_vectors(1, dims, seed=6)[0]
    half = vectors.astype(np.float16)
    expected = sorted(((cosine(h, query.astype(np.float16)), i + 1) for i, h in enumerate(half)), reverse=True)
    rows = pg_conn.execute("select section_id, similarity from match_large(%b, 5)", (query,)).fetchall()
    assert [r[0] for r in rows] == [sid for _, sid in expected[:5]]
    for (_, similarity), (want, _) in zip(rows, expected[: len(rows)], strict=True):
        assert similarity == pytest.approx(want, abs=1e-3)


@pytest.mark.integration
@pytest.mark.parametrize("dims", [8, 3072])
def test_match_function_uses_the_hnsw_index(
    pg_hnsw: None, pg_conn: psycopg.Connection[Any], pg_dsn: str, dims: int
) -> None:
    apply_schema(pg_dsn, table="indexed", dimensions=dims, match_function="match_indexed")
    insert_binary(pg_conn, "indexed", unit_vectors(50, dims, seed=7))
    # The function searches a table under SEARCH_EXACT_BELOW_ROWS rows exactly (see schema.sql):
    # have PostgreSQL estimate this one large, so the question is whether the index is usable.
    pg_conn.execute("update pg_class set reltuples = 1000000 where oid = 'indexed'::regclass")
    index = index_name("indexed")

    def scans() -> int:
        pg_conn.execute("select pg_stat_clear_snapshot()")
        row = pg_conn.execute("select idx_scan from pg_stat_user_indexes where indexrelname = %s", (index,)).fetchone()
        assert row is not None
        return int(row[0])

    before = scans()
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        from pgvector.psycopg import register_vector

        register_vector(other)
        other.execute("set enable_seqscan = off")  # 50 rows: make the planner's choice about usability only
        rows = other.execute("select section_id from match_indexed(%b, 3)", (unit_vectors(1, dims, seed=8)[0],))
        assert len(rows.fetchall()) == 3
        other.execute("select pg_stat_force_next_flush()")
    assert scans() > before


@pytest.mark.integration
def test_postgrest_json_upsert_lands_exact_vectors(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    dims = 1536
    apply_schema(pg_dsn, dimensions=dims, with_index=False)  # no index: see the module doc
    vectors = unit_vectors(20, dims, seed=9)
    vectors[0, :6] = [0.0, -0.0, 1e-7, -3.4028235e38, 1.1754944e-38, 123456.79]  # edges of float32 text form
    stamp = "2026-03-01T12:34:56.789012+00:00"

    def payload(vecs: np.ndarray, model: str) -> list[dict[str, Any]]:
        return [
            {
                "section_id": i + 1,
                "title": f"Titre {i + 1} — é",
                "embedding": vector_literal(array.array("f", v.tobytes())),
                "model": model,
                "content_hash": f"{i:064x}",
                "token_count": 10 + i,
                "updated_at": stamp,
            }
            for i, v in enumerate(vecs)
        ]

    assert postgrest_upsert(pg_conn, "section_embeddings", supabase_json(payload(vectors, "m1"))) == 20

    def stored() -> dict[int, tuple[Any, ...]]:
        rows = pg_conn.execute(
            "select section_id, title, embedding, model, content_hash, token_count, updated_at from section_embeddings"
        ).fetchall()
        return {r[0]: r for r in rows}

    got = stored()
    assert len(got) == 20
    for i, v in enumerate(vectors):
        _, title, embedding, model, content_hash, token_count, updated_at = got[i + 1]
        assert embedding.to_numpy().tobytes() == v.tobytes()  # bit for bit, -0.0 included
        assert (title, model, content_hash, token_count) == (f"Titre {i + 1} — é", "m1", f"{i:064x}", 10 + i)
        assert updated_at == dt.datetime(2026, 3, 1, 12, 34, 56, 789012, tzinfo=dt.timezone.utc)

    # merge-duplicates: the same ids again update in place.
    newer = unit_vectors(20, dims, seed=10)
    assert postgrest_upsert(pg_conn, "section_embeddings", supabase_json(payload(newer, "m2")[:5])) == 5
    got = stored()
    assert len(got) == 20
    for i in range(20):
        want = newer[i] if i < 5 else vectors[i]
        assert got[i + 1][2].to_numpy().tobytes() == want.tobytes()
        assert got[i + 1][3] == ("m2" if i < 5 else "m1")


@pytest.mark.integration
def test_postgrest_json_wrong_dimension_is_rejected(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    apply_schema(pg_dsn, dimensions=1536, with_index=False)
    row = {
        "section_id": 1,
        "title": "t",
        "embedding": vector_literal([0.5, 0.25, 0.125]),
        "model": "m",
        "content_hash": "h",
        "token_count": 1,
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    with pytest.raises(psycopg.errors.DataException, match="expected 1536 dimensions, not 3"):
        postgrest_upsert(pg_conn, "section_embeddings", supabase_json([row]))
    assert pg_conn.execute("select count(*) from section_embeddings").fetchone() == (0,)
