"""Reading an ended batch: lines matched by custom_id, answers checked as online, rows stored, outcomes recorded."""

from __future__ import annotations

import pytest
from fakes_batch import FilesRemote, MemoryStore, batch, http_error_line, not_run_line, ok_line

from core.batch_api.collect import Collector
from core.batch_api.files import BatchLimits, BatchWriter, encode_body
from core.batch_api.job import JobStore

MODEL = "text-embedding-3-small"
V = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


@pytest.fixture
def job(tmp_path):
    """One batch of 6 lines; line k carries section 10k (input 0) and, on line 0, copy 11 of that input."""
    with JobStore(tmp_path, {"model": MODEL}) as job:
        writer = BatchWriter(tmp_path, BatchLimits(), job.new_key, lambda f: job.add_batch(f.as_entry(), []))
        for k in range(6):
            sections = [[10 * k, f"{k:064x}", 3, f"title {k}", 0]]
            if k == 0:
                sections += [[11, f"{k:064x}", 3, "copy", 0], [12, "e" * 64, 2, "second", 1]]
            writer.add(encode_body({"input": ["t"] * (2 if k == 0 else 1)}), inputs=2 if k == 0 else 1, tokens=5,
                       sections=sections)
        writer.finish()
        job.batches[0].update(state="submitted", batch_id="batch_abc")
        yield job


def _collector(job, files, store=None, dimensions=3):
    return Collector(job, store or MemoryStore(), FilesRemote(files), model=MODEL, dimensions=dimensions,
                     timestamp=lambda: "2026-01-01T00:00:00+00:00")


def test_every_line_gets_its_outcome(job):
    output = b"\n".join([
        ok_line("b000001-00000", [V[0], V[1]], tokens=7),
        ok_line("b000001-00002", [V[2]]),
        ok_line("b000001-00004", [V[0], V[1]]),  # one vector too many: misaligned
        ok_line("b999999-00001", [V[0]]),  # another batch's line
    ]) + b"\n"
    errors = b"\n".join([
        http_error_line("b000001-00001", 400, "bad input", "invalid_value"),
        http_error_line("b000001-00003", 500, "server hiccup"),
        not_run_line("b000001-00005", "batch_expired"),
    ])
    store = MemoryStore()
    collector = _collector(job, {"file-out": output, "file-err": errors}, store)
    entry = job.batches[0]
    collector.collect(entry, batch("expired", "file-out", "file-err"))
    assert entry["state"] == "collected"
    assert job.lines(entry, "stored") == {0, 2}
    assert job.lines(entry, "failed") == {1} and job.lines(entry, "retry") == {3, 4, 5}
    failed = job.why(entry, "failed", 1)
    assert failed["code"] == "invalid_value"
    assert failed["reason"] == "HTTP 400 invalid_value: bad input (batch batch_abc, request b000001-00001)"
    assert job.why(entry, "retry", 4)["code"] == "misaligned"
    assert job.why(entry, "retry", 5)["code"] == "batch_expired"
    # rows: each section under its own id, with its own vector (copies share their input's)
    assert sorted(store.rows) == [0, 11, 12, 20]
    assert list(store.rows[0].embedding) == V[0] and list(store.rows[11].embedding) == V[0]
    assert list(store.rows[12].embedding) == V[1] and list(store.rows[20].embedding) == V[2]
    row = store.rows[12]
    assert (row.title, row.model, row.content_hash, row.token_count) == ("second", MODEL, "e" * 64, 2)
    stats = collector.stats
    assert (stats.rows_written, stats.lines_stored, stats.lines_failed, stats.lines_retried) == (4, 2, 1, 3)
    assert stats.unknown_lines == 1 and stats.tokens == 7 + 5


def test_a_wrong_width_is_misaligned(job):
    collector = _collector(job, {"o": ok_line("b000001-00002", [[1.0, 2.0]]) + b"\n"}, dimensions=3)
    entry = job.batches[0]
    collector.collect(entry, batch("completed", "o"))
    assert "2 dimensions, expected 3" in job.why(entry, "retry", 2)["reason"]
    # lines in neither file are retried too
    assert job.why(entry, "retry", 0)["code"] == "missing"


def test_rows_the_store_refuses_fail_alone(job):
    store = MemoryStore()
    store.refuse = {11}
    collector = _collector(job, {"o": ok_line("b000001-00000", [V[0], V[1]]) + b"\n"}, store)
    entry = job.batches[0]
    collector.collect(entry, batch("completed", "o"))
    assert 0 in job.lines(entry, "stored") and entry["store_failed"] == {"11": "refused by the test"}
    assert sorted(store.rows) == [0, 12] and collector.stats.rows_written == 2


def test_collecting_again_writes_only_what_is_not_recorded(job):
    output = ok_line("b000001-00000", [V[0], V[1]]) + b"\n" + ok_line("b000001-00002", [V[2]]) + b"\n"
    entry = job.batches[0]
    job.settle(entry, 0, "stored")  # a run that died after storing line 0
    store = MemoryStore()
    collector = _collector(job, {"o": output}, store)
    collector.collect(entry, batch("completed", "o"))
    assert sorted(store.rows) == [20] and job.lines(entry, "stored") == {0, 2}


def test_a_batch_that_failed_validation_fails_the_lines_it_names_and_resubmits_the_rest_free(job):
    collector = _collector(job, {})
    entry = job.batches[0]
    collector.collect(entry, batch("failed", errors=[{"code": "invalid_json_line", "message": "bad", "line": 2}]))
    assert job.lines(entry, "failed") == {1}
    assert "the batch failed validation: invalid_json_line: bad" in job.why(entry, "failed", 1)["reason"]
    assert job.lines(entry, "retry") == {0, 2, 3, 4, 5}
    assert all(why.get("free") for why in entry["retry"].values())  # they never ran: no attempt counted


def test_a_full_queue_resubmits_every_line_free_and_marks_the_batch(job):
    collector = _collector(job, {})
    entry = job.batches[0]
    collector.collect(entry, batch("failed", errors=[{"code": "token_limit_exceeded", "message": "Enqueued token limit"}]))
    assert job.lines(entry, "retry") == set(range(6)) and entry["queue_full"] is True
    assert all(why.get("free") for why in entry["retry"].values()) and not job.lines(entry, "failed")


def test_an_error_no_retry_can_fix_fails_every_line_with_the_apis_reason(job):
    collector = _collector(job, {})
    entry = job.batches[0]
    collector.collect(entry, batch("failed", errors=[{"code": "model_mismatch", "message": "one model per batch"}]))
    assert job.lines(entry, "failed") == set(range(6))
    assert job.why(entry, "failed", 3)["reason"].startswith(
        "the batch failed validation: model_mismatch: one model per batch")


def test_a_batch_too_big_goes_again_in_halves_and_an_unknown_error_goes_again_later(job):
    collector = _collector(job, {})
    entry = job.batches[0]
    collector.collect(entry, batch("failed", errors=[{"code": "too_many_tasks", "message": "too many"}]))
    assert job.lines(entry, "retry") == set(range(6)) and entry["reshape"] is True
    assert not any(why.get("free") for why in entry["retry"].values())  # bounded by max_attempts
    other = {**entry, "key": entry["key"], "retry": {}, "reshape": False}
    collector.collect(other, batch("failed", errors=[{"code": "server_error", "message": "try later"}]))
    assert job.lines(other, "retry") == set(range(6)) and not other["reshape"]
