"""EmbeddingService retries, pacing by the shared rate limiter, and concurrent requests.

Against `FakeOpenAIClient` (test/support/fake_openai_client.py), which records
every `embeddings.create` call and answers with vectors derived from each
text, so a test can check that every vector sits under its own text. Sleeps
and clocks are injected fakes: nothing waits for real except the concurrency
test (a few 10 ms sleeps).
"""

from __future__ import annotations

import threading
import time

import pytest
from engine_helpers import make
from fake_openai_client import (
    FakeOpenAIClient,
    connection_error,
    refused_error,
    good_response,
    status_error,
    timeout_error,
    vec_for,
)

from core.errors import (
    AllRequestsFailedError,
    EmbeddingAPIError,
    EmptyInputError,
    EndpointError,
    InvalidInputTypeError,
)
from core.engine.ratelimit import TOKEN_RESERVE_SECONDS
from core.limits import MAX_RETRY_AFTER
from core.engine.tokens import count_tokens


# --- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409, 429])
def test_transient_status_is_retried_after_backoff(status):
    service, client, clock = make(FakeOpenAIClient(outcomes=[status_error(status)]))
    result = service.batch_generate_embeddings(["a", "b"])
    assert result["embeddings"] == [vec_for("a"), vec_for("b")]
    assert len(client.calls) == 2
    assert clock.sleeps == [0.5]


@pytest.mark.parametrize("make_error", [timeout_error, connection_error])
def test_timeouts_and_connection_errors_are_retried(make_error):
    """Once the endpoint has answered, a timeout or dropped connection is a blip: retried."""
    service, client, clock = make(FakeOpenAIClient(outcomes=[None, make_error(), make_error()]))
    service.generate_embedding("warm-up")
    assert service.generate_embedding("a") == vec_for("a")
    assert len(client.calls) == 4
    assert clock.sleeps == [0.5, 1.0]


def test_first_request_timeout_is_still_retried():
    """A timeout says nothing about the URL: even before any answer it is retried."""
    service, client, clock = make(FakeOpenAIClient(outcomes=[timeout_error()]))
    assert service.generate_embedding("a") == vec_for("a")
    assert len(client.calls) == 2


@pytest.mark.parametrize(
    "make_error",
    [refused_error, lambda: status_error(401), lambda: status_error(403), lambda: status_error(404)],
    ids=["refused", "401", "403", "404"],
)
def test_unusable_endpoint_stops_at_the_first_request(make_error):
    """Issue #8 (7): a wrong port, a URL without /v1 or a bad key made every section 'failed'
    after ~27 s of retries. Before the endpoint has ever answered, such an error stops the
    run at once: one call, no sleep, an `EndpointError` naming the URL (no key), nothing
    else sent."""
    service, client, clock = make(FakeOpenAIClient(outcomes=[make_error()]), max_concurrency=1, max_batch_size=1)
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
    service, client, clock = make(FakeOpenAIClient(outcomes=[status_error(429, headers=headers)]))
    batch = service.embed(["a"])
    assert batch.indices == [0]
    assert clock.sleeps == [pytest.approx(expected)]
    assert (batch.requests, batch.retries, batch.rate_limited) == (2, 1, 1)


def test_503_retry_after_is_honoured_too():
    service, _, clock = make(FakeOpenAIClient(outcomes=[status_error(503, headers={"retry-after": "2"})]))
    service.embed(["a"])
    assert clock.sleeps == [2.0]


def test_backoff_grows_with_jitter():
    jitter = iter([0.0, 0.5, 0.2, 0.9, 0.4])
    errors = [status_error(500) for _ in range(5)]
    service, client, clock = make(FakeOpenAIClient(outcomes=errors), rng=lambda: next(jitter))
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
    service, client, clock = make(FakeOpenAIClient(outcomes=[quota]))
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
    service, client, clock = make(FakeOpenAIClient(outcomes=[None, status_error(status)]))
    service.embed(["warm-up"])
    batch = service.embed(["a"])
    assert batch.failed_indices == [0]
    assert batch.errors[0].startswith(f"HTTP {status}")
    assert len(client.calls) == 2 and clock.sleeps == []


