"""EmbeddingService behaviour against a small hand-written fake client.

The fake records every `embeddings.create` call and answers with vectors
derived from each text, so a test can check that every vector sits under its
own text. Sleeps and clocks are injected fakes: nothing waits for real except
the concurrency test (a few 10 ms sleeps).
"""

from __future__ import annotations

import array
import base64
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import httpx2
import numpy as np
import openai
import pytest
from fakes import FakeClock

import core.embedding_service as es
from core.engine.decode import to_float32
from core.engine.output import format_vectors
from core.embedding_service import EmbeddingBatch, EmbeddingService
from core.limits import model_dimensions
from core.secrets import redact
from core.errors import (
    AllRequestsFailedError,
    ConfigurationError,
    CoreError,
    EmbeddingAPIError,
    EmptyInputError,
    EndpointError,
    InputTooLongError,
    InvalidInputError,
    InvalidInputTypeError,
)
from core.limits import MAX_RETRY_AFTER
from core.tokens import count_tokens

DIMS = 4
SECRET = "sk-test-SECRET0123456789abcdefXYZ"
URL = "https://api.openai.com/v1/embeddings"


# --- the fake client -----------------------------------------------------------------------


def vec_for(text: str, dims: int = DIMS) -> list[float]:
    """A vector that identifies its text (small integers: exact in float32)."""
    h = zlib.crc32(text.encode("utf-8"))
    return [float((h >> (5 * k)) % 997) for k in range(dims - 1)] + [float(len(text) % 4096)]


class Item:
    def __init__(self, index: int | None, embedding: Any) -> None:
        if index is not None:
            self.index = index
        self.embedding = embedding
        self.object = "embedding"


class Usage:
    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.total_tokens = prompt_tokens


class Response:
    def __init__(self, data: list[Any], usage: Usage | None = None) -> None:
        self.data = data
        if usage is not None:
            self.usage = usage


