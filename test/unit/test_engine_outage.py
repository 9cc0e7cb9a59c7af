"""When a run gives up on an endpoint that went down (issue #15 item 13): the decision in
`Attempts`, over a fake clock, in milliseconds."""

from __future__ import annotations

import httpx2
import openai
import pytest

from core.engine.attempts import Attempts, is_refused
from core.engine.plan import EmbeddingBatch, Request
from core.engine.ratelimit import RateLimiter
from core.errors import EndpointError
from core.limits import ENDPOINT_DOWN_REFUSALS, ENDPOINT_DOWN_SECONDS, MAX_OUTAGE_SECONDS

_REQUEST = httpx2.Request("POST", "http://127.0.0.1:9/v1/embeddings")


def refused() -> openai.APIConnectionError:
    exc = openai.APIConnectionError(request=_REQUEST)
    exc.__cause__ = httpx2.ConnectError("[Errno 111] Connection refused")
    return exc


def reset() -> openai.APIConnectionError:
    exc = openai.APIConnectionError(request=_REQUEST)
    exc.__cause__ = httpx2.RemoteProtocolError("Server disconnected without sending a response.")
    return exc


def status(code: int) -> openai.APIStatusError:
    response = httpx2.Response(code, request=_REQUEST, json={"error": {"message": "boom"}})
    return openai.InternalServerError("boom", response=response, body=None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def attempts(clock: Clock, **kw: object) -> Attempts:
    return Attempts(model="m", dimensions=None, encoding_format="base64", limiter=RateLimiter(), max_retries=6,
                    base_url="http://127.0.0.1:9/v1", api_key="sk-secret", clock=clock, **kw)  # type: ignore[arg-type]


def _answered(a: Attempts) -> None:
    """The endpoint answered once (as `read` records it)."""
    a.endpoint_verified = True
    with a._lock:
        a._failing_since, a._failures, a._refused_since, a._refusals = None, 0, None, 0


REQ = Request(indices=[0], texts=["x"], tokens=1)


def test_refusals_in_a_row_over_the_window_stop_the_run() -> None:
    clock = Clock()
    a = attempts(clock)
    _answered(a)
    batch = EmbeddingBatch()
    for k in range(ENDPOINT_DOWN_REFUSALS - 1):  # many refusals at once (a restart blip): ridden out
        a.on_error(refused(), REQ, batch, sent_at=None)
    clock.now = ENDPOINT_DOWN_SECONDS - 0.1
    a.on_error(refused(), REQ, batch, sent_at=None)  # enough refusals, not long enough
    clock.now = ENDPOINT_DOWN_SECONDS
    with pytest.raises(EndpointError, match="stopped accepting connections") as info:
        a.on_error(refused(), REQ, batch, sent_at=None)
    assert "sk-secret" not in str(info.value) and info.value.url == "http://127.0.0.1:9/v1"


def test_a_success_or_another_failure_breaks_the_streak() -> None:
    clock = Clock()
    a = attempts(clock)
    _answered(a)
    batch = EmbeddingBatch()
    for _ in range(ENDPOINT_DOWN_REFUSALS):
        a.on_error(refused(), REQ, batch, sent_at=None)
    _answered(a)  # an answer in between
    clock.now = ENDPOINT_DOWN_SECONDS + 1
    a.on_error(refused(), REQ, batch, sent_at=None)  # a new streak of one: no stop
    a.on_error(reset(), REQ, batch, sent_at=None)  # a reset is no refusal: the refusal streak restarts
    assert a._refusals == 0


def test_nothing_but_failures_for_max_outage_stops_the_run_but_429s_never_do() -> None:
    clock = Clock()
    a = attempts(clock)
    batch = EmbeddingBatch()
    a.on_error(status(500), REQ, batch, sent_at=None)
    clock.now = MAX_OUTAGE_SECONDS - 1
    a.on_error(status(503), REQ, batch, sent_at=None)
    clock.now = MAX_OUTAGE_SECONDS
    with pytest.raises(EndpointError, match="answered nothing but errors for 60 s") as info:
        a.on_error(status(500), REQ, batch, sent_at=None)
    assert info.value.status_code == 500
    b = attempts(Clock())
    for _ in range(100):  # rate limits are waited out, never an outage
        b._clock.now += 10  # type: ignore[attr-defined]
        b.on_error(status(429), REQ, batch, sent_at=None)


def test_refused_before_any_answer_is_still_a_wrong_endpoint_at_once() -> None:
    a = attempts(Clock())
    assert is_refused(refused()) and not is_refused(reset())
    with pytest.raises(EndpointError, match="cannot be used"):
        a.on_error(refused(), REQ, EmbeddingBatch(), sent_at=None)
