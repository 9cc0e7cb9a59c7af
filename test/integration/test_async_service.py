"""AsyncEmbeddingService over real HTTP (issue #10): the sync contract on both drivers,
cancellation, and many concurrent callers sharing one rate limit."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from core import AllRequestsFailedError, AsyncEmbeddingService, EmbeddingService, EndpointError
from core.testing import expected_embedding


def _texts(n: int, words: int = 6) -> list[str]:
    return [" ".join(f"w{i}_{j}" for j in range(words)) for i in range(n)]


def run(driver: str, base_url: str, method: str, *args: Any, **service_kw: Any) -> Any:
    """Call `method` on a sync or an async service with the same arguments."""
    service_kw.setdefault("api_key", "test-key")
    if driver == "sync":
        with EmbeddingService(base_url=base_url, **service_kw) as service:
            return getattr(service, method)(*args)

    async def main() -> Any:
        async with AsyncEmbeddingService(base_url=base_url, **service_kw) as service:
            return await getattr(service, method)(*args)

    return asyncio.run(main())


DRIVERS = ["sync", "async"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_batch_contract(driver, fake_openai):
    texts = _texts(3000)
    result = run(driver, fake_openai.base_url, "batch_generate_embeddings", texts)
    assert result["failed_indices"] == [] and result["indices"] == list(range(3000))
    assert result["total_tokens"] == fake_openai.stats()["tokens_ok"]
    for i in (0, 1234, 2999):
        np.testing.assert_array_equal(np.asarray(result["embeddings"][i], dtype=np.float32), expected_embedding(texts[i]))


@pytest.mark.parametrize("driver", DRIVERS)
def test_generate_embedding_contract(driver, fake_openai):
    vector = run(driver, fake_openai.base_url, "generate_embedding", "hello world")
    np.testing.assert_array_equal(np.asarray(vector, dtype=np.float32), expected_embedding("hello world"))


@pytest.mark.parametrize("driver", DRIVERS)
def test_input_errors_are_the_same(driver, fake_openai):
    with pytest.raises(ValueError, match="empty list"):
        run(driver, fake_openai.base_url, "batch_generate_embeddings", [])
    with pytest.raises(ValueError, match="index 1"):
        run(driver, fake_openai.base_url, "batch_generate_embeddings", ["a", "", "c"])
    result = run(driver, fake_openai.base_url, "batch_generate_embeddings", ["ok", "word " * 9000, "fine"])
    assert result["failed_indices"] == [1] and "8191-token input limit" in result["errors"][1]


@pytest.mark.parametrize("driver", DRIVERS)
def test_faults_are_retried_and_vectors_stay_aligned(driver, fake_openai):
    fake_openai.configure(fault_rates={"500": 0.1, "503": 0.1, "short": 0.1}, seed=7)
    texts = _texts(600)
    result = run(driver, fake_openai.base_url, "batch_generate_embeddings", texts, max_batch_size=20, max_retries=10)
    assert result["failed_indices"] == []
    assert fake_openai.stats()["faults"]
    for i, vector in enumerate(result["embeddings"]):
        np.testing.assert_array_equal(np.asarray(vector, dtype=np.float32), expected_embedding(texts[i]))


@pytest.mark.parametrize("driver", DRIVERS)
def test_quota_stops_at_once(driver, fake_openai):
    fake_openai.configure(quota_exhausted=True)
    with pytest.raises(EndpointError) as info:
        run(driver, fake_openai.base_url, "batch_generate_embeddings", _texts(50), max_batch_size=5)
    assert isinstance(info.value, AllRequestsFailedError) and info.value.code == "insufficient_quota"
    assert fake_openai.stats()["requests"] == 1


def test_hundred_concurrent_callers_share_one_limit(fake_openai):
    """100 `generate_embedding` calls at once from one event loop, against a binding
    limit of 60 requests per 1 s "minute": one probe, then paced together: <= 10 % 429."""
    fake_openai.configure(rpm=60, window_seconds=1.0)

    async def main() -> list[list[float]]:
        async with AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url) as service:
            return await asyncio.gather(*(service.generate_embedding(f"question {i}") for i in range(100)))

    started = time.monotonic()
    vectors = asyncio.run(main())
    elapsed = time.monotonic() - started
    assert len(vectors) == 100
    np.testing.assert_array_equal(np.asarray(vectors[42], dtype=np.float32), expected_embedding("question 42"))
    by_status = fake_openai.stats()["by_status"]
    assert by_status["200"] == 100
    assert by_status.get("429", 0) <= 10, by_status
    assert elapsed >= 0.5  # paced: 100 requests cannot all pass a 60-per-second budget at once


def test_cancellation_stops_every_request_and_leaves_no_task(fake_openai):
    fake_openai.configure(latency_base=1.0)

    async def main() -> tuple[float, int]:
        async with AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url, max_concurrency=4) as service:
            task = asyncio.ensure_future(service.batch_generate_embeddings(_texts(400), max_batch_size=10))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            return time.monotonic() - started, len(left)

    waited, left = asyncio.run(main())
    assert waited < 0.5 and left == 0
    assert fake_openai.stats()["requests"] <= 4  # only those in flight ever went out


def test_asyncio_timeout_cancels(fake_openai):
    fake_openai.configure(latency_base=2.0)

    async def main() -> None:
        async with AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url) as service:
            async with asyncio.timeout(0.3):
                await service.generate_embedding("slow")

    with pytest.raises(TimeoutError):
        asyncio.run(main())
