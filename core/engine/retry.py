"""Retries: decisions as small pure functions, and the one retry loop every backend uses.

`should_retry` / `retry_delay` decide (free of I/O and clocks, tested exhaustively
in milliseconds); `RetryPolicy` bundles a decision with a delay and a budget; and
`call_with_retries` / `acall_with_retries` run it — both on tenacity, so the sync
and async drivers and the Supabase store share one loop and one backoff formula.
Sleep is injectable everywhere so retry tests never wait.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timezone
from typing import Any, TypeVar

import tenacity

from ..errors import MisalignedResponseError, RequestTooLargeError  # noqa: F401 - re-exported (their old home)
from ..limits import INITIAL_RETRY_DELAY, MAX_RETRY_AFTER, MAX_RETRY_DELAY

__all__ = [
    "MisalignedResponseError",
    "RequestTooLargeError",
    "should_retry",
    "retry_delay",
    "retry_after_seconds",
    "parse_duration",
    "error_status",
    "error_headers",
    "error_code",
    "RetryPolicy",
    "call_with_retries",
    "acall_with_retries",
]

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Plus every 5xx: timeouts, lock conflicts, rate limits and server faults pass."""


def error_status(exc: BaseException) -> int | None:
    """HTTP status of an SDK `APIStatusError`, else None."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def error_headers(exc: BaseException) -> Mapping[str, str]:
    """Response headers carried by an SDK error (empty when it has none)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers if isinstance(headers, Mapping) or hasattr(headers, "get") else {}


def error_code(exc: BaseException) -> str | None:
    """The API's error `code` (e.g. ``insufficient_quota``), from the SDK error or its body."""
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return code
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("code"), str):
            return inner["code"]
    return None


def _is_sdk_transport_error(exc: BaseException) -> bool:
    # Imported lazily: openai is a hard dependency, but this module stays pure.
    import openai

    return isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError))


def should_retry(exc: BaseException) -> bool:
    """Whether a failed embeddings request is worth sending again.

    Retried: timeouts and connection errors, 408/409/429/5xx, and responses
    whose vectors did not line up with the inputs. Not retried: a 429 whose
    code is ``insufficient_quota`` (billing, waiting will not help), other 4xx
    (the request itself is wrong), and any exception that is not an API error
    (a bug or a mock's deliberate failure: repeating it hides it).
    """
    if isinstance(exc, MisalignedResponseError):
        return True
    if _is_sdk_transport_error(exc):
        return True
    status = error_status(exc)
    if status is None:
        return False
    if error_code(exc) == "insufficient_quota":
        return False
    explicit = str(error_headers(exc).get("x-should-retry", "")).lower()
    if explicit in ("true", "false"):
        return explicit == "true"
    return status in RETRYABLE_STATUS or status >= 500


