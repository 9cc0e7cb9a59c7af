"""The Batch API at a real account's limits: an enqueued-token queue far below the corpus, a batch that
expires part done, lines that fail with a 500, a queue that frees late (issue #19).

The server's clock moves with the client's sleeps (`BatchControl.advance`): a batch
that runs an hour, or a 24-hour window, costs milliseconds. Every section's stored
vector is checked against the server's deterministic vector of its own text.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from core import EmbeddingService, PostgresStore
from core.batch_api import BatchJob, Polling, plan_batches
from core.engine.ingest_run import section_text
from core.testing import expected_embeddings
from core.testing.openai_server.batches import BatchControl

DIMS = 64
HOUR = 3600
WORDS = ("the river runs past old stone walls while birds sing over green fields and quiet roads lead home "
         "under a wide sky where clouds drift slowly toward distant hills covered in tall trees").split()


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


def corpus(n: int) -> list[dict[str, Any]]:
    """`n` sections of ~260 cl100k tokens each, every text different."""
    return [{"id": i, "title": f"Section {i}",
             "content": f"item {i} " + " ".join(WORDS[(i * 7 + j * (1 + i % 5)) % len(WORDS)] for j in range(250))}
            for i in range(1, n + 1)]


def real_api(control, *, limit: int, lag: float = 0.0, expire_second: bool = True) -> None:
    """A server like the real one under a queue of `limit` tokens: batches validate in 5 s and take an
    hour, 10% of request bodies answer 500 the first time, the second batch accepted stalls at 60%
    until its 24-hour window ends; an ended batch's tokens stay queued `lag` seconds."""
    control.configure(validating_seconds=5, in_progress_seconds=HOUR, finalizing_seconds=60,
                      enqueued_token_limit=limit, release_lag_seconds=lag, transient_line_error_rate=0.1,
                      script=[{}, {"stop_at": 0.6}] if expire_second else [])


def job_for(tmp_path, service, store, control, **options) -> BatchJob:
    return BatchJob(tmp_path / "job", service, store, batch_size=50, polling=Polling(interval=5, max_interval=HOUR),
                    sleep=control.advance, **options)


def assert_every_section_has_its_own_vector(pg_conn, items) -> None:
    rows = dict(pg_conn.execute("select section_id, embedding from section_embeddings").fetchall())
    assert sorted(rows) == [item["id"] for item in items]
    want = expected_embeddings([section_text(item["title"], item["content"]) for item in items], DIMS)
    got = np.stack([rows[item["id"]].to_numpy() for item in items])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def assert_nothing_paid_twice_nor_online(control, fake_openai, n: int) -> list[dict[str, Any]]:
    batches = control.state()["batches"]
    assert sum(b["ok_inputs"] for b in batches) == n  # no text embedded again after a try of it succeeded
    assert fake_openai.stats()["inputs_ok"] == 0  # nothing embedded online
    return batches


@pytest.mark.parametrize("lag", [0.0, 20.0], ids=["queue frees at once", "queue frees 20 s late"])
def test_5000_sections_under_a_500k_token_queue_with_failing_lines_and_an_expiring_batch(
        tmp_path, service, store, control, pg_conn, fake_openai, lag):
    items = corpus(5000)
    plan = plan_batches(items, service, batch_size=50, max_enqueued_tokens=500_000)
    assert 1_200_000 < plan["tokens"] < 1_400_000 and plan["largest_batch_tokens"] <= 250_000
    real_api(control, limit=500_000, lag=lag)
    report = job_for(tmp_path, service, store, control, max_enqueued_tokens=500_000).run(items)
    assert (report["success_count"], report["failed_count"], report["pending_count"]) == (5000, 0, 0)
    figures = report["batch"]
    assert figures["files_written"] == plan["batches"]  # the dry run predicted the batches built from the input
    assert_every_section_has_its_own_vector(pg_conn, items)
    batches = assert_nothing_paid_twice_nor_online(control, fake_openai, 5000)
    statuses = [b["status"] for b in batches]
    assert statuses.count("expired") == 1 and figures["lines_retried"] > 0
    assert figures["queue_budget"] == 500_000  # the caller's figure is right: nothing to learn
    if lag:  # a batch submitted right after one ended is refused, once: the lag is learned, no line fails
        assert 1 <= figures["batches_refused"] <= 2 and figures["release_lag_seconds"] >= lag
        assert statuses.count("failed") == figures["batches_refused"]
    else:
        assert "failed" not in statuses and figures["batches_refused"] == 0  # every batch fitted the queue


def test_a_queue_13_times_below_the_corpus_is_learned_from_refusals_and_kept_for_the_next_run(
        tmp_path, service, store, control, pg_conn, fake_openai):
    items = corpus(5000)
    real_api(control, limit=100_000, expire_second=False)
    notes: list[str] = []
    report = job_for(tmp_path, service, store, control, on_status=notes.append).run(items)  # from the tier-1 3M
    assert (report["success_count"], report["failed_count"], report["pending_count"]) == (5000, 0, 0)
    assert_every_section_has_its_own_vector(pg_conn, items)
    batches = assert_nothing_paid_twice_nor_online(control, fake_openai, 5000)
    refused = [b for b in batches if b["status"] == "failed"]
    assert refused and report["batch"]["batches_refused"] == len(refused)
    learned = report["batch"]["queue_budget"]
    assert 20_000 <= learned <= 100_000 and any("queue budget is now" in note for note in notes)
    saved = json.loads((tmp_path / "job" / "job.json").read_text())["queue"]
    assert saved["budget"] == learned and saved["set"] is None
    more = corpus(5400)[5000:]
    again = job_for(tmp_path, service, store, control).run(items + more)
    assert (again["success_count"], again["skipped_count"], again["failed_count"]) == (400, 5000, 0)
    new = control.state()["batches"][len(batches):]
    assert all(b["status"] == "completed" for b in new)  # started from what was learned: no refusal
    assert max(b["tokens"] for b in new) <= learned // 2


def test_a_queue_held_by_other_work_stops_the_run_resumable_not_with_sections_failed(
        tmp_path, service, store, control, pg_conn, fake_openai):
    from core.errors import BatchQueueStalledError

    control.configure(in_progress_seconds=HOUR, enqueued_token_limit=1_000)  # no batch of ours ever fits
    items = corpus(200)
    with pytest.raises(BatchQueueStalledError) as stalled:
        job_for(tmp_path, service, store, control, stall_seconds=12 * HOUR).run(items)
    report = stalled.value.report
    assert report["failed_count"] == 0 and report["pending_count"] == 200
    assert "refused this job's batches for 12" in str(stalled.value)
    refusals = len(control.state()["batches"])
    assert 5 <= refusals <= 40  # backed off (1 min doubling to 30 min), not a refusal per poll
    control.configure(enqueued_token_limit=None)  # the account's queue frees
    report = job_for(tmp_path, service, store, control).run(items)
    assert (report["success_count"], report["failed_count"]) == (200, 0)
    assert_every_section_has_its_own_vector(pg_conn, items)


def test_a_batch_running_longer_than_the_stall_limit_is_waited_for(tmp_path, service, store, control, pg_conn):
    control.configure(in_progress_seconds=5 * HOUR, enqueued_token_limit=500_000)
    items = corpus(50)
    report = job_for(tmp_path, service, store, control, stall_seconds=2 * HOUR).run(items)
    assert (report["success_count"], report["failed_count"]) == (50, 0)
