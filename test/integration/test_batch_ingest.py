"""`BatchJob` end to end: the local server's Batch API through the real SDK, rows in real PostgreSQL.

The client's sleep moves the server's clock (`BatchControl.advance`): a batch that
takes hours, or a 24-hour window that runs out, costs milliseconds.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from core import EmbeddingService, PostgresStore
from core.batch_api import BatchJob, BatchLimits, Polling, estimate
from core.batch_api.remote import Remote
from core.stores.ingest import IngestInterrupted
from core.engine.ingest_run import section_text
from core.testing import expected_embedding
from core.testing.openai_server.batches import BatchControl

DIMS = 64
DAY = 86_400
MODEL = "text-embedding-3-small"


@pytest.fixture
def control(fake_openai):
    control = BatchControl(fake_openai)
    control.reset()
    yield control
    control.reset()


@pytest.fixture
def service(fake_openai):
    with EmbeddingService(api_key="test-key", base_url=fake_openai.base_url, dimensions=DIMS, max_retries=2) as s:
        yield s


@pytest.fixture
def store(pg_conn, pg_dsn):
    setup = PostgresStore(pg_dsn, dimensions=DIMS, create_schema=False)
    setup.ensure_schema(with_index=False)
    setup.close()
    with PostgresStore(pg_dsn, dimensions=DIMS, create_schema=False) as store:
        yield store


def sections(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"id": i, "title": f"Section {i}", "content": f"words about topic {i % 7} and item {i}"}
            for i in range(start, start + n)]


def make_job(tmp_path, service, store, control, **options) -> BatchJob:
    defaults: dict[str, Any] = {"batch_size": 20, "limits": BatchLimits(inputs=100),
                                "polling": Polling(interval=60, max_interval=3600), "sleep": control.advance}
    return BatchJob(tmp_path / "job", service, store, **{**defaults, **options})


def stored(pg_conn) -> dict[int, str]:
    return dict(pg_conn.execute("select section_id, content_hash from section_embeddings").fetchall())


def server_inputs(control) -> tuple[int, int]:
    """(batches created, inputs across them) on the server."""
    batches = control.state()["batches"]
    return len(batches), sum(b["inputs"] for b in batches)


def test_every_section_is_stored_with_its_own_vector_and_a_rerun_submits_nothing(
        tmp_path, service, store, control, pg_conn):
    control.configure(validating_seconds=30, in_progress_seconds=3600, finalizing_seconds=60)
    items = sections(250)
    job = make_job(tmp_path, service, store, control)
    report = job.run(items)
    assert (report["success_count"], report["failed_count"], report["skipped_count"], report["pending_count"]) == \
        (250, 0, 0, 0)
    assert report["batch"]["batches"] == 3 and report["total_tokens"] > 0
    assert len(stored(pg_conn)) == 250
    for section_id in (1, 137, 250):
        item = items[section_id - 1]
        (vector,) = pg_conn.execute("select embedding from section_embeddings where section_id = %s",
                                    (section_id,)).fetchone()
        np.testing.assert_allclose(vector.to_numpy(), expected_embedding(section_text(item["title"], item["content"]), DIMS),
                                   rtol=1e-6)
    again = job.run(items)
    assert again["skipped_count"] == 250 and again["batch"]["batches_submitted"] == 0
    assert server_inputs(control) == (3, 250)
    job_file = json.loads((tmp_path / "job" / "job.json").read_text())
    assert [b["state"] for b in job_file["batches"]] == ["collected"] * 3
    assert not list((tmp_path / "job").glob("*.requests.jsonl"))  # nothing left to resubmit


def test_an_expired_batch_half_done_ends_with_every_section_stored_after_the_rerun(
        tmp_path, service, store, control, pg_conn):
    control.configure(in_progress_seconds=600, script=[{"stop_at": 0.5}])
    items = sections(100)
    job = make_job(tmp_path, service, store, control)
    first = job.run(items, wait=False)
    assert first["pending_count"] == 100 and first["batch"]["unfinished"]
    control.advance(DAY)  # the window runs out with half the lines done
    report = job.run(items)
    assert report["success_count"] == 100 and report["pending_count"] == 0
    assert len(stored(pg_conn)) == 100
    batches = control.state()["batches"]
    assert [(b["status"], b["inputs"], b["done"]) for b in batches] == [("expired", 100, 2), ("completed", 60, 3)]
    assert report["batch"]["lines_retried"] == 3  # only the lines that did not run went again


def test_a_kill_while_polling_and_a_rerun_submit_nothing_twice(tmp_path, service, store, control, pg_conn):
    control.configure(in_progress_seconds=7200)
    items = sections(300)
    sleeps = []

    def killed_while_waiting(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt
        control.advance(seconds)

    with pytest.raises(IngestInterrupted) as stopped:
        make_job(tmp_path, service, store, control, sleep=killed_while_waiting).run(items)
    assert stopped.value.report["pending_count"] == 300 and not stored(pg_conn)
    report = make_job(tmp_path, service, store, control).run(items)
    assert report["success_count"] == 300 and report["batch"]["batches_submitted"] == 0
    assert server_inputs(control) == (3, 300)
    assert len(stored(pg_conn)) == 300


def test_a_run_that_died_right_after_creating_a_batch_finds_it_instead_of_creating_another(
        tmp_path, service, store, control, monkeypatch, pg_conn):
    create = Remote.create

    def create_then_die(self, input_file_id, metadata):
        create(self, input_file_id, metadata)
        raise KeyboardInterrupt  # the answer is lost: the job never recorded the batch id

    monkeypatch.setattr(Remote, "create", create_then_die)
    with pytest.raises(IngestInterrupted):
        make_job(tmp_path, service, store, control).run(sections(50))
    monkeypatch.setattr(Remote, "create", create)
    report = make_job(tmp_path, service, store, control).run(sections(50))
    assert report["success_count"] == 50
    assert server_inputs(control) == (1, 50)


def test_failed_lines_are_reported_per_section_and_finish_online_stores_them(
        tmp_path, service, store, control, pg_conn, fake_openai):
    bad = {"status": 400, "code": "invalid_value", "message": "this request was refused"}
    control.configure(script=[{"line_errors": {"0": bad, "1": {"status": 503, "message": "overloaded"}}}])
    items = sections(60)
    job = make_job(tmp_path, service, store, control)
    report = job.run(items)
    assert (report["success_count"], report["failed_count"]) == (40, 20)
    failure = report["failures"][0]
    assert (failure["index"], failure["id"], failure["code"]) == (0, 1, "embedding_failed")
    assert "HTTP 400 invalid_value: this request was refused" in failure["reason"]
    assert report["batch"]["lines_retried"] == 1  # the 503 went again and was stored
    online = job.run(items, finish_online=True)
    assert (online["success_count"], online["skipped_count"], online["failed_count"]) == (20, 40, 0)
    assert online["batch"]["online_sections"] == 20 and fake_openai.stats()["by_status"]["200"] >= 1
    assert len(stored(pg_conn)) == 60


def test_a_cancelled_batch_keeps_its_partial_results_and_resubmits_the_rest(
        tmp_path, service, store, control, pg_conn):
    control.configure(in_progress_seconds=1000)
    items = sections(100)
    job = make_job(tmp_path, service, store, control)
    job.run(items, wait=False)
    control.advance(500)
    assert len(job.cancel()) == 1
    report = job.run(items)
    assert report["success_count"] == 100
    assert [(b["status"], b["done"]) for b in control.state()["batches"]] == [("cancelled", 2), ("completed", 3)]


def test_the_enqueued_token_limit_holds_batches_until_the_queue_drains(tmp_path, service, store, control, pg_conn):
    items = sections(300)
    one_batch = estimate(items[:100], service, batch_size=20)["tokens"]
    control.configure(in_progress_seconds=600, enqueued_token_limit=int(one_batch * 1.5))
    report = make_job(tmp_path, service, store, control, max_attempts=2).run(items)
    assert report["success_count"] == 300 and report["failed_count"] == 0
    statuses = [b["status"] for b in control.state()["batches"]]
    assert "failed" in statuses and statuses.count("completed") == 3  # a queue failure costs no attempt


def test_misaligned_answers_are_never_stored_and_go_again(tmp_path, service, store, control, pg_conn):
    control.configure(script=[{"misaligned": [0, 4]}])
    report = make_job(tmp_path, service, store, control).run(sections(100))
    assert report["success_count"] == 100 and report["batch"]["lines_retried"] == 2
    assert server_inputs(control) == (2, 140)


def test_edited_sections_go_again_and_unchanged_ones_are_skipped(tmp_path, service, store, control, pg_conn):
    items = sections(40)
    job = make_job(tmp_path, service, store, control)
    job.run(items)
    items[3]["content"] = "rewritten"
    report = job.run(items + sections(5, start=41))
    assert (report["success_count"], report["skipped_count"]) == (6, 39)
    assert server_inputs(control) == (2, 46)


def test_cancelling_a_batch_that_ended_meanwhile_is_a_no_op(tmp_path, service, store, control, pg_conn):
    control.configure(in_progress_seconds=100)
    job = make_job(tmp_path, service, store, control)
    job.run(sections(30), wait=False)
    control.advance(200)  # completed on the server; the job last saw it in progress
    assert job.cancel() == []
    assert job.run(sections(30))["success_count"] == 30


def test_the_service_method_runs_a_job(tmp_path, service, store, control, pg_conn):
    report = service.submit_batch(sections(10), store, tmp_path / "job", sleep=control.advance)
    assert (report["success_count"], report["pending_count"]) == (10, 0)
    assert (tmp_path / "job" / "job.json").is_file()
