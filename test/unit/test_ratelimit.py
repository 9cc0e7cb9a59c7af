"""Pacing (`core.engine.ratelimit`): RPM/TPM token buckets, waits, pauses, limits learned from headers.

Nothing here sleeps: clocks and sleeps are fakes.
"""

from __future__ import annotations

import random
import threading

import httpx2
import pytest
from fakes import FakeClock

from core.engine.ratelimit import TOKEN_RESERVE_SECONDS, RateLimiter, TokenBucket


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
    # 10 s for the tokens, and TOKEN_RESERVE_SECONDS more: the budget is never spent to its last token.
    assert waited == pytest.approx(10.0 + TOKEN_RESERVE_SECONDS)
    assert sum(clock.sleeps) == pytest.approx(10.0 + TOKEN_RESERVE_SECONDS)
    # Half a minute later 300 tokens are back: 250 go through at once, 100 more wait 5 s.
    clock.now += 30
    assert limiter.acquire(250) == 0.0
    assert limiter.acquire(100) == pytest.approx(5.0)
    assert limiter.waited_seconds == pytest.approx(15.0 + TOKEN_RESERVE_SECONDS)  # the reserve is paid once
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
    assert limiter.acquire(30) == pytest.approx(30.0 + TOKEN_RESERVE_SECONDS)


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
    assert limiter.acquire(10) == pytest.approx(5.0 + TOKEN_RESERVE_SECONDS)  # just its own 10 tokens at 2/s


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
    assert limiter.acquire(10_000) == pytest.approx(3.6 + TOKEN_RESERVE_SECONDS)


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
