"""EmbeddingService dedup and progress, configuration, output shapes, secrets, the real SDK over a mock transport.

Against `FakeOpenAIClient` (test/support/fake_openai_client.py), which records
every `embeddings.create` call and answers with vectors derived from each
text, so a test can check that every vector sits under its own text. Sleeps
and clocks are injected fakes: nothing waits for real except the concurrency
test (a few 10 ms sleeps).
"""

from __future__ import annotations

import array
import base64
import struct
from typing import Any
from unittest.mock import patch

import httpx2
import numpy as np
import pytest
from engine_helpers import SECRET, make
from fake_openai_client import (
    DIMS,
    FakeOpenAIClient,
    Item,
    Response,
    Usage,
    encode,
    good_response,
    status_error,
    vec_for,
)
from fakes import FakeClock

import core.embedding_service as es
from core.embedding_service import EmbeddingService
from core.engine.decode import to_float32
from core.engine.output import format_vectors
from core.errors import (
    AllRequestsFailedError,
    ConfigurationError,
    EmbeddingAPIError,
    InvalidInputError,
)
from core.limits import model_dimensions
from core.secrets import redact
from core.engine.tokens import count_tokens


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

    service, _, _ = make(FakeOpenAIClient(handler), max_batch_size=1, max_concurrency=1)
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
    service, _, _ = make(FakeOpenAIClient(handler), max_batch_size=3, max_concurrency=2)
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
    fake = FakeOpenAIClient()
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
    with patch("core.embedding_service.OpenAI", return_value=FakeOpenAIClient()) as openai_cls:
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
    class WithURL(FakeOpenAIClient):
        base_url = "http://gateway.internal/v1/"

    service = EmbeddingService(client=WithURL())
    assert service.base_url == "http://gateway.internal/v1/"
    assert EmbeddingService(client=FakeOpenAIClient()).base_url is None


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
        EmbeddingService(client=FakeOpenAIClient(), **kwargs)


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
        service, _, _ = make(FakeOpenAIClient(handler), encoding_format=fmt)
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
    service = EmbeddingService(client=FakeOpenAIClient())
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
    client = FakeOpenAIClient()
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
    with patch("core.embedding_service.OpenAI", return_value=FakeOpenAIClient()):
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
    with patch("core.embedding_service.OpenAI", return_value=FakeOpenAIClient(outcomes=[leaky, leaky, Exception(key)])):
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