def encode(vector: list[float], encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


def good_response(kwargs: dict[str, Any], *, dims: int | None = None, tokens_per_input: int = 7) -> Response:
    dims = dims or kwargs.get("dimensions") or DIMS
    fmt = kwargs.get("encoding_format", "float")
    data = [Item(i, encode(vec_for(t, dims), fmt)) for i, t in enumerate(kwargs["input"])]
    return Response(data, Usage(tokens_per_input * len(kwargs["input"])))


Handler = Callable[[int, dict[str, Any]], Any]


class FakeEmbeddings:
    def __init__(self, handler: Handler | None, outcomes: list[Any] | None) -> None:
        self.handler = handler
        self.outcomes = list(outcomes or [])
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def create(self, **kwargs: Any) -> Any:
        with self._lock:
            number = len(self.calls)
            self.calls.append(dict(kwargs, input=list(kwargs["input"])))
            outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            return outcome(kwargs)
        if self.handler is not None:
            return self.handler(number, kwargs)
        return good_response(kwargs)


class FakeClient:
    """`client.embeddings.create(...)`: scripted outcomes first, then `handler`, then good answers.

    An outcome is an exception to raise or a function kwargs -> response.
    """

    def __init__(self, handler: Handler | None = None, outcomes: list[Any] | None = None) -> None:
        self.embeddings = FakeEmbeddings(handler, outcomes)
        self.closed = False

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self.embeddings.calls

    @property
    def inputs(self) -> list[list[str]]:
        return [call["input"] for call in self.calls]

    def close(self) -> None:
        self.closed = True



def make(client: Any = None, **kwargs: Any) -> tuple[EmbeddingService, Any, FakeClock]:
    client = client if client is not None else FakeClient()
    clock = FakeClock(5000.0)
    kwargs.setdefault("encoding_format", "float")
    kwargs.setdefault("rng", lambda: 0.0)
    service = EmbeddingService(client=client, sleep=clock.sleep, clock=clock, **kwargs)
    return service, client, clock


def status_error(status: int, *, headers=None, body=None, message: str = "boom"):
    cls = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        409: openai.ConflictError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    request = httpx2.Request("POST", URL)
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return cls(message, response=response, body=body)


def timeout_error():
    return openai.APITimeoutError(request=httpx2.Request("POST", URL))


def connection_error():
    return openai.APIConnectionError(message="Connection reset by peer", request=httpx2.Request("POST", URL))


def as_lists(result_embeddings) -> list[list[float]]:
    return [list(map(float, v)) for v in result_embeddings]


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
    client = FakeClient(handler=lambda n, kw: Response(good_response(kw).data))  # no usage
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

    service, _, _ = make(FakeClient(handler))
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
    service, client, clock = make(FakeClient(outcomes=[fault]), dimensions=DIMS)
    result = service.batch_generate_embeddings(texts)
    assert result["embeddings"] == [vec_for(t) for t in texts]
    assert len(client.calls) == 2
    assert sum(clock.sleeps) == 0  # not a load problem: no backoff


@pytest.mark.parametrize("fault", MISALIGNMENTS)
def test_persistent_misalignment_fails_every_input_of_that_request(fault):
    texts = ["red", "green", "blue", "cyan", "magenta", "yellow"]

    def handler(n, kw):
        return fault(kw) if kw["input"][0] == "red" else good_response(kw)

    service, client, clock = make(FakeClient(handler), dimensions=DIMS, max_batch_size=3, max_retries=2, max_concurrency=1)
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

    service, client, _ = make(FakeClient(shuffled))
    assert service.batch_generate_embeddings(texts)["embeddings"] == [vec_for(t) for t in texts]
    assert len(client.calls) == 1


def test_items_without_index_are_taken_in_order():
    def no_index(n, kw):
        return Response([Item(None, vec_for(t)) for t in kw["input"]], Usage(1))

    service, _, _ = make(FakeClient(no_index))
    texts = ["a", "b", "c"]
    assert service.batch_generate_embeddings(texts)["embeddings"] == [vec_for(t) for t in texts]


def test_dimensions_stay_consistent_across_requests():
    # Without `dimensions`, the first answer sets the width; a later request that
    # answers another width is misaligned (a numpy block would otherwise be garbage).
    def handler(n, kw):
        return good_response(kw, dims=DIMS if kw["input"][0] == "a" else DIMS + 2)

    service, client, _ = make(FakeClient(handler), max_batch_size=2, max_retries=1, max_concurrency=1, output="numpy")
    result = service.batch_generate_embeddings(["a", "b", "c", "d"])
    assert result["failed_indices"] == [2, 3]
    assert "dimensions" in result["errors"][2]
    assert result["embeddings"].shape == (2, DIMS)


# --- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409, 429])
def test_transient_status_is_retried_after_backoff(status):
    service, client, clock = make(FakeClient(outcomes=[status_error(status)]))
    result = service.batch_generate_embeddings(["a", "b"])
    assert result["embeddings"] == [vec_for("a"), vec_for("b")]
    assert len(client.calls) == 2
    assert clock.sleeps == [0.5]


@pytest.mark.parametrize("make_error", [timeout_error, connection_error])
def test_timeouts_and_connection_errors_are_retried(make_error):
    """Once the endpoint has answered, a timeout or dropped connection is a blip: retried."""
    service, client, clock = make(FakeClient(outcomes=[None, make_error(), make_error()]))
    service.generate_embedding("warm-up")
    assert service.generate_embedding("a") == vec_for("a")
    assert len(client.calls) == 4
    assert clock.sleeps == [0.5, 1.0]


def test_first_request_timeout_is_still_retried():
    """A timeout says nothing about the URL: even before any answer it is retried."""
    service, client, clock = make(FakeClient(outcomes=[timeout_error()]))
    assert service.generate_embedding("a") == vec_for("a")
    assert len(client.calls) == 2


@pytest.mark.parametrize(
    "make_error",
    [connection_error, lambda: status_error(401), lambda: status_error(403), lambda: status_error(404)],
    ids=["refused", "401", "403", "404"],
)
def test_unusable_endpoint_stops_at_the_first_request(make_error):
    """Issue #8 (7): a wrong port, a URL without /v1 or a bad key made every section 'failed'
    after ~27 s of retries. Before the endpoint has ever answered, such an error stops the
    run at once: one call, no sleep, an `EndpointError` naming the URL (no key), nothing
    else sent."""
    service, client, clock = make(FakeClient(outcomes=[make_error()]), max_concurrency=1, max_batch_size=1)
    with pytest.raises(EndpointError) as info:
        service.embed(["a", "b", "c"])
    assert len(client.calls) == 1 and clock.sleeps == []
    assert "cannot be used" in str(info.value) and "test-key" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "900"}, MAX_RETRY_AFTER),  # capped
        ({"retry-after": "soon"}, 0.5),  # unparsable: our backoff
    ],
)
def test_retry_after_is_honoured_and_capped(headers, expected):
    service, client, clock = make(FakeClient(outcomes=[status_error(429, headers=headers)]))
    batch = service.embed(["a"])
    assert batch.indices == [0]
    assert clock.sleeps == [pytest.approx(expected)]
    assert (batch.requests, batch.retries, batch.rate_limited) == (2, 1, 1)


