"""Fixtures: a local OpenAI-compatible server on 127.0.0.1 (see core.testing).

One server process serves the whole session (`openai_server`); `fake_openai`
hands it to a test with the default config (no limits, no latency, no faults)
and zeroed stats; `openai_env` also points the SDK's environment variables at it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from core.testing import FakeOpenAIServer

__all__ = ["openai_server", "fake_openai", "openai_env"]


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAIServer]:
    """One fake OpenAI server process for the session (started on first use)."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake_openai(openai_server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    """The session's server, reset: default config, full rate-limit buckets, zeroed stats."""
    if not openai_server.running:  # a test stopped or killed it: start a fresh one
        openai_server.start()
    openai_server.reset_config()
    deadline = time.monotonic() + 5.0  # let requests of an earlier test (hang faults...) finish first
    while openai_server.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    openai_server.reset_stats()
    yield openai_server


@pytest.fixture
def openai_env(fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    """OPENAI_API_KEY=test-key and OPENAI_BASE_URL=the fake server, for code that reads the environment."""
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    # a proxy from the environment must not swallow requests to 127.0.0.1
    monkeypatch.setenv("NO_PROXY", ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")])))
    yield fake_openai
