"""EmbeddingService results: vectors under their own text, packing through the service, inputs that fail alone.

Against `FakeOpenAIClient` (test/support/fake_openai_client.py), which records
every `embeddings.create` call and answers with vectors derived from each
text, so a test can check that every vector sits under its own text. Sleeps
and clocks are injected fakes: nothing waits for real except the concurrency
test (a few 10 ms sleeps).
"""

from __future__ import annotations

import array

import numpy as np
import pytest
from engine_helpers import make
from fake_openai_client import (
    FakeOpenAIClient,
    Response,
    Usage,
    good_response,
    vec_for,
)

from core.embedding_service import EmbeddingBatch
from core.errors import (
    CoreError,
    EmptyInputError,
    InputTooLongError,
    InvalidInputTypeError,
)
from core.engine.tokens import count_tokens


# --- happy path and result shape -----------------------------------------------------------


def test_vectors_come_back_under_their_own_text():
    service, client, clock = make()
    texts = [f"text number {i}" for i in range(10)]
    result = service.batch_generate_embeddings(texts)
    assert result["embeddings"] == [vec_for(t) for t in texts]
    assert result["failed_indices"] == []
    assert result["indices"] == list(range(10))
    assert result["errors"] == {}
    assert result["total_tokens"] == 70  # the API's usage figure
    assert len(client.calls) == 1
    call = client.calls[0]
    assert call["model"] == "text-embedding-3-small"
    assert call["input"] == texts
    assert call["encoding_format"] == "float"
    assert "dimensions" not in call
    assert clock.sleeps == []


def test_embed_reports_counts_and_stats():
    service, client, _ = make()
    batch = service.embed(["alpha", "beta gamma"])
    assert isinstance(batch, EmbeddingBatch)
    assert batch.indices == [0, 1]
    assert batch.failed_indices == []
    assert batch.token_counts == [count_tokens("alpha"), count_tokens("beta gamma")]
    assert (batch.requests, batch.retries, batch.rate_limited) == (1, 0, 0)
    assert isinstance(batch.vectors[0], array.array) and batch.vectors[0].typecode == "f"


def test_total_tokens_falls_back_to_our_count_without_usage():
    texts = ["one two three", "four"]
    client = FakeOpenAIClient(handler=lambda n, kw: Response(good_response(kw).data))  # no usage
    service, _, _ = make(client)
    result = service.batch_generate_embeddings(texts)
    assert result["total_tokens"] == sum(count_tokens(t) for t in texts)


def test_generate_embedding_returns_one_list():
    service, client, _ = make()
    assert service.generate_embedding("hello") == vec_for("hello")
    assert client.inputs == [["hello"]]


def test_items_may_be_mappings_and_embeddings_numpy_arrays():
    def handler(n, kw):
        return Response(
            [{"index": i, "embedding": np.array(vec_for(t), dtype=np.float64)} for i, t in enumerate(kw["input"])],
            Usage(1),
        )

    service, _, _ = make(FakeOpenAIClient(handler))
    texts = ["x", "y", "z"]
    assert service.batch_generate_embeddings(texts)["embeddings"] == [vec_for(t) for t in texts]


# --- packing through the service -----------------------------------------------------------


def test_2048_inputs_of_300_tokens_take_3_requests_under_the_token_cap():
    filler = " ".join(f"w{k}" for k in range(150))
    texts = [f"{i} {filler}" for i in range(2048)]
    service, client, _ = make(max_concurrency=1)
    result = service.batch_generate_embeddings(texts)
    assert len(result["embeddings"]) == 2048 and result["failed_indices"] == []
    assert len(client.calls) == 3
    assert [t for request in client.inputs for t in request] == texts  # order kept
    sizes = [sum(map(count_tokens, request)) for request in client.inputs]
    assert all(size <= 300_000 for size in sizes)
    assert sum(sizes) > 600_000  # two requests could not have done it
    # Fewest requests: each request is closed only because the next input did not fit.
    sent = 0
    for request, size in zip(client.inputs[:-1], sizes):
        sent += len(request)
        assert size + count_tokens(texts[sent]) > 300_000
    assert result["embeddings"][2047] == vec_for(texts[2047])


def test_input_cap_and_per_call_batch_size():
    service, client, _ = make(max_batch_size=100, max_concurrency=1)
    texts = [f"t{i}" for i in range(250)]
    service.batch_generate_embeddings(texts)
    assert [len(r) for r in client.inputs] == [100, 100, 50]
    client.calls.clear()
    service.batch_generate_embeddings(texts, max_batch_size=30)
    assert [len(r) for r in client.inputs] == [30] * 8 + [10]
    assert [t for r in client.inputs for t in r] == texts