def test_503_retry_after_is_honoured_too():
    service, _, clock = make(FakeClient(outcomes=[status_error(503, headers={"retry-after": "2"})]))
    service.embed(["a"])
    assert clock.sleeps == [2.0]


def test_backoff_grows_with_jitter():
    jitter = iter([0.0, 0.5, 0.2, 0.9, 0.4])
    errors = [status_error(500) for _ in range(5)]
    service, client, clock = make(FakeClient(outcomes=errors), rng=lambda: next(jitter))
    assert service.embed(["a"]).indices == [0]
    bases = [0.5, 1.0, 2.0, 4.0, 8.0]
    factors = [1.0, 0.875, 0.95, 0.775, 0.9]
    assert clock.sleeps == [pytest.approx(b * f) for b, f in zip(bases, factors)]
    assert all(later > earlier for earlier, later in zip(clock.sleeps, clock.sleeps[1:]))


def test_insufficient_quota_is_not_retried():
    quota = status_error(
        429,
        headers={"retry-after": "1", "x-request-id": "req_quota"},
        body={"code": "insufficient_quota", "message": "You exceeded your current quota"},
        message="Error code: 429 - You exceeded your current quota",
    )
    service, client, clock = make(FakeClient(outcomes=[quota]))
    with pytest.raises(AllRequestsFailedError) as info:  # an EndpointError: the account is out of quota
        service.batch_generate_embeddings(["a", "b"])
    assert isinstance(info.value, EndpointError)
    assert len(client.calls) == 1
    assert clock.sleeps == []
    assert info.value.code == "insufficient_quota"
    assert info.value.status_code == 429
    assert "insufficient_quota" in info.value.failures[0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status):
    """After the endpoint has answered once, a 4xx fails its own request alone."""
    service, client, clock = make(FakeClient(outcomes=[None, status_error(status)]))
    service.embed(["warm-up"])
    batch = service.embed(["a"])
    assert batch.failed_indices == [0]
    assert batch.errors[0].startswith(f"HTTP {status}")
    assert len(client.calls) == 2 and clock.sleeps == []


def test_plain_exception_is_not_retried():
    service, client, clock = make(FakeClient(outcomes=[Exception("a bug, not a network blip")]))
    batch = service.embed(["a"])
    assert batch.errors == {0: "Exception: a bug, not a network blip"}
    assert len(client.calls) == 1 and clock.sleeps == []


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_max_retries_is_respected(max_retries):
    errors = [status_error(503) for _ in range(10)]
    service, client, clock = make(FakeClient(outcomes=errors), max_retries=max_retries)
    batch = service.embed(["a"])
    assert batch.failed_indices == [0]
    assert len(client.calls) == max_retries + 1
    assert len(clock.sleeps) == max_retries
    assert (batch.requests, batch.retries) == (max_retries + 1, max_retries)


