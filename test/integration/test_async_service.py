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


def _embed_and_kill(driver: str, fake: Any, texts: list[str], **service_kw: Any) -> tuple[BaseException, float]:
    """`embed` `texts`; the server is SIGKILLed once the first request has settled.
    Returns (what `embed` raised, seconds from the kill to the raise)."""
    import os
    import signal

    killed: list[float] = []

    def kill(served: list[int], batch: Any) -> None:
        if not killed:
            os.kill(fake.pid, signal.SIGKILL)
            killed.append(time.monotonic())

    service_kw.setdefault("api_key", "test-key")
    try:
        if driver == "sync":
            with EmbeddingService(base_url=fake.base_url, **service_kw) as service:
                service.embed(texts, on_vectors=kill)
        else:
            async def main() -> None:
                async with AsyncEmbeddingService(base_url=fake.base_url, **service_kw) as service:
                    await service.embed(texts, on_vectors=kill)

            asyncio.run(main())
    except EndpointError as exc:
        return exc, time.monotonic() - killed[0]
    raise AssertionError("embed finished although the endpoint died")


@pytest.mark.parametrize("driver", DRIVERS)
def test_endpoint_that_dies_mid_run_stops_the_run(driver):
    """Issue #15 item 13: after the endpoint has answered, refused connections (the server
    killed) stop the run with `EndpointError` within seconds, and the inputs never sent say
    so, instead of each request being retried for ~30 s and every input failing."""
    from core.testing import FakeOpenAIServer

    with FakeOpenAIServer(latency_base=0.05) as fake:
        exc, after_kill = _embed_and_kill(driver, fake, _texts(2000), max_batch_size=10, max_concurrency=4)
    assert "stopped accepting connections" in str(exc), exc
    assert 4.0 <= after_kill < 15.0, after_kill  # ENDPOINT_DOWN_SECONDS, plus backoff; was 31.5 s of retries per request
    failures = exc.failures  # type: ignore[attr-defined]
    untried = [i for i, reason in failures.items() if "not sent" in reason]
    assert len(untried) > 1000, f"{len(untried)} of {len(failures)} failures say 'not sent'"


@pytest.mark.parametrize("driver", DRIVERS)
def test_endpoint_answering_500_to_everything_is_given_up_on(driver, fake_openai):
    """Issue #15 item 13: nothing but 500s for `max_outage` seconds stops the run (`EndpointError`);
    before, each request was retried for 31.5 s and the run went on for as long as it had requests."""
    fake_openai.configure(fault_rates={"500": 1.0})
    started = time.monotonic()
    with pytest.raises(EndpointError) as info:
        run(driver, fake_openai.base_url, "batch_generate_embeddings", _texts(200), max_batch_size=10,
            max_concurrency=4, max_outage=2.0)
    elapsed = time.monotonic() - started
    assert "answered nothing but errors for" in str(info.value) and "HTTP 500" in str(info.value)
    assert elapsed < 8.0, elapsed
    assert info.value.status_code == 500


def test_one_service_serves_two_event_loops(fake_openai):
    """Issue #15 item 12: one `AsyncEmbeddingService` used from a second `asyncio.run` failed
    with "Event loop is closed" (the SDK client's pooled connections belong to the first loop)."""
    service = AsyncEmbeddingService(api_key="test-key", base_url=fake_openai.base_url)
    texts = _texts(30)
    for _ in range(3):
        result = asyncio.run(service.batch_generate_embeddings(texts, max_batch_size=10))
        assert result["failed_indices"] == []
        np.testing.assert_array_equal(np.asarray(result["embeddings"][7], dtype=np.float32), expected_embedding(texts[7]))
    assert np.asarray(asyncio.run(service.generate_embedding("again")), dtype=np.float32).tolist() == \
        expected_embedding("again").tolist()
    asyncio.run(service.aclose())
    assert fake_openai.stats()["by_status"] == {"200": 10}


def test_a_request_leaves_before_the_next_one_is_counted(fake_openai, monkeypatch):
    """Issue #20: counting the next request's tokens on the loop must not hold back the
    request just handed to a task (it needs several loop turns to connect and write).
    Counting is slowed to 0.25 s a chunk here (a busy machine, or a long chunk); the first
    two requests reach the server while the next two are counted, not after. Before, all
    four left together once everything was counted."""
    import core.engine.plan as plan_module

    count_starts: list[float] = []
    real = plan_module.count_tokens_batch
    slow = 0.25

    def slow_count(texts: Any, **kw: Any) -> list[int]:
        count_starts.append(time.monotonic())
        time.sleep(slow)
        return real(texts, **kw)

    monkeypatch.setattr(plan_module, "count_tokens_batch", slow_count)
    fake_openai.configure(latency_base=0.3)
    chunk = plan_module.COUNT_CHUNK

    async def main() -> None:
        async with AsyncEmbeddingService(
            api_key="test-key", base_url=fake_openai.base_url, probe_limits=False, max_concurrency=4,
            max_batch_size=chunk // 2,
        ) as service:
            result = await service.batch_generate_embeddings(_texts(2 * chunk))
            assert result["failed_indices"] == []

    asyncio.run(main())
    starts = sorted(entry[0] for entry in fake_openai.stats()["log"])  # when each body was read
    assert len(starts) == 4 and len(count_starts) == 2
    # The plan counts one chunk (two requests) at a time: requests 1 and 2 reached the server
    # (which reads a body some 10-50 ms after it is written) before the second chunk's
    # counting was over.
    assert starts[1] < count_starts[1] + slow, (starts, count_starts)
