"""Sections into batch files: the online plan's packing, skips, failures, and what the job already holds."""

from __future__ import annotations

import json

import pytest
from fakes_batch import MemoryStore

from core import EmbeddingService
from core.batch_api import BatchLimits, estimate
from core.batch_api.files import BatchWriter
from core.batch_api.job import JobStore
from core.batch_api.prepare import Preparer
from core.engine.ingest_run import IngestRun, content_hash, section_text
from core.engine.rows import Row

MODEL = "text-embedding-3-small"


@pytest.fixture
def service():
    with EmbeddingService(api_key="never-sent", model=MODEL) as s:
        yield s


def sections(n, start=1, words=20):
    return [{"id": i, "title": f"Title {i}", "content": " ".join(f"w{i}x{k}" for k in range(words))}
            for i in range(start, start + n)]


def _prepare(tmp_path, service, store, items, *, batch_size=2048, limits=BatchLimits()):
    job = JobStore(tmp_path / "job", {"model": MODEL})
    run = IngestRun(MODEL)
    writer = BatchWriter(job.directory, limits, job.new_key, lambda f: job.add_batch(f.as_entry(), f.origins))
    prep = Preparer(run, service, store, writer, job=job, batch_size=batch_size, plan_window=limits.inputs)
    prep.feed(items)
    prep.finish()
    return job, run, prep


def _lines(job, key):
    return [json.loads(line) for line in job.requests_path(key).read_bytes().splitlines()]


def test_request_lines_are_the_online_plans_requests_with_the_online_bodies(tmp_path, service):
    items = sections(300)
    texts = [section_text(s["title"], s["content"]) for s in items]
    online = service.plan(texts, max_batch_size=64, probe=False).requests
    job, run, prep = _prepare(tmp_path, service, MemoryStore(), items, batch_size=64)
    lines = _lines(job, "b000001")
    assert [line["body"]["input"] for line in lines] == [list(r.texts) for r in online]
    assert lines[0]["body"] == {**service.attempts.create_kwargs(online[0])}
    assert lines[0]["body"]["encoding_format"] == "base64"
    manifest = list(job.manifest("b000001"))
    assert [s[0] for m in manifest for s in m["sections"]] == list(range(1, 301))
    first = manifest[0]["sections"][0]
    assert first == [1, content_hash(texts[0]), online[0].tokens - sum(
        service.plan(texts[1:64], probe=False).token_counts), "Title 1", 0]
    assert prep.requests == len(online) and prep.tokens == sum(r.tokens for r in online)
    assert len(prep.tracked) == 300 and run.counters.failed == 0
    job.close()


def test_identical_texts_are_sent_once_and_every_copy_points_at_that_input(tmp_path, service):
    items = [{"id": 1, "title": "", "content": "same"}, {"id": 2, "title": "", "content": "other"},
             {"id": 3, "title": "", "content": "same"}]
    job, _, _ = _prepare(tmp_path, service, MemoryStore(), items)
    (line,) = _lines(job, "b000001")
    assert line["body"]["input"] == ["same", "other"]
    (spec,) = job.manifest("b000001")
    assert [(s[0], s[4]) for s in spec["sections"]] == [(1, 0), (3, 0), (2, 1)]
    assert spec["inputs"] == 2
    job.close()


def test_batches_respect_the_input_and_request_caps(tmp_path, service):
    job, _, _ = _prepare(tmp_path, service, MemoryStore(), sections(250), batch_size=10,
                         limits=BatchLimits(requests=7, inputs=60))
    assert [b["inputs"] for b in job.batches] == [60, 60, 60, 60, 10]
    assert all(b["lines"] <= 7 for b in job.batches)
    job.close()


def test_bad_sections_fail_alone_with_the_online_codes(tmp_path):
    with EmbeddingService(api_key="x", model=MODEL, max_tokens_per_input=30) as short:
        items = [*sections(2, words=3), {"id": 2, "title": "dup", "content": "again"}, {"id": "x", "title": "", "content": "c"},
                 {"id": 9, "title": "", "content": "word " * 100}]
        job, run, prep = _prepare(tmp_path, short, MemoryStore(), items)
    codes = {(f["index"], f["code"]) for f in run.report()["failures"]}
    assert codes == {(2, "duplicate_id"), (3, "invalid_section"), (4, "embedding_failed")}
    assert "over the 30-token input limit" in run.report()["failures"][-1]["reason"]
    assert len(prep.tracked) == 2
    job.close()


def test_unchanged_sections_are_skipped_by_content_hash_before_anything_is_written(tmp_path, service):
    store = MemoryStore()
    items = sections(5)
    for s in items[:3]:
        text = section_text(s["title"], s["content"])
        store.rows[s["id"]] = Row(s["id"], s["title"], None, MODEL, content_hash(text), 1, "")  # type: ignore[arg-type]
    store.rows[3] = Row(3, "", None, "text-embedding-3-large", store.rows[3].content_hash, 1, "")  # type: ignore[arg-type]
    job, run, prep = _prepare(tmp_path, service, store, items)
    assert run.skipped_ids == [1, 2] and list(prep.tracked.ids) == [3, 4, 5]
    assert store.preflights == 1
    job.close()


def test_sections_the_job_holds_are_not_submitted_again(tmp_path, service):
    store = MemoryStore()
    items = sections(6)
    job, _, _ = _prepare(tmp_path, service, store, items[:4])
    job.close()
    edited = [*items[:3], {**items[3], "content": "edited while in flight"}, *items[4:]]
    job, run, prep = _prepare(tmp_path, service, store, edited)
    # 1..4 are in the job's one line: still with the API (not stored): tracked, not resubmitted
    assert [b["sections"] for b in job.batches] == [4, 2]
    assert list(prep.tracked.ids) == [1, 2, 3, 4, 5, 6] and prep.tracked.changed_in_flight == 1
    job.close()


def test_a_stored_section_of_the_job_is_skipped_and_an_edited_one_resubmitted(tmp_path, service):
    store = MemoryStore()
    items = sections(3)
    job, _, _ = _prepare(tmp_path, service, store, items, batch_size=1)
    job.settle_many(job.batches[0], {0, 1, 2}, "stored")
    job.save()
    job.close()
    job, run, prep = _prepare(tmp_path, service, store, [items[0], {**items[1], "content": "new"}, items[2]])
    assert run.skipped_ids == [1, 3] and list(prep.tracked.ids) == [2]
    assert [b["sections"] for b in job.batches] == [3, 1]
    job.close()


def test_estimate_is_the_same_plan_and_split_with_no_io(service):
    items = [*sections(120), {"id": 1, "title": "dup", "content": "x"}]
    figures = estimate(items, service, batch_size=16, limits=BatchLimits(inputs=50))
    texts = [section_text(s["title"], s["content"]) for s in items[:120]]
    # planned a batch's worth of inputs at a time (a batch holds no more)
    online = [r for k in range(0, 120, 50) for r in service.plan(texts[k:k + 50], max_batch_size=16, probe=False).requests]
    assert figures["requests"] == len(online) and figures["tokens"] == sum(r.tokens for r in online)
    assert figures["sections"] == 121 and figures["to_embed"] == 120 and figures["failed_count"] == 1
    assert figures["batches"] == 3 and figures["inputs"] == 120
    assert figures["bytes"] > sum(len(t) for t in texts)