def test_exhausted_retries_report_status_and_request_id():
    errors = [
        status_error(503, headers={"x-request-id": f"req_{n}"}, message="The server is overloaded") for n in range(3)
    ]
    service, client, _ = make(FakeClient(outcomes=errors), max_retries=2, max_batch_size=1, max_concurrency=1)
    batch = service.embed(["a", "b"])
    assert batch.indices == [1]
    assert batch.errors[0] == "HTTP 503: The server is overloaded (request_id=req_2)"
    # Kept sanitized (issue #8 (3)): status and request id, never the raw SDK exception.
    assert isinstance(batch.last_error, EmbeddingAPIError) and batch.last_error is not errors[-1]
    assert (batch.last_error.status_code, batch.last_error.request_id) == (503, "req_2")


def test_all_requests_failed_error_is_chained_and_carries_details():
    errors = [status_error(500, headers={"x-request-id": f"req_{n}"}) for n in range(3)]
    service, _, _ = make(FakeClient(outcomes=errors), max_retries=2)
    with pytest.raises(AllRequestsFailedError) as info:
        service.batch_generate_embeddings(["a", "b"])
    exc = info.value
    assert isinstance(exc, RuntimeError) and isinstance(exc, EmbeddingAPIError)
    assert str(exc).startswith("Failed to generate any embeddings")
    # Chained to a sanitized stand-in, not the SDK's exception (which may echo the key).
    assert isinstance(exc.__cause__, EmbeddingAPIError) and exc.__cause__.request_id == "req_2"
    assert exc.__cause__.__cause__ is None and exc.__cause__.__context__ is None
    assert exc.status_code == 500
    assert exc.request_id == "req_2"
    assert set(exc.failures) == {0, 1}
    assert "req_2" in exc.failures[0] and "HTTP 500" in exc.failures[0]


def test_all_inputs_too_long_raise_all_requests_failed_without_a_cause():
    service, client, _ = make(max_tokens_per_input=2)
    with pytest.raises(AllRequestsFailedError, match="Failed to generate any embeddings") as info:
        service.batch_generate_embeddings(["one two three four"])
    assert info.value.__cause__ is None and info.value.status_code is None
    assert client.calls == []


def test_generate_embedding_raises_chained_api_error():
    error = status_error(401, headers={"x-request-id": "req_auth"}, message="bad auth")
    service, _, _ = make(FakeClient(outcomes=[None, error]))
    service.generate_embedding("warm-up")  # the endpoint answered once: a 401 now is this request's
    with pytest.raises(EmbeddingAPIError, match="Failed to generate embedding: HTTP 401") as info:
        service.generate_embedding("a")
    assert isinstance(info.value.__cause__, EmbeddingAPIError) and info.value.__cause__ is not error
    assert (info.value.status_code, info.value.request_id) == (401, "req_auth")
    with pytest.raises(InvalidInputTypeError):
        service.generate_embedding(3)  # type: ignore[arg-type]
    with pytest.raises(EmptyInputError):
        service.generate_embedding("")


def test_seed_style_partial_failure_keeps_the_other_requests():
    def handler(n, kw):
        if n == 1:
            raise Exception("API rate limit exceeded")
        return good_response(kw)

    service, client, _ = make(FakeClient(handler), max_batch_size=2, max_concurrency=1)
    result = service.batch_generate_embeddings(["a", "b", "c", "d", "e"])
    assert result["failed_indices"] == [2, 3]
    assert result["indices"] == [0, 1, 4]
    assert result["embeddings"] == [vec_for(t) for t in "abe"]
    assert result["errors"] == {2: "Exception: API rate limit exceeded", 3: "Exception: API rate limit exceeded"}


# --- pacing ---------------------------------------------------------------------------------


def test_429_with_retry_after_pauses_the_shared_limiter():
    error = status_error(429, headers={"retry-after": "4"})
    service, _, clock = make(FakeClient(outcomes=[error]))
    pauses: list[float] = []
    original = service.limiter.pause

    def spy(seconds: float) -> None:
        pauses.append(seconds)
        original(seconds)

    service.limiter.pause = spy  # type: ignore[method-assign]
    start = clock.now
    service.embed(["a"])
    assert pauses == [4.0]
    assert service.limiter._paused_until == start + 4.0
    assert clock.sleeps == [4.0]  # the pause is not served twice


