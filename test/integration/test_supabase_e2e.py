"""SupabaseStore end to end: real supabase-py -> PostgREST stand-in -> real PostgreSQL + pgvector.

Nothing is mocked between the store and the database: the real `SupabaseStore`
(its own supabase-py client) and the real `EmbeddingService` (the openai SDK)
talk HTTP to the local OpenAI-compatible server and to
`servers.postgrest_server` (test/servers/), which runs PostgREST's SQL on the session's
PostgreSQL with the shipped schema (`core.stores.schema.apply_schema`) applied. Rows
are read back with psycopg + pgvector and each vector is compared, bit for bit
as float32, with `expected_embedding` of its section's text.

A pgvector build may lack HNSW and `vector` distances from 16 dimensions up
on some CPUs (see test/support/fixtures_pg.py): so storage tests use 1536 dimensions
without the HNSW index, the search test 8 dimensions, and the full shipped
schema (index included) at 1536 dimensions runs wherever `pg_hnsw` allows it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

import httpx
import numpy as np
import pytest

from core.embedding_service import EmbeddingService
from core.engine.rows import vector_literal
from core.stores.schema import apply_schema
from core.supabase_store import SupabaseStore
from core.testing import expected_embedding
from core.engine.tokens import count_tokens
from servers.postgrest_server import FakePostgREST

pytestmark = [
    pytest.mark.integration,
    # supabase-py passes postgrest-py arguments it has itself deprecated
    pytest.mark.filterwarnings("ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"),
]

KEY = "test-service-role-key"
MODEL = "text-embedding-3-small"
COLUMNS = "section_id, title, embedding, model, content_hash, token_count, updated_at"


def make_service(fake_openai: Any, **kwargs: Any) -> EmbeddingService:
    return EmbeddingService(api_key="test-key", base_url=fake_openai.base_url, model=MODEL, **kwargs)


def make_store(rest: FakePostgREST, **kwargs: Any) -> SupabaseStore:
    kwargs.setdefault("sleep", lambda seconds: None)  # retries without waiting
    return SupabaseStore(url=rest.url, key=KEY, **kwargs)


def make_sections(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "title": f"Section {i}",
            "content": f"Section {i} covers topic {i * 7919 % 1009} and "
            + " ".join(f"term{(i * 31 + j * 17) % 2003}" for j in range(12)),
        }
        for i in range(start, start + n)
    ]


def text_of(section: dict[str, Any]) -> str:
    return section["title"] + "\n\n" + section["content"]


def stored(conn: Any, table: str = "section_embeddings") -> dict[int, tuple[Any, ...]]:
    """`{section_id: row}`, the embedding as the float32 numpy array pgvector read back."""
    rows = conn.execute(f"select {COLUMNS} from {table} order by section_id").fetchall()
    return {row[0]: (*row[:2], row[2].to_numpy(), *row[3:]) for row in rows}


def assert_rows_exact(
    conn: Any,
    sections: list[dict[str, Any]],
    *,
    dimensions: int = 1536,
    table: str = "section_embeddings",
    written_between: tuple[datetime, datetime] | None = None,
) -> dict[int, tuple[Any, ...]]:
    """Each section's row holds exactly its own vector, hash, model, token count and title."""
    rows = stored(conn, table)
    for section in sections:
        text = text_of(section)
        section_id, title, embedding, model, digest, tokens, updated_at = rows[section["id"]]
        vector = np.asarray(embedding)
        assert vector.dtype == np.float32 and vector.shape == (dimensions,)
        np.testing.assert_array_equal(vector, expected_embedding(text, dimensions), err_msg=f"section {section_id}")
        assert title == section["title"]
        assert model == MODEL
        assert digest == hashlib.sha256(text.encode("utf-8")).hexdigest()
        assert tokens == count_tokens(text)
        assert updated_at.tzinfo is not None
        if written_between is not None:
            assert written_between[0] <= updated_at <= written_between[1]
    return rows


def ingest(
    store: SupabaseStore, sections: list[dict[str, Any]], service: EmbeddingService
) -> tuple[dict[str, Any], tuple[datetime, datetime]]:
    before = datetime.now(timezone.utc)
    result = store.batch_ingest_embeddings(sections, service)
    return result, (before, datetime.now(timezone.utc))


def writes(stats: dict[str, Any]) -> list[list[Any]]:
    return [entry for entry in stats["log"] if entry[2] == "POST" and "/rpc/" not in entry[3]]


