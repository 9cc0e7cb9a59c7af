"""The thread driver and the asyncio driver take the same decisions (issue #20).

Both ask the same pure code what to send: the plan (`core.engine.plan`: what goes in
which request, the probe first) and the service's probe gate (`core.engine.probe`: which
request of the whole service probes the limits, which hold). Here, against fake clients
(no sockets): the same requests under the same limits; one probe per service however
many calls share it, in both drivers; and the asyncio driver lets a request leave while
it counts the next one (test/integration/test_async_service.py, over real HTTP).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from fake_openai_client import FakeOpenAIClient, good_response
from fakes import FakeClock

from core.embed.async_service import AsyncEmbeddingService
from core.embed.service import EmbeddingService
from core.engine.probe import HOLD, PROBE, SEND, ProbeGate
from core.engine.tokens import count_tokens
from core.limits import PROBE_REQUEST_TOKENS


def _texts(n: int) -> list[str]:
    return [f"section {i}: " + " ".join(f"word{i % 97}x{j}" for j in range(40)) for i in range(n)]


class AsyncFakeClient:
    """`await client.embeddings.create(...)`: records each call's inputs, answers good vectors."""

    def __init__(self) -> None:
        self.embeddings = self
        self.inputs: list[list[str]] = []

    async def create(self, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        self.inputs.append(list(kwargs["input"]))
        return good_response(kwargs)

    async def close(self) -> None:
        pass


def _run_sync(texts: list[str], **kw: Any) -> list[list[str]]:
    client, clock = FakeOpenAIClient(), FakeClock(100.0)
    service = EmbeddingService(client=client, sleep=clock.sleep, clock=clock, encoding_format="float", **kw)
    result = service.batch_generate_embeddings(texts)
    assert result["failed_indices"] == []
    return client.inputs


def _run_async(texts: list[str], **kw: Any) -> list[list[str]]:
    client, clock = AsyncFakeClient(), FakeClock(100.0)

    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        await asyncio.sleep(0)

    async def main() -> None:
        service = AsyncEmbeddingService(client=client, sleep=sleep, clock=clock, encoding_format="float", **kw)
        result = await service.batch_generate_embeddings(texts)
        assert result["failed_indices"] == []

    asyncio.run(main())
    return client.inputs


def test_both_drivers_send_the_same_requests_under_the_same_known_limits():
    """A known 60k-token budget: requests of 1/8 of it, the same ones from both drivers."""
    texts = _texts(600)
    kw = {"tokens_per_minute": 60_000, "max_concurrency": 4}
    sync_requests, async_requests = _run_sync(texts, **kw), _run_async(texts, **kw)
    assert len(sync_requests) > 4
    assert all(sum(map(count_tokens, r)) <= 60_000 // 8 for r in sync_requests)
    assert sorted(sync_requests) == sorted(async_requests)


def test_both_drivers_probe_first_then_send_the_same_requests_when_limits_are_unknown():
    texts = _texts(2500)  # ~410k tokens: a probe, then requests at the API's caps
    sync_requests, async_requests = _run_sync(texts), _run_async(texts)
    for requests in (sync_requests, async_requests):
        assert sum(map(count_tokens, requests[0])) <= PROBE_REQUEST_TOKENS
        assert len(requests) >= 2
    assert sync_requests[0] == async_requests[0]
    assert sorted(sync_requests[1:]) == sorted(async_requests[1:])


def test_probe_gate_decides_alone():
    gate = ProbeGate()
    first, second = object(), object()
    assert gate.claim(first, known=False) == PROBE
    assert gate.claim(second, known=False) == HOLD
    assert gate.claim(second, known=True) == SEND  # limits learned meanwhile (headers)
    marked: list[bool] = []
    assert not gate.release(second, on_probe=lambda: marked.append(True))
    assert gate.probing and marked == []
    assert gate.release(first, on_probe=lambda: marked.append(True))
    assert not gate.probing and marked == [True]
    assert gate.claim(second, known=False) == PROBE  # nothing learned (no headers): the next one probes


def test_thread_driver_sends_one_probe_for_calls_sharing_a_service():
    """Two threads embed through one service, limits unknown: one probe goes alone, the other
    call's requests hold until it is back (the thread driver sent a probe per call before)."""
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def handler(number: int, kwargs: dict[str, Any]) -> Any:
        start = time.monotonic()
        time.sleep(0.05)
        with lock:
            spans.append((start, time.monotonic()))
        return good_response(kwargs)

    service = EmbeddingService(client=FakeOpenAIClient(handler=handler), encoding_format="float", max_concurrency=4)
    texts = _texts(2500)  # ~410k tokens a call: a probe, then requests at the caps
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def call(offset: int) -> None:
        try:
            barrier.wait()
            result = service.batch_generate_embeddings([f"{offset} {t}" for t in texts])
            assert result["failed_indices"] == []
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    spans.sort()
    assert len(spans) >= 4
    first_end = spans[0][1]
    assert all(start >= first_end for start, _ in spans[1:]), spans[:3]
