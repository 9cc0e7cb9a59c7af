"""The shared ingest pipeline (`core.stores.ingest.SectionStore`): windows, progress, services with only the seed API, another store.

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

from typing import Any

import pytest

from core.errors import ConfigurationError
from core.stores.ingest import IngestProgress, SectionStore, section_text
from core.engine.rows import Row
from fake_supabase import FakeSupabase, api_error
from store_helpers import (
    assert_accounted,
    assert_stored_faithfully,
    make_service,
    make_store,
    sections,
    vector_for,
)


# --- windows and progress ------------------------------------------------------------------


class TestWindows:
    def test_generator_in_windows_matches_a_list(self):
        secs = sections(range(1, 24)) + [{"id": 5, "title": "dup", "content": "x"}, {"id": "bad"}]
        fail = lambda body, attempt: api_error("22P02") if body["section_id"] == 11 else None  # noqa: E731

        list_fake = FakeSupabase(fail=fail)
        service, _ = make_service()
        from_list = make_store(list_fake).batch_ingest_embeddings(list(secs), service)

        consumed: list[int] = []

        def generate():
            for s in secs:
                consumed.append(1)
                yield s

        gen_fake = FakeSupabase(fail=fail)
        service2, api2 = make_service()
        windows: list[int] = []
        store = make_store(gen_fake)
        original = store.write_rows

        def write_rows(rows):
            windows.append(len(consumed))  # how much of the generator was read at each write
            return original(rows)

        store.write_rows = write_rows  # type: ignore[method-assign]
        from_gen = store.batch_ingest_embeddings(generate(), service2, window=5)

        assert from_gen == from_list
        assert_accounted(from_gen, len(secs))
        assert gen_fake.rows == list_fake.rows
        assert windows == [5, 10, 15, 20, 25]  # read a window at a time, not all up front
        assert len(api2.calls) == 5

    def test_progress_totals_increase_to_the_final_counts(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("22P02") if body["section_id"] == 4 else None)
        store = make_store(fake)
        store.batch_ingest_embeddings(sections([1, 2]), make_service()[0])
        snapshots: list[tuple[int, ...]] = []

        def progress(p: IngestProgress) -> None:
            snapshots.append((p.seen, p.stored, p.skipped, p.failed, p.tokens, p.embedded_inputs, p.embed_requests, p.done))

        batch = sections(range(1, 13)) + [{"id": 99}]
        result = store.batch_ingest_embeddings(batch, make_service()[0], window=4, progress=progress)
        assert len(snapshots) > 3
        for before, after in zip(snapshots, snapshots[1:]):
            assert all(later >= earlier for earlier, later in zip(before, after)), (before, after)
        seen, stored, skipped, failed, tokens, embedded, requests, done = snapshots[-1]
        assert (seen, stored, skipped, failed, tokens) == (
            13, result["success_count"], result["skipped_count"], result["failed_count"], result["total_tokens"],
        )
        assert done == 13 and (stored, skipped, failed) == (9, 2, 2)
        assert embedded == 10 and requests == 3  # 3..12 embedded; 4 then fails at the store

    @pytest.mark.parametrize("window", [0, -1])
    def test_window_must_be_positive(self, window):
        with pytest.raises(ConfigurationError, match="window"):
            make_store().batch_ingest_embeddings([], make_service()[0], window=window)

    @pytest.mark.parametrize("batch_size", [0, 2049, True, 1.5])
    def test_batch_size_in_range(self, batch_size):
        with pytest.raises(ConfigurationError, match="batch_size"):
            make_store().batch_ingest_embeddings([], make_service()[0], batch_size=batch_size)

    def test_batch_size_bounds_inputs_per_request(self):
        service, api = make_service()
        result = make_store().batch_ingest_embeddings(sections(range(1, 11)), service, batch_size=3)
        assert result["success_count"] == 10
        assert sorted(len(c) for c in api.inputs) == [1, 3, 3, 3]


# --- services with only the seed API -------------------------------------------------------


class SeedOnlyService:
    """An embedder with the seed's `batch_generate_embeddings` and no `embed`."""

    model = "seed-model"

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[list[str]] = []

    def batch_generate_embeddings(self, texts: list[str], max_batch_size: int | None = None) -> dict[str, Any]:
        self.calls.append(list(texts))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(texts)


