"""The async ingest pipeline over real PostgreSQL (issue #10): the sync store's contract,
on both drivers, with the same accounting."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from core import AsyncEmbeddingService, EmbeddingService, PostgresStore
from core.stores.postgres_async import AsyncPostgresStore
from core.errors import StoreError
from core.engine.ingest_run import section_text
from core.testing import expected_embedding

DIMS = 1536

pytestmark = pytest.mark.filterwarnings(  # supabase-py passes postgrest-py arguments it has itself deprecated
    "ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"
)


def _sections(ids: Any) -> list[dict[str, Any]]:
    return [{"id": i, "title": f"Title {i}", "content": f"Content about topic {i} and vectors."} for i in ids]


def ingest(driver: str, dsn: str, base_url: str, sections: list[Any], **kw: Any) -> dict[str, Any]:
    if driver == "sync":
        with EmbeddingService(api_key="test-key", base_url=base_url) as service, PostgresStore(dsn) as store:
            return store.batch_ingest_embeddings(sections, service, **kw)

    async def main() -> dict[str, Any]:
        async with AsyncEmbeddingService(api_key="test-key", base_url=base_url) as service, AsyncPostgresStore(dsn) as store:
            return await store.batch_ingest_embeddings(sections, service, **kw)

    return asyncio.run(main())


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_ingest_then_rerun_skips_everything(driver, pg_conn, pg_dsn, fake_openai):
    sections = _sections(range(1, 1201))
    sections.append({"id": 5, "title": "dup", "content": "duplicate id"})
    sections.append({"id": 9999, "title": "", "content": "bad \x00 byte"})
    first = ingest(driver, pg_dsn, fake_openai.base_url, sections, batch_size=100)
    assert first["success_count"] == 1200 and first["failed_count"] == 2
    assert [f["code"] for f in first["failures"]] == ["duplicate_id", "invalid_section"]
    rows = pg_conn.execute("select section_id, embedding from section_embeddings order by section_id").fetchall()
    assert len(rows) == 1200
    for section_id, vector in rows[::97]:
        s = sections[section_id - 1]
        np.testing.assert_array_equal(np.asarray(vector.to_numpy(), dtype=np.float32),
                                      expected_embedding(section_text(s["title"], s["content"])))
    requests_before = fake_openai.stats()["requests"]
    again = ingest(driver, pg_dsn, fake_openai.base_url, sections, batch_size=100)
    assert again["skipped_count"] == 1200 and again["success_count"] == 0
    assert fake_openai.stats()["requests"] == requests_before  # nothing re-embedded


def test_async_search_finds_the_section(pg_conn, pg_dsn, fake_openai):
    sections = _sections(range(1, 51))
    ingest("async", pg_dsn, fake_openai.base_url, sections)

    async def main() -> list[dict[str, Any]]:
        async with AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url) as service:
            async with AsyncPostgresStore(pg_dsn, embedding_service=service) as store:
                return await store.search(section_text("Title 17", "Content about topic 17 and vectors."), k=3)

    hits = asyncio.run(main())
    assert hits[0]["section_id"] == 17 and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_async_unreachable_store_fails_before_paying(fake_openai, tmp_path):
    dsn = f"postgresql://nobody@/postgres?host={tmp_path}&port=1"

    async def main() -> None:
        async with AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url) as service:
            store = AsyncPostgresStore(dsn, connect_timeout=2)
            await store.batch_ingest_embeddings(_sections(range(1, 10)), service)

    with pytest.raises(StoreError) as info:
        asyncio.run(main())
    assert info.value.report["success_count"] == 0  # type: ignore[attr-defined]
    assert fake_openai.stats()["requests"] == 0


# --- AsyncSupabaseStore through real supabase-py (async) -> PostgREST stand-in -> PostgreSQL ---------


def test_async_supabase_store_ingests_reruns_and_searches(rest, pg_conn, pg_dsn, fake_openai):
    from core import AsyncSupabaseStore
    from core.stores.schema import apply_schema

    apply_schema(pg_dsn, with_index=False)
    rest.reload_schema()

    sections = _sections(range(1, 301))
    sections.append({"id": 7, "title": "dup", "content": "duplicate"})

    async def main() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        async with AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url) as service:
            store = AsyncSupabaseStore(url=rest.url, key="test-service-role-key", embedding_service=service)
            first = await store.batch_ingest_embeddings(sections, service, batch_size=50)
            again = await store.batch_ingest_embeddings(sections, service, batch_size=50)
            hits = await store.search(section_text("Title 17", "Content about topic 17 and vectors."), k=3)
            return first, again, hits

    first, again, hits = asyncio.run(main())
    assert first["success_count"] == 300 and first["failed_ids"] == [7]
    assert again["skipped_count"] == 300 and again["success_count"] == 0
    assert hits[0]["section_id"] == 17
    rows = pg_conn.execute("select section_id, embedding from section_embeddings order by section_id").fetchall()
    assert len(rows) == 300
    for section_id, vector in rows[::37]:
        s = sections[section_id - 1]
        np.testing.assert_array_equal(np.asarray(vector.to_numpy(), dtype=np.float32),
                                      expected_embedding(section_text(s["title"], s["content"])))


def test_async_supabase_store_missing_table_fails_before_paying(rest, pg_conn, fake_openai):
    from core import AsyncSupabaseStore

    postgrest_server = rest  # pg_conn emptied public: no table

    async def main() -> None:
        async with AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url) as service:
            store = AsyncSupabaseStore(url=postgrest_server.url, key="test-service-role-key", sleep=_no_sleep)
            await store.batch_ingest_embeddings(_sections(range(1, 5)), service)

    with pytest.raises(StoreError, match="section_embeddings") as info:
        asyncio.run(main())
    assert "test-service-role-key" not in str(info.value)
    assert fake_openai.stats()["requests"] == 0


async def _no_sleep(_seconds: float) -> None:
    return None


def test_ctrl_c_under_asyncio_run_reports_what_was_stored(pg_conn, pg_dsn, fake_openai):
    """Issue #15 item 2: `asyncio.run` turns SIGINT into a cancellation of its main task; the
    async ingest still raises `IngestInterrupted` with the exact report (it was a bare
    KeyboardInterrupt before), and the count is what a fresh connection sees."""
    import signal

    from core.errors import IngestInterrupted

    sent: list[int] = []

    def progress(p: Any) -> None:
        if p.stored >= 40 and not sent:  # some rows are in: now press Ctrl-C
            sent.append(p.stored)
            signal.raise_signal(signal.SIGINT)

    async def main() -> None:
        async with AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url, max_concurrency=1) as service:
            async with AsyncPostgresStore(pg_dsn) as store:
                await store.batch_ingest_embeddings(_sections(range(1, 2001)), service, batch_size=20, progress=progress)

    with pytest.raises(IngestInterrupted) as info:
        asyncio.run(main())
    report = info.value.report
    assert sent and 40 <= report["success_count"] < 2000
    assert pg_conn.execute("select count(*) from section_embeddings").fetchone() == (report["success_count"],)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # nothing of ours left behind


def test_other_cancellations_still_propagate_as_cancellation(pg_conn, pg_dsn, fake_openai):
    """A timeout (or a web client gone) is not Ctrl-C: asyncio's own error comes through."""

    async def main() -> None:
        async with AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url, max_concurrency=1) as service:
            async with AsyncPostgresStore(pg_dsn) as store:
                await asyncio.wait_for(store.batch_ingest_embeddings(_sections(range(1, 5001)), service, batch_size=10), 0.5)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(main())
