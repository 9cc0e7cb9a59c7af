"""The corpus store (issue #17): string ids, content and metadata stored and returned, metadata
filters that still return k rows, one search function per table, metadata-only changes that cost no
embedding, and tables of an earlier version brought up to date. Through `PostgresStore`,
`AsyncPostgresStore`, `SupabaseStore` and `AsyncSupabaseStore` (PostgREST stand-in on real PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from core import AsyncEmbeddingService, AsyncPostgresStore, AsyncSupabaseStore, EmbeddingService, PostgresStore, SupabaseStore
from core.engine.rows import Row
from core.stores.schema import apply_schema, default_match_function

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"),
]

LANGS = ("de", "en", "fr")


def corpus(n: int = 90) -> list[dict[str, Any]]:
    """Sections keyed by slugs, with metadata fields (url, lang, page)."""
    return [
        {"id": f"guide/topic-{i}#part", "title": f"Topic {i}", "content": f"How topic {i} works, step by step.",
         "url": f"https://docs.example/{i}", "lang": LANGS[i % 3], "page": i}
        for i in range(n)
    ]


def run_sync_or_async(flavour: str, target: str, dsn: str, rest: Any, base_url: str, sections: list[dict[str, Any]],
                      queries: list[tuple[str, dict[str, Any] | None]]) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """Ingest `sections`, then run `queries` (text, filter) on one store of the asked flavour and target."""
    if flavour == "sync":
        with EmbeddingService(api_key="k", base_url=base_url) as service:
            store = PostgresStore(dsn) if target == "postgres" else SupabaseStore(url=rest.url, key="service-key")
            report = store.batch_ingest_embeddings(sections, service)
            hits = [store.search(q, k=5, filter=f, embedding_service=service) for q, f in queries]
            if target == "postgres":
                store.close()
            return report, hits

    async def main() -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
        async with AsyncEmbeddingService(api_key="k", base_url=base_url) as service:
            store = AsyncPostgresStore(dsn) if target == "postgres" else AsyncSupabaseStore(url=rest.url, key="service-key")
            report = await store.batch_ingest_embeddings(sections, service)
            hits = [await store.search(q, k=5, filter=f, embedding_service=service) for q, f in queries]
            if target == "postgres":
                await store.aclose()
            return report, hits

    return asyncio.run(main())


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("target", ["postgres", "supabase"])
def test_string_ids_content_metadata_filters_and_metadata_only_updates(
    flavour: str, target: str, pg_conn: Any, pg_dsn: str, rest: Any, fake_openai: Any
) -> None:
    if target == "supabase":  # a Supabase table is made by pasting the schema: with text ids here
        apply_schema(pg_dsn, id_type="text", with_index=False)
        rest.reload_schema()
    sections = corpus()
    report, hits = run_sync_or_async(
        flavour, target, pg_dsn, rest, fake_openai.base_url, sections,
        [("How topic 7 works", None), ("How topic 7 works", {"lang": "de"}), ("anything", {"lang": "fr", "page": 5})],
    )
    assert report["success_count"] == 90 and report["failed_count"] == 0 and report["updated_count"] == 0
    assert pg_conn.execute("select format_type(atttypid, atttypmod) from pg_attribute where attrelid ="
                           " 'section_embeddings'::regclass and attname = 'section_id'").fetchone() == ("text",)
    stored = dict(pg_conn.execute("select section_id, metadata from section_embeddings").fetchall())
    assert stored["guide/topic-7#part"] == {"url": "https://docs.example/7", "lang": "en", "page": 7}
    unfiltered, german, one = hits
    assert len(unfiltered) == 5 and set(unfiltered[0]) >= {"id", "title", "content", "metadata", "similarity"}
    top = next(h for h in unfiltered if h["id"] == "guide/topic-7#part")  # the same text: similarity 1
    assert top["content"] == "How topic 7 works, step by step." and top["metadata"]["page"] == 7
    assert len(german) == 5 and all(h["metadata"]["lang"] == "de" for h in german)  # k rows, all matching
    assert [h["id"] for h in one] == ["guide/topic-5#part"]  # exactly the one row that matches

    # Only a url changed (and one page number): no embedding request, the new values stored.
    requests = fake_openai.stats()["requests"]
    changed = [{**s, "url": s["url"] + "?v=2"} if s["page"] < 10 else s for s in sections]
    report, _ = run_sync_or_async(flavour, target, pg_dsn, rest, fake_openai.base_url, changed, [])
    assert fake_openai.stats()["requests"] == requests
    assert report["updated_count"] == 10 and report["success_count"] == 10 and report["skipped_count"] == 80
    url = pg_conn.execute("select metadata->>'url' from section_embeddings where section_id = 'guide/topic-3#part'")
    assert url.fetchone() == ("https://docs.example/3?v=2",)


def test_integer_ids_keep_the_seed_s_table_and_a_string_id_fails_alone(pg_conn: Any, pg_dsn: str, fake_openai: Any) -> None:
    """Integer ids make a bigint table (the seed's); a string id given to it later fails alone.
    (A first window of mixed ids makes a text table, which takes both.)"""
    sections = [{"id": i, "title": f"T{i}", "content": f"text {i}"} for i in range(1, 6)]
    later = [{"id": 6, "title": "T6", "content": "text 6"}, {"id": "slug", "title": "S", "content": "a string id"}]
    with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as service, PostgresStore(pg_dsn) as store:
        assert store.batch_ingest_embeddings(sections, service)["success_count"] == 5
    with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as service, PostgresStore(pg_dsn) as store:
        report = store.batch_ingest_embeddings(later, service)
        mixed = PostgresStore(pg_dsn, table="mixed")
        assert mixed.batch_ingest_embeddings(later, service)["success_count"] == 2
        mixed.close()
    assert report["success_count"] == 1 and report["failed_ids"] == ["slug"]
    assert "this table's ids are bigint" in report["failures"][0]["reason"]
    assert pg_conn.execute("select pg_typeof(section_id)::text from section_embeddings limit 1").fetchone() == ("bigint",)
    assert pg_conn.execute("select pg_typeof(section_id)::text from mixed limit 1").fetchone() == ("text",)


def test_uuid_ids(pg_conn: Any, pg_dsn: str, fake_openai: Any) -> None:
    upper = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"
    sections = [{"id": upper, "title": "U", "content": "uuid keyed"}, {"id": "not-a-uuid", "title": "X", "content": "x"}]
    with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as service, PostgresStore(pg_dsn, id_type="uuid") as store:
        first = store.batch_ingest_embeddings(sections, service)
        again = store.batch_ingest_embeddings(sections[:1], service)  # found again although stored in lower case
        hit = store.search("uuid keyed", k=1, embedding_service=service)[0]
    assert first["success_count"] == 1 and first["failed_ids"] == ["not-a-uuid"]
    assert again["skipped_count"] == 1
    assert hit["id"] == upper.lower()


def test_two_tables_of_other_widths_each_with_its_own_search_function(pg_conn: Any, pg_dsn: str, fake_openai: Any) -> None:
    sections = corpus(12)
    with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as wide, EmbeddingService(
        api_key="k", base_url=fake_openai.base_url, dimensions=256
    ) as narrow:
        with PostgresStore(pg_dsn) as big, PostgresStore(pg_dsn, table="d256", dimensions=256) as small:
            assert big.batch_ingest_embeddings(sections[:6], wide)["success_count"] == 6
            assert small.batch_ingest_embeddings(sections[6:], narrow)["success_count"] == 6
            assert {h["id"] for h in big.search("topic", k=10, embedding_service=wide)} == {s["id"] for s in sections[:6]}
            assert {h["id"] for h in small.search("topic", k=10, embedding_service=narrow)} == {s["id"] for s in sections[6:]}
    assert small.match_function == default_match_function("d256") == "match_d256"
    functions = pg_conn.execute("select proname from pg_proc where pronamespace = 'public'::regnamespace and proname like 'match%' order by 1").fetchall()
    assert functions == [("match_d256",), ("match_d256_exact",), ("match_d256_hybrid",), ("match_d256_matches",),
                         ("match_sections",), ("match_sections_exact",), ("match_sections_hybrid",),
                         ("match_sections_matches",)]


def test_a_table_of_the_earlier_version_is_upgraded_in_place(pg_conn: Any, pg_dsn: str, fake_openai: Any) -> None:
    """The table and 3-argument function an earlier version created: the first ingest adds the
    columns and replaces the function; rows and vectors stay; unchanged sections cost nothing and
    get their content and metadata filled in."""
    pg_conn.execute("create extension if not exists vector")
    pg_conn.execute(
        "create table section_embeddings (section_id bigint primary key, title text, embedding vector(1536) not null,"
        " model text not null, content_hash text not null, token_count integer, updated_at timestamptz not null default now())"
    )
    pg_conn.execute(
        "create function match_sections(query_embedding vector(1536), match_count int default 5,"
        " match_threshold double precision default null) returns table (section_id bigint, title text,"
        " similarity double precision) language sql stable as $$ select 1::bigint, 't', 1.0::float8 $$"
    )
    sections = [{"id": i, "title": f"T{i}", "content": f"old text {i}", "lang": "en"} for i in range(1, 21)]
    with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as service:
        from core.engine.ingest_run import IngestRun

        run = IngestRun(service.model, store_content=False, metadata_fields=[])  # what the earlier version stored
        window = run.take_window(sections)
        batch = service.embed(window.texts)
        rows = run.rows(window, list(range(20)), batch.vectors, batch.errors, batch.token_counts, "2026-01-01T00:00:00+00:00")
        pg_conn.execute(
            "insert into section_embeddings (section_id, title, embedding, model, content_hash, token_count)"
            " select * from unnest(%s::bigint[], %s::text[], %s::vector[], %s::text[], %s::text[], %s::int[])",
            ([r.section_id for r in rows], [r.title for r in rows], [np.asarray(r.embedding) for r in rows],
             [r.model for r in rows], [r.content_hash for r in rows], [r.token_count for r in rows]),
        )
        before = pg_conn.execute("select section_id, embedding::text from section_embeddings order by 1").fetchall()
        requests = fake_openai.stats()["requests"]
        with PostgresStore(pg_dsn) as store:
            report = store.batch_ingest_embeddings(sections, service)
            hits = store.search("old text 3", k=3, filter={"lang": "en"}, embedding_service=service)
    assert fake_openai.stats()["requests"] == requests + 1  # the query's embedding only
    assert report["updated_count"] == 20 and report["skipped_count"] == 0
    after = pg_conn.execute("select section_id, embedding::text from section_embeddings order by 1").fetchall()
    assert after == before  # every row and vector kept
    assert pg_conn.execute("select count(*) from section_embeddings where content like 'old text %'").fetchone() == (20,)
    assert hits[0]["id"] == 3 and hits[0]["content"] == "old text 3"
    args = pg_conn.execute("select pronargs from pg_proc where proname = 'match_sections'").fetchall()
    assert args == [(5,)]  # the search function takes ef_search now


def test_filtered_and_unfiltered_recall_against_an_exact_scan(pg_conn: Any, pg_dsn: str, pg_hnsw: Any) -> None:
    """recall@10 of the HNSW search (with pgvector's iterative scan under a filter) against an
    exact scan of the same rows: >= 0.95 unfiltered, under a 1-in-3 filter, a 1-in-10 filter;
    and a filter matching 7 rows returns exactly those 7."""
    rng = np.random.default_rng(17)
    n, dims, k = 6000, 64, 10
    vectors = rng.standard_normal((n, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [
        Row(i, f"T{i}", vectors[i], "m", f"h{i}", 1, "2026-01-01T00:00:00+00:00", None,
            {"lang": LANGS[i % 3], "group": i % 10, **({"rare": True} if i % 857 == 0 else {})})
        for i in range(n)
    ]
    with PostgresStore(pg_dsn, table="recall", dimensions=dims) as store:
        assert store.write_rows(rows) == {}
        recalls: dict[str, list[float]] = {}
        for name, flt in (("none", None), ("lang", {"lang": "de"}), ("group", {"group": 3}), ("rare", {"rare": True})):
            for q in rng.standard_normal((25, dims)).astype(np.float32):
                found = [h["id"] for h in store.search_vector(q, k=k, filter=flt)]
                exact = [r[0] for r in pg_conn.execute(
                    "select section_id from recall where metadata @> %s::jsonb order by embedding <=> %s::vector limit %s",
                    (json.dumps(flt or {}), "[" + ",".join(map(str, q.tolist())) + "]", k),
                ).fetchall()]
                recalls.setdefault(name, []).append(len(set(found) & set(exact)) / len(exact))
                assert len(found) == len(exact)  # k rows whenever k rows match (7 for "rare")
    means = {name: sum(v) / len(v) for name, v in recalls.items()}
    print(f"recall@{k}: " + ", ".join(f"{name} {value:.3f}" for name, value in means.items()))
    assert all(value >= 0.95 for value in means.values()), means
    assert means["rare"] == 1.0


@pytest.mark.parametrize("target", ["postgres", "supabase"])
def test_hybrid_search_finds_an_exact_term_the_vectors_miss(target: str, pg_conn: Any, pg_dsn: str, rest: Any) -> None:
    """An error code inside one section whose vector is far from the query's (as an embedding
    model blurs a code like E4012): vector search does not return it in its top 10; hybrid search
    (full-text rank and vector rank fused by reciprocal rank) puts it first."""
    if target == "supabase":
        apply_schema(pg_dsn, dimensions=16, with_index=False)
        rest.reload_schema()
    rng = np.random.default_rng(5)
    query = rng.standard_normal(16).astype(np.float32)
    near = query + 0.3 * rng.standard_normal((200, 16)).astype(np.float32)  # 200 sections near the query
    far = -query  # the one that holds the term: as far as can be
    rows = [Row(i, f"Import errors {i}", near[i], "m", f"h{i}", 1, "2026-01-01T00:00:00+00:00",
                "What to do when an import fails.", {}) for i in range(200)]
    rows.append(Row(500, "Troubleshooting", far, "m", "h500", 1, "2026-01-01T00:00:00+00:00",
                    "The server answers E4012 when the key expired.", {}))
    store = PostgresStore(pg_dsn, dimensions=16) if target == "postgres" else SupabaseStore(url=rest.url, key="service-key")
    assert store.write_rows(rows) == {}
    vector_only = [h["id"] for h in store.search_vector(query, k=10)]
    hybrid = store.search_hybrid("E4012", query, 10)
    print(f"E4012 ({target}): vector-only top 10 {'has' if 500 in vector_only else 'misses'} it; hybrid rank "
          f"{[h['id'] for h in hybrid].index(500) + 1}")
    assert 500 not in vector_only
    assert hybrid[0]["id"] == 500 and "E4012" in hybrid[0]["content"] and len(hybrid) == 10
    assert store.search_hybrid("E4012", query, 10, filter={"lang": "xx"}) == []
