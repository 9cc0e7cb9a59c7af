"""Client-side pacing: token buckets for requests/min and tokens/min, learned from the API.

The API tells every client its budget in `x-ratelimit-*` headers (on 200s via the
HTTP client's response hook, and on 429s via the error). The limiter mirrors it as
two continuously refilling buckets and makes each request wait for its share
*before* sending, so a large job runs at the ceiling instead of bouncing off it.
A 429's `retry-after` pauses every worker, not just the one that was refused.

Clock and sleep are injectable so tests run in milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from .retry import parse_duration

__all__ = ["TOKEN_RESERVE_SECONDS", "RateLimiter", "TokenBucket"]

_SECONDS_PER_MINUTE = 60.0
MAX_WAIT_SLICE = 0.25
"""Longest single sleep while waiting for budget, in seconds."""
TOKEN_RESERVE_SECONDS = 0.05
"""A token budget is only spent down to what it refills in this long (known rates only). Exactly
"enough" was a knife edge: the server's figures are a latency old, and its bucket gains nothing
while it sits full, so a request sent the moment our model held enough was refused now and then
(measured: a 124,845-token request with 114,945 left, ~40 ms of refill short; one 429 per run in
the bench's 300k-tokens/s regimes, ~0.5 s each). The reserve costs its 50 ms once per run."""
_NEGLIGIBLE_WAIT = 1e-6
"""Seconds below which a wait is float rounding residue, not a real shortfall: after
sleeping the computed wait, `clock() + wait` can round back to `clock()` and the
bucket stay 1e-13 tokens short, so such a wait is granted instead of slept."""


@dataclass
class TokenBucket:
    """A bucket of `capacity` units refilling at `rate` units/s. `capacity=None`: unlimited."""

    capacity: float | None = None
    rate: float = 0.0
    level: float = 0.0
    updated: float = 0.0
    rate_known: bool = True
    """False while `rate` is a guess (the limit over 60 s), not given nor derived from headers."""

    @classmethod
    def per_minute(cls, limit: float | None, now: float) -> TokenBucket:
        if limit is None:
            return cls()
        return cls(capacity=float(limit), rate=float(limit) / _SECONDS_PER_MINUTE, level=float(limit), updated=now)

    def refill(self, now: float) -> None:
        if self.capacity is None:
            return
        self.level = min(self.capacity, self.level + self.rate * max(0.0, now - self.updated))
        self.updated = now

    def wait_time(self, cost: float, now: float, reserve: float = 0.0) -> float:
        """Seconds until `cost` units are available with `reserve` seconds of refill left over
        (a cost above capacity waits for a full bucket)."""
        if self.capacity is None:
            return 0.0
        self.refill(now)
        need = min(cost + (self.rate * reserve if self.rate_known else 0.0), self.capacity)
        if self.level >= need:
            return 0.0
        if self.rate <= 0:
            return 1.0
        return (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        if self.capacity is not None:
            # A request above capacity waited for a full bucket; taking more than the
            # bucket holds would only push every later request into a long debt.
            self.level -= min(cost, self.capacity)

    def sync(
        self, limit: float, remaining: float | None, reset: float | None, now: float, age: float = 0.0
    ) -> None:
        """Align with the server's view: its limit, what remains, and when it is full again.

        `age` is how long ago the server computed those figures (it does so when it
        accepts the request, the answer arrives a request's latency later): its
        bucket has refilled for that long since.
        """
        known = self.capacity is not None
        self.refill(now)
        self.capacity = limit
        if remaining is not None and reset is not None and reset > 0 and remaining < limit:
            # The server refills (limit - remaining) in `reset` seconds: that is its rate.
            self.rate = (limit - remaining) / reset
            self.rate_known = True
        elif self.rate <= 0:
            self.rate = limit / _SECONDS_PER_MINUTE
            self.rate_known = False
        server_level = limit if remaining is None else min(limit, remaining + self.rate * max(0.0, age))
        # Our own level already counts requests in flight that the server has not
        # seen yet, so only ever move down to the server's figure, never up.
        self.level = min(self.level, server_level) if known else server_level
        self.updated = now


class RateLimiter:
    """Paces requests by requests/min and tokens/min, shared by all workers of a service.

    Args:
        tokens_per_minute: Known TPM limit, or None to learn it from headers.
        requests_per_minute: Known RPM limit, or None to learn it from headers.
        clock: Monotonic clock in seconds (injectable for tests).
        sleep: Sleep function (injectable for tests).
    """

    def __init__(
        self,
        *,
        tokens_per_minute: float | None = None,
        requests_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self.tokens = TokenBucket.per_minute(tokens_per_minute, now)
        self.requests = TokenBucket.per_minute(requests_per_minute, now)
        self._paused_until = 0.0
        self.waited_seconds = 0.0
        # True once any limit is known (given, or seen in headers), or a probe
        # request came back without any: then there is nothing more to learn first.
        self.probed = tokens_per_minute is not None or requests_per_minute is not None

    def try_acquire(self, tokens: int) -> float:
        """Reserve one request of `tokens` tokens if both budgets allow it now.

        Returns:
            0.0 when reserved; else the seconds to sleep before asking again (the
            sync and async drivers differ only in how they sleep).
        """
        with self._lock:
            now = self._clock()
            wait = max(
                self._paused_until - now,
                self.tokens.wait_time(tokens, now, TOKEN_RESERVE_SECONDS),
                self.requests.wait_time(1, now),
            )
            if wait <= _NEGLIGIBLE_WAIT:
                self.tokens.take(tokens)
                self.requests.take(1)
                return 0.0
            # While a rate is only a guess (limit/60 from a full bucket's headers),
            # wait in short slices: the next answer's headers will correct it.
            guessed = not (self.tokens.rate_known and self.requests.rate_known)
            return min(wait, MAX_WAIT_SLICE) if guessed else wait

    def acquire(self, tokens: int) -> float:
        """Block until one request of `tokens` tokens fits both budgets; reserve it.

        Returns:
            Seconds spent waiting.
        """
        waited = 0.0
        while (step := self.try_acquire(tokens)) > 0.0:
            self._sleep(step)
            waited += step
        with self._lock:
            self.waited_seconds += waited
        return waited

    async def acquire_async(self, tokens: int, *, sleep: Callable[[float], Awaitable[None]] | None = None) -> float:
        """`acquire` for an event loop: awaits instead of blocking (same budgets, same lock).

        Args:
            tokens: The request's tokens.
            sleep: Async sleep (default `asyncio.sleep`; injectable for tests).
        """
        import asyncio

        sleep = sleep or asyncio.sleep
        waited = 0.0
        while (step := self.try_acquire(tokens)) > 0.0:
            await sleep(step)
            waited += step
        with self._lock:
            self.waited_seconds += waited
        return waited

    def pause(self, seconds: float) -> None:
        """Hold every worker for `seconds` (after a 429 with `retry-after`)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe(self, headers: Mapping[str, str], *, sent_at: float | None = None) -> None:
        """Learn limits and remaining budget from a response's `x-ratelimit-*` headers.

        Args:
            headers: The response headers.
            sent_at: When the request left (this limiter's clock), if known: the
                figures are as old as the request.
        """
        for kind, bucket in (("tokens", self.tokens), ("requests", self.requests)):
            limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
            if limit is None or limit <= 0:
                continue
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            with self._lock:
                now = self._clock()
                age = now - sent_at if sent_at is not None else 0.0
                bucket.sync(limit, remaining, reset, now, age)
                self.probed = True

    @property
    def tokens_per_minute(self) -> float | None:
        """The token budget per minute as currently known (None: unknown/unlimited)."""
        if self.tokens.capacity is None:
            return None
        return self.tokens.rate * _SECONDS_PER_MINUTE


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