def test_500_does_not_pause_the_limiter():
    service, _, _ = make(FakeClient(outcomes=[status_error(500, headers={"retry-after": "4"})]))
    service.embed(["a"])
    assert service.limiter._paused_until == 0.0


def test_429_headers_teach_the_limiter():
    error = status_error(
        429,
        headers={
            "retry-after-ms": "100",
            "x-ratelimit-limit-tokens": "1000000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "6m0s",
            "x-ratelimit-limit-requests": "3000",
            "x-ratelimit-remaining-requests": "2999",
            "x-ratelimit-reset-requests": "20ms",
        },
    )
    service, _, clock = make(FakeClient(outcomes=[error]))
    assert service.embed(["hello world"]).indices == [0]
    assert clock.sleeps == [pytest.approx(0.1)]
    tokens, requests = service.limiter.tokens, service.limiter.requests
    assert (tokens.capacity, requests.capacity) == (1_000_000, 3000)
    assert tokens.rate == pytest.approx(1_000_000 / 360)
    assert requests.rate == pytest.approx(1 / 0.02)
    # The learned budget now paces: 0.1 s refilled ~278 tokens, minus the 2 sent.
    assert service.limiter.acquire(1000) == pytest.approx((1000 - (0.1 * 1_000_000 / 360 - 2)) * 360 / 1_000_000)


def test_known_tpm_paces_requests_and_caps_their_size():
    texts = [f"item {i} lorem ipsum dolor" for i in range(30)]
    total = sum(map(count_tokens, texts))
    service, client, clock = make(tokens_per_minute=60, max_concurrency=1)  # 1 token per second
    result = service.batch_generate_embeddings(texts)
    assert result["failed_indices"] == []
    assert all(sum(map(count_tokens, r)) <= 60 for r in client.inputs)
    assert len(client.calls) >= total // 60
    # Everything beyond the first full bucket waited for its tokens, no more.
    assert sum(clock.sleeps) == pytest.approx(total - 60, abs=1e-6)


def test_known_rpm_paces_requests():
    service, client, clock = make(requests_per_minute=2, max_batch_size=1, max_concurrency=1)
    service.batch_generate_embeddings(["a", "b", "c", "d"])
    assert len(client.calls) == 4
    assert clock.sleeps == [pytest.approx(30.0), pytest.approx(30.0)]


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_requests_are_bounded_and_results_ordered():
    lock = threading.Lock()
    state = {"in_flight": 0, "peak": 0}

    def slow(n, kw):
        with lock:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
        time.sleep(0.01 if n % 2 else 0.02)  # uneven: answers finish out of order
        with lock:
            state["in_flight"] -= 1
        return good_response(kw)

    texts = [f"doc {i}" for i in range(40)]
    service, client, _ = make(FakeClient(slow), max_batch_size=4, max_concurrency=3)
    result = service.batch_generate_embeddings(texts)
    assert result["embeddings"] == [vec_for(t) for t in texts]
    assert result["indices"] == list(range(40))
    assert len(client.calls) == 10
    assert 1 < state["peak"] <= 3  # really in parallel, never above the bound


def test_concurrent_failures_stay_with_their_request():
    def handler(n, kw):
        time.sleep(0.002)
        if kw["input"][0] == "doc 4":
            raise status_error(400, message="bad request")
        return good_response(kw)

    texts = [f"doc {i}" for i in range(12)]
    service, _, _ = make(FakeClient(handler), max_batch_size=4, max_concurrency=4)
    batch = service.embed(texts)
    assert batch.failed_indices == [4, 5, 6, 7]
    assert all(list(batch.vectors[i]) == vec_for(texts[i]) for i in batch.indices)
    assert batch.indices == [0, 1, 2, 3, 8, 9, 10, 11]


# --- dedup and progress ---------------------------------------------------------------------


def test_identical_texts_are_sent_once_and_every_copy_gets_the_vector():
    service, client, _ = make(max_batch_size=2, max_concurrency=1)
    texts = ["a", "b", "a", "c", "b", "a"]
    result = service.batch_generate_embeddings(texts)
    assert [t for r in client.inputs for t in r] == ["a", "b", "c"]
    assert result["embeddings"] == [vec_for(t) for t in texts]
    assert result["indices"] == list(range(6))


