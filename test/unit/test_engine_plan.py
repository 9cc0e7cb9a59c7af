"""The I/O-free plan (core.engine.plan) and the engine's reliability fixes of issues #8 and #9."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from engine_helpers import make
from fake_openai_client import FakeOpenAIClient, good_response, vec_for
from hypothesis import given, settings
from hypothesis import strategies as st

from core.engine.attempts import raw_call
from core.engine.plan import EmbedPlan, request_token_target
from core.stores.ingest import IngestInterrupted
from core.limits import PROBE_REQUEST_TOKENS, REQUEST_SHARE_OF_BUDGET
from core.engine.tokens import count_tokens


def drain(plan: EmbedPlan) -> list[Any]:
    """Take every request, answering each at once; return them in order."""
    taken = []
    while (request := plan.next_request()) is not None:
        taken.append(request)
        plan.succeed(request, [None] * len(request.indices), None)
    assert plan.finished
    return taken


def plan_of(texts: list[Any], **kw: Any) -> EmbedPlan:
    kw.setdefault("max_inputs", 2048)
    kw.setdefault("max_tokens_per_request", 300_000)
    kw.setdefault("max_tokens_per_input", 8191)
    return EmbedPlan(texts, **kw)


# --- the plan --------------------------------------------------------------------------------


def test_seed_shape_keeps_its_call_counts_with_a_probe():
    """5,000 short texts: a probe of 2,048 (they fit its 8,192 tokens), then 2,048 and 904."""
    requests = drain(plan_of([f"text{i}" for i in range(5000)], probe=True))
    assert [len(r.indices) for r in requests] == [2048, 2048, 904]
    assert requests[0].probe and not requests[1].probe


def test_probe_is_small_when_texts_are_long():
    texts = [f"section {i} " + "lorem ipsum dolor " * 100 for i in range(1000)]
    requests = drain(plan_of(texts, probe=True))
    assert requests[0].probe and requests[0].tokens <= PROBE_REQUEST_TOKENS
    assert all(r.tokens <= 300_000 for r in requests)
    assert sorted(i for r in requests for i in r.indices) == list(range(1000))


def test_one_request_needs_no_probe():
    requests = drain(plan_of(["a", "b", "c"], probe=True))
    assert len(requests) == 1 and not requests[0].probe


def test_probe_holds_the_rest_until_answered_or_limits_learned():
    plan = plan_of([f"text {i} " * 50 for i in range(3000)], probe=True)
    probe = plan.next_request()
    assert probe is not None and probe.probe
    assert plan.next_request() is None  # held: the probe is out
    plan.update(budget=None, probed=True)  # its headers arrived (before its body)
    assert plan.next_request() is not None


def test_requests_are_sized_to_a_share_of_the_known_budget():
    """Issue #9: with a 300k budget, full 300k requests made pacing coarse (0.64 of the ceiling)."""
    texts = [f"section {i} " + "lorem ipsum " * 200 for i in range(2000)]
    requests = drain(plan_of(texts, budget=300_000))
    target = request_token_target(300_000, 300_000)
    assert target == int(300_000 * REQUEST_SHARE_OF_BUDGET)
    assert all(r.tokens <= target for r in requests)
    assert len(requests) >= 8


def test_learned_budget_repacks_waiting_requests():
    texts = [f"section {i} " + "lorem ipsum " * 200 for i in range(2000)]
    plan = plan_of(texts)
    first = plan.next_request()
    assert first is not None and first.tokens > 100_000
    plan.update(budget=80_000, probed=True)
    plan.succeed(first, [None] * len(first.indices), None)
    rest = drain(plan)
    assert all(r.tokens <= 10_000 for r in rest)
    assert sorted({*first.indices, *(i for r in rest for i in r.indices)}) == list(range(2000))


def test_input_above_the_budget_fails_alone():
    plan = plan_of(["short", "word " * 3000, "also short"], budget=2000)
    taken = drain(plan)
    assert plan.batch.codes == {1: "too_long"}
    assert sorted(i for r in taken for i in r.indices) == [0, 2]


def test_duplicates_are_sent_once_and_served_to_every_copy():
    plan = plan_of(["a", "b", "a", "a"])
    (request,) = drain(plan)
    assert request.texts == ("a", "b")
    assert plan.indices_of(request) == [0, 2, 3, 1]


