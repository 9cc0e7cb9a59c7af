"""Keeping a table equal to its source (issue #18): sources, deletions after the upserts, the guard,
the dry run, the lock, deleting directly; through `PostgresStore`, `AsyncPostgresStore`,
`SupabaseStore` and `AsyncSupabaseStore` (PostgREST stand-in on real PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from core import AsyncEmbeddingService, AsyncPostgresStore, AsyncSupabaseStore, EmbeddingService, PostgresStore, SupabaseStore
from core.errors import StoreError
from core.stores.schema import apply_schema

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"),
]


def version(ids: range, *, changed: set[int] = frozenset(), prefix: str = "doc") -> list[dict[str, Any]]:  # type: ignore[assignment]
    return [
        {"id": f"{prefix}-{i}", "title": f"{prefix} {i}", "content": f"text of {prefix} {i}" + (" (edited)" if i in changed else ""),
         "lang": "en"}
        for i in ids
    ]


def rows_of(pg_conn: Any, source: str) -> set[str]:
    return {r[0] for r in pg_conn.execute("select section_id from section_embeddings where source = %s", (source,))}


def make(flavour: str, target: str, dsn: str, rest: Any) -> Any:
    if target == "postgres":
        return PostgresStore(dsn) if flavour == "sync" else AsyncPostgresStore(dsn)
    return SupabaseStore(url=rest.url, key="service-key") if flavour == "sync" else AsyncSupabaseStore(url=rest.url, key="service-key")


def sync(flavour: str, store: Any, base_url: str, sections: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    if flavour == "sync":
        with EmbeddingService(api_key="k", base_url=base_url) as service:
            return store.sync_sections(sections, service, **kw)

    async def main() -> dict[str, Any]:
        async with AsyncEmbeddingService(api_key="k", base_url=base_url) as service:
            return await store.sync_sections(sections, service, **kw)

    return asyncio.run(main())


def test_the_issue_s_scenario_on_postgres(pg_conn: Any, pg_dsn: str, fake_openai: Any) -> None:
    """Two sources (1,000 and 200 sections) in one table; version 2 of the first: 50 removed, 20
    changed, 30 added. The dry run reports 50 deletions and deletes nothing; the sync deletes
    exactly those 50, embeds exactly 50 inputs and leaves the other source alone; version 3,
    holding 30 % of the source, is refused by the guard and deletes nothing."""
    store = PostgresStore(pg_dsn)
    first = sync("sync", store, fake_openai.base_url, version(range(1000)), source="manual.jsonl")
    other = sync("sync", store, fake_openai.base_url, version(range(200), prefix="faq"), source="faq.jsonl")
    assert first["success_count"] == 1000 and other["success_count"] == 200 and first["deleted"] == 0
    v2 = version(range(50, 1030), changed=set(range(100, 120)))
    stats = fake_openai.stats()["inputs_ok"]
    dry = sync("sync", store, fake_openai.base_url, v2, source="manual.jsonl", dry_run=True)
    assert fake_openai.stats()["inputs_ok"] == stats  # a dry run costs nothing
    assert (dry["would_delete"], dry["would_embed"], dry["deleted"]) == (50, 50, 0)
    assert dry["delete_preview"][:3] == ["doc-0", "doc-1", "doc-10"] and len(rows_of(pg_conn, "manual.jsonl")) == 1000
    report = sync("sync", store, fake_openai.base_url, v2, source="manual.jsonl")
    assert fake_openai.stats()["inputs_ok"] - stats == 50
    assert report["deleted"] == 50 and report["delete_refused"] is None
    assert rows_of(pg_conn, "manual.jsonl") == {s["id"] for s in v2}
    assert rows_of(pg_conn, "faq.jsonl") == {f"faq-{i}" for i in range(200)}
    v3 = v2[: int(len(v2) * 0.3)]
    refused = sync("sync", store, fake_openai.base_url, v3, source="manual.jsonl")
    assert refused["deleted"] == 0 and refused["would_delete"] == len(v2) - len(v3)
    assert "more than the guard's 10%" in refused["delete_refused"] and "--max-delete" in refused["delete_refused"]
    assert len(rows_of(pg_conn, "manual.jsonl")) == len(v2)
    allowed = sync("sync", store, fake_openai.base_url, v3, source="manual.jsonl", max_delete="100%")
    assert allowed["deleted"] == len(v2) - len(v3) and rows_of(pg_conn, "manual.jsonl") == {s["id"] for s in v3}
    store.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("target", ["postgres", "supabase"])
def test_sync_contract_on_every_store(flavour: str, target: str, pg_conn: Any, pg_dsn: str, rest: Any, fake_openai: Any) -> None:
    if target == "supabase":
        apply_schema(pg_dsn, id_type="text", with_index=False)
        rest.reload_schema()
    store = make(flavour, target, pg_dsn, rest)
    assert sync(flavour, store, fake_openai.base_url, version(range(40)), source="a")["success_count"] == 40
    assert sync(flavour, store, fake_openai.base_url, version(range(10), prefix="b"), source="b")["success_count"] == 10
    # Rows written outside any sync have no source: never deleted by one.
    plain = version(range(5), prefix="plain")
    if flavour == "sync":
        with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as service:
            store.batch_ingest_embeddings(plain, service)
    else:
        async def plain_ingest() -> None:
            async with AsyncEmbeddingService(api_key="k", base_url=fake_openai.base_url) as service:
                await store.batch_ingest_embeddings(plain, service)
        asyncio.run(plain_ingest())
    v2 = version(range(2, 41), changed={5})  # 2 gone, 1 changed, 1 added
    inputs = fake_openai.stats()["inputs_ok"]
    report = sync(flavour, store, fake_openai.base_url, v2, source="a")
    assert report["deleted"] == 2 and fake_openai.stats()["inputs_ok"] - inputs == 2
    assert rows_of(pg_conn, "a") == {s["id"] for s in v2} and len(rows_of(pg_conn, "b")) == 10
    assert pg_conn.execute("select count(*) from section_embeddings where source is null").fetchone() == (5,)
    # A record with no id: its id is unknown, so nothing may be deleted.
    unknown = sync(flavour, store, fake_openai.base_url, [*v2[:30], {"title": "no id", "content": "x"}], source="a")
    assert unknown["deleted"] == 0 and "could not be read" in unknown["delete_refused"]
    # Deleting directly.
    if flavour == "sync":
        assert store.delete(["doc-2", "doc-3", "no-such-id"]) == 2 and store.delete_source("b") == 10
    else:
        async def direct() -> tuple[int, int]:
            return await store.delete(["doc-2", "doc-3", "no-such-id"]), await store.delete_source("b")
        assert asyncio.run(direct()) == (2, 10)
    assert len(rows_of(pg_conn, "b")) == 0 and len(rows_of(pg_conn, "a")) == len(v2) - 2


@pytest.mark.parametrize("target", ["postgres", "supabase"])
def test_a_second_sync_of_the_same_source_is_refused_naming_the_holder(target: str, pg_conn: Any, pg_dsn: str, rest: Any, fake_openai: Any) -> None:
    if target == "supabase":
        apply_schema(pg_dsn, id_type="text", with_index=False)
        rest.reload_schema()
    fake_openai.configure(latency_base=0.3)
    first_store, second_store = make("sync", target, pg_dsn, rest), make("sync", target, pg_dsn, rest)
    inside = threading.Event()
    results: dict[str, Any] = {}

    def first() -> None:
        results["first"] = sync("sync", first_store, fake_openai.base_url, version(range(200)), source="s",
                                progress=lambda p: inside.set())

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(30)
    with pytest.raises(StoreError, match="another sync of source 's' into table 'section_embeddings' is running"):
        sync("sync", second_store, fake_openai.base_url, version(range(3)), source="s")
    other = sync("sync", second_store, fake_openai.base_url, version(range(3), prefix="t"), source="t")  # another source: at once
    thread.join(60)
    assert other["success_count"] == 3 and results["first"]["success_count"] == 200
    again = sync("sync", second_store, fake_openai.base_url, version(range(200)), source="s")  # the lock was released
    assert again["skipped_count"] == 200


def test_a_sync_that_dies_midway_deletes_nothing_and_the_rerun_finishes(pg_conn: Any, pg_dsn: str, fake_openai: Any) -> None:
    store = PostgresStore(pg_dsn)
    sync("sync", store, fake_openai.base_url, version(range(300)), source="s")
    v2 = version(range(30, 330), changed=set(range(330)))  # every text edited: 300 to embed again
    real = store.write_rows
    calls = {"n": 0}

    def dying(rows: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) in the middle of the upserts
        return real(rows)

    store.write_rows = dying  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        sync("sync", store, fake_openai.base_url, v2, source="s", batch_size=50)  # requests of 50: several writes
    store.write_rows = real  # type: ignore[method-assign]
    assert {f"doc-{i}" for i in range(30)} <= rows_of(pg_conn, "s")  # nothing deleted by the dead run
    done = sync("sync", store, fake_openai.base_url, v2, source="s")
    assert done["deleted"] == 30 and rows_of(pg_conn, "s") == {s["id"] for s in v2}
    store.close()
