"""What the engine tests (test/unit/test_engine_*.py) share: a service over the fake client and a fake clock."""

from __future__ import annotations

from typing import Any

from fake_openai_client import FakeOpenAIClient
from fakes import FakeClock

from core.embedding_service import EmbeddingService

__all__ = ["SECRET", "as_lists", "make"]

SECRET = "sk-test-SECRET0123456789abcdefXYZ"


def make(client: Any = None, **kwargs: Any) -> tuple[EmbeddingService, Any, FakeClock]:
    """An EmbeddingService over `client` (a fresh FakeOpenAIClient by default), on a fake clock,
    asking for floats, with no jitter."""
    client = client if client is not None else FakeOpenAIClient()
    clock = FakeClock(5000.0)
    kwargs.setdefault("encoding_format", "float")
    kwargs.setdefault("rng", lambda: 0.0)
    service = EmbeddingService(client=client, sleep=clock.sleep, clock=clock, **kwargs)
    return service, client, clock


def as_lists(result_embeddings) -> list[list[float]]:
    return [list(map(float, v)) for v in result_embeddings]