# --- storage -----------------------------------------------------------------------------


def test_rows_land_with_exactly_the_served_vectors(
    rest: FakePostgREST, fake_openai: Any, pg_conn: Any, pg_dsn: str
) -> None:
    apply_schema(pg_dsn, dimensions=1536, with_index=False)
    rest.configure(latency=0.02)
    sections = make_sections(48)
    result, window = ingest(make_store(rest), sections, make_service(fake_openai))

    assert (result["success_count"], result["skipped_count"], result["failed_count"]) == (48, 0, 0)
    assert result["total_tokens"] == sum(count_tokens(text_of(s)) for s in sections)
    rows = assert_rows_exact(pg_conn, sections, written_between=window)
    assert sorted(rows) == [s["id"] for s in sections]
    assert len({row[6] for row in rows.values()}) == 1  # one timestamp per window

    stats = rest.stats()
    posts = writes(stats)
    assert len(posts) == 48 and stats["rows_written"] == 48  # one row per request
    assert all(entry[4] == 201 and "on_conflict=section_id" in entry[3] for entry in posts)
    assert stats["by_kind"]["read"] == 2  # the store's preflight, then one stored-hash lookup
    assert stats["max_in_flight"] > 1  # the upserts overlapped
    assert fake_openai.stats()["inputs_ok"] == 48


def test_rerun_skips_everything_without_calling_the_api(
    rest: FakePostgREST, fake_openai: Any, pg_conn: Any, pg_dsn: str
) -> None:
    apply_schema(pg_dsn, dimensions=1536, with_index=False)
    sections = make_sections(30)
    store, service = make_store(rest), make_service(fake_openai)
    assert ingest(store, sections, service)[0]["success_count"] == 30
    first = stored(pg_conn)
    fake_openai.reset_stats()
    rest.reset_stats()

    result, _ = ingest(store, sections, service)

    assert (result["success_count"], result["skipped_count"], result["failed_count"]) == (0, 30, 0)
    assert sorted(result["skipped_ids"]) == [s["id"] for s in sections]
    assert fake_openai.stats()["requests"] == 0
    stats = rest.stats()
    assert stats["by_kind"] == {"read": 2} and stats["rows_written"] == 0  # preflight + one lookup
    again = stored(pg_conn)
    assert sorted(again) == sorted(first)
    for section_id, row in again.items():  # not even updated_at moved
        assert row[:2] == first[section_id][:2] and row[3:] == first[section_id][3:]
        np.testing.assert_array_equal(row[2], first[section_id][2])


def test_changed_sections_are_reembedded_and_updated(
    rest: FakePostgREST, fake_openai: Any, pg_conn: Any, pg_dsn: str
) -> None:
    apply_schema(pg_dsn, dimensions=1536, with_index=False)
    sections = make_sections(20)
    store, service = make_store(rest), make_service(fake_openai)
    ingest(store, sections, service)
    first = stored(pg_conn)
    sections[6] = {**sections[6], "content": sections[6]["content"] + " with a new paragraph"}
    sections[7] = {**sections[7], "title": "A renamed section"}
    fake_openai.reset_stats()

    result, window = ingest(store, sections, service)

    assert (result["success_count"], result["skipped_count"], result["failed_count"]) == (2, 18, 0)
    assert fake_openai.stats()["inputs_ok"] == 2
    assert_rows_exact(pg_conn, sections[6:8], written_between=window)
    rows = assert_rows_exact(pg_conn, sections)
    for section_id, row in rows.items():
        if section_id in (7, 8):
            assert not np.array_equal(row[2], first[section_id][2]) and row[6] > first[section_id][6]
        else:
            np.testing.assert_array_equal(row[2], first[section_id][2])
            assert row[6] == first[section_id][6]