def retry_after_seconds(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """The server's requested wait, from `retry-after-ms` or `retry-after` (seconds or HTTP date).

    Returns None when absent, unparsable (garbage, NaN) or negative; a wait above
    `MAX_RETRY_AFTER` is capped to it (a server asking for minutes still gets a
    long pause, never a hammering 0.5 s backoff).
    """
    value: float | None = None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = None
    if value is None:
        raw = headers.get("retry-after")
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = _http_date_delay(raw, now)
    if value is None or math.isnan(value) or value < 0:
        return None
    return min(value, MAX_RETRY_AFTER)


def _http_date_delay(raw: str, now: Callable[[], float]) -> float | None:
    """Seconds until an HTTP date (RFC 9110), or None when it is not one."""
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # "-0000": a UTC time without a known zone
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp() - now()


def retry_delay(
    attempt: int,
    headers: Mapping[str, str] | None = None,
    *,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number `attempt` (1-based).

    The server's `retry-after-ms` / `retry-after` wins when sane; otherwise
    exponential backoff from `INITIAL_RETRY_DELAY`, capped at `MAX_RETRY_DELAY`,
    with up to 25% jitter taken off so that parallel workers spread out.
    """
    server = retry_after_seconds(headers or {})
    if server is not None:
        return server
    base = min(INITIAL_RETRY_DELAY * (2 ** max(attempt - 1, 0)), MAX_RETRY_DELAY)
    return base * (1.0 - 0.25 * rng())


def parse_duration(text: str | None) -> float | None:
    """OpenAI's rate-limit reset durations (``6m0s``, ``1.5s``, ``120ms``, ``1h2m``) in seconds."""
    if not text:
        return None
    total, number, i, s = 0.0, "", 0, text.strip()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    matched = False
    while i < len(s):
        ch = s[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if s.startswith("ms", i) else ch
        if unit not in units or not number:
            return None
        try:
            total += float(number) * units[unit]
        except ValueError:
            return None
        matched, number = True, ""
        i += len(unit)
    if number:  # a bare number: seconds
        try:
            total += float(number)
        except ValueError:
            return None
        matched = True
    return total if matched else None


@dataclass(frozen=True)
class RetryPolicy:
    """What to retry, how long to wait, and how often: the whole retry decision of a backend.

    Attributes:
        max_retries: Retries after the first attempt.
        retryable: Whether an exception is worth another attempt.
        delay: Seconds before retry number `attempt` (1-based) after `exc`.
    """

    max_retries: int
    retryable: Callable[[BaseException], bool] = should_retry
    delay: Callable[[int, BaseException], float] = lambda attempt, exc: retry_delay(attempt, error_headers(exc))

    def _tenacity(self, before_sleep: Callable[[BaseException, float], None] | None) -> dict[str, Any]:
        def wait(state: tenacity.RetryCallState) -> float:
            return self.delay(state.attempt_number, state.outcome.exception())  # type: ignore[union-attr,arg-type]

        def hook(state: tenacity.RetryCallState) -> None:
            if before_sleep is not None:
                before_sleep(state.outcome.exception(), state.upcoming_sleep)  # type: ignore[union-attr,arg-type]

        return {
            "stop": tenacity.stop_after_attempt(self.max_retries + 1),
            "retry": tenacity.retry_if_exception(self.retryable),
            "wait": wait,
            "before_sleep": hook,
            "reraise": True,  # the caller sees the last real exception, not tenacity's RetryError
        }


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    before_sleep: Callable[[BaseException, float], None] | None = None,
) -> T:
    """`fn()`, tried again per `policy`; the last exception is raised when it gives up.

    Args:
        fn: One attempt.
        policy: What to retry and how long to wait.
        sleep: Sleep function (injectable for tests).
        before_sleep: Called with (exception, seconds) before each wait.
    """
    try:
        return fn()  # the common case, without tenacity's per-call set-up (~20 us a row, measured)
    except Exception as exc:
        wait = _first_wait(policy, exc, before_sleep)
    sleep(wait)
    return tenacity.Retrying(sleep=sleep, **_after_first(policy)._tenacity(before_sleep))(fn)


async def acall_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    before_sleep: Callable[[BaseException, float], None] | None = None,
) -> T:
    """The async twin of `call_with_retries` (same policy, same tenacity loop)."""
    try:
        return await fn()
    except Exception as exc:
        wait = _first_wait(policy, exc, before_sleep)
    kwargs = _after_first(policy)._tenacity(before_sleep)
    if sleep is not None:
        kwargs["sleep"] = sleep
        await sleep(wait)
    else:
        await asyncio.sleep(wait)

    async def attempt() -> T:
        # tenacity awaits only coroutine *functions*; a lambda returning an awaitable is awaited here.
        return await fn()

    return await tenacity.AsyncRetrying(**kwargs)(attempt)


def _first_wait(
    policy: RetryPolicy, exc: Exception, before_sleep: Callable[[BaseException, float], None] | None
) -> float:
    """Seconds to wait after a failed first attempt; re-raises `exc` (from the caller's
    `except`) when the policy gives up on it."""
    if policy.max_retries < 1 or not policy.retryable(exc):
        raise exc
    wait = policy.delay(1, exc)
    if before_sleep is not None:
        before_sleep(exc, wait)
    return wait


def _after_first(policy: RetryPolicy) -> RetryPolicy:
    """`policy` for the attempts after a first one failed (and its wait was slept)."""
    return RetryPolicy(policy.max_retries - 1, policy.retryable, lambda attempt, exc: policy.delay(attempt + 1, exc))