def test_a_failed_duplicate_fails_every_copy():
    def handler(n, kw):
        if "b" in kw["input"]:
            raise status_error(400)
        return good_response(kw)

    service, _, _ = make(FakeClient(handler), max_batch_size=1, max_concurrency=1)
    batch = service.embed(["a", "b", "a", "b"])
    assert batch.failed_indices == [1, 3]
    assert batch.indices == [0, 2]


def test_progress_totals_equal_the_inputs():
    seen: list[tuple[int, int]] = []

    def handler(n, kw):
        if kw["input"][0] == "t6":
            raise status_error(400)
        return good_response(kw)

    texts = [f"t{i}" for i in range(10)] + ["t0", "t1"]  # two duplicates
    service, _, _ = make(FakeClient(handler), max_batch_size=3, max_concurrency=2)
    batch = service.embed(texts, progress=lambda n, tokens: seen.append((n, tokens)))
    assert len(seen) == 4  # one call per request
    assert sum(n for n, _ in seen) == len(texts)
    assert sum(t for _, t in seen) == sum(count_tokens(t) for t in set(texts))
    assert len(batch.vectors) + len(batch.errors) == len(texts)


def test_progress_is_called_once_per_request_even_when_it_raises():
    calls: list[int] = []

    def progress(n, tokens):
        calls.append(n)
        raise KeyError("callback bug")

    service, _, _ = make(max_concurrency=1)
    with pytest.raises(KeyError):
        service.embed(["a", "b"], progress=progress)
    assert calls == [2]


# --- configuration --------------------------------------------------------------------------


def test_missing_key_names_both_ways_to_set_it(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError) as info:
        EmbeddingService()
    assert "api_key" in str(info.value) and "OPENAI_API_KEY" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ConfigurationError):
        EmbeddingService(api_key="")


def test_key_from_environment_and_client_kwargs(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    fake = FakeClient()
    with patch("core.embedding_service.OpenAI", return_value=fake) as openai_cls:
        service = EmbeddingService(timeout=12.5)
    kwargs = openai_cls.call_args.kwargs
    assert kwargs["api_key"] == SECRET
    assert kwargs["max_retries"] == 0  # retries are ours
    assert kwargs["timeout"] == 12.5
    assert "base_url" not in kwargs
    assert service.client is fake
    assert service.base_url is None


def test_base_url_argument_is_passed(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with patch("core.embedding_service.OpenAI", return_value=FakeClient()) as openai_cls:
        service = EmbeddingService(api_key="k", base_url="http://127.0.0.1:9999/v1")
    assert openai_cls.call_args.kwargs["base_url"] == "http://127.0.0.1:9999/v1"
    assert service.base_url == "http://127.0.0.1:9999/v1"


def test_openai_base_url_environment_is_used(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1")
    service = EmbeddingService(api_key="k")  # the real SDK client, no request made
    assert service.base_url == "http://localhost:11434/v1"
    assert str(service.client.base_url).rstrip("/") == "http://localhost:11434/v1"
    service.close()


def test_ready_client_reports_its_base_url():
    class WithURL(FakeClient):
        base_url = "http://gateway.internal/v1/"

    service = EmbeddingService(client=WithURL())
    assert service.base_url == "http://gateway.internal/v1/"
    assert EmbeddingService(client=FakeClient()).base_url is None


def test_dimensions_and_model_are_passed_through():
    service, client, _ = make(model="text-embedding-3-large", dimensions=256)
    result = service.batch_generate_embeddings(["a"])
    assert client.calls[0]["dimensions"] == 256
    assert client.calls[0]["model"] == "text-embedding-3-large"
    assert len(result["embeddings"][0]) == 256


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_size": 0},
        {"max_batch_size": 2049},
        {"max_batch_size": True},
        {"max_batch_size": 10.0},
        {"max_tokens_per_request": 0},
        {"max_tokens_per_input": 0},
        {"max_concurrency": 0},
        {"max_retries": -1},
        {"dimensions": 0},
        {"encoding_format": "hex"},
        {"output": "tensor"},
        {"timeout": 0},
        {"tokens_per_minute": 0},
        {"tokens_per_minute": -100},
        {"tokens_per_minute": float("nan")},
        {"requests_per_minute": 0},
        {"requests_per_minute": "500"},
    ],
)
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ConfigurationError):
        EmbeddingService(client=FakeClient(), **kwargs)


