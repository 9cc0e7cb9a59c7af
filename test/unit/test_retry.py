"""Retry decisions (`core.engine.retry`): what is worth retrying, how long to wait, Retry-After and duration parsing.

Nothing here sleeps or touches the network: SDK errors are built from real
`openai` exception classes over `httpx2` objects (test/support/fake_openai_client.py).
"""

from __future__ import annotations

import email.utils
import random

import pytest
from fake_openai_client import connection_error, status_error, timeout_error

from core.limits import INITIAL_RETRY_DELAY, MAX_RETRY_AFTER, MAX_RETRY_DELAY
from core.engine.retry import (
    MisalignedResponseError,
    error_code,
    error_headers,
    error_status,
    parse_duration,
    retry_after_seconds,
    retry_delay,
    should_retry,
)


# --- retry.should_retry --------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_transient_statuses_are_retried(status):
    assert should_retry(status_error(status)) is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status):
    assert should_retry(status_error(status)) is False


@pytest.mark.parametrize(
    "body",
    [
        {"code": "insufficient_quota", "message": "You exceeded your current quota"},  # as the SDK passes it
        {"error": {"code": "insufficient_quota", "message": "quota"}},  # the raw JSON body
    ],
)
def test_insufficient_quota_is_not_retried(body):
    exc = status_error(429, body=body, headers={"retry-after": "1"})
    assert error_code(exc) == "insufficient_quota"
    assert should_retry(exc) is False


def test_ordinary_429_codes_are_retried():
    assert should_retry(status_error(429, body={"code": "rate_limit_exceeded"})) is True


def test_x_should_retry_header_overrides_the_status():
    assert should_retry(status_error(500, headers={"x-should-retry": "false"})) is False
    assert should_retry(status_error(400, headers={"x-should-retry": "true"})) is True
    assert should_retry(status_error(503, headers={"x-should-retry": "maybe"})) is True


def test_timeouts_and_connection_errors_are_retried():
    assert should_retry(timeout_error()) is True
    assert should_retry(connection_error()) is True


def test_misaligned_responses_are_retried():
    assert should_retry(MisalignedResponseError("2 vectors for 3 inputs")) is True


@pytest.mark.parametrize("exc", [Exception("API rate limit exceeded"), ValueError("x"), KeyError("data")])
def test_plain_exceptions_are_not_retried(exc):
    assert should_retry(exc) is False


def test_error_accessors():
    exc = status_error(503, headers={"x-request-id": "req_1", "retry-after": "2"}, body={"code": "overloaded"})
    assert error_status(exc) == 503
    assert error_code(exc) == "overloaded"
    assert error_headers(exc)["retry-after"] == "2"
    assert exc.request_id == "req_1"
    plain = RuntimeError("no response")
    assert error_status(plain) is None
    assert error_code(plain) is None
    assert dict(error_headers(plain)) == {}
    assert dict(error_headers(timeout_error())) == {}

    class Odd(Exception):
        status_code = "500"  # not an int: not a status
        body = "plain text body"

    assert error_status(Odd()) is None
    assert error_code(Odd()) is None


# --- retry.retry_after_seconds / retry_delay -----------------------------------------------


def test_retry_after_ms_wins_over_retry_after():
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "junk", "retry-after": "9"}) == 9.0


def test_retry_after_seconds_and_http_date():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "0.25"}) == 0.25
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=lambda: now) == pytest.approx(30.0)
    # "-0000" (no known zone) is read as UTC, not as the machine's local time.
    unzoned = email.utils.formatdate(now + 30)
    assert unzoned.endswith("-0000")
    assert retry_after_seconds({"retry-after": unzoned}, now=lambda: now) == pytest.approx(30.0)
    # A date in the past is no instruction at all.
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_seconds({"retry-after": past}, now=lambda: now) is None


def test_retry_after_absent_or_negative_is_none():
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": ""}) is None
    assert retry_after_seconds({"retry-after": "-5"}) is None
    assert retry_after_seconds({"retry-after-ms": "-5"}) is None


@pytest.mark.parametrize("headers", [{"retry-after": "soon"}, {"retry-after": "Tomorrow-ish"}, {"retry-after-ms": "x"}])
def test_unparsable_retry_after_is_ignored_not_raised(headers):
    assert retry_after_seconds(headers) is None
    assert retry_delay(1, headers, rng=lambda: 0.0) == INITIAL_RETRY_DELAY


@pytest.mark.parametrize("headers", [{"retry-after": "nan"}, {"retry-after-ms": "NaN"}])
def test_nan_retry_after_is_ignored(headers):
    assert retry_after_seconds(headers) is None
    assert retry_delay(2, headers, rng=lambda: 0.0) == 2 * INITIAL_RETRY_DELAY


@pytest.mark.parametrize(
    "headers", [{"retry-after": "600"}, {"retry-after-ms": "3600000"}, {"retry-after": "inf"}]
)
def test_retry_after_above_the_cap_is_capped(headers):
    assert retry_after_seconds(headers) == MAX_RETRY_AFTER
    assert retry_delay(1, headers, rng=lambda: 0.0) == MAX_RETRY_AFTER


def test_retry_delay_honours_the_server():
    assert retry_delay(5, {"retry-after-ms": "120"}, rng=lambda: 0.9) == pytest.approx(0.12)
    assert retry_delay(1, {"retry-after": "7"}, rng=lambda: 0.9) == 7.0


def test_backoff_doubles_up_to_the_cap_without_jitter():
    delays = [retry_delay(attempt, {}, rng=lambda: 0.0) for attempt in range(1, 10)]
    assert delays[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays[6:] == [MAX_RETRY_DELAY] * 3
    assert retry_delay(0, None, rng=lambda: 0.0) == INITIAL_RETRY_DELAY


def test_backoff_jitter_takes_off_up_to_a_quarter():
    for attempt in range(1, 8):
        base = min(INITIAL_RETRY_DELAY * 2 ** (attempt - 1), MAX_RETRY_DELAY)
        assert retry_delay(attempt, rng=lambda: 0.0) == base
        assert retry_delay(attempt, rng=lambda: 0.5) == pytest.approx(base * 0.875)
        assert base * 0.75 < retry_delay(attempt, rng=lambda: 0.999999) < base * 0.7501
    rng = random.Random(7)
    samples = {retry_delay(3, rng=rng.random) for _ in range(50)}
    assert len(samples) > 40  # workers spread out
    assert all(1.5 < s <= 2.0 for s in samples)


# --- retry.parse_duration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("120ms", 0.12),
        ("1h2m", 3720.0),
        ("1h0m30s", 3630.0),
        ("2m5.5s", 125.5),
        ("0s", 0.0),
        ("17", 17.0),
        (" 3s ", 3.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "abc", "s", "1d", "1.2.3s", "1.2.3", "-1s", "5x"])
def test_parse_duration_rejects_garbage(text):
    assert parse_duration(text) is None
