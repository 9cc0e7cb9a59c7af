"""EmbeddingService over real HTTP: the real `openai` SDK against the local
OpenAI-compatible server (core.testing), which enforces the API's limits.

Every vector is checked against `expected_embedding(text)`, the server's
deterministic embedding of that exact text: a vector under the wrong text fails.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from core import AllRequestsFailedError
from core.embedding_service import EmbeddingService
from core.errors import EndpointError
from core.testing import expected_embedding
from core.engine.tokens import count_tokens

pytestmark = pytest.mark.integration


def _texts(n: int, words: int = 5, prefix: str = "doc") -> list[str]:
    return [f"{prefix} {i} " + " ".join(f"w{(i * 7 + j) % 997}" for j in range(words)) for i in range(n)]


def _service(fake, **kwargs) -> EmbeddingService:
    kwargs.setdefault("sleep", lambda s: time.sleep(min(s, 0.05)))  # honour pacing, but fast
    return EmbeddingService(api_key="test-key", base_url=fake.base_url, **kwargs)


def _assert_vectors(texts, result, dimensions=1536):
    assert result["failed_indices"] == []
    assert len(result["embeddings"]) == len(texts)
    for text, vector in zip(texts, result["embeddings"]):
        np.testing.assert_array_equal(np.asarray(vector, dtype=np.float32), expected_embedding(text, dimensions))


def test_vectors_are_the_right_ones_for_their_texts(fake_openai):
    texts = _texts(300)
    result = _service(fake_openai).batch_generate_embeddings(texts)
    _assert_vectors(texts, result)
    stats = fake_openai.stats()
    assert stats["by_status"] == {"200": 1}
    assert result["total_tokens"] == sum(count_tokens(t) for t in texts) == stats["tokens_ok"]


def test_base_url_and_key_from_environment(openai_env):
    service = EmbeddingService()
    assert service.base_url == openai_env.base_url
    np.testing.assert_array_equal(
        np.asarray(service.generate_embedding("hello world"), dtype=np.float32), expected_embedding("hello world")
    )


def test_token_cap_is_never_exceeded(fake_openai):
    """700 inputs of ~1000 tokens = ~700k tokens: a small probe (<= 8,192 tokens, limits
    unknown) then three requests under 300,000 each, no 400."""
    texts = [f"section {i} " + "lorem ipsum dolor sit amet " * 200 for i in range(700)]
    assert sum(count_tokens(t) for t in texts) > 600_000
    result = _service(fake_openai, max_concurrency=4).batch_generate_embeddings(texts)
    _assert_vectors(texts, result)
    stats = fake_openai.stats()
    assert stats["by_status"] == {"200": 4}
    assert stats["log"][0][3] <= 8192  # the probe
    assert all(entry[3] <= 300_000 for entry in stats["log"])


def test_2049_inputs_take_two_requests(fake_openai):
    """The probe carries at most 8,192 tokens (here ~500 inputs), the rest fit in one request."""
    texts = _texts(2049, words=1)
    result = _service(fake_openai).batch_generate_embeddings(texts)
    assert len(result["embeddings"]) == 2049
    log = fake_openai.stats()["log"]
    assert len(log) == 2 and sum(entry[4] for entry in log) == 2049
    assert log[0][3] <= 8192 and all(entry[4] <= 2048 for entry in log)


def test_2049_short_texts_take_two_requests_of_2048_and_1(fake_openai):
    """The seed's shape: 2048 short texts fit the probe's token allowance, so counts hold."""
    texts = [f"text{i}" for i in range(2049)]
    _service(fake_openai).batch_generate_embeddings(texts)
    assert [entry[4] for entry in fake_openai.stats()["log"]] == [2048, 1]


def test_overlong_input_fails_alone_and_is_never_sent(fake_openai):
    texts = ["short one", "word " * 9000, "short two"]
    result = _service(fake_openai).batch_generate_embeddings(texts)
    assert result["failed_indices"] == [1]
    assert f"{count_tokens(texts[1])} tokens, over the 8191-token input limit" in result["errors"][1]
    assert result["indices"] == [0, 2]
    np.testing.assert_array_equal(np.asarray(result["embeddings"][1], dtype=np.float32), expected_embedding("short two"))
    assert "400" not in fake_openai.stats()["by_status"]


def test_truncate_sends_the_first_8191_tokens(fake_openai):
    text = "word " * 9000
    result = _service(fake_openai, truncate=True).batch_generate_embeddings([text])
    assert result["failed_indices"] == []
    assert fake_openai.stats()["by_status"] == {"200": 1}
    assert fake_openai.stats()["tokens_ok"] == 8191


def test_faults_every_vector_present_and_correct(fake_openai):
    fake_openai.configure(
        fault_rates={"500": 0.1, "503": 0.1, "short": 0.1, "extra": 0.05, "bad_index": 0.05}, seed=7
    )
    texts = _texts(1200)
    result = _service(fake_openai, max_batch_size=50, max_retries=10).batch_generate_embeddings(texts)
    _assert_vectors(texts, result)
    stats = fake_openai.stats()
    assert stats["faults"], "the fault injection must have fired"
    assert stats["by_status"].get("500", 0) + stats["by_status"].get("503", 0) > 0


def test_hung_request_is_cut_by_timeout_and_retried(fake_openai):
    fake_openai.configure(fault_script=["hang"], hang_seconds=5)
    started = time.monotonic()
    result = _service(fake_openai, timeout=0.5).batch_generate_embeddings(["a hung request"])
    elapsed = time.monotonic() - started
    _assert_vectors(["a hung request"], result)
    assert elapsed < 4, f"the timeout should cut the 5 s hang, took {elapsed:.1f}s"


def test_rate_limit_is_paced_and_learned_from_headers(fake_openai):
    """TPM 6,000 per 1 s window and ~4x that to send: the client learns the budget
    from the headers, paces itself, and finishes with few 429s."""
    fake_openai.configure(tpm=6000, window_seconds=1.0)
    texts = _texts(600, words=20)
    total = sum(count_tokens(t) for t in texts)
    assert total > 3 * 6000
    service = EmbeddingService(api_key="test-key", base_url=fake_openai.base_url, max_batch_size=50)
    started = time.monotonic()
    result = service.batch_generate_embeddings(texts)
    elapsed = time.monotonic() - started
    _assert_vectors(texts, result)
    assert service.limiter.tokens.capacity == 6000  # learned from x-ratelimit-limit-tokens
    stats = fake_openai.stats()
    # Once the budget is known, requests are packed to 1/8 of it (750 tokens) so
    # several stay in flight; no request is above that but a lone input.
    assert all(entry[3] <= 750 or entry[4] == 1 for entry in stats["log"][1:])
    assert stats["by_status"]["200"] >= 12
    assert stats["by_status"].get("429", 0) <= 0.1 * stats["by_status"]["200"]
    # Beyond the first full bucket the server refills 6,000 tokens/s: no faster is possible.
    assert elapsed >= (total - 6000) / 6000 * 0.9


def test_insufficient_quota_is_not_retried(fake_openai):
    """Out of quota on the first request: the endpoint is unusable, the run stops at once
    (an `EndpointError`, still an `AllRequestsFailedError`/`RuntimeError` for the seed API)."""
    fake_openai.configure(quota_exhausted=True)
    service = _service(fake_openai)
    with pytest.raises(EndpointError, match="insufficient_quota") as info:
        service.batch_generate_embeddings(["a", "b"])
    assert isinstance(info.value, AllRequestsFailedError)
    assert fake_openai.stats()["requests"] == 1  # not retried, nothing else sent
    assert info.value.status_code == 429
    assert info.value.code == "insufficient_quota"
    assert isinstance(info.value, RuntimeError)
    assert info.value.__cause__ is None  # no raw SDK error chained (it may echo the key)


def test_float_format_and_dimensions(fake_openai):
    texts = _texts(20)
    result = _service(fake_openai, encoding_format="float", dimensions=256).batch_generate_embeddings(texts)
    assert len(result["embeddings"][0]) == 256
    for text, vector in zip(texts, result["embeddings"]):
        np.testing.assert_allclose(np.asarray(vector, dtype=np.float32), expected_embedding(text, 256), rtol=0, atol=1e-7)


def test_numpy_output_is_one_float32_block(fake_openai):
    texts = _texts(10)
    result = _service(fake_openai, output="numpy").batch_generate_embeddings(texts)
    matrix = result["embeddings"]
    assert matrix.dtype == np.float32 and matrix.shape == (10, 1536)
    np.testing.assert_array_equal(matrix[3], expected_embedding(texts[3]))


def test_requests_overlap(fake_openai):
    fake_openai.configure(latency_base=0.1)
    texts = _texts(400)
    started = time.monotonic()
    result = _service(fake_openai, max_batch_size=50, max_concurrency=8).batch_generate_embeddings(texts)
    elapsed = time.monotonic() - started
    _assert_vectors(texts, result)
    stats = fake_openai.stats()
    assert stats["requests"] == 8
    assert stats["max_in_flight"] >= 4
    assert elapsed < 0.8 * 8 * 0.1 + 0.5  # well under the sequential 0.8 s + slack


def test_budget_below_the_request_cap_is_learned_and_requests_repacked(fake_openai):
    """TPM 20,000 per 1 s window: a default 300,000-token request could never be
    accepted. The probe's 429 teaches the budget; the inputs are repacked into
    requests that fit and every vector arrives, with no second call needed."""
    fake_openai.configure(tpm=20_000, window_seconds=1.0)
    texts = _texts(600, words=60)
    total = sum(count_tokens(t) for t in texts)
    assert total > 2 * 20_000
    service = _service(fake_openai, max_retries=3, sleep=time.sleep)
    result = service.batch_generate_embeddings(texts)
    _assert_vectors(texts, result)
    stats = fake_openai.stats()
    assert all(entry[3] <= 20_000 for entry in stats["log"] if entry[2] == 200)
    assert service.limiter.tokens.capacity == 20_000


def test_one_request_over_the_budget_is_split_not_retried_forever(fake_openai):
    """A single request (no probe) larger than the budget: refused 429 at once, then
    repacked under the learned budget in the same call."""
    fake_openai.configure(tpm=5_000, window_seconds=0.5)
    texts = _texts(300, words=10)
    assert 5_000 < sum(count_tokens(t) for t in texts) <= 300_000
    service = _service(fake_openai, max_retries=3, sleep=time.sleep)
    result = service.batch_generate_embeddings(texts)
    _assert_vectors(texts, result)
    assert fake_openai.stats()["by_status"].get("429", 0) <= 3


def test_max_concurrency_holds_for_threads_sharing_one_service(fake_openai):
    """Issue #15 item 16: eight threads calling one service never put more than its
    `max_concurrency` requests in flight (per call it was 32-43 for 8 threads)."""
    from concurrent.futures import ThreadPoolExecutor

    fake_openai.configure(latency_base=0.03)
    service = _service(fake_openai, max_concurrency=3, max_batch_size=4)
    texts = [_texts(40, prefix=f"t{k}") for k in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(service.batch_generate_embeddings, texts))
    for chunk, result in zip(texts, results):
        _assert_vectors(chunk, result)
    stats = fake_openai.stats()
    assert stats["by_status"] == {"200": 80}  # 8 threads x 10 requests of 4 inputs
    assert 2 <= stats["max_in_flight"] <= 3