def test_bad_per_call_batch_size_is_rejected():
    service, client, _ = make()
    for bad in (0, 2049, "10"):
        with pytest.raises(ConfigurationError, match="max_batch_size"):
            service.batch_generate_embeddings(["a"], max_batch_size=bad)
    assert client.calls == []


@pytest.mark.parametrize("output", ["list", "numpy", "array"])
def test_output_shapes(output):
    texts = ["a", "bb", "ccc"]
    service, _, _ = make(output=output)
    embeddings = service.batch_generate_embeddings(texts)["embeddings"]
    expected = np.array([vec_for(t) for t in texts], dtype=np.float32)
    if output == "list":
        assert isinstance(embeddings, list) and all(isinstance(v, list) for v in embeddings)
        assert all(isinstance(x, float) for x in embeddings[0])
    elif output == "numpy":
        assert isinstance(embeddings, np.ndarray)
        assert embeddings.shape == (3, DIMS) and embeddings.dtype == np.float32
        embeddings /= 2  # an ordinary, writable array
        embeddings *= 2
    else:
        assert all(isinstance(v, array.array) and v.typecode == "f" for v in embeddings)
    assert np.array_equal(np.asarray(embeddings, dtype=np.float32), expected)


def test_float32_values_are_kept():
    vector = [0.1, -1e-8, 3.4e38, 1 / 3]

    def handler(n, kw):
        return Response([Item(0, encode(vector, kw["encoding_format"]))], Usage(1))

    expected = list(np.array(vector, dtype=np.float32).astype(float))
    for fmt in ("float", "base64"):
        service, _, _ = make(FakeClient(handler), encoding_format=fmt)
        assert service.generate_embedding("a") == expected


def test_base64_is_decoded_as_little_endian_float32():
    service, client, _ = make(encoding_format="base64")
    texts = ["one", "two", "three"]
    result = service.batch_generate_embeddings(texts)
    assert client.calls[0]["encoding_format"] == "base64"
    assert result["embeddings"] == [vec_for(t) for t in texts]
    raw = base64.b64encode(struct.pack("<3f", 1.5, -2.0, 0.25)).decode()
    assert list(to_float32(raw)) == [1.5, -2.0, 0.25]


def test_base64_is_the_default_encoding():
    service = EmbeddingService(client=FakeClient())
    assert service.encoding_format == "base64"


def test_base64_byte_order_is_swapped_on_big_endian_hosts(monkeypatch):
    import sys

    swapped = base64.b64encode(struct.pack(">2f", 1.5, -2.0)).decode()
    monkeypatch.setattr(sys, "byteorder", "big" if sys.byteorder == "little" else "little")
    # Bytes read natively, then swapped because the API's are little-endian.
    assert list(to_float32(swapped)) == [1.5, -2.0]


def test_numpy_output_of_nothing_has_the_right_width():
    assert format_vectors([], "numpy", 8).shape == (0, 8)


def test_close_and_context_manager():
    client = FakeClient()
    with EmbeddingService(client=client) as service:
        assert service.client is client
    assert client.closed is True
    EmbeddingService(client=object()).close()  # a client without close() is fine


def test_model_dimensions():
    assert model_dimensions("text-embedding-3-small") == 1536
    assert model_dimensions("text-embedding-3-large", 256) == 256
    assert model_dimensions("my-local-model") is None


# --- secrets --------------------------------------------------------------------------------


def test_repr_never_shows_the_key():
    with patch("core.embedding_service.OpenAI", return_value=FakeClient()):
        service = EmbeddingService(api_key=SECRET)
    assert SECRET not in repr(service) and "sk-test" not in repr(service)
    assert "api_key='***'" in repr(service)


