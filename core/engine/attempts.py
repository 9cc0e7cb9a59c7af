"""One request's attempts: what to send, how to read the answer, what a failure means.

Shared by the sync and async drivers, which only add the I/O (`embeddings.create`,
sleeping, waiting for the rate limiter) around these decisions:

- a 429 for a request above the account's whole token budget is `RequestTooLargeError`
  (repack, don't wait); any other 429's `retry-after` pauses every worker;
- before the endpoint has answered once, a refused connection, 401, 403, 404 or
  `insufficient_quota` is `EndpointError`: a wrong URL, key or account, not 20,000
  bad sections — the run stops at once, before paying for anything else;
- after it has answered, `ENDPOINT_DOWN_REFUSALS` refused connections in a row over
  `ENDPOINT_DOWN_SECONDS`, or `max_outage` seconds of nothing but failures (5xx,
  timeouts, broken connections), are `EndpointError` too: the endpoint went down, and
  the sections not yet sent are not the user's to fix;
- a misaligned answer is resent at once; the rest follows `core.engine.retry`'s policy.

No raw SDK exception leaves this module's failures: `sanitized()` keeps the status,
code and request id of the last error, with its message redacted.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from openai.resources.embeddings import AsyncEmbeddings, Embeddings

from ..errors import EmbeddingAPIError, EndpointError, MisalignedResponseError, RequestTooLargeError
from .ratelimit import RateLimiter
from .retry import RetryPolicy, error_code, error_headers, error_status, retry_delay, should_retry
from ..limits import ENDPOINT_DOWN_REFUSALS, ENDPOINT_DOWN_SECONDS, MAX_OUTAGE_SECONDS
from ..secrets import redact
from .decode import decode_embeddings
from .plan import EmbeddingBatch, Request

__all__ = ["Attempts", "is_endpoint_problem", "is_refused", "raw_call"]

try:  # the SDK's own request options (auth, headers) for a raw POST; private, so guarded
    import httpx2 as _sdk_httpx
    from openai._base_client import make_request_options

    _RAW_OPTIONS: Any = make_request_options(security={"bearer_auth": True})
except Exception:  # pragma: no cover - an SDK without these: the parsed path only
    _RAW_OPTIONS = None

_SDK_CREATE = (Embeddings.create, AsyncEmbeddings.create)


def raw_call(client: Any) -> bool:
    """Whether `client` is the SDK's own, unpatched: then requests are POSTed raw.

    `embeddings.create` validates the 2,048-string input list and builds a pydantic
    model per returned vector: 0.77 s of client CPU per 10,000 vectors, 44 % of the
    library's total (cProfile, bench/bench_defaults.py). A raw POST through the same
    client keeps its auth, base URL, timeouts, errors and response hooks, and the
    JSON body is read straight into float32. A client whose `create` is mocked or
    wrapped (tests, callers) is always called through `create`.
    """
    create = getattr(getattr(client, "embeddings", None), "create", None)
    return _RAW_OPTIONS is not None and getattr(create, "__func__", None) in _SDK_CREATE

_ENDPOINT_STATUSES = frozenset({401, 403, 404})


def is_refused(exc: BaseException) -> bool:
    """A failure to connect at all (refused, unknown host, bad scheme): no request reached the endpoint."""
    import openai

    return (
        isinstance(exc, openai.APIConnectionError)
        and not isinstance(exc, openai.APITimeoutError)
        and isinstance(exc.__cause__, (_sdk_httpx.ConnectError, _sdk_httpx.UnsupportedProtocol))
    )


def is_endpoint_problem(exc: BaseException) -> bool:
    """A failure that says the endpoint, key or account is wrong, not this request.

    Of connection errors only a failure to connect counts (refused, unknown host): a
    connection reset mid-answer, or closed without one, is a transient fault, retried
    even on the very first request (the fault suite's `test_*_on_the_first_request`).
    """
    import openai

    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
        return is_refused(exc)
    status = error_status(exc)
    return status in _ENDPOINT_STATUSES or (status == 429 and error_code(exc) == "insufficient_quota")


class Attempts:
    """The decisions around every attempt of every request of one service.

    Args:
        model: Embeddings model.
        dimensions: Requested output width (None: the model's).
        encoding_format: ``"base64"`` or ``"float"``.
        limiter: The service's shared rate limiter.
        max_retries: Retries per request after its first attempt.
        base_url: The endpoint, for messages (no secrets in it).
        api_key: Masked from every message.
        rng: Jitter source for backoff.
        clock: Monotonic clock, for how long the endpoint has been failing.
        max_outage: Seconds of nothing but failures before giving up on the endpoint.
    """

    def __init__(
        self,
        *,
        model: str,
        dimensions: int | None,
        encoding_format: str,
        limiter: RateLimiter,
        max_retries: int,
        base_url: str | None,
        api_key: str | None,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        max_outage: float = MAX_OUTAGE_SECONDS,
    ) -> None:
        self.model = model
        self.dimensions = dimensions
        self.encoding_format = encoding_format
        self.limiter = limiter
        self.base_url = base_url
        self._api_key = api_key
        self._rng = rng
        self._lock = threading.Lock()
        self.endpoint_verified = False
        """True once any request got an answer that was not an endpoint problem."""
        self._clock = clock
        self.max_outage = max_outage
        # Since the last success: when the first failure came, how many, and the refusals in a row.
        self._failing_since: float | None = None
        self._failures = 0
        self._refused_since: float | None = None
        self._refusals = 0
        self.policy = RetryPolicy(max_retries=max_retries, retryable=self.retryable, delay=self.delay)

    # --- before -----------------------------------------------------------------------------

    def create_kwargs(self, request: Request) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "input": list(request.texts), "encoding_format": self.encoding_format}
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions
        return kwargs

    def post_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments of the SDK client's `post` for a raw embeddings request."""
        return {"body": kwargs, "cast_to": _sdk_httpx.Response, "options": _RAW_OPTIONS}

    def count(self, batch: EmbeddingBatch, *, retry: bool) -> None:
        with self._lock:
            batch.requests += 1
            batch.retries += retry

    # --- after ------------------------------------------------------------------------------

    def read(self, response: Any, request: Request, batch: EmbeddingBatch) -> tuple[list[Any], int | None]:
        """(vectors in input order, tokens the API reported) — or `MisalignedResponseError`.

        `response` is the SDK's parsed response, or the raw HTTP response of a raw POST.
        """
        self.endpoint_verified = True
        if isinstance(response, _sdk_httpx.Response):
            try:
                response = json.loads(response.content)
            except ValueError as exc:
                raise MisalignedResponseError(f"response is not JSON: {exc}") from None
            if not isinstance(response, dict):
                raise MisalignedResponseError(f"response is a JSON {type(response).__name__}, not an object")
        vectors = decode_embeddings(response, len(request.texts), self.dimensions)
        want = len(vectors[0])
        with self._lock:  # every vector of one call has one width (a numpy block relies on it)
            if batch.dimensions is None:
                batch.dimensions = want
            elif batch.dimensions != want:
                raise MisalignedResponseError(
                    f"response has {want}-dimension vectors, earlier responses had {batch.dimensions} dimensions"
                )
        usage = response.get("usage") if isinstance(response, dict) else getattr(response, "usage", None)
        used = usage.get("prompt_tokens") if isinstance(usage, dict) else getattr(usage, "prompt_tokens", None)
        with self._lock:
            self._failing_since, self._failures, self._refused_since, self._refusals = None, 0, None, 0
        return vectors, used if isinstance(used, int) and not isinstance(used, bool) else None

    def on_error(self, exc: BaseException, request: Request, batch: EmbeddingBatch, *, sent_at: float | None) -> None:
        """Learn from a failed attempt; raise what it really means when that is not `exc` itself.

        Raises:
            EndpointError: The endpoint has never answered and this says it is wrong.
            RequestTooLargeError: A 429 for a request above the whole token budget.
        """
        headers = error_headers(exc)
        if headers:
            self.limiter.observe(headers, sent_at=sent_at)
        status = error_status(exc)
        if not self.endpoint_verified and is_endpoint_problem(exc):
            raise EndpointError(
                f"the embeddings endpoint {self.base_url or 'https://api.openai.com/v1'} cannot be used: "
                f"{self.describe(exc)}",
                url=self.base_url,
                status_code=status,
                request_id=getattr(exc, "request_id", None),
                code=error_code(exc),
            ) from None
        if status is not None:
            self.endpoint_verified = True
        if status != 429 and should_retry(exc):
            self._check_outage(exc)
        if status == 429:
            with self._lock:
                batch.rate_limited += 1
            budget = self.limiter.tokens.capacity
            if budget is not None and request.tokens > budget:
                raise RequestTooLargeError(
                    f"request of {request.tokens} tokens is over the account's {int(budget)} tokens-per-minute budget"
                ) from None

    def _check_outage(self, exc: BaseException) -> None:
        """Count a failed attempt since the last success; give up on an endpoint that is down.

        Raises:
            EndpointError: `ENDPOINT_DOWN_REFUSALS` refusals in a row over
                `ENDPOINT_DOWN_SECONDS`, or `max_outage` seconds of nothing but failures.
        """
        now = self._clock()
        with self._lock:
            if self._failing_since is None:
                self._failing_since = now
            self._failures += 1
            if is_refused(exc):
                if self._refused_since is None:
                    self._refused_since = now
                self._refusals += 1
            else:
                self._refused_since, self._refusals = None, 0
            refusals = self._refusals
            refused_for = now - self._refused_since if self._refused_since is not None else 0.0
            failures, failing_for = self._failures, now - self._failing_since
        url = self.base_url or "https://api.openai.com/v1"
        if refusals >= ENDPOINT_DOWN_REFUSALS and refused_for >= ENDPOINT_DOWN_SECONDS:
            message = (
                f"the embeddings endpoint {url} stopped accepting connections: {refusals} attempts in a row "
                f"were refused over {refused_for:.0f} s ({self.describe(exc)})"
            )
        elif failing_for >= self.max_outage:
            message = (
                f"the embeddings endpoint {url} answered nothing but errors for {failing_for:.0f} s "
                f"({failures} failed attempts since its last success; last: {self.describe(exc)})"
            )
        else:
            return
        raise EndpointError(
            message,
            url=self.base_url,
            status_code=error_status(exc),
            request_id=getattr(exc, "request_id", None),
            code=error_code(exc),
        ) from None

    def retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, (EndpointError, RequestTooLargeError)) and should_retry(exc)

    def delay(self, attempt: int, exc: BaseException) -> float:
        if isinstance(exc, MisalignedResponseError):
            return 0.0  # not a load problem: resend at once
        return retry_delay(attempt, error_headers(exc), rng=self._rng)

    def before_sleep(self, exc: BaseException, seconds: float) -> None:
        if error_status(exc) == 429:
            self.limiter.pause(seconds)  # every worker waits, not just this one

    # --- reporting --------------------------------------------------------------------------

    def describe(self, exc: BaseException | None) -> str:
        """One line on `exc`: status, code, the API's message, request id — redacted."""
        if exc is None:
            return "unknown error"
        if isinstance(exc, EmbeddingAPIError):  # already ours: described (and redacted) when made
            return self.redact(str(exc))
        status = error_status(exc)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if status is not None:
            code = error_code(exc)
            request_id = getattr(exc, "request_id", None)
            text = f"HTTP {status}" + (f" {code}" if code else "") + f": {message}"
            if request_id:
                text += f" (request_id={request_id})"
        else:
            text = f"{type(exc).__name__}: {message}"
            cause = exc.__cause__
            if cause is not None and str(cause):  # the SDK says "Connection error."; httpx says why
                text += f" ({type(cause).__name__}: {cause})"
        return self.redact(text)

    def redact(self, text: str) -> str:
        return redact(text, self._api_key)

    def sanitized(self, exc: BaseException) -> EmbeddingAPIError:
        """A stand-in for `exc` that is safe to keep and chain: no raw SDK object, no key."""
        if isinstance(exc, EmbeddingAPIError):
            return exc
        return EmbeddingAPIError(
            self.describe(exc),
            status_code=error_status(exc),
            request_id=getattr(exc, "request_id", None),
            code=error_code(exc),
        )

    def failure(self, exc: BaseException) -> tuple[str, str]:
        """(code, reason) for the inputs of a request that failed for good."""
        return ("misaligned" if isinstance(exc, MisalignedResponseError) else "api_error"), self.describe(exc)

