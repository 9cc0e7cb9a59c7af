"""Property-based tests of packing: every input in exactly one request, order kept, limits never exceeded.

Two levels: `core.engine.packing.pack_requests` (the greedy fill) and `EmbedPlan` (what
the drivers really send: validation, dedupe, the probe, repacking to a learned
budget and after a request too large for it). Hypothesis draws the inputs; the
profile is derandomized (fixed examples: a failure reproduces).
"""

from __future__ import annotations

import array
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.engine.plan import EmbedPlan
from core.engine.packing import pack_requests

PROPERTIES = settings(max_examples=300, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow])


# --- pack_requests --------------------------------------------------------------------------


@st.composite
def packing_cases(draw: st.DrawFn, oversize: bool = False) -> tuple[list[int], list[int], int, int]:
    max_inputs = draw(st.integers(1, 40))
    max_tokens = draw(st.integers(1, 500))
    top = 2 * max_tokens if oversize else max_tokens
    counts = draw(st.lists(st.integers(1, top), max_size=120))
    order = draw(st.permutations(range(len(counts))))  # any order, any subset: packing follows the order given
    keep = draw(st.integers(0, len(order)))
    return list(order[:keep]), counts, max_inputs, max_tokens


@PROPERTIES
@given(packing_cases())
def test_every_input_once_in_order_within_both_limits(case: tuple[list[int], list[int], int, int]) -> None:
    indices, counts, max_inputs, max_tokens = case
    requests = pack_requests(indices, counts, max_inputs=max_inputs, max_tokens=max_tokens)
    assert [i for request in requests for i in request] == indices  # each once, in the order given
    for request in requests:
        assert 1 <= len(request) <= max_inputs
        assert sum(counts[i] for i in request) <= max_tokens
    # Greedy, hence fewest for an order-preserving packing: a request closes only when the
    # next input would break a limit.
    for request, following in itertools.pairwise(requests):
        assert len(request) == max_inputs or sum(counts[i] for i in request) + counts[following[0]] > max_tokens


@PROPERTIES
@given(packing_cases(oversize=True))
def test_oversize_inputs_go_alone_or_raise(case: tuple[list[int], list[int], int, int]) -> None:
    indices, counts, max_inputs, max_tokens = case
    requests = pack_requests(indices, counts, max_inputs=max_inputs, max_tokens=max_tokens, allow_oversize=True)
    assert [i for request in requests for i in request] == indices
    for request in requests:
        assert 1 <= len(request) <= max_inputs
        assert sum(counts[i] for i in request) <= max_tokens or len(request) == 1
    if any(counts[i] > max_tokens for i in indices):
        try:
            pack_requests(indices, counts, max_inputs=max_inputs, max_tokens=max_tokens)
        except ValueError as exc:
            assert "request cap" in str(exc)
        else:
            raise AssertionError("an input above max_tokens was packed without allow_oversize")


# --- EmbedPlan -------------------------------------------------------------------------------

_WORDS = ["a", "vector", "postgres", "embedding", "of", "sections", "héllo", "数据", "🙂", "x" * 30]
_BAD = [None, 7, b"bytes", "", "lone \ud800 surrogate"]


@st.composite
def plan_cases(draw: st.DrawFn) -> dict[str, object]:
    texts = draw(st.lists(
        st.one_of(
            st.lists(st.sampled_from(_WORDS), min_size=1, max_size=25).map(" ".join),
            st.sampled_from(_BAD),
        ),
        max_size=60,
    ))
    return {
        "texts": texts,
        "max_inputs": draw(st.integers(1, 16)),
        "hard_cap": draw(st.integers(20, 400)),
        "max_per_input": draw(st.integers(5, 200)),
        "budget": draw(st.one_of(st.none(), st.integers(30, 600))),
        "probe": draw(st.booleans()),
        # after how many requests the limiter learns a (new) budget, and which request comes
        # back "too large for the budget" (repacked), if any
        "learn_at": draw(st.integers(0, 10)),
        "learned": draw(st.integers(10, 600)),
        "too_large_at": draw(st.one_of(st.none(), st.integers(0, 10))),
    }


@PROPERTIES
@given(plan_cases())
def test_plan_sends_every_sendable_input_exactly_once_within_limits(case: dict[str, object]) -> None:
    texts: list[object] = case["texts"]  # type: ignore[assignment]
    plan = EmbedPlan(
        texts, max_inputs=case["max_inputs"], max_tokens_per_request=case["hard_cap"],  # type: ignore[arg-type]
        max_tokens_per_input=case["max_per_input"], budget=case["budget"], probe=case["probe"],  # type: ignore[arg-type]
    )
    counts = plan.token_counts
    sent: list[int] = []  # first-occurrence indices of the requests that succeeded, in send order
    taken = 0
    while not plan.finished:
        request = plan.next_request()
        assert request is not None, "a plan with work left handed out nothing"
        taken += 1
        # limits: inputs, the hard token cap always; the current target unless the input is alone
        assert 1 <= len(request.indices) <= plan.max_inputs
        assert request.tokens == sum(counts[i] for i in request.indices) <= plan.hard_cap
        assert request.tokens <= plan.target or len(request.indices) == 1 or request.probe
        assert list(request.texts) == [texts[i] for i in request.indices]
        for i in request.indices:
            assert isinstance(texts[i], str) and texts[i] and counts[i] <= case["max_per_input"]
        if taken - 1 == case["too_large_at"] and request.tokens > 1:
            plan.too_large(request, budget=max(1, request.tokens - 1))
            continue
        plan.succeed(request, [array.array("f", [float(i)]) for i in request.indices], None)
        sent.extend(request.indices)
        if taken == case["learn_at"]:
            plan.update(budget=case["learned"], probed=True)  # type: ignore[arg-type]
    # Every first occurrence at most once, in input order; copies get the same vector.
    assert sent == sorted(set(sent))
    batch = plan.batch
    for index, text in enumerate(texts):
        assert (index in batch.vectors) != (index in batch.errors), f"index {index} not accounted for exactly once"
        if index in batch.vectors:
            first = texts.index(text)
            assert first in sent and batch.vectors[index] == batch.vectors[first]
        else:
            assert index not in sent
    assert set(batch.vectors) | set(batch.errors) == set(range(len(texts)))
    for index in range(len(texts)):
        if texts[index] in _BAD or (isinstance(texts[index], str) and "\ud800" in texts[index]):
            assert index in batch.errors and batch.codes[index] in ("invalid_type", "empty", "invalid_unicode")
