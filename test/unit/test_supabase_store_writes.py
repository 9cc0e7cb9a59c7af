"""SupabaseStore writes: skipping unchanged rows, concurrency, transient retries, bulk mode.

The supabase client is `FakeSupabase` (test/support/fake_supabase.py), the
suite's one Supabase fake, here through its client face: it keeps the rows it
was given, so a test can check what was stored under which id. The embeddings
come from a real `EmbeddingService` over `FakeOpenAIClient`, whose vectors
depend on the text, so a vector stored under the wrong section is caught. No
network, no real sleeps: every retry sleeps through an injected recorder. The
wire format of the same calls (real supabase-py over respx, answered by the
same fake) is in test_supabase_http.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from core.errors import StoreError
from core.stores.ingest import HASH_LOOKUP_CHUNK, content_hash, section_text
from core.engine.rows import vector_literal
from fake_supabase import FakeSupabase, api_error
from store_helpers import (
    MODEL,
    assert_accounted,
    assert_stored_faithfully,
    make_service,
    make_store,
    sections,
    vector_for,
)


# --- incremental ---------------------------------------------------------------------------


class TestIncremental:
    def test_unchanged_rows_are_skipped_without_calling_the_api(self):
        fake = FakeSupabase()
        store = make_store(fake)
        service, api = make_service()
        secs = sections(range(1, 21))
        first = store.batch_ingest_embeddings(secs, service)
        assert first["success_count"] == 20
        api.calls.clear()
        fake.upserts.clear()

        second = store.batch_ingest_embeddings(secs, service)
        assert second["skipped_count"] == 20 and second["success_count"] == 0
        assert second["skipped_ids"] == list(range(1, 21))
        assert second["total_tokens"] == 0
        assert api.calls == [] and fake.upserts == []
        assert_accounted(second, 20)

    def test_changed_content_or_model_is_re_embedded(self):
        fake = FakeSupabase()
        store = make_store(fake)
        service, _ = make_service()
        secs = sections(range(1, 6))
        store.batch_ingest_embeddings(secs, service)

        secs[1] = {"id": 2, "title": "Section 2", "content": "Rewritten."}
        service2, api2 = make_service()
        result = store.batch_ingest_embeddings(secs, service2)
        assert result["success_count"] == 1 and result["skipped_ids"] == [1, 3, 4, 5]
        assert api2.texts == ["Section 2\n\nRewritten."]
        assert fake.rows[2]["embedding"] == vector_literal(vector_for("Section 2\n\nRewritten."))

        other_model, api3 = make_service(model="text-embedding-3-large")
        result = store.batch_ingest_embeddings(secs, other_model)
        assert result["success_count"] == 5 and result["skipped_count"] == 0
        assert len(api3.texts) == 5
        assert {r["model"] for r in fake.rows.values()} == {"text-embedding-3-large"}

    def test_skip_unchanged_false_re_embeds_and_never_looks_up(self):
        fake = FakeSupabase()
        store = make_store(fake)
        service, api = make_service()
        store.batch_ingest_embeddings(sections([1, 2]), service)
        fake.selects.clear()
        result = store.batch_ingest_embeddings(sections([1, 2]), service, skip_unchanged=False)
        assert result["success_count"] == 2 and fake.selects == []

    def test_hash_lookup_is_chunked(self):
        fake = FakeSupabase()
        n = 2 * HASH_LOOKUP_CHUNK + 203
        secs = sections(range(1, n + 1))
        service, api = make_service()
        for s in secs:  # pre-stored, unchanged
            text = section_text(s["title"], s["content"])
            fake.rows[s["id"]] = {"content_hash": content_hash(text), "model": MODEL}
        result = make_store(fake).batch_ingest_embeddings(secs, service)
        assert result["skipped_count"] == n and api.calls == []
        sizes = [len(ids) for _t, _c, _col, ids in fake.selects]
        assert sizes == [500, 500, 203]
        assert all(size <= 500 for size in sizes)
        assert [i for *_rest, ids in fake.selects for i in ids] == list(range(1, n + 1))
        assert {(t, c, col) for t, c, col, _ in fake.selects} == {
            ("section_embeddings", "section_id,content_hash,model,metadata,source", "section_id")
        }

    @pytest.mark.parametrize("failing_chunk", [0, 1], ids=["first-chunk", "second-chunk"])
    def test_failing_lookup_stops_the_run_with_what_was_stored(self, failing_chunk):
        """Issue #8 (5): a lookup failure is no longer swallowed (that re-embedded, i.e. paid
        for, sections the store may hold and then failed to store them): the run stops with a
        `StoreError` whose report counts exactly what was stored before it."""
        fake = FakeSupabase()
        store = make_store(fake)
        service, api = make_service()
        secs = sections(range(1, 601))
        store.batch_ingest_embeddings(secs, service)
        api.calls.clear()
        fake.select_fail = lambda ids: (  # that chunk's lookup fails every time (retries included)
            httpx.ConnectError("connection refused") if ids[0] == secs[HASH_LOOKUP_CHUNK * failing_chunk]["id"] else None
        )
        with pytest.raises(StoreError, match="connection refused") as info:
            store.batch_ingest_embeddings(secs, service)
        assert api.calls == []  # nothing paid for
        assert info.value.report["success_count"] == 0 and info.value.report["skipped_count"] == 0

    def test_fetch_hashes_ignores_malformed_records(self, mock_supabase_store):
        """Records PostgREST should never send (ids not asked for, junk) are skipped, not trusted; an id
        comes back keyed as it was asked for (a text table answers "4" for 4)."""
        execute = mock_supabase_store.client.table.return_value.select.return_value.in_.return_value.execute
        execute.return_value = SimpleNamespace(
            data=[{"section_id": "4", "content_hash": "h", "model": "m"}, "junk", {"content_hash": "x"}, {"section_id": 9}]
        )
        assert mock_supabase_store.fetch_hashes([4, 5]) == {4: ("h", "m", {}, True, None)}
        execute.return_value = SimpleNamespace(data=None)
        assert mock_supabase_store.fetch_hashes([4]) == {}


# --- concurrency ---------------------------------------------------------------------------


class TestConcurrency:
    def test_row_upserts_overlap_up_to_max_concurrency(self):
        fake = FakeSupabase(delay=0.01)
        service, _ = make_service()
        result = make_store(fake, max_concurrency=4).batch_ingest_embeddings(sections(range(1, 41)), service)
        assert result["success_count"] == 40
        assert 1 < fake.max_in_flight <= 4

    def test_max_concurrency_one_is_serial(self):
        fake = FakeSupabase(delay=0.002)
        service, _ = make_service()
        result = make_store(fake, max_concurrency=1).batch_ingest_embeddings(sections(range(1, 11)), service)
        assert result["success_count"] == 10 and fake.max_in_flight == 1

    def test_bulk_chunks_overlap_too(self):
        fake = FakeSupabase(delay=0.01)
        service, _ = make_service()
        store = make_store(fake, max_concurrency=3, rows_per_request=5)
        result = store.batch_ingest_embeddings(sections(range(1, 51)), service)
        assert result["success_count"] == 50
        assert 1 < fake.max_in_flight <= 3


# --- transient retries ---------------------------------------------------------------------

TRANSIENT = [
    lambda: api_error("503", "Service Unavailable"),
    lambda: api_error("57014", "canceling statement due to statement timeout"),
    lambda: api_error("PGRST001", "Database client error"),
    lambda: api_error("08006", "connection failure"),
    lambda: api_error("40P01", "deadlock detected"),
    lambda: api_error("429", "Too Many Requests"),
    lambda: httpx.ConnectError("connection refused"),
    lambda: httpx.ReadTimeout("timed out"),
]


class TestRetries:
    @pytest.mark.parametrize("make_error", TRANSIENT, ids=["503", "57014", "PGRST001", "08006", "40P01", "429", "connect", "timeout"])
    def test_transient_error_retried_then_stored(self, make_error):
        sleeps: list[float] = []
        fake = FakeSupabase(fail=lambda body, attempt: make_error() if body["section_id"] == 2 and attempt < 2 else None)
        service, _ = make_service()
        result = make_store(fake, row_retries=2, sleep=sleeps.append).batch_ingest_embeddings(sections([1, 2, 3]), service)
        assert result["success_count"] == 3 and result["failed_count"] == 0
        assert fake.attempts[2] == 3 and fake.attempts[1] == fake.attempts[3] == 1
        assert sleeps == [0.5, 1.0]
        assert_stored_faithfully(fake, sections([1, 2, 3]))

    @pytest.mark.parametrize(
        "make_error,expected",
        [
            (TRANSIENT[0], "store failed: 503: Service Unavailable"),
            (TRANSIENT[1], "store failed: 57014: canceling statement due to statement timeout"),
            (TRANSIENT[6], "store failed: ConnectError: connection refused"),
        ],
        ids=["503", "57014", "connect"],
    )
    def test_transient_error_reported_with_its_code_after_row_retries(self, make_error, expected):
        sleeps: list[float] = []
        fake = FakeSupabase(fail=lambda body, attempt: make_error() if body["section_id"] == 2 else None)
        service, _ = make_service()
        store = make_store(fake, row_retries=3, sleep=sleeps.append)
        result = store.batch_ingest_embeddings(sections([1, 2, 3]), service)
        assert result["success_count"] == 2 and result["failed_ids"] == [2]
        assert result["failures"][0]["reason"] == expected
        assert fake.attempts[2] == 4
        assert sleeps == [0.5, 1.0, 2.0]

    @pytest.mark.parametrize(
        "error",
        [api_error("22P02", "invalid input syntax for type vector"), api_error("23505", "duplicate key"),
         api_error("42501", "permission denied"), api_error("400", "Bad Request"), ValueError("bad")],
        ids=["22P02", "23505", "42501", "400", "ValueError"],
    )
    def test_permanent_error_is_not_retried(self, error):
        sleeps: list[float] = []
        fake = FakeSupabase(fail=lambda body, attempt: error if body["section_id"] == 1 else None)
        service, _ = make_service()
        result = make_store(fake, row_retries=5, sleep=sleeps.append).batch_ingest_embeddings(sections([1, 2]), service)
        assert result["failed_ids"] == [1] and result["success_count"] == 1
        assert fake.attempts[1] == 1 and sleeps == []
        code = getattr(error, "code", None) or "ValueError"
        assert result["failures"][0]["reason"].startswith(f"store failed: {code}: ")

    def test_row_retries_zero_means_one_attempt(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("503"))
        service, _ = make_service()
        result = make_store(fake, row_retries=0).batch_ingest_embeddings(sections([1]), service)
        assert result["failed_ids"] == [1] and fake.attempts[1] == 1

    def test_backoff_is_capped(self):
        sleeps: list[float] = []
        fake = FakeSupabase(fail=lambda body, attempt: api_error("503"))
        service, _ = make_service()
        make_store(fake, row_retries=8, sleep=sleeps.append).batch_ingest_embeddings(sections([1]), service)
        assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]

    def test_error_without_message_falls_back_to_its_type(self):
        class Silent(Exception):
            pass

        fake = FakeSupabase(fail=lambda body, attempt: Silent())
        service, _ = make_service()
        result = make_store(fake).batch_ingest_embeddings(sections([1]), service)
        assert result["failures"][0]["reason"] == "store failed: Silent: Silent"


# --- bulk mode -----------------------------------------------------------------------------


def bulk_sizes(fake: FakeSupabase) -> list[int]:
    return [len(body) if isinstance(body, list) else 1 for _t, body, _k in fake.upserts]


class TestBulk:
    def test_rows_go_in_lists_of_at_most_n(self):
        fake = FakeSupabase()
        service, _ = make_service()
        secs = sections(range(1, 11))
        result = make_store(fake, rows_per_request=4).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 10
        assert all(isinstance(body, list) for _t, body, _k in fake.upserts)
        assert sorted(bulk_sizes(fake)) == [2, 4, 4]
        assert all(k == {"on_conflict": "section_id", "returning": "minimal"} for *_x, k in fake.upserts)
        assert sorted(r["section_id"] for r in fake.row_bodies()) == list(range(1, 11))
        assert_stored_faithfully(fake, secs)

    @pytest.mark.parametrize("code", ["413", "57014"])
    def test_chunk_too_large_is_halved_until_it_fits(self, code):
        fake = FakeSupabase(fail=lambda body, attempt: api_error(code, "too big") if isinstance(body, list) and len(body) > 2 else None)
        service, _ = make_service()
        secs = sections(range(1, 9))
        result = make_store(fake, rows_per_request=8).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 8 and result["failed_count"] == 0
        assert bulk_sizes(fake) == [8, 4, 2, 2, 4, 2, 2]  # 8 -> 4+4 -> 2+2 each, none row by row
        assert_stored_faithfully(fake, secs)

    def test_timeout_on_a_single_row_is_retried_then_reported(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("57014", "statement timeout") if any(r["section_id"] == 3 for r in body) else None)
        sleeps: list[float] = []
        service, _ = make_service()
        store = make_store(fake, rows_per_request=4, row_retries=2, sleep=sleeps.append)
        result = store.batch_ingest_embeddings(sections(range(1, 5)), service)
        assert result["failed_ids"] == [3] and result["success_count"] == 3
        assert result["failures"][0]["reason"] == "store failed: 57014: statement timeout"
        assert fake.attempts[(3,)] == 3 and sleeps == [0.5, 1.0]

    def test_bad_row_in_a_chunk_falls_back_to_row_by_row(self):
        def fail(body, attempt):
            rows = body if isinstance(body, list) else [body]
            if any(r["section_id"] == 6 for r in rows):
                return api_error("22P02", "invalid input syntax for type vector")
            return None

        fake = FakeSupabase(fail=fail)
        service, _ = make_service()
        secs = sections(range(1, 11))
        result = make_store(fake, rows_per_request=5).batch_ingest_embeddings(secs, service)
        assert result["failed_ids"] == [6] and result["success_count"] == 9
        assert result["failures"][0]["reason"] == "store failed: 22P02: invalid input syntax for type vector"
        singles = sorted(body["section_id"] for _t, body, _k in fake.upserts if isinstance(body, dict))
        assert singles == [6, 7, 8, 9, 10]  # only the failed chunk went row by row
        assert_stored_faithfully(fake, [s for s in secs if s["id"] != 6])
        assert 6 not in fake.rows

    def test_transient_chunk_error_is_retried_as_a_chunk(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("503") if attempt == 0 else None)
        sleeps: list[float] = []
        service, _ = make_service()
        result = make_store(fake, rows_per_request=5, sleep=sleeps.append).batch_ingest_embeddings(sections(range(1, 6)), service)
        assert result["success_count"] == 5
        assert bulk_sizes(fake) == [5, 5] and sleeps == [0.5]

    def test_chunk_transient_forever_ends_row_by_row_with_each_id(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("503", "Service Unavailable"))
        service, _ = make_service()
        result = make_store(fake, rows_per_request=3, row_retries=1).batch_ingest_embeddings(sections([1, 2, 3]), service)
        assert result["failed_ids"] == [1, 2, 3]
        assert all(f["reason"] == "store failed: 503: Service Unavailable" for f in result["failures"])
        assert fake.attempts[(1, 2, 3)] == 2 and all(fake.attempts[i] == 2 for i in (1, 2, 3))

    def test_single_row_chunk_failing_reports_its_id(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("23502", "null value"))
        service, _ = make_service()
        result = make_store(fake, rows_per_request=2).batch_ingest_embeddings(sections([1, 2, 3]), service)
        assert result["failed_ids"] == [1, 2, 3]
        assert all(f["reason"] == "store failed: 23502: null value" for f in result["failures"])
