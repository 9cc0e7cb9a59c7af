"""EmbeddingService refuses any response whose vectors do not line up with its inputs (retried, then failed).

Against `FakeOpenAIClient` (test/support/fake_openai_client.py), which records
every `embeddings.create` call and answers with vectors derived from each
text, so a test can check that every vector sits under its own text. Sleeps
and clocks are injected fakes: nothing waits for real except the concurrency
test (a few 10 ms sleeps).
"""

from __future__ import annotations

import pytest
from engine_helpers import make
from fake_openai_client import (
    DIMS,
    FakeOpenAIClient,
    Item,
    Response,
    Usage,
    encode,
    good_response,
    vec_for,
)


# --- alignment ------------------------------------------------------------------------------


def short(kw):
    return Response(good_response(kw).data[:-1], Usage(1))


def extra(kw):
    data = good_response(kw).data
    return Response(data + [Item(len(data), encode(vec_for("intruder"), "float"))], Usage(1))


def duplicated_index(kw):
    data = good_response(kw).data
    data[-1].index = 0
    return Response(data, Usage(1))


def one_index_missing(kw):
    data = good_response(kw).data
    del data[1].index
    return Response(data, Usage(1))


def index_out_of_range(kw):
    data = good_response(kw).data
    for item in data:
        item.index += 1
    return Response(data, Usage(1))


def bool_indices(kw):
    data = good_response(kw).data
    for item in data:
        item.index = bool(item.index)
    return Response(data, Usage(1))


def wrong_dims(kw):
    return good_response(kw, dims=DIMS + 1)


def ragged_dims(kw):
    data = good_response(kw).data
    data[2].embedding = data[2].embedding[:-1]
    return Response(data, Usage(1))


def no_data(kw):
    return Response([], Usage(0))


def none_embedding(kw):
    data = good_response(kw).data
    data[1].embedding = None
    return Response(data, Usage(1))


def bad_base64(kw):
    data = good_response(kw).data
    data[0].embedding = "AAAA"  # 3 bytes: not a float32 vector
    return Response(data, Usage(1))


MISALIGNMENTS = [
    short,
    extra,
    duplicated_index,
    one_index_missing,
    index_out_of_range,
    bool_indices,
    wrong_dims,
    ragged_dims,
    no_data,
    none_embedding,
    bad_base64,
]


@pytest.mark.parametrize("fault", MISALIGNMENTS)
def test_misaligned_response_is_retried_at_once(fault):
    texts = ["red", "green", "blue"]
    service, client, clock = make(FakeOpenAIClient(outcomes=[fault]), dimensions=DIMS)
    result = service.batch_generate_embeddings(texts)
    assert result["embeddings"] == [vec_for(t) for t in texts]
    assert len(client.calls) == 2
    assert sum(clock.sleeps) == 0  # not a load problem: no backoff


@pytest.mark.parametrize("fault", MISALIGNMENTS)
def test_persistent_misalignment_fails_every_input_of_that_request(fault):
    texts = ["red", "green", "blue", "cyan", "magenta", "yellow"]

    def handler(n, kw):
        return fault(kw) if kw["input"][0] == "red" else good_response(kw)

    service, client, clock = make(FakeOpenAIClient(handler), dimensions=DIMS, max_batch_size=3, max_retries=2, max_concurrency=1)
    result = service.batch_generate_embeddings(texts)
    assert result["failed_indices"] == [0, 1, 2]
    assert result["indices"] == [3, 4, 5]
    assert result["embeddings"] == [vec_for(t) for t in texts[3:]]  # never a vector under the wrong text
    for i in range(3):
        assert result["errors"][i].startswith("MisalignedResponseError")
    assert len(client.calls) == 1 + 3  # 3 attempts for the bad request, 1 for the good one
    assert sum(clock.sleeps) == 0


def test_out_of_order_indices_are_reordered():
    texts = [f"t{i}" for i in range(8)]

    def shuffled(n, kw):
        data = good_response(kw).data
        return Response([data[i] for i in (5, 2, 7, 0, 1, 6, 3, 4)], Usage(1))

    service, client, _ = make(FakeOpenAIClient(shuffled))
    assert service.batch_generate_embeddings(texts)["embeddings"] == [vec_for(t) for t in texts]
    assert len(client.calls) == 1


def test_items_without_index_are_taken_in_order():
    def no_index(n, kw):
        return Response([Item(None, vec_for(t)) for t in kw["input"]], Usage(1))

    service, _, _ = make(FakeOpenAIClient(no_index))
    texts = ["a", "b", "c"]
    assert service.batch_generate_embeddings(texts)["embeddings"] == [vec_for(t) for t in texts]


def test_dimensions_stay_consistent_across_requests():
    # Without `dimensions`, the first answer sets the width; a later request that
    # answers another width is misaligned (a numpy block would otherwise be garbage).
    def handler(n, kw):
        return good_response(kw, dims=DIMS if kw["input"][0] == "a" else DIMS + 2)

    service, client, _ = make(FakeOpenAIClient(handler), max_batch_size=2, max_retries=1, max_concurrency=1, output="numpy")
    result = service.batch_generate_embeddings(["a", "b", "c", "d"])
    assert result["failed_indices"] == [2, 3]
    assert "dimensions" in result["errors"][2]
    assert result["embeddings"].shape == (2, DIMS)
