"""SupabaseStore rows: what goes on the wire for each section, and bad sections failing alone.

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

import array
import hashlib
import random
from typing import Any

import pytest

from core.stores.ingest import content_hash, section_text
from core.engine.rows import Row, vector_literal
from core.supabase_store import SupabaseStore
from core.engine.tokens import count_tokens
from fake_supabase import FakeSupabase, api_error
from store_helpers import (
    MODEL,
    NOW,
    assert_accounted,
    assert_stored_faithfully,
    make_service,
    make_store,
    parse_literal,
    sections,
    vector_for,
)


# --- rows on the wire ----------------------------------------------------------------------


class TestRowContent:
    def test_each_section_stored_under_its_own_id_with_its_own_vector(self):
        fake = FakeSupabase()
        store = make_store(fake)
        service, api = make_service()
        secs = sections(range(1, 31))
        result = store.batch_ingest_embeddings(secs, service)

        assert result["success_count"] == 30 and result["failed_count"] == 0
        assert_accounted(result, 30)
        assert len(fake.upserts) == 30  # one request per row
        for table, body, kwargs in fake.upserts:
            assert table == "section_embeddings"
            assert isinstance(body, dict)
            assert kwargs == {"on_conflict": "section_id", "returning": "minimal"}
            section = secs[body["section_id"] - 1]
            text = section_text(section["title"], section["content"])
            assert body == {
                "section_id": section["id"],
                "title": section["title"],
                "embedding": vector_literal(vector_for(text)),
                "model": MODEL,
                "content_hash": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "token_count": count_tokens(text),
                "updated_at": NOW,
                "content": section["content"],  # the corpus store keeps the text (issue #17)
                "metadata": {},
            }
        assert_stored_faithfully(fake, secs)
        assert result["total_tokens"] == sum(count_tokens(t) for t in api.texts)

    def test_text_joins_title_and_content_and_drops_an_empty_title(self):
        fake = FakeSupabase()
        service, api = make_service()
        secs = [
            {"id": 1, "title": "Intro", "content": "Hello."},
            {"id": 2, "title": "", "content": "Only content."},
            {"id": 3, "title": "Only title", "content": ""},
        ]
        result = make_store(fake).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 3
        assert sorted(api.texts) == sorted(["Intro\n\nHello.", "Only content.", "Only title\n\n"])
        assert fake.rows[1]["content_hash"] == content_hash("Intro\n\nHello.")
        assert fake.rows[2]["content_hash"] == hashlib.sha256(b"Only content.").hexdigest()
        assert fake.rows[2]["embedding"] == vector_literal(vector_for("Only content."))
        assert section_text("", "x") == "x" and section_text("t", "x") == "t\n\nx"

    def test_vector_literal_round_trips_float32_exactly(self):
        rng = random.Random(7)
        values = [rng.uniform(-1, 1) for _ in range(3000)]
        values += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-40, 38) for _ in range(3000)]
        values += [0.0, -0.0, 1.0, -1.0, 1e-45, 1.17549435e-38, 3.4028234e38, 0.1, 1 / 3]
        vector = array.array("f", values)
        literal = vector_literal(vector)
        assert "e+" in literal or "e-" in literal  # exponents kept, not flattened
        back = parse_literal(literal)
        assert back.tobytes() == vector.tobytes()  # bit for bit, -0.0 included
        assert vector_literal([]) == "[]"

    def test_row_payload_is_the_json_object_sent(self):
        row = Row(7, "T", array.array("f", [0.5, -0.25]), "m", "h" * 64, 3, NOW)
        assert SupabaseStore.row_payload(row) == {
            "section_id": 7,
            "title": "T",
            "embedding": "[0.5,-0.25]",
            "model": "m",
            "content_hash": "h" * 64,
            "token_count": 3,
            "updated_at": NOW,
            "content": None,
            "metadata": {},
        }
        with_text = Row(7, "T", array.array("f", [0.5]), "m", "h", 3, NOW, "the text", {"lang": "de", "page": 2})
        assert SupabaseStore.row_payload(with_text)["content"] == "the text"
        assert SupabaseStore.row_payload(with_text)["metadata"] == {"lang": "de", "page": 2}

    def test_model_recorded_is_the_services(self):
        fake = FakeSupabase()
        service, _ = make_service(model="text-embedding-3-large")
        make_store(fake).batch_ingest_embeddings(sections([1]), service)
        assert fake.rows[1]["model"] == "text-embedding-3-large"

    def test_updated_at_comes_from_the_store_clock(self, mocker):
        clock = mocker.patch("core.supabase_store.datetime")
        clock.now.return_value.isoformat.return_value = "2030-01-01T00:00:00+00:00"
        fake = FakeSupabase()
        store = SupabaseStore(client=fake, sleep=lambda _s: None)
        service, _ = make_service()
        store.batch_ingest_embeddings(sections([1, 2]), service)
        assert {r["updated_at"] for r in fake.rows.values()} == {"2030-01-01T00:00:00+00:00"}


# --- bad sections --------------------------------------------------------------------------

BAD_SECTIONS = [
    ({"title": "t", "content": "c"}, "missing 'id'"),
    ({"id": 90, "content": "c"}, "missing 'title'"),
    ({"id": 90, "title": "t"}, "missing 'content'"),
    ({"id": "", "title": "t", "content": "c"}, "'id' is an empty string"),
    ({"id": 90.0, "title": "t", "content": "c"}, "'id' must be an integer or a string, not float"),
    ({"id": True, "title": "t", "content": "c"}, "'id' must be an integer or a string, not bool"),
    ({"id": None, "title": "t", "content": "c"}, "'id' must be an integer or a string, not NoneType"),
    ({"id": 2**63, "title": "t", "content": "c"}, "outside the bigint range"),
    ({"id": -(2**63) - 1, "title": "t", "content": "c"}, "outside the bigint range"),
    ({"id": 90, "title": 5, "content": "c"}, "'title' must be a string, not int"),
    ({"id": 90, "title": "t", "content": b"bytes"}, "'content' must be a string, not bytes"),
    ({"id": 90, "title": "t", "content": None}, "'content' must be a string, not NoneType"),
    ({"id": 90, "title": "t\x00", "content": "c"}, "'title' contains a NUL byte"),
    ({"id": 90, "title": "t", "content": "a\x00b"}, "'content' contains a NUL byte"),
    ({"id": 90, "title": "t", "content": "x\ud800y"}, "'content' is not valid Unicode (lone surrogate at position 1)"),
    ({"id": 90, "title": "\udfff", "content": "c"}, "'title' is not valid Unicode"),
    ({"id": 90, "title": "", "content": ""}, "title and content are both empty"),
    ({"id": 90, "title": "  ", "content": "\n\t"}, "title and content are both empty"),
    (["id", 90], "section must be a dict with id, title, content, not list"),
    (None, "section must be a dict with id, title, content, not NoneType"),
    ("a section", "section must be a dict with id, title, content, not str"),
]


class TestBadSections:
    @pytest.mark.parametrize("bad,reason", BAD_SECTIONS, ids=[r for _, r in BAD_SECTIONS])
    def test_bad_section_fails_alone_with_its_reason(self, bad, reason):
        fake = FakeSupabase()
        service, api = make_service()
        good = sections([1, 2, 3, 4])
        batch = good[:2] + [bad] + good[2:]
        result = make_store(fake).batch_ingest_embeddings(batch, service)

        assert result["success_count"] == 4
        assert result["failed_count"] == 1
        assert_accounted(result, 5)
        failure = result["failures"][0]
        assert failure["index"] == 2
        assert reason in failure["reason"]
        expected_id = bad.get("id") if isinstance(bad, dict) else None
        assert failure["id"] == expected_id and result["failed_ids"] == [expected_id]
        assert sorted(fake.rows) == [1, 2, 3, 4]
        assert_stored_faithfully(fake, good)
        assert len(api.texts) == 4  # the bad one never reached the API

    def test_bigint_bounds_themselves_are_valid(self):
        fake = FakeSupabase()
        service, _ = make_service()
        secs = [{"id": 2**63 - 1, "title": "max", "content": "c"}, {"id": -(2**63), "title": "min", "content": "c"}]
        result = make_store(fake).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 2 and sorted(fake.rows) == [-(2**63), 2**63 - 1]

    def test_unhashable_id_is_reported_as_none(self):
        service, _ = make_service()
        result = make_store().batch_ingest_embeddings([{"id": [1], "title": "t", "content": "c"}], service)
        assert result["failed_ids"] == [None]
        assert "'id' must be an integer or a string, not list" in result["failures"][0]["reason"]

    def test_duplicate_id_first_stored_later_ones_failed(self):
        fake = FakeSupabase()
        service, api = make_service()
        batch = [
            {"id": 1, "title": "first", "content": "one"},
            {"id": 2, "title": "two", "content": "two"},
            {"id": 1, "title": "second", "content": "other"},
            {"id": 1, "title": "third", "content": "again"},
        ]
        result = make_store(fake).batch_ingest_embeddings(batch, service)
        assert result["success_count"] == 2
        assert result["failed_ids"] == [1, 1]
        assert [f["index"] for f in result["failures"]] == [2, 3]
        assert all("duplicate id (first seen at index 0)" in f["reason"] for f in result["failures"])
        assert fake.rows[1]["title"] == "first"
        assert fake.rows[1]["embedding"] == vector_literal(vector_for("first\n\none"))
        assert "second\n\nother" not in api.texts
        assert len(fake.upserts) == 2

    def test_duplicate_across_windows_is_caught(self):
        fake = FakeSupabase()
        service, _ = make_service()
        batch = sections([1, 2, 3]) + [{"id": 2, "title": "late", "content": "dup"}]
        result = make_store(fake).batch_ingest_embeddings(batch, service, window=2)
        assert result["failed_ids"] == [2] and result["failures"][0]["index"] == 3
        assert fake.rows[2]["title"] == "Section 2"

    def test_an_invalid_first_occurrence_does_not_block_a_valid_one(self):
        fake = FakeSupabase()
        service, _ = make_service()
        batch = [{"id": 1, "title": 5, "content": "c"}, {"id": 1, "title": "ok", "content": "c"}]
        result = make_store(fake).batch_ingest_embeddings(batch, service)
        assert result["success_count"] == 1 and result["failed_ids"] == [1]
        assert fake.rows[1]["title"] == "ok"

    def test_input_the_api_cannot_take_fails_alone(self):
        """An over-long section (per-input token limit) fails with the embedder's reason."""
        fake = FakeSupabase()
        service, _ = make_service(max_tokens_per_input=20)
        batch = sections([1, 2]) + [{"id": 3, "title": "long", "content": "word " * 100}]
        result = make_store(fake).batch_ingest_embeddings(batch, service)
        assert result["success_count"] == 2 and result["failed_ids"] == [3]
        assert result["failures"][0]["reason"].startswith("embedding failed: ")
        assert "token input limit" in result["failures"][0]["reason"]
        assert 3 not in fake.rows

    def test_everything_at_once_is_accounted_exactly(self):
        """Bad sections, duplicates, unchanged rows and failing writes in one call."""
        fake = FakeSupabase(fail=lambda body, attempt: api_error("22P02") if body["section_id"] % 7 == 0 else None)
        service, _ = make_service()
        store = make_store(fake)
        store.batch_ingest_embeddings(sections(range(100, 110)), service)  # stored before
        batch: list[Any] = sections(range(1, 40)) + sections(range(100, 110))
        batch += [bad for bad, _ in BAD_SECTIONS] + sections([5, 6])
        random.Random(3).shuffle(batch)
        result = store.batch_ingest_embeddings(batch, service, window=9)
        assert_accounted(result, len(batch))
        assert result["skipped_count"] == 9  # 100..109 minus 105 (never stored: 105 % 7 == 0)
        assert set(result["skipped_ids"]) == set(range(100, 110)) - {105}
        valid_new = set(range(1, 40)) | {105}
        multiples = {i for i in valid_new if i % 7 == 0}
        assert result["success_count"] == len(valid_new - multiples)
        assert result["failed_count"] == len(BAD_SECTIONS) + 2 + len(multiples)
        assert [f["index"] for f in result["failures"]] == sorted(f["index"] for f in result["failures"])