@pytest.mark.parametrize("rows_per_request", [1, 50])
def test_a_row_the_database_refuses_fails_alone_with_its_id(
    rest: FakePostgREST, fake_openai: Any, pg_conn: Any, pg_dsn: str, rows_per_request: int
) -> None:
    apply_schema(pg_dsn, dimensions=1536, with_index=False)
    rest.configure(fail_ids={13})
    sections = make_sections(40)

    result, _ = ingest(make_store(rest, rows_per_request=rows_per_request), sections, make_service(fake_openai))

    assert (result["success_count"], result["failed_count"]) == (39, 1)
    assert result["failed_ids"] == [13]
    (failure,) = result["failures"]
    assert failure["index"] == 12
    assert failure["reason"].startswith("store failed: 23514: ") and "violates check constraint" in failure["reason"]
    rows = assert_rows_exact(pg_conn, [s for s in sections if s["id"] != 13])
    assert 13 not in rows
    stats = rest.stats()
    if rows_per_request > 1:  # the 40-row request failed whole, then row by row found the culprit
        assert writes(stats)[0][4] == 400 and len(writes(stats)) == 1 + 40
    assert stats["by_status"]["400"] == (2 if rows_per_request > 1 else 1)


def test_a_transient_refusal_is_retried(rest: FakePostgREST, fake_openai: Any, pg_conn: Any, pg_dsn: str) -> None:
    apply_schema(pg_dsn, dimensions=1536, with_index=False)
    rest.configure(fail_ids={3, 4}, fail_code="40001", fail_times=1)  # serialization failure -> 500, once each
    sections = make_sections(10)

    result, _ = ingest(make_store(rest), sections, make_service(fake_openai))

    assert (result["success_count"], result["failed_count"]) == (10, 0)
    assert_rows_exact(pg_conn, sections)
    stats = rest.stats()
    assert stats["injected_failures"] == 2 and stats["by_status"]["500"] == 2


def test_bulk_mode_stores_the_same_rows(rest: FakePostgREST, fake_openai: Any, pg_conn: Any, pg_dsn: str) -> None:
    apply_schema(pg_dsn, table="section_embeddings", dimensions=1536, with_index=False)
    apply_schema(pg_dsn, table="bulk_embeddings", dimensions=1536, match_function="match_bulk", with_index=False)
    sections = make_sections(120)
    service = make_service(fake_openai)
    ingest(make_store(rest), sections, service)
    rest.reset_stats()

    result, window = ingest(make_store(rest, table="bulk_embeddings", rows_per_request=50), sections, service)

    assert (result["success_count"], result["failed_count"]) == (120, 0)
    bulk = assert_rows_exact(pg_conn, sections, table="bulk_embeddings", written_between=window)
    single = stored(pg_conn)
    assert sorted(bulk) == sorted(single)
    for section_id, row in bulk.items():
        other = single[section_id]
        assert row[:2] == other[:2] and row[3:6] == other[3:6]
        np.testing.assert_array_equal(row[2], other[2])
    posts = writes(rest.stats())
    assert [entry[4] for entry in posts] == [201, 201, 201]  # 50 + 50 + 20 rows
    assert all("columns=" in entry[3] and "on_conflict=section_id" in entry[3] for entry in posts)


def test_a_bulk_request_too_large_for_the_gateway_is_halved(
    rest: FakePostgREST, fake_openai: Any, pg_conn: Any, pg_dsn: str
) -> None:
    apply_schema(pg_dsn, dimensions=1536, with_index=False)
    sections = make_sections(60)
    row_bytes = [len(vector_literal(expected_embedding(text_of(s)))) + 300 for s in sections]
    rest.configure(max_body_bytes=30 * max(row_bytes))  # 25 rows fit, the 50-row chunk does not
    assert 50 * min(row_bytes) > 30 * max(row_bytes)

    result, _ = ingest(make_store(rest, rows_per_request=50), sections, make_service(fake_openai))

    assert (result["success_count"], result["failed_count"]) == (60, 0)
    assert_rows_exact(pg_conn, sections)
    statuses = sorted(entry[4] for entry in writes(rest.stats()))
    assert statuses == [201, 201, 201, 413]  # 50 -> 413 -> 25 + 25; then 10


# --- search ------------------------------------------------------------------------------


