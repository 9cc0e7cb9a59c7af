"""SupabaseStore's HTTP contract: the real supabase-py client, PostgREST answered by respx.

`SupabaseStore(url=..., key=...)` builds its client with supabase-py's
`create_client`; supabase-py talks to PostgREST through httpx, which respx
intercepts, so every request is checked as it would reach a Supabase project:
method, path, query, headers, JSON body. The answers come from `FakeSupabase`
(test/support/fake_supabase.py, the suite's one Supabase fake) through its HTTP
face (``fake.serve(router)``). Nothing leaves the process (`respx.mock` refuses
any request no route matches), and no test sleeps: the store's retries sleep
through an injected recorder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from fake_supabase import KEY, TABLE_PATH, URL, FakeSupabase, postgrest_error
from store_helpers import (
    MODEL,
    assert_accounted,
    make_service,
    parse_literal,
    sections,
    vector_for,
)

from core.errors import StoreError
from core.stores.ingest import content_hash, section_text
from core.engine.rows import vector_literal
from core.supabase_store import SupabaseStore
from core.engine.tokens import count_tokens

pytestmark = pytest.mark.filterwarnings(
    # supabase-py passes postgrest-py arguments it has itself deprecated
    "ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"
)

ROW_FIELDS = {"section_id", "title", "embedding", "model", "content_hash", "token_count", "updated_at", "content", "metadata"}


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def store(router: respx.MockRouter, sleeps: list[float]) -> SupabaseStore:
    return SupabaseStore(url=URL, key=KEY, sleep=sleeps.append)


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def ids_in(body: Any) -> list[int]:
    return [r["section_id"] for r in body] if isinstance(body, list) else [body["section_id"]]


def parse_in(request: httpx.Request) -> list[int]:
    value = request.url.params["section_id"]
    assert value.startswith("in.(") and value.endswith(")"), value
    return [int(x) for x in value[4:-1].split(",")]


# --- the request ---------------------------------------------------------------------------


class TestUpsertRequest:
    def test_one_post_per_row_with_postgrest_headers_and_the_row_object(self, router, store):
        fake = FakeSupabase().serve(router)
        service, api = make_service()
        secs = sections(range(1, 6))
        result = store.batch_ingest_embeddings(secs, service)

        assert result["success_count"] == 5 and result["failed_count"] == 0
        assert fake.upsert_route.call_count == 5
        by_id = {s["id"]: s for s in secs}
        for call in fake.upsert_route.calls:
            request = call.request
            assert request.method == "POST"
            assert request.url.path == TABLE_PATH
            assert dict(request.url.params) == {"on_conflict": "section_id"}
            prefer = {p.strip() for p in request.headers["Prefer"].split(",")}
            assert {"return=minimal", "resolution=merge-duplicates"} <= prefer
            assert request.headers["apikey"] == KEY
            assert request.headers["Authorization"] == f"Bearer {KEY}"
            assert request.headers["Content-Type"].startswith("application/json")

            body = body_of(request)
            assert isinstance(body, dict) and set(body) == ROW_FIELDS  # the row itself, not a list
            section = by_id[body["section_id"]]
            text = section_text(section["title"], section["content"])
            assert body["title"] == section["title"]
            assert body["embedding"] == vector_literal(vector_for(text))
            assert parse_literal(body["embedding"]) == vector_for(text)
            assert body["model"] == MODEL
            assert body["content_hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
            assert body["token_count"] == count_tokens(text)
            assert body["updated_at"].endswith("+00:00")
        assert sorted(fake.rows) == [1, 2, 3, 4, 5]
        assert len(api.texts) == 5

    def test_hash_lookup_request_and_skip(self, router, store):
        secs = sections([1, 2, 3])
        text2 = section_text(secs[1]["title"], secs[1]["content"])
        fake = FakeSupabase().serve(router)
        fake.rows[2] = {"content_hash": content_hash(text2), "model": MODEL}
        fake.rows[3] = {"content_hash": "0" * 64, "model": MODEL}  # changed since
        service, api = make_service()
        result = store.batch_ingest_embeddings(secs, service)

        (call,) = [c for c in fake.select_route.calls if "section_id" in c.request.url.params]  # not the preflight
        request = call.request
        assert request.method == "GET" and request.url.path == TABLE_PATH
        assert request.url.params["select"] == "section_id,content_hash,model,metadata,source"
        assert request.url.params["section_id"] == "in.(1,2,3)"
        assert parse_qs(request.url.query.decode())["section_id"] == ["in.(1,2,3)"]
        assert request.headers["apikey"] == KEY
        assert result["skipped_ids"] == [2] and result["success_count"] == 2
        assert sorted(ids for b in fake.bodies() for ids in ids_in(b)) == [1, 3]
        assert text2 not in api.texts

    def test_unchanged_rows_skipped_with_chunked_lookups(self, router, store):
        fake = FakeSupabase().serve(router)
        service, api = make_service()
        secs = sections(range(1, 1102))
        for s in secs:  # stored by an earlier run
            text = section_text(s["title"], s["content"])
            fake.rows[s["id"]] = {"content_hash": content_hash(text), "model": MODEL}

        result = store.batch_ingest_embeddings(secs, service)
        assert result["skipped_count"] == 1101 and api.calls == []
        assert fake.upsert_route.call_count == 0
        sizes = [len(parse_in(call.request)) for call in fake.select_route.calls if "section_id" in call.request.url.params]
        assert sizes == [500, 500, 101]

    @pytest.mark.parametrize("status", [500, 400, 401])
    def test_failing_lookup_stops_before_paying(self, router, store, status):
        """Issue #8 (5): a lookup that fails used to be swallowed, so every section was
        embedded (paid for) and then failed to store. Now the run stops before the first
        embeddings request with a `StoreError` that carries the (empty) report."""
        fake = FakeSupabase(select_fail=lambda ids: postgrest_error(status, "XX000", "lookup broke")).serve(router)
        service, api = make_service()
        with pytest.raises(StoreError, match="lookup broke") as info:
            store.batch_ingest_embeddings(sections([1, 2]), service)
        assert api.texts == [] and fake.upsert_route.call_count == 0
        assert info.value.report["success_count"] == 0

    def test_search_calls_the_match_rpc(self, router, sleeps):
        service, api = make_service()
        store = SupabaseStore(url=URL, key=KEY, embedding_service=service, sleep=sleeps.append)
        fake = FakeSupabase().serve(router)
        hits = fake.rpc_data = [{"section_id": 4, "title": "Four", "similarity": 0.83}]
        assert store.search("where is four", k=3, threshold=0.5) == [{"id": 4, **hits[0]}]  # `id`: issue #17
        request = fake.rpc_route.calls.last.request
        assert request.url.path == "/rest/v1/rpc/match_sections"
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert body_of(request) == {
            "query_embedding": vector_literal(vector_for("where is four")),
            "match_count": 3,
            "match_threshold": 0.5,
        }
        assert api.texts == ["where is four"]
        store.search("q")
        assert body_of(fake.rpc_route.calls.last.request)["match_threshold"] is None
        store.search("q", filter={"lang": "de"})  # a metadata filter travels as the RPC's `filter`
        assert body_of(fake.rpc_route.calls.last.request)["filter"] == {"lang": "de"}


# --- answers -------------------------------------------------------------------------------


class TestAnswers:
    def test_22p02_fails_that_row_with_code_and_message(self, router, store, sleeps):
        def answer(body, attempt):
            if body["section_id"] == 2:
                return postgrest_error(400, "22P02", "invalid input syntax for type vector")
            return httpx.Response(201)

        fake = FakeSupabase(fail=answer).serve(router)
        service, _ = make_service()
        result = store.batch_ingest_embeddings(sections([1, 2, 3]), service)
        assert result["success_count"] == 2 and result["failed_ids"] == [2]
        assert result["failures"] == [
            {"index": 1, "id": 2, "code": "store_failed", "reason": "store failed: 22P02: invalid input syntax for type vector"}
        ]
        assert fake.attempts[2] == 1 and sleeps == []
        assert sorted(fake.rows) == [1, 3]

    def test_409_unique_violation_not_retried(self, router, store, sleeps):
        def answer(body, attempt):
            if body["section_id"] == 1:
                return postgrest_error(409, "23505", 'duplicate key value violates unique constraint "uq_title"')
            return httpx.Response(201)

        fake = FakeSupabase(fail=answer).serve(router)
        result = store.batch_ingest_embeddings(sections([1, 2]), make_service()[0])
        assert result["failed_ids"] == [1]
        assert result["failures"][0]["reason"].startswith("store failed: 23505: duplicate key value")
        assert fake.attempts[1] == 1 and sleeps == []

    @pytest.mark.parametrize(
        "response,code",
        [
            (lambda: httpx.Response(503, text="Service Unavailable"), "503"),
            (lambda: httpx.Response(500, text="Internal Server Error"), "500"),
            (lambda: httpx.Response(502, html="<html><body>Bad gateway</body></html>"), "502"),
            # Supabase's API gateway answers with JSON that has a message but no code:
            (lambda: httpx.Response(503, json={"message": "name resolution failed"}), "503"),
            (lambda: httpx.Response(504, json={"message": "The upstream server is timing out"}), "504"),
            (lambda: httpx.Response(429, json={"message": "API rate limit exceeded"}), "429"),
            (lambda: postgrest_error(500, "57014", "canceling statement due to statement timeout"), "57014"),
            (lambda: postgrest_error(503, "PGRST001", "Database client error"), "PGRST001"),
        ],
        ids=["503-text", "500-text", "502-html", "503-json", "504-json", "429-json", "57014", "PGRST001"],
    )
    def test_transient_answer_retried_then_failed_with_code(self, router, sleeps, response, code):
        store = SupabaseStore(url=URL, key=KEY, row_retries=2, sleep=sleeps.append)
        fake = FakeSupabase(fail=lambda body, attempt: response() if body["section_id"] == 2 else None).serve(router)
        result = store.batch_ingest_embeddings(sections([1, 2, 3]), make_service()[0])
        assert result["success_count"] == 2 and result["failed_ids"] == [2]
        assert result["failures"][0]["reason"].startswith(f"store failed: {code}: ")
        assert fake.attempts[2] == 3 and sleeps == [0.5, 1.0]
        assert_accounted(result, 3)

    def test_transient_answer_then_201_is_stored(self, router, store, sleeps):
        fake = FakeSupabase(
            fail=lambda body, attempt: httpx.Response(503, json={"message": "upstream"}) if attempt == 0 else None,
        ).serve(router)
        secs = sections([1, 2])
        result = store.batch_ingest_embeddings(secs, make_service()[0])
        assert result["success_count"] == 2 and fake.attempts == {1: 2, 2: 2}
        assert sorted(sleeps) == [0.5, 0.5]
        for s in secs:
            assert fake.rows[s["id"]]["embedding"] == vector_literal(vector_for(section_text(s["title"], s["content"])))

    def test_4xx_json_without_code_is_not_retried_and_names_its_status(self, router, store, sleeps):
        fake = FakeSupabase(fail=lambda body, attempt: httpx.Response(401, json={"message": "Invalid API key"})).serve(router)
        result = store.batch_ingest_embeddings(sections([1]), make_service()[0])
        assert result["failures"][0]["reason"] == "store failed: 401: Invalid API key"
        assert fake.attempts[1] == 1 and sleeps == []

    def test_statuses_still_read_after_supabase_rebuilds_its_postgrest_client(self, router, store, sleeps):
        """supabase-py drops `client.postgrest` on auth events; the next write watches the new one."""
        fake = FakeSupabase(fail=lambda body, attempt: httpx.Response(504, json={"message": "upstream timeout"})).serve(router)
        store.client._postgrest = None  # what an auth state change does
        result = store.batch_ingest_embeddings(sections([1]), make_service()[0])
        assert result["failures"][0]["reason"] == "store failed: 504: upstream timeout"
        assert fake.attempts[1] == 3

    def test_connection_error_retried_then_failed(self, router, store, sleeps):
        refused = httpx.ConnectError("[Errno 111] Connection refused")
        fake = FakeSupabase(fail=lambda body, attempt: refused).serve(router)
        result = store.batch_ingest_embeddings(sections([1]), make_service()[0])
        assert result["failures"][0]["reason"] == "store failed: ConnectError: [Errno 111] Connection refused"
        assert fake.upsert_route.call_count == 3 and sleeps == [0.5, 1.0]

    def test_upserts_overlap_on_the_wire(self, router, sleeps):
        store = SupabaseStore(url=URL, key=KEY, max_concurrency=4, sleep=sleeps.append)
        fake = FakeSupabase(delay=0.01).serve(router)
        result = store.batch_ingest_embeddings(sections(range(1, 25)), make_service()[0], skip_unchanged=False)
        assert result["success_count"] == 24
        assert 1 < fake.max_in_flight <= 4

    def test_one_postgrest_client_however_many_threads(self, router, sleeps, mocker):
        """supabase-py builds its PostgREST client lazily and unguarded; the store builds it once."""
        from supabase._sync.client import Client

        built = mocker.spy(Client, "_init_postgrest_client")
        store = SupabaseStore(url=URL, key=KEY, max_concurrency=16, sleep=sleeps.append)
        FakeSupabase(delay=0.002).serve(router)
        result = store.batch_ingest_embeddings(sections(range(1, 65)), make_service()[0], skip_unchanged=False)
        assert result["success_count"] == 64
        assert built.call_count == 1


# --- bulk mode -----------------------------------------------------------------------------


class TestBulkRequests:
    def test_lists_of_at_most_n_rows_with_columns(self, router, sleeps):
        store = SupabaseStore(url=URL, key=KEY, rows_per_request=3, sleep=sleeps.append)
        fake = FakeSupabase().serve(router)
        secs = sections(range(1, 8))
        result = store.batch_ingest_embeddings(secs, make_service()[0])
        assert result["success_count"] == 7
        bodies = fake.bodies()
        assert all(isinstance(b, list) for b in bodies)
        assert sorted(len(b) for b in bodies) == [1, 3, 3]
        for call in fake.upsert_route.calls:
            params = call.request.url.params
            assert params["on_conflict"] == "section_id"
            assert {c.strip('"') for c in params["columns"].split(",")} == ROW_FIELDS
            prefer = {p.strip() for p in call.request.headers["Prefer"].split(",")}
            assert {"return=minimal", "resolution=merge-duplicates"} <= prefer
        for s in secs:
            text = section_text(s["title"], s["content"])
            assert fake.rows[s["id"]]["embedding"] == vector_literal(vector_for(text))

    @pytest.mark.parametrize(
        "too_large",
        [
            lambda: httpx.Response(413, json={"message": "Request Entity Too Large"}),  # gateway, no code
            lambda: httpx.Response(413, html="<html>413 Request Entity Too Large</html>"),
            lambda: postgrest_error(500, "57014", "canceling statement due to statement timeout"),
        ],
        ids=["413-json", "413-html", "57014"],
    )
    def test_too_large_chunk_is_halved(self, router, sleeps, too_large):
        store = SupabaseStore(url=URL, key=KEY, rows_per_request=8, sleep=sleeps.append)
        fake = FakeSupabase(fail=lambda body, attempt: too_large() if len(body) > 2 else None).serve(router)
        result = store.batch_ingest_embeddings(sections(range(1, 9)), make_service()[0])
        assert result["success_count"] == 8 and result["failed_count"] == 0
        assert [len(b) for b in fake.bodies()] == [8, 4, 2, 2, 4, 2, 2]
        assert sleeps == []

    def test_bad_row_isolated_row_by_row(self, router, sleeps):
        store = SupabaseStore(url=URL, key=KEY, rows_per_request=4, sleep=sleeps.append)

        def answer(body, attempt):
            if 3 in ids_in(body):
                return postgrest_error(400, "22P02", 'invalid input syntax for type vector: "[nan]"')
            return httpx.Response(201)

        fake = FakeSupabase(fail=answer).serve(router)
        result = store.batch_ingest_embeddings(sections(range(1, 9)), make_service()[0])
        assert result["success_count"] == 7 and result["failed_ids"] == [3]
        assert result["failures"][0]["reason"] == 'store failed: 22P02: invalid input syntax for type vector: "[nan]"'
        singles = sorted(b["section_id"] for b in fake.bodies() if isinstance(b, dict))
        assert singles == [1, 2, 3, 4]
        assert sorted(fake.rows) == [1, 2, 4, 5, 6, 7, 8]


# --- the key -------------------------------------------------------------------------------


class TestKeyStaysSecret:
    def test_key_not_in_repr_reasons_or_logs(self, router, sleeps, caplog):
        caplog.set_level(logging.DEBUG)

        def answer(body, attempt):
            section_id = body["section_id"]
            if section_id == 1:
                return postgrest_error(401, "PGRST301", f"JWT {KEY} is invalid")
            if section_id == 2:
                return httpx.Response(503, text=f"upstream rejected apikey {KEY}")
            return httpx.Response(201)

        store = SupabaseStore(url=URL, key=KEY, sleep=sleeps.append)
        FakeSupabase(fail=answer).serve(router)
        result = store.batch_ingest_embeddings(sections([1, 2, 3]), make_service()[0])
        assert result["failed_ids"] == [1, 2] and result["success_count"] == 1
        reasons = [f["reason"] for f in result["failures"]]
        assert reasons[0] == "store failed: PGRST301: JWT *** is invalid"
        assert reasons[1].startswith("store failed: 503: ")
        assert KEY not in json.dumps(result)
        assert KEY not in repr(store)
        assert "HTTP Request: POST" in caplog.text  # httpx did log the requests...
        assert KEY not in caplog.text  # ...without the key
