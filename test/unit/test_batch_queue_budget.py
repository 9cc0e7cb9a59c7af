"""The queue budget: batches built to it, submissions as it frees, what a refusal teaches, the stall clock."""

from __future__ import annotations

import pytest

from core.batch_api.files import BatchLimits, BatchWriter, encode_body
from core.batch_api.plan import queue_rounds
from core.batch_api.queue import QueueBudget, batch_tokens, request_tokens
from core.errors import BatchQueueStalledError, ConfigurationError
from core.limits import BATCH_QUEUE_MIN_TOKENS, BATCH_QUEUE_TOKENS, BATCH_REFUSAL_BACKOFF


def test_batches_are_split_by_tokens_as_well_as_by_the_apis_caps():
    files = []
    writer = BatchWriter(None, BatchLimits(tokens=1000), iter(["b1", "b2", "b3", "b4"]).__next__, files.append)
    for tokens in (400, 400, 400, 1500, 100):
        writer.add(encode_body({"input": ["x"]}), inputs=1, tokens=tokens, sections=[[1, "h", tokens, "t", 0]])
    writer.finish()
    assert [f.tokens for f in files] == [800, 400, 1500, 100]  # a line above the cap goes alone


def test_the_default_budget_is_the_tier_1_figure_and_a_callers_figure_replaces_what_was_learned():
    saved: dict = {}
    assert QueueBudget(saved).budget == BATCH_QUEUE_TOKENS == 3_000_000 and saved["set"] is None
    saved["budget"] = 400_000  # learned
    assert QueueBudget(saved).budget == 400_000
    assert QueueBudget(saved, 2_000_000).budget == 2_000_000 and saved["set"] == 2_000_000
    saved["budget"] = 900_000  # learned under the caller's 2M
    assert QueueBudget(saved, 2_000_000).budget == 900_000  # the same figure again: what was learned stays
    with pytest.raises(ConfigurationError):
        QueueBudget({}, 0)
    assert batch_tokens(500_000) == 250_000 and request_tokens(500_000) == 62_500
    assert request_tokens(3_000_000) == 300_000 and request_tokens(20_000) == 8_192


def test_batches_go_while_the_budget_has_room_and_one_goes_alone_when_nothing_is_queued():
    queue = QueueBudget({}, 1000)
    assert queue.may_submit(600, 0, False) and queue.may_submit(400, 600, True)
    assert not queue.may_submit(500, 600, True)
    assert queue.may_submit(5000, 0, False)  # bigger than the budget, alone


def test_a_refusal_halves_what_was_refused_backs_off_and_waits_for_the_jobs_own_batches():
    saved: dict = {}
    queue = QueueBudget(saved, 1_000_000)
    entry = {"tokens": 500_000}
    queue.note_submit(entry, 400_000)
    lesson = queue.refused(entry, others_in_flight=True)
    assert queue.budget == 450_000 == saved["budget"] and "450,000" in lesson and saved["refusals"] == 1
    assert not queue.may_submit(1, 0, False)  # backing off
    queue.slept(BATCH_REFUSAL_BACKOFF)
    assert not queue.may_submit(1, 100, True)  # the job's own batches hold the queue: wait for one to end
    queue.note_end(100)
    assert queue.may_submit(1, 0, False)
    second = {"tokens": 100_000}
    queue.note_submit(second, 0)
    queue.slept(10_000)
    queue.refused(second, others_in_flight=False)
    assert queue.hold_until - queue.waited == 2 * BATCH_REFUSAL_BACKOFF  # the wait doubles with refusals in a row
    stale = {"tokens": 1, "queue": {"budget": 999, "held": 0, "since_end": None}}
    budget = queue.budget
    queue.refused(stale, others_in_flight=False)  # submitted under an older budget: nothing more to learn
    assert queue.budget == budget


def test_a_refusal_right_after_a_batch_ended_teaches_the_release_lag_not_a_smaller_budget():
    queue = QueueBudget({}, 1_000_000)
    queue.note_end(600_000)
    entry = {"tokens": 500_000}
    queue.note_submit(entry, 0)
    queue.refused(entry, others_in_flight=False)
    assert queue.budget == 1_000_000 and queue.release_lag == 30.0
    queue.note_end(600_000)
    assert queue.lagging() == 1_200_000 and queue.next_room_in() == 30.0  # both ended batches count for the lag
    queue.slept(BATCH_REFUSAL_BACKOFF)
    assert queue.lagging() == 0 and queue.may_submit(500_000, 0, False)
    queue.note_end(600_000)
    assert not queue.may_submit(500_000, 0, False)
    queue.slept(30.0)
    assert queue.may_submit(500_000, 0, False)


def test_the_budget_never_drops_below_its_floor_and_a_long_stall_stops_the_run():
    queue = QueueBudget({}, BATCH_QUEUE_MIN_TOKENS, stall_seconds=3600)
    entry = {"tokens": BATCH_QUEUE_MIN_TOKENS}
    queue.note_submit(entry, 0)
    assert "other batches hold the queue" in queue.refused(entry, others_in_flight=False)
    assert queue.budget == BATCH_QUEUE_MIN_TOKENS
    queue.slept(3599)
    queue.check_stall()
    queue.slept(1)
    with pytest.raises(BatchQueueStalledError, match="refused this job's batches for 1.0 hours"):
        queue.check_stall()
    queue.progress()
    queue.check_stall()


def test_queue_rounds_count_the_turnovers_of_the_budget():
    assert queue_rounds([250, 250, 250, 250, 100], 500) == 3
    assert queue_rounds([900, 100], 500) == 2 and queue_rounds([], 500) == 0