def test_search_through_the_rpc_returns_the_nearest_section(
    rest: FakePostgREST, fake_openai: Any, pg_conn: Any, pg_dsn: str
) -> None:
    dims = 8  # `vector` distances under 16 dimensions run on any CPU (see the module doc)
    apply_schema(pg_dsn, dimensions=dims, with_index=False)
    sections = make_sections(30)
    service = make_service(fake_openai, dimensions=dims)
    store = make_store(rest, embedding_service=service)
    assert ingest(store, sections, service)[0]["success_count"] == 30
    assert_rows_exact(pg_conn, sections, dimensions=dims)
    matrix = np.stack([expected_embedding(text_of(s), dims) for s in sections]).astype(np.float64)

    for section in (sections[0], sections[11], sections[29]):
        results = store.search(text_of(section), k=3)
        assert [r["section_id"] for r in results][0] == section["id"]
        assert len(results) == 3
        query = expected_embedding(text_of(section), dims).astype(np.float64)
        cosine = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
        best = np.argsort(-cosine)[:3]
        assert [r["section_id"] for r in results] == [sections[i]["id"] for i in best]
        np.testing.assert_allclose([r["similarity"] for r in results], cosine[best], atol=1e-5)
        assert results[0]["title"] == section["title"]

    only = store.search(text_of(sections[5]), k=10, threshold=0.9999)
    assert [r["section_id"] for r in only] == [6]
    assert rest.stats()["by_kind"]["rpc"] == 4


def test_full_shipped_schema_with_hnsw_index(
    pg_hnsw: None, rest: FakePostgREST, fake_openai: Any, pg_conn: Any, pg_dsn: str
) -> None:
    apply_schema(pg_dsn)  # 1536 dimensions, HNSW index, match_sections
    sections = make_sections(25)
    service = make_service(fake_openai)
    store = make_store(rest, embedding_service=service)
    assert ingest(store, sections, service)[0]["success_count"] == 25
    assert_rows_exact(pg_conn, sections)
    assert store.search(text_of(sections[9]), k=1)[0]["section_id"] == 10


# --- the stand-in answers as PostgREST does ----------------------------------------------


def test_stand_in_errors_have_postgrest_shape_and_status(rest: FakePostgREST, pg_conn: Any, pg_dsn: str) -> None:
    apply_schema(pg_dsn, dimensions=4, with_index=False)
    pg_conn.execute("create function add_one(x int, step int default 1) returns int language sql as 'select x + step'")
    table = rest.url + "/rest/v1/section_embeddings"
    headers = {"apikey": KEY, "Authorization": f"Bearer {KEY}"}
    row = {"section_id": 1, "title": "t", "embedding": "[1,2,3,4]", "model": MODEL, "content_hash": "h"}

    http = httpx.Client(timeout=30)

    def post(url: str, body: Any, **extra: str) -> httpx.Response:
        return http.post(url, json=body, headers={**headers, **extra})

    missing_key = http.get(table)
    assert missing_key.status_code == 401 and "apikey" in missing_key.json()["hint"]
    assert post(table, row).status_code == 201
    duplicate = post(table, row)  # a plain insert, no resolution
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "23505"
    assert set(duplicate.json()) == {"code", "message", "details", "hint"}
    upsert = post(table + "?on_conflict=section_id", {**row, "title": "u"},
                  Prefer="return=representation,resolution=merge-duplicates")
    assert upsert.status_code == 201 and upsert.json()[0]["title"] == "u"
    wrong_size = post(table, {**row, "section_id": 2, "embedding": "[1,2]"})
    assert wrong_size.status_code == 400 and wrong_size.json()["code"] == "22000"
    unknown_column = post(table, {**row, "section_id": 3, "colour": "red"})
    assert unknown_column.status_code == 400 and unknown_column.json()["code"] == "PGRST204"
    keys_differ = post(table, [row, {"section_id": 4}])
    assert keys_differ.status_code == 400 and keys_differ.json()["code"] == "PGRST102"
    no_table = http.get(rest.url + "/rest/v1/nope", headers=headers)
    assert no_table.status_code == 404 and no_table.json()["code"] == "PGRST205"
    no_function = post(rest.url + "/rest/v1/rpc/nope", {})
    assert no_function.status_code == 404 and no_function.json()["code"] == "PGRST202"
    scalar = post(rest.url + "/rest/v1/rpc/add_one", {"x": 41})
    assert scalar.status_code == 200 and scalar.json() == 42
    assert post(rest.url + "/rest/v1/rpc/add_one", {"step": 1}).json()["code"] == "PGRST202"  # x is required
    read = http.get(table + "?select=section_id,embedding&section_id=in.(1,2,3)", headers=headers)
    assert read.status_code == 200 and read.json() == [{"section_id": 1, "embedding": "[1,2,3,4]"}]
    rest.configure(max_body_bytes=100)
    too_big = post(table, [row, row])
    assert too_big.status_code == 413 and "code" not in too_big.json()  # a gateway's answer
    http.close()
