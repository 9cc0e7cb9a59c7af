"""One store object shared by concurrent callers (issue #15, item 1).

An `AsyncPostgresStore` used to hold one connection: concurrent ingests opened their
transactions on it, nested into each other's savepoints, and were rolled back when the
connection closed — two gathered ingests reported 359 rows stored, the table held 20.
Each test here runs many ingests (and searches) at once through ONE store and ONE
embedding service, then counts on a fresh connection: every row reported stored must be
there, with its own vector.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from core import AsyncEmbeddingService, AsyncPostgresStore, AsyncSupabaseStore, EmbeddingService, PostgresStore, SupabaseStore
from core.engine.ingest_run import section_text
from core.stores.schema import apply_schema
from core.testing import expected_embedding

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"),
]

CALLERS = 6
PER_CALLER = 60  # batch_size 20: three requests (and three writes) per caller


def _sections(caller: int) -> list[dict[str, Any]]:
    first = caller * 1000 + 1
    return [{"id": i, "title": f"T{i}", "content": f"shared store text {i}"} for i in range(first, first + PER_CALLER)]


def _check_table(pg_conn: Any, reports: list[dict[str, Any]]) -> None:
    """What a fresh connection sees equals what the reports claim, vector by vector."""
    claimed = sum(r["success_count"] for r in reports)
    assert all(r["failed_count"] == 0 for r in reports), [r["failures"][:3] for r in reports]
    assert claimed == CALLERS * PER_CALLER
    rows = pg_conn.execute("select section_id, title, embedding from section_embeddings").fetchall()
    assert len(rows) == claimed
    for section_id, title, vector in rows[::17]:
        text = section_text(title, f"shared store text {section_id}")
        np.testing.assert_array_equal(np.asarray(vector.to_numpy(), dtype=np.float32), expected_embedding(text))


def test_async_postgres_store_shared_by_concurrent_ingests_and_searches(pg_conn, pg_dsn, fake_openai):
    async def main() -> list[dict[str, Any]]:
        async with AsyncEmbeddingService(api_key="k", base_url=fake_openai.base_url) as service, AsyncPostgresStore(
            pg_dsn, embedding_service=service
        ) as store:
            ingests = [store.batch_ingest_embeddings(_sections(c), service, batch_size=20) for c in range(CALLERS)]
            searches = [store.search(f"shared store text {1000 + i}", k=3) for i in range(1, 11)]
            results = await asyncio.gather(*ingests, *searches)
            assert all(isinstance(hits, list) for hits in results[CALLERS:])
            return list(results[:CALLERS])

    _check_table(pg_conn, asyncio.run(main()))


def test_sync_postgres_store_shared_by_threads(pg_conn, pg_dsn, fake_openai):
    with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as service, PostgresStore(pg_dsn) as store:
        with ThreadPoolExecutor(CALLERS + 4) as pool:
            ingests = [pool.submit(store.batch_ingest_embeddings, _sections(c), service, 20) for c in range(CALLERS)]
            searches = [pool.submit(store.search, f"shared store text {1000 + i}", 3, embedding_service=service) for i in range(4)]
            reports = [f.result() for f in ingests]
            assert all(isinstance(f.result(), list) for f in searches)
    _check_table(pg_conn, reports)


def test_async_supabase_store_shared_by_concurrent_ingests(rest, pg_conn, pg_dsn, fake_openai):
    apply_schema(pg_dsn, with_index=False)
    rest.reload_schema()

    async def main() -> list[dict[str, Any]]:
        async with AsyncEmbeddingService(api_key="k", base_url=fake_openai.base_url) as service:
            store = AsyncSupabaseStore(url=rest.url, key="test-service-role-key", max_concurrency=4)
            return list(await asyncio.gather(
                *(store.batch_ingest_embeddings(_sections(c), service, batch_size=20) for c in range(CALLERS))
            ))

    _check_table(pg_conn, asyncio.run(main()))


def test_sync_supabase_store_shared_by_threads(rest, pg_conn, pg_dsn, fake_openai):
    apply_schema(pg_dsn, with_index=False)
    rest.reload_schema()
    store = SupabaseStore(url=rest.url, key="test-service-role-key", max_concurrency=4)
    with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as service, ThreadPoolExecutor(CALLERS) as pool:
        reports = list(pool.map(lambda c: store.batch_ingest_embeddings(_sections(c), service, 20), range(CALLERS)))
    _check_table(pg_conn, reports)