def test_small_token_cap_packs_by_tokens():
    texts = ["one two three four five"] + [f"word{i} " * 3 for i in range(9)]
    service, client, _ = make(max_tokens_per_request=20, max_concurrency=1)
    result = service.batch_generate_embeddings(texts)
    assert result["failed_indices"] == []
    assert all(sum(map(count_tokens, r)) <= 20 for r in client.inputs)
    assert [t for r in client.inputs for t in r] == texts


# --- per-input failures ----------------------------------------------------------------------


def test_non_string_fails_alone_in_embed_and_raises_in_batch():
    service, client, _ = make()
    batch = service.embed(["ok", 42, None, "fine"])
    assert batch.indices == [0, 3]
    assert batch.errors == {1: "not a string (int)", 2: "not a string (NoneType)"}
    assert client.inputs == [["ok", "fine"]]
    with pytest.raises(InvalidInputTypeError, match="index 2") as info:
        service.batch_generate_embeddings(["a", "b", b"bytes"])
    assert isinstance(info.value, TypeError) and isinstance(info.value, CoreError)
    assert info.value.index == 2


def test_empty_text_is_a_value_error_naming_the_index():
    service, client, _ = make()
    with pytest.raises(ValueError, match="index 1 is empty") as info:
        service.batch_generate_embeddings(["text1", "", "text3"])
    assert isinstance(info.value, EmptyInputError) and info.value.index == 1
    assert client.calls == []  # nothing sent
    assert service.embed(["", "x"]).errors == {0: "empty text"}


def test_empty_list_and_non_list():
    service, _, _ = make()
    with pytest.raises(ValueError, match="empty list"):
        service.batch_generate_embeddings([])
    for bad in ("just one string", b"bytes", 42, (t for t in ["a"])):
        with pytest.raises(InvalidInputTypeError, match="list of strings"):
            service.batch_generate_embeddings(bad)
    assert service.batch_generate_embeddings(("a", "b"))["indices"] == [0, 1]  # any sequence


def test_over_long_input_fails_alone_with_its_token_count():
    long_text = "hello " * 9000
    tokens = count_tokens(long_text)
    assert tokens > 8191
    service, client, _ = make()
    result = service.batch_generate_embeddings(["before", long_text, "after"])
    assert result["failed_indices"] == [1]
    assert str(tokens) in result["errors"][1] and "8191" in result["errors"][1]
    assert result["embeddings"] == [vec_for("before"), vec_for("after")]
    assert result["indices"] == [0, 2]
    assert client.inputs == [["before", "after"]]
    with pytest.raises(InputTooLongError, match="index 0") as info:
        service.generate_embedding(long_text)
    assert isinstance(info.value, ValueError)


def test_truncate_sends_a_cut_text_within_the_limit():
    long_text = "hello " * 9000
    service, client, _ = make(truncate=True)
    batch = service.embed(["short", long_text])
    assert batch.failed_indices == []
    sent = client.inputs[0][1]
    assert long_text.startswith(sent)
    assert 8180 <= count_tokens(sent) <= 8191
    assert batch.token_counts[1] == count_tokens(sent)
    assert list(batch.vectors[1]) == vec_for(sent)


def test_input_above_the_request_cap_fails_alone():
    # A configured request cap below the per-input limit: that input can never be sent.
    service, client, _ = make(max_tokens_per_request=10)
    big = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    batch = service.embed(["small", big, "tiny"])
    assert batch.indices == [0, 2]
    assert str(count_tokens(big)) in batch.errors[1] and "10" in batch.errors[1]
    assert client.inputs == [["small", "tiny"]]


def test_truncate_cuts_to_the_request_cap_too():
    service, client, _ = make(max_tokens_per_request=10, truncate=True)
    big = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    batch = service.embed([big])
    assert batch.indices == [0]
    assert big.startswith(client.inputs[0][0]) and count_tokens(client.inputs[0][0]) <= 10


def test_input_above_the_known_tpm_budget_fails_alone():
    service, client, _ = make(tokens_per_minute=5)
    big = "alpha beta gamma delta epsilon zeta eta theta"
    batch = service.embed(["a", big])
    assert batch.indices == [0]
    assert str(count_tokens(big)) in batch.errors[1]
    assert all(sum(map(count_tokens, r)) <= 5 for r in client.inputs)