@pytest.mark.parametrize("key", [SECRET, "custom-gateway-key-0123456789"])
def test_key_never_appears_in_errors_or_reasons(key):
    leaky = status_error(
        401,
        headers={"x-request-id": "req_leak"},
        message=f"Error code: 401 - Incorrect API key provided: {key}. You can find your API key at ...",
        body={"code": "invalid_api_key", "message": f"Incorrect API key provided: {key}"},
    )
    with patch("core.embedding_service.OpenAI", return_value=FakeClient(outcomes=[leaky, leaky, Exception(key)])):
        service = EmbeddingService(api_key=key, sleep=lambda s: None)
    with pytest.raises(AllRequestsFailedError) as info:
        service.batch_generate_embeddings(["a", "b"])
    assert key not in str(info.value)
    assert all(key not in reason for reason in info.value.failures.values())
    assert "invalid_api_key" in str(info.value) and "req_leak" in str(info.value)
    with pytest.raises(EmbeddingAPIError) as single:
        service.generate_embedding("a")
    assert key not in str(single.value)
    batch = service.embed(["c"])  # plain exception carrying the key
    assert key not in batch.errors[0] and "***" in batch.errors[0]
    assert key not in repr(service)


def test_redact_masks_key_shapes():
    assert redact("key sk-proj-abcdEFGH1234 here") == "key *** here"
    assert redact("jwt eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl end") == "jwt *** end"
    assert redact("sb_secret_abc123 and mine", "mine") == "*** and ***"
    assert redact("nothing to hide", None, "") == "nothing to hide"


# --- the real SDK over a mock transport ------------------------------------------------------


def test_real_sdk_client_end_to_end(monkeypatch):
    """The real `openai.OpenAI` over httpx2.MockTransport: JSON parsing, base64, headers hook."""
    seen: list[dict[str, Any]] = []
    answers = iter(["429", "ok", "ok"])

    def handler(request: httpx2.Request) -> httpx2.Response:
        import json

        body = json.loads(request.content)
        seen.append(body)
        assert request.headers["authorization"] == f"Bearer {SECRET}"
        limits = {
            "x-ratelimit-limit-tokens": "1000000",
            "x-ratelimit-remaining-tokens": "999990",
            "x-ratelimit-reset-tokens": "1ms",
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-reset-requests": "12ms",
        }
        if next(answers) == "429":
            return httpx2.Response(  # no x-ratelimit-* here: only the 200's hook can teach them
                429,
                headers={"retry-after-ms": "20", "x-request-id": "req_429"},
                json={"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
            )
        data = [
            {"object": "embedding", "index": i, "embedding": encode(vec_for(t), body["encoding_format"])}
            for i, t in enumerate(body["input"])
        ]
        data.reverse()  # indices say where each vector belongs
        return httpx2.Response(
            200,
            headers={"x-request-id": "req_ok", **limits},
            json={"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 11, "total_tokens": 11}},
        )

    real_client_cls = es.DefaultHttpxClient

    def with_transport(**kwargs):
        return real_client_cls(transport=httpx2.MockTransport(handler), **kwargs)

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(es, "DefaultHttpxClient", with_transport)
    clock = FakeClock(5000.0)
    service = EmbeddingService(api_key=SECRET, sleep=clock.sleep, clock=clock, dimensions=DIMS)
    texts = ["alpha", "beta", "gamma"]
    result = service.batch_generate_embeddings(texts)
    service.close()
    assert result["embeddings"] == [vec_for(t) for t in texts]
    assert result["total_tokens"] == 11
    assert [body["input"] for body in seen] == [texts, texts]
    assert seen[0]["encoding_format"] == "base64" and seen[0]["dimensions"] == DIMS
    assert clock.sleeps[0] == pytest.approx(0.02)
    # The response hook learned the limits from the 200 too.
    assert service.limiter.requests.capacity == 5000
    assert service.limiter.tokens.capacity == 1_000_000


def test_invalid_input_error_carries_reason():
    exc = InvalidInputError("msg", index=3)
    assert exc.reason == "msg" and exc.index == 3