def test_plain_exception_is_not_retried():
    service, client, clock = make(FakeOpenAIClient(outcomes=[Exception("a bug, not a network blip")]))
    batch = service.embed(["a"])
    assert batch.errors == {0: "Exception: a bug, not a network blip"}
    assert len(client.calls) == 1 and clock.sleeps == []


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_max_retries_is_respected(max_retries):
    errors = [status_error(503) for _ in range(10)]
    service, client, clock = make(FakeOpenAIClient(outcomes=errors), max_retries=max_retries)
    batch = service.embed(["a"])
    assert batch.failed_indices == [0]
    assert len(client.calls) == max_retries + 1
    assert len(clock.sleeps) == max_retries
    assert (batch.requests, batch.retries) == (max_retries + 1, max_retries)


def test_exhausted_retries_report_status_and_request_id():
    errors = [
        status_error(503, headers={"x-request-id": f"req_{n}"}, message="The server is overloaded") for n in range(3)
    ]
    service, client, _ = make(FakeOpenAIClient(outcomes=errors), max_retries=2, max_batch_size=1, max_concurrency=1)
    batch = service.embed(["a", "b"])
    assert batch.indices == [1]
    assert batch.errors[0] == "HTTP 503: The server is overloaded (request_id=req_2)"
    # Kept sanitized (issue #8 (3)): status and request id, never the raw SDK exception.
    assert isinstance(batch.last_error, EmbeddingAPIError) and batch.last_error is not errors[-1]
    assert (batch.last_error.status_code, batch.last_error.request_id) == (503, "req_2")


def test_all_requests_failed_error_is_chained_and_carries_details():
    errors = [status_error(500, headers={"x-request-id": f"req_{n}"}) for n in range(3)]
    service, _, _ = make(FakeOpenAIClient(outcomes=errors), max_retries=2)
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
    service, _, _ = make(FakeOpenAIClient(outcomes=[None, error]))
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

    service, client, _ = make(FakeOpenAIClient(handler), max_batch_size=2, max_concurrency=1)
    result = service.batch_generate_embeddings(["a", "b", "c", "d", "e"])
    assert result["failed_indices"] == [2, 3]
    assert result["indices"] == [0, 1, 4]
    assert result["embeddings"] == [vec_for(t) for t in "abe"]
    assert result["errors"] == {2: "Exception: API rate limit exceeded", 3: "Exception: API rate limit exceeded"}


# --- pacing ---------------------------------------------------------------------------------


def test_429_with_retry_after_pauses_the_shared_limiter():
    error = status_error(429, headers={"retry-after": "4"})
    service, _, clock = make(FakeOpenAIClient(outcomes=[error]))
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
    service, _, _ = make(FakeOpenAIClient(outcomes=[status_error(500, headers={"retry-after": "4"})]))
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
    service, _, clock = make(FakeOpenAIClient(outcomes=[error]))
    assert service.embed(["hello world"]).indices == [0]
    assert clock.sleeps == [pytest.approx(0.1)]
    tokens, requests = service.limiter.tokens, service.limiter.requests
    assert (tokens.capacity, requests.capacity) == (1_000_000, 3000)
    assert tokens.rate == pytest.approx(1_000_000 / 360)
    assert requests.rate == pytest.approx(1 / 0.02)
    # The learned budget now paces: 0.1 s refilled ~278 tokens, minus the 2 sent.
    assert service.limiter.acquire(1000) == pytest.approx(
        (1000 - (0.1 * 1_000_000 / 360 - 2)) * 360 / 1_000_000 + TOKEN_RESERVE_SECONDS
    )


def test_known_tpm_paces_requests_and_caps_their_size():
    texts = [f"item {i} lorem ipsum dolor" for i in range(30)]
    total = sum(map(count_tokens, texts))
    service, client, clock = make(tokens_per_minute=60, max_concurrency=1)  # 1 token per second
    result = service.batch_generate_embeddings(texts)
    assert result["failed_indices"] == []
    assert all(sum(map(count_tokens, r)) <= 60 for r in client.inputs)
    assert len(client.calls) >= total // 60
    # Everything beyond the first full bucket waited for its tokens, no more.
    assert sum(clock.sleeps) == pytest.approx(total - 60 + TOKEN_RESERVE_SECONDS, abs=1e-6)


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
    service, client, _ = make(FakeOpenAIClient(slow), max_batch_size=4, max_concurrency=3)
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
    service, _, _ = make(FakeOpenAIClient(handler), max_batch_size=4, max_concurrency=4)
    batch = service.embed(texts)
    assert batch.failed_indices == [4, 5, 6, 7]
    assert all(list(batch.vectors[i]) == vec_for(texts[i]) for i in batch.indices)
    assert batch.indices == [0, 1, 2, 3, 8, 9, 10, 11]
