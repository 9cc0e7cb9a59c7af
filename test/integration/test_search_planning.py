"""The schema's search function (issue #20): its `ef_search`; which scan answers (HNSW from
`SEARCH_EXACT_BELOW_ROWS` rows on, whatever ef_search and filter: the planner's own choice
scanned every row at some ef_search values; exact below); the upgrade of a table of the previous
version (a search function without `ef_search`) in place."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from core.engine.rows import Row
from core.limits import SEARCH_EF_SEARCH, SEARCH_EXACT_BELOW_MATCHES, SEARCH_EXACT_BELOW_ROWS
from core.stores.postgres import PostgresStore
from core.stores.schema import index_name

STAMP = "2026-02-03T04:05:06+00:00"
ROWS = 3000


def vectors(n: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n, 1536)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def load(store: PostgresStore, vecs: np.ndarray) -> None:
    # Content "x": the heap holds little (each 6 KB vector lives out of line, in TOAST), so a scan
    # of every row looks cheap to the planner, as it does on a real table of short sections.
    rows = [Row(i, f"T{i}", vecs[i], "m", f"h{i}", 1, STAMP, "x", {"g": i % 3}) for i in range(len(vecs))]
    assert store.write_rows(rows) == {}


def index_scans(conn: Any, table: str) -> int:
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute("select idx_scan from pg_stat_user_indexes where indexrelname = %s", (index_name(table),)).fetchone()
    return int(row[0])


def scans_after(conn: Any, table: str, wanted: int) -> int:
    """The index's scan count once the searching sessions have reported `wanted` (a session sends
    its statistics at a transaction's end at most once a second, else when idle: within ~10 s)."""
    deadline = time.monotonic() + 25
    while True:
        now = index_scans(conn, table)
        if now >= wanted or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def small_vectors(n: int, seed: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n, 8)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_a_large_table_is_searched_through_its_index_and_a_small_one_exactly(pg_conn: Any, pg_dsn: str, pg_hnsw: Any) -> None:
    vecs = small_vectors(SEARCH_EXACT_BELOW_ROWS + 500)
    assert (SEARCH_EXACT_BELOW_ROWS + 500) // 10 > SEARCH_EXACT_BELOW_MATCHES > (SEARCH_EXACT_BELOW_ROWS + 500) // 50
    with PostgresStore(pg_dsn, table="big_t", dimensions=8) as big, PostgresStore(pg_dsn, table="small_t", dimensions=8) as small:
        for store, n in ((big, len(vecs)), (small, 2000)):
            rows = [Row(i, f"T{i}", vecs[i], "m", f"h{i}", 1, STAMP, "x", {"g": i % 10, **({"r": 1} if i % 50 == 0 else {})})
                    for i in range(n)]
            assert store.write_rows(rows) == {}
        # A selective filter (210 rows of 10,500: under SEARCH_EXACT_BELOW_MATCHES) is answered exactly.
        rare = big.search_vector(vecs[30], k=10, filter={"r": 1})
        assert [h["id"] for h in rare] == [r[0] for r in pg_conn.execute(
            "select section_id from big_t where metadata @> '{\"r\": 1}' order by embedding <=> %s::vector(8) limit 10",
            ("[" + ",".join(map(str, vecs[30].tolist())) + "]",)).fetchall()]
        before = index_scans(pg_conn, "big_t")
        searches = 0
        for ef_search in (None, 40, 100, 300):
            for store, table, through_index in ((big, "big_t", True), (small, "small_t", False)):
                store.ef_search = ef_search
                for flt in (None, {"g": 0}):  # row 30 has g 0
                    hits = store.search_vector(vecs[30], k=10, filter=flt)
                    exact = pg_conn.execute(
                        f"select section_id from {table} where metadata @> %s::jsonb"
                        " order by embedding <=> %s::vector(8) limit 10",
                        ('{"g": 0}' if flt else "{}", "[" + ",".join(map(str, vecs[30].tolist())) + "]"),
                    ).fetchall()
                    assert len(hits) == 10 and hits[0]["id"] == 30, (table, flt, ef_search)
                    searches += through_index
                    if not through_index:  # exact: the same rows as an exact scan (that HNSW can miss
                        # rows of a small table: test_corpus_store, 90 rows of the try-out server's vectors)
                        assert [h["id"] for h in hits] == [r[0] for r in exact]
        # Every search of the large table was one scan of its HNSW index, none a scan of all rows.
        assert scans_after(pg_conn, "big_t", before + searches) == before + searches


def test_ef_search_default_bound_and_the_callers_setting(pg_conn: Any, pg_dsn: str, pg_hnsw: Any) -> None:
    """Without a filter an HNSW scan yields at most ef_search rows (pgvector's iterative scan goes
    on only while a filter leaves it short): so k rows come back whatever ef_search is asked for
    (the function keeps at least k), and the schema's default is what a plain call gets."""
    vecs = small_vectors(ROWS)
    with PostgresStore(pg_dsn, table="plan_t", dimensions=8) as store:
        load(store, vecs)
    seen = pg_conn.execute(
        "select (select count(*) from match_plan_t(%s::vector(8), 500, null, '{}', 5)),"
        " (select count(*) from match_plan_t(%s::vector(8), 10))",
        ("[" + ",".join(map(str, vecs[3].tolist())) + "]",) * 2,
    ).fetchone()
    assert seen == (500, 10)
    # The caller's own setting is left as it was.
    pg_conn.execute("set hnsw.ef_search = 77")
    pg_conn.execute("select * from match_plan_t(%s::vector(8), 10, null, '{}', 300)",
                    ("[" + ",".join(map(str, vecs[3].tolist())) + "]",))
    assert pg_conn.execute("show hnsw.ef_search").fetchone() == ("77",)
    assert f"hnsw.ef_search={SEARCH_EF_SEARCH}" in pg_conn.execute(
        "select array_to_string(proconfig, ',') from pg_proc where proname = 'match_plan_t'").fetchone()[0]


def test_the_previous_versions_search_function_is_replaced(pg_conn: Any, pg_dsn: str) -> None:
    """The four-argument function (no ef_search) of the previous version: a store's first use
    replaces it (two overloads would make every call ambiguous), and searching works."""
    vecs = vectors(20)
    with PostgresStore(pg_dsn, table="plan_t") as store:
        load(store, vecs)
    pg_conn.execute("drop function match_plan_t(vector, integer, double precision, jsonb, integer)")
    pg_conn.execute(
        "create function match_plan_t(query_embedding vector(1536), match_count int default 5,"
        " match_threshold double precision default null, filter jsonb default '{}'::jsonb)"
        " returns table (section_id bigint, title text, content text, metadata jsonb, similarity double precision)"
        " language sql stable as $$ select 1::bigint, 't', 'c', '{}'::jsonb, 1.0::float8 $$"
    )
    with PostgresStore(pg_dsn, table="plan_t") as store:
        hits = store.search_vector(vecs[4], k=3)
    assert [h["id"] for h in hits][:1] == [4]
    assert pg_conn.execute("select array_agg(pronargs) from pg_proc where proname = 'match_plan_t'").fetchone() == ([5],)