class TestSeedApiService:
    def test_all_vectors_stored_in_order(self):
        fake = FakeSupabase()
        service = SeedOnlyService(lambda texts: {"embeddings": [vector_for(t).tolist() for t in texts], "total_tokens": 42})
        secs = sections([1, 2, 3])
        result = make_store(fake).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 3 and result["total_tokens"] == 42
        assert_stored_faithfully(fake, secs, model="seed-model")

    def test_failed_indices_fail_their_sections_only(self):
        fake = FakeSupabase()

        def answer(texts):
            keep = [0, 2]
            return {
                "embeddings": [vector_for(texts[i]).tolist() for i in keep],
                "indices": keep,
                "failed_indices": [1],
                "errors": {1: "HTTP 400: bad input"},
                "total_tokens": 9,
            }

        result = make_store(fake).batch_ingest_embeddings(sections([1, 2, 3]), SeedOnlyService(answer))
        assert result["success_count"] == 2 and result["failed_ids"] == [2]
        assert result["failures"][0]["reason"] == "embedding failed: HTTP 400: bad input"
        assert_stored_faithfully(fake, [sections([1, 2, 3])[i] for i in (0, 2)], model="seed-model")

    def test_failed_indices_without_indices(self):
        fake = FakeSupabase()
        answer = lambda texts: {"embeddings": [vector_for(texts[1]).tolist()], "failed_indices": [0]}  # noqa: E731
        result = make_store(fake).batch_ingest_embeddings(sections([1, 2]), SeedOnlyService(answer))
        assert result["failed_ids"] == [1] and result["failures"][0]["reason"] == "embedding failed: failed"
        assert_stored_faithfully(fake, sections([2]), model="seed-model")

    def test_raising_service_fails_every_section(self):
        result = make_store().batch_ingest_embeddings(sections([1, 2]), SeedOnlyService(RuntimeError("quota")))
        assert result["failed_ids"] == [1, 2] and result["success_count"] == 0
        assert all(f["reason"] == "embedding failed: RuntimeError: quota" for f in result["failures"])

    def test_fewer_vectors_than_inputs_stores_nothing(self):
        """8 vectors for 10 texts and no indices: nothing says which text each vector is."""
        fake = FakeSupabase()
        answer = lambda texts: {"embeddings": [vector_for(t).tolist() for t in texts[2:]], "failed_indices": []}  # noqa: E731
        result = make_store(fake).batch_ingest_embeddings(sections(range(1, 11)), SeedOnlyService(answer))
        assert result["success_count"] == 0 and result["failed_ids"] == list(range(1, 11))
        assert all("8 vectors for 10" in f["reason"] for f in result["failures"])
        assert fake.rows == {}

    def test_indices_and_embeddings_of_different_lengths_store_nothing(self):
        fake = FakeSupabase()
        answer = lambda texts: {"embeddings": [vector_for(texts[0]).tolist()], "indices": [0, 1]}  # noqa: E731
        result = make_store(fake).batch_ingest_embeddings(sections([1, 2]), SeedOnlyService(answer))
        assert result["success_count"] == 0 and result["failed_ids"] == [1, 2]
        assert fake.rows == {}


# --- the pipeline is the store's base class ------------------------------------------------


class DictStore(SectionStore):
    """The smallest store: the pipeline over a dict, with SectionStore's own clock."""

    table = "mem"

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}

    def fetch_hashes(self, section_ids):
        return {i: (self.rows[i].content_hash, self.rows[i].model) for i in section_ids if i in self.rows}

    def write_rows(self, rows):
        self.rows.update({row.section_id: row for row in rows})
        return {}

    def search_vector(self, vector, k=5, threshold=None):
        return []


def test_pipeline_on_another_store_uses_the_base_clock_and_float32_rows():
    store = DictStore()
    service, _ = make_service()
    secs = sections([1, 2])
    result = store.batch_ingest_embeddings(secs, service)
    assert result["success_count"] == 2
    for s in secs:
        row = store.rows[s["id"]]
        assert row.embedding == vector_for(section_text(s["title"], s["content"]))
        assert row.embedding.typecode == "f"
        assert row.updated_at.endswith("+00:00")
    assert store.batch_ingest_embeddings(secs, service)["skipped_ids"] == [1, 2]
