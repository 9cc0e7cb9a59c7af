"""PostgresStore's bulk-load helpers on a real PostgreSQL + pgvector (test/fixtures_pg.py).

What the CLI used to do with its own SQL now lives in the store: the table's
state before a load or a search, dropping and (re)building the HNSW index with
enough `maintenance_work_mem`, and the `halfvec` scan search for the pgvector
build whose `vector` distances crash. The benchmark's alternative write paths
(bench/pg_write_paths.py) must still store exactly what the store's own does.
"""

from __future__ import annotations

import array
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from core.stores.postgres_admin import INDEX_MEMORY_CAP, INDEX_MEMORY_FLOOR, TableState, index_memory
from core.stores.postgres import PostgresStore
from core.engine.rows import Row
from core.stores.schema import index_name

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"


def rows(n: int, dimensions: int, *, seed: int = 1, model: str = "m1") -> list[Row]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        Row(i + 1, f"Section {i + 1}", array.array("f", vectors[i].tobytes()), model, f"h{i}", 10, "2026-01-01T00:00:00+00:00")
        for i in range(n)
    ]


def test_table_state_missing_empty_loaded(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    with PostgresStore(pg_dsn, table="state_t", dimensions=8, create_schema=False) as store:
        assert store.table_state() == TableState(False, True, False, None, None)
        assert pg_conn.execute("select to_regclass('state_t')").fetchone() == (None,)  # reading created nothing
        store.ensure_schema(with_index=True)
        assert store.table_state() == TableState(True, True, True, 8, None, "bigint", 0)  # empty: 0 rows, known
        assert store.write_rows(rows(3, 8, model="text-embedding-3-small")) == {}
        store.drop_index()
        store.drop_index()  # idempotent
        state = store.table_state()
        assert state == TableState(True, False, False, 8, "text-embedding-3-small", "bigint", state.rows_estimate)
        assert state.rows_estimate is None  # never analysed: unknown, not 0
        pg_conn.execute("analyze state_t")
        assert store.table_state().rows_estimate == 3
    # A store of another size reads the table's own size (what `search` adopts).
    with PostgresStore(pg_dsn, table="state_t", create_schema=False) as other:
        assert other.table_state().dimensions == 8


def test_create_index_after_the_load_keeps_the_session_setting(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    with PostgresStore(pg_dsn, table="idx_t", dimensions=8, create_schema=False) as store:
        store.ensure_schema(with_index=False)
        assert store.write_rows(rows(50, 8)) == {}
        with store._borrow() as conn:  # a pooled connection: the store's sessions keep their setting
            before = conn.execute("show maintenance_work_mem").fetchone()
        store.create_index()
        store.create_index()  # idempotent
        with store._borrow() as conn:
            assert conn.execute("show maintenance_work_mem").fetchone() == before  # `set local` only
        assert store.table_state().index_exists
    assert pg_conn.execute("select to_regclass(%s) is not null", (index_name("idx_t"),)).fetchone() == (True,)


def test_index_memory_is_sized_from_rows_within_floor_and_cap() -> None:
    assert index_memory(0, 1536) == INDEX_MEMORY_FLOOR
    assert INDEX_MEMORY_FLOOR < index_memory(20_000, 1536) < INDEX_MEMORY_CAP
    assert index_memory(1_000_000, 1536) == INDEX_MEMORY_CAP
    assert index_memory(1_000_000, 1536, cap=256 << 20) == 256 << 20


def test_halfvec_scan_ranks_like_the_search_function(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    data = rows(40, 8, seed=3)
    query = list(data[11].embedding)
    with PostgresStore(pg_dsn, table="half_t", dimensions=8, create_schema=False) as store:
        store.ensure_schema(with_index=False)
        assert store.write_rows(data) == {}
        exact = store.search_vector(query, k=5)
    with PostgresStore(pg_dsn, table="half_t", dimensions=8, create_schema=False, halfvec_scan=True) as scan:
        found = scan.search_vector(query, k=5)
        assert [r["section_id"] for r in found] == [r["section_id"] for r in exact]
        assert found[0]["section_id"] == 12 and found[0]["similarity"] == pytest.approx(1.0, abs=2e-3)
        for mine, theirs in zip(found, exact):
            assert mine["similarity"] == pytest.approx(theirs["similarity"], abs=2e-3)
        threshold = (exact[1]["similarity"] + exact[2]["similarity"]) / 2
        assert [r["section_id"] for r in scan.search_vector(query, k=10, threshold=threshold)] == [
            r["section_id"] for r in exact[:2]
        ]


@pytest.mark.parametrize("path", ["unnest", "values", "executemany", "copy"])
def test_benchmark_write_paths_store_what_the_store_stores(
    path: str, pg_dsn: str, pg_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    from pg_write_paths import PathStore

    data = rows(25, 4, seed=5)
    with PathStore(pg_dsn, table="paths_t", dimensions=4, rows_per_chunk=10, create_schema=False, write_path=path) as store:
        store.ensure_schema(with_index=False)
        assert store.write_rows(data) == {}
        assert store.write_rows(rows(25, 4, seed=6)) == {}  # every row takes the `on conflict` branch
        assert store.count() == 25
    stored = dict(pg_conn.execute("select section_id, embedding from paths_t").fetchall())
    again = rows(25, 4, seed=6)
    assert all(stored[r.section_id].to_numpy().tobytes() == r.embedding.tobytes() for r in again)
    sys.modules.pop("pg_write_paths", None)