def test_cancel_fails_everything_not_yet_sent():
    plan = plan_of([f"t{i} " * 300 for i in range(5000)], max_inputs=10)
    taken = plan.next_request()
    assert taken is not None
    plan.cancel()
    assert plan.next_request() is None
    assert set(plan.batch.codes.values()) == {"cancelled"}
    assert len(plan.batch.errors) == 5000 - len(taken.indices)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=40), min_size=0, max_size=120),
    max_inputs=st.integers(min_value=1, max_value=7),
    cap=st.integers(min_value=20, max_value=200),
    budget=st.one_of(st.none(), st.integers(min_value=10, max_value=400)),
    probe=st.booleans(),
)
def test_packing_properties(lengths, max_inputs, cap, budget, probe):
    """Every sendable input in exactly one request, order kept, no cap ever exceeded."""
    texts = [" ".join(f"w{i}x{j}" for j in range(n)) for i, n in enumerate(lengths)]
    plan = plan_of(texts, max_inputs=max_inputs, max_tokens_per_request=cap, budget=budget, probe=probe)
    requests = drain(plan)
    sent = [i for r in requests for i in r.indices]
    assert sent == sorted(sent)  # order kept
    assert len(sent) == len(set(sent))  # each once
    assert set(sent) | set(plan.batch.errors) == set(range(len(texts)))  # every input accounted for
    assert not set(sent) & set(plan.batch.errors)
    limit = min(cap, budget) if budget else cap
    for r in requests:
        assert len(r.indices) <= max_inputs
        assert r.tokens == sum(count_tokens(texts[i]) for i in r.indices)
        assert r.tokens <= limit


# --- issue #8: the engine's reliability fixes -------------------------------------------------


def test_lone_surrogate_fails_alone_with_its_own_index():
    """Issue #8 (1): one surrogate at index 2,500 of 3,000 sank its whole request
    (952 failed, 951 of them good) and the error named index 0."""
    service, client, _ = make()
    texts = [f"text {i}" for i in range(3000)]
    texts[2500] = "x\ud800y"
    result = service.batch_generate_embeddings(texts)
    assert result["failed_indices"] == [2500]
    assert "lone surrogate at position 1" in result["errors"][2500]
    assert len(result["embeddings"]) == 2999
    assert all("x\ud800y" not in call["input"] for call in client.calls)


def test_ctrl_c_stops_queued_requests():
    """Issue #8 (2): Ctrl-C waited for every queued request (up to a whole window), paid
    for and discarded. Now at most the requests in flight finish; none is sent after."""
    service, client, _ = make(max_batch_size=1, max_concurrency=2, probe_limits=False)

    def stop(_inputs: int, _tokens: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        service.embed([f"text {i}" for i in range(50)], progress=stop)
    assert len(client.calls) <= 1 + 2


def test_ingest_interrupt_reports_exactly_what_was_stored():
    """Issue #8 (2): rows are written as requests complete; the report counts them exactly."""
    from fake_supabase import FakeSupabase
    from store_helpers import make_service, make_store, sections

    fake = FakeSupabase()
    store = make_store(fake, max_concurrency=1)
    service, _api = make_service(max_concurrency=1)
    writes = [0]
    real_write = store.write_rows

    def write_then_stop(rows: Any) -> Any:
        writes[0] += 1
        if writes[0] == 3:
            raise KeyboardInterrupt
        return real_write(rows)

    store.write_rows = write_then_stop  # type: ignore[method-assign]
    with pytest.raises(IngestInterrupted) as info:
        store.batch_ingest_embeddings(sections(range(1, 101)), service, batch_size=10)
    assert info.value.report["success_count"] == len(fake.rows) == 20


def test_raw_post_is_used_only_for_an_unpatched_sdk_client():
    from unittest.mock import MagicMock

    from openai import OpenAI

    real = OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    assert raw_call(real)
    real.embeddings.create = MagicMock()  # type: ignore[method-assign]
    assert not raw_call(real)
    assert not raw_call(MagicMock())
    assert not raw_call(FakeOpenAIClient())


def test_probe_answer_releases_the_rest_concurrently():
    """The probe goes alone; once answered, the others run concurrently."""
    in_flight = [0]
    peak = [0]
    lock = threading.Lock()
    release = threading.Event()

    def handler(number: int, kwargs: dict[str, Any]) -> Any:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        if number == 0:
            assert in_flight[0] == 1  # alone
        else:
            release.wait(timeout=0.05)
        with lock:
            in_flight[0] -= 1
        return good_response(kwargs, dims=4, vector=vec_for)

    service, client, _ = make(FakeOpenAIClient(handler), max_batch_size=10, max_concurrency=4)
    batch = service.embed([f"text {i}" for i in range(100)])
    assert len(batch.vectors) == 100
    assert peak[0] >= 2
