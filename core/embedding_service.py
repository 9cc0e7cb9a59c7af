"""`EmbeddingService`: many texts in, aligned vectors out, at the edge of the API's limits.

How a call flows:

1. every input is checked and counted with tiktoken (cl100k_base, offline);
   inputs that cannot be sent (not a string, empty, over the per-input limit)
   fail alone, with their index and reason;
2. identical texts are sent once;
3. the rest are packed in order into the fewest requests that keep both the
   input cap (`max_batch_size`, <= 2048) and the token cap (300,000 summed);
4. requests go out concurrently (bounded), each waiting for its share of the
   rate limit first, retried on timeouts, connection errors, 408/409/429/5xx and
   misaligned responses;
5. a response is accepted only with exactly one vector per input, at the right
   indices: a vector is never stored under the wrong text.
"""

from __future__ import annotations

import array
import base64
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Literal

from openai import DefaultHttpxClient, OpenAI

from .errors import (
    AllRequestsFailedError,
    ConfigurationError,
    EmbeddingAPIError,
    EmptyInputError,
    InputTooLongError,
    InvalidInputError,
    InvalidInputTypeError,
    MissingDependencyError,
)
from .limits import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_INPUTS_PER_REQUEST,
    MAX_TOKENS_PER_INPUT,
    MAX_TOKENS_PER_REQUEST,
    model_dimensions,  # noqa: F401 - re-exported for callers of this module
)
from .packing import pack_requests
from .ratelimit import RateLimiter
from .retry import (
    MisalignedResponseError,
    RequestTooLargeError,
    error_code,
    error_headers,
    error_status,
    retry_delay,
    should_retry,
)
from .tokens import count_tokens_batch, truncate_to_tokens

__all__ = ["EmbeddingService", "EmbeddingBatch", "MAX_BATCH_SIZE"]

MAX_BATCH_SIZE = MAX_INPUTS_PER_REQUEST
"""The seed's name for the per-request input cap."""

OutputFormat = Literal["list", "numpy", "array"]
ProgressCallback = Callable[[int, int], None]
"""Called after each request with (inputs finished, tokens sent) for that request."""

_SECRET_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{4,}|sb_secret_[A-Za-z0-9_\-]+|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)")


def redact(text: str, *secrets: str | None) -> str:
    """`text` with the given secrets and anything shaped like an API key or JWT masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET_PATTERN.sub("***", text)


@dataclass
class EmbeddingBatch:
    """Everything one `EmbeddingService.embed` call produced.

    Attributes:
        vectors: Input index -> float32 vector, for every input that succeeded.
        errors: Input index -> reason, for every input that failed.
        token_counts: Tokens per input as sent (0 for inputs never sent).
        total_tokens: Tokens the API reported in `usage` over all successful requests.
        requests: HTTP requests sent, retries included.
        retries: Of those, how many were retries.
        rate_limited: How many answers were 429.
        last_error: The last exception behind a failure, for chaining.
        dimensions: Width of every vector of this call (None until one arrived).
    """

    vectors: dict[int, array.array] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    token_counts: list[int] = field(default_factory=list)
    total_tokens: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    last_error: BaseException | None = None
    dimensions: int | None = None

    @property
    def failed_indices(self) -> list[int]:
        return sorted(self.errors)

    @property
    def indices(self) -> list[int]:
        """Input indices that succeeded, in input order."""
        return sorted(self.vectors)


class EmbeddingService:
    """Embeds texts with an OpenAI-compatible `/v1/embeddings` endpoint.

    Args:
        api_key: API key; default `OPENAI_API_KEY`. Never logged or shown.
        model: Embeddings model.
        dimensions: Output dimensions (text-embedding-3-* can shorten vectors).
        base_url: Endpoint; default the SDK's `OPENAI_BASE_URL`, else OpenAI.
            Any OpenAI-compatible server works (Azure, vLLM, Ollama, LiteLLM).
        max_batch_size: Inputs per request, 1..2048.
        max_tokens_per_request: Tokens summed per request (the API refuses more).
        max_tokens_per_input: Tokens per input (the model's context).
        truncate: Cut over-long inputs to `max_tokens_per_input` instead of failing them.
        max_concurrency: Requests in flight at once.
        max_retries: Retries per request after its first attempt.
        timeout: Seconds before a hung request is cut and retried.
        tokens_per_minute: Known TPM limit (else learned from response headers).
        requests_per_minute: Known RPM limit (else learned from response headers).
        probe_limits: While no limit is known, send a call's first request alone and
            let its rate-limit headers pace the rest (once per service; skipped
            when `tokens_per_minute`/`requests_per_minute` are given).
        encoding_format: ``"base64"`` (compact, decoded straight to float32) or ``"float"``.
        output: What `batch_generate_embeddings` returns per vector: ``"list"`` of
            Python floats (default, JSON-ready), ``"numpy"`` (one 2-D float32 array,
            needs numpy) or ``"array"`` (`array.array('f')`, 6 KB per 1536 dims).
        client: A ready `openai.OpenAI` client (then `api_key`/`base_url` are unused).
        sleep: Sleep function (injectable for tests).
        clock: Monotonic clock (injectable for tests).
        rng: Random source in [0, 1) for backoff jitter (injectable for tests).

    Raises:
        ConfigurationError: No API key, or a limit out of range.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        dimensions: int | None = None,
        base_url: str | None = None,
        max_batch_size: int = MAX_INPUTS_PER_REQUEST,
        max_tokens_per_request: int = MAX_TOKENS_PER_REQUEST,
        max_tokens_per_input: int = MAX_TOKENS_PER_INPUT,
        truncate: bool = False,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        tokens_per_minute: float | None = None,
        requests_per_minute: float | None = None,
        encoding_format: Literal["base64", "float"] = "base64",
        output: OutputFormat = "list",
        probe_limits: bool = True,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        _check_range("max_batch_size", max_batch_size, 1, MAX_INPUTS_PER_REQUEST)
        _check_range("max_tokens_per_input", max_tokens_per_input, 1, 10**7)
        _check_range("max_tokens_per_request", max_tokens_per_request, 1, 10**9)
        _check_range("max_concurrency", max_concurrency, 1, 1024)
        _check_range("max_retries", max_retries, 0, 100)
        if dimensions is not None:
            _check_range("dimensions", dimensions, 1, 16000)
        if encoding_format not in ("base64", "float"):
            raise ConfigurationError(f"encoding_format must be 'base64' or 'float', not {encoding_format!r}")
        if output not in ("list", "numpy", "array"):
            raise ConfigurationError(f"output must be 'list', 'numpy' or 'array', not {output!r}")
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, not {timeout!r}")
        for name, per_minute in (("tokens_per_minute", tokens_per_minute), ("requests_per_minute", requests_per_minute)):
            if per_minute is not None and (
                isinstance(per_minute, bool) or not isinstance(per_minute, (int, float)) or not 0 < per_minute < float("inf")
            ):
                raise ConfigurationError(f"{name} must be a positive number or None, not {per_minute!r}")

        self.model = model
        self.dimensions = dimensions
        self.max_batch_size = max_batch_size
        self.max_tokens_per_request = max_tokens_per_request
        self.max_tokens_per_input = max_tokens_per_input
        self.truncate = truncate
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.encoding_format = encoding_format
        self.output = output
        self.probe_limits = probe_limits
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self.limiter = RateLimiter(
            tokens_per_minute=tokens_per_minute,
            requests_per_minute=requests_per_minute,
            clock=clock,
            sleep=sleep,
        )
        self._stats_lock = threading.Lock()

        if client is not None:
            self.client = client
            self._api_key: str | None = None
            self.base_url = str(getattr(client, "base_url", "") or "") or None
            return
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ConfigurationError(
                "no OpenAI API key: pass EmbeddingService(api_key=...) or set OPENAI_API_KEY"
            )
        self._api_key = key
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        client_kwargs: dict[str, Any] = {
            "api_key": key,
            # Retries and pacing are ours (shared rate limiter, misalignment retries).
            "max_retries": 0,
            "timeout": timeout,
            # The response hook reads x-ratelimit-* headers of every answer, 200s included,
            # without switching to with_raw_response (callers and mocks stub `create`).
            "http_client": DefaultHttpxClient(
                event_hooks={"request": [self._stamp_request], "response": [self._observe_response]}
            ),
        }
        if base_url:
            client_kwargs["base_url"] = base_url
        self.client = OpenAI(**client_kwargs)

    def __repr__(self) -> str:
        return (
            f"EmbeddingService(model={self.model!r}, dimensions={self.dimensions!r}, "
            f"base_url={self.base_url!r}, max_batch_size={self.max_batch_size}, "
            f"max_concurrency={self.max_concurrency}, api_key='***')"
        )

    # --- public API ------------------------------------------------------------------

    def generate_embedding(self, text: str) -> list[float]:
        """The embedding of one text.

        Raises:
            InvalidInputTypeError: `text` is not a string.
            EmptyInputError: `text` is empty.
            InputTooLongError: `text` is over `max_tokens_per_input` and `truncate` is off.
            EmbeddingAPIError: The request failed for good.
        """
        self._check_strict([text])
        batch = self.embed([text])
        if 0 in batch.vectors:
            return batch.vectors[0].tolist()
        reason = batch.errors.get(0, "no vector returned")
        if "tokens, over the" in reason:
            raise InputTooLongError(f"text at index 0 {reason}", index=0, reason=reason)
        raise self._api_error(f"Failed to generate embedding: {reason}", batch.last_error) from batch.last_error

    def batch_generate_embeddings(
        self, texts: Sequence[str], max_batch_size: int | None = None
    ) -> dict[str, Any]:
        """Embed many texts; a failing request never sinks the others.

        Args:
            texts: The texts, each a non-empty string.
            max_batch_size: Inputs per request for this call (default: the service's).

        Returns:
            ``embeddings``: the vectors of the inputs that succeeded, in input order
            (see `output`); ``failed_indices``: sorted indices that failed;
            ``total_tokens``: tokens the API reported; ``indices``: the input index
            of each embedding; ``errors``: index -> reason for each failure.

        Raises:
            InvalidInputTypeError: `texts` is not a list of strings (names the index).
            ValueError: `texts` is an empty list, or a text is empty (names the index).
            AllRequestsFailedError: No input got a vector (a `RuntimeError`,
                chained to the last cause).
        """
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidInputTypeError(
                f"texts must be a list of strings, not {type(texts).__name__}", reason="not a list"
            )
        if len(texts) == 0:
            raise InvalidInputError("Cannot embed an empty list of texts", reason="empty list")
        self._check_strict(texts)
        batch = self.embed(texts, max_batch_size=max_batch_size)
        if not batch.vectors:
            last = batch.last_error
            detail = f"; last error: {self._reason(last)}" if last is not None else ""
            first = batch.failed_indices[0]
            raise self._api_error(
                f"Failed to generate any embeddings: all {len(texts)} inputs failed "
                f"(index {first}: {batch.errors[first]}){detail}",
                last,
                failures=batch.errors,
                cls=AllRequestsFailedError,
            ) from last
        indices = batch.indices
        return {
            "embeddings": self._format([batch.vectors[i] for i in indices]),
            "failed_indices": batch.failed_indices,
            "total_tokens": batch.total_tokens,
            "indices": indices,
            "errors": dict(sorted(batch.errors.items())),
        }

    def embed(
        self,
        texts: Sequence[Any],
        *,
        max_batch_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> EmbeddingBatch:
        """Embed `texts` and account for every index; never raises for a bad input.

        The engine under `batch_generate_embeddings` and the stores: an input that
        is not a string, empty, or too long lands in `errors` with its reason; so
        does every input of a request that failed for good.

        Args:
            texts: Inputs; anything that is not a non-empty string fails alone.
            max_batch_size: Inputs per request for this call.
            progress: Called after each request with (inputs finished, tokens).
        """
        limit = self.max_batch_size if max_batch_size is None else max_batch_size
        _check_range("max_batch_size", limit, 1, MAX_INPUTS_PER_REQUEST)
        max_tokens = self.max_tokens_per_request
        tpm = self.limiter.tokens.capacity
        if tpm is not None:  # a request above the whole token budget is refused outright
            max_tokens = max(1, min(max_tokens, int(tpm)))
        batch = EmbeddingBatch(token_counts=[0] * len(texts))
        sendable = self._prepare(texts, batch, max_tokens)

        # Identical texts are sent once; every copy gets the vector.
        copies: dict[str, list[int]] = {}
        for index, text in sendable:
            copies.setdefault(text, []).append(index)
        first_of = [indices[0] for indices in copies.values()]
        texts_of = {indices[0]: text for text, indices in copies.items()}
        requests = pack_requests(first_of, batch.token_counts, max_inputs=limit, max_tokens=max_tokens)

        def finish(request: list[int], outcome: list[array.array] | BaseException) -> None:
            tokens = sum(batch.token_counts[i] for i in request)
            if isinstance(outcome, BaseException):
                reason = self._reason(outcome)
                for first in request:
                    for i in copies[texts_of[first]]:
                        batch.errors[i] = reason
                batch.last_error = outcome
            else:
                for first, vector in zip(request, outcome):
                    for i in copies[texts_of[first]]:
                        batch.vectors[i] = vector
            if progress is not None:
                progress(sum(len(copies[texts_of[f]]) for f in request), tokens)

        def run(request: list[int]) -> list[array.array]:
            return self._send(
                [texts_of[i] for i in request], sum(batch.token_counts[i] for i in request), batch
            )

        def repack(indices: list[int], budget: int) -> list[list[int]]:
            """Pack again under a smaller learned budget; inputs above it fail alone."""
            for i in indices:
                if batch.token_counts[i] > budget:
                    for j in copies[texts_of[i]]:
                        batch.errors[j] = (
                            f"{batch.token_counts[i]} tokens, over the {budget}-token request limit "
                            "(the account's tokens-per-minute budget)"
                        )
            fits = [i for i in indices if batch.token_counts[i] <= budget]
            return pack_requests(fits, batch.token_counts, max_inputs=limit, max_tokens=budget)

        def smaller_budget() -> int | None:
            learned = self.limiter.tokens.capacity
            return max(1, int(learned)) if learned is not None and int(learned) < max_tokens else None

        pending = list(requests)
        if len(pending) > 1 and self.max_concurrency > 1 and self.probe_limits and not self.limiter.probed:
            # Limits unknown: one request first, so its x-ratelimit-* headers (or 429)
            # set the pace before the others go; a burst of blind requests would
            # mostly come back 429.
            first = pending.pop(0)
            try:
                finish(first, run(first))
            except RequestTooLargeError:
                pending.insert(0, first)  # repacked below with the budget it taught us
            except Exception as exc:  # accounted per index; see finish()
                finish(first, exc)
            self.limiter.probed = True
        for _round in range(2):
            budget = smaller_budget()
            if budget is not None and pending:
                # Packed for more than the account's whole per-minute budget: such a
                # request is refused (429 "request too large") however long we wait.
                max_tokens = budget
                pending = repack([i for request in pending for i in request], budget)
            too_large: list[list[int]] = []

            def settle(request: list[int], outcome: list[array.array] | BaseException) -> None:
                if isinstance(outcome, RequestTooLargeError) and _round == 0:
                    too_large.append(request)  # noqa: B023 - settled within this round
                else:
                    finish(request, outcome)

            if len(pending) <= 1 or self.max_concurrency == 1:
                for request in pending:
                    try:
                        outcome: list[array.array] | BaseException = run(request)
                    except Exception as exc:  # accounted per index; see finish()
                        outcome = exc
                    settle(request, outcome)
            else:
                with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(pending))) as pool:
                    futures = {pool.submit(run, request): request for request in pending}
                    for future in as_completed(futures):
                        exc = future.exception()
                        settle(futures[future], exc if exc is not None else future.result())
            pending = too_large
            if not pending:
                break
        return batch

    def close(self) -> None:
        """Close the HTTP client's connections."""
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> EmbeddingService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------

    def _check_strict(self, texts: Sequence[Any]) -> None:
        """The seed contract: a non-string or empty text raises, naming its index."""
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputTypeError(
                    f"text at index {index} is {type(text).__name__}, not str",
                    index=index,
                    reason="not a string",
                )
            if not text:
                raise EmptyInputError(f"text at index {index} is empty", index=index, reason="empty text")

    def _prepare(self, texts: Sequence[Any], batch: EmbeddingBatch, request_tokens: int) -> list[tuple[int, str]]:
        """Validate and count every input; return the (index, text) pairs to send.

        An input longer than the per-input limit, or than `request_tokens` (the
        per-request cap, or a smaller known tokens-per-minute budget: such an input
        could never be sent), fails alone, or is cut to fit when `truncate` is on.
        """
        strings = [(i, t) for i, t in enumerate(texts) if isinstance(t, str) and t]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                batch.errors[i] = f"not a string ({type(t).__name__})"
            elif not t:
                batch.errors[i] = "empty text"
        counts = count_tokens_batch([t for _, t in strings])
        limit = min(self.max_tokens_per_input, request_tokens)
        what = "input" if limit == self.max_tokens_per_input else "request"
        sendable: list[tuple[int, str]] = []
        for (i, text), tokens in zip(strings, counts):
            if tokens > limit:
                if not self.truncate:
                    batch.errors[i] = f"{tokens} tokens, over the {limit}-token {what} limit"
                    continue
                text = truncate_to_tokens(text, limit)
                tokens = count_tokens_batch([text])[0]
            batch.token_counts[i] = tokens
            sendable.append((i, text))
        return sendable

    def _send(self, texts: list[str], tokens: int, batch: EmbeddingBatch) -> list[array.array]:
        """One request with retries; returns vectors aligned with `texts` or raises the last error."""
        kwargs: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": self.encoding_format}
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions
        attempt = 0
        while True:
            self.limiter.acquire(tokens)
            with self._stats_lock:
                batch.requests += 1
                batch.retries += attempt > 0
            try:
                response = self.client.embeddings.create(**kwargs)
                vectors = self._decode(response, len(texts), batch)
            except Exception as exc:
                attempt += 1
                headers = error_headers(exc)
                if headers:
                    self.limiter.observe(headers, sent_at=_sent_at(getattr(exc, "response", None)))
                status = error_status(exc)
                if status == 429:
                    with self._stats_lock:
                        batch.rate_limited += 1
                    budget = self.limiter.tokens.capacity
                    if budget is not None and tokens > budget:
                        raise RequestTooLargeError(
                            f"request of {tokens} tokens is over the account's {int(budget)} tokens-per-minute budget"
                        ) from exc
                if not should_retry(exc) or attempt > self.max_retries:
                    raise
                # A misaligned answer is not a load problem: resend at once.
                delay = 0.0 if isinstance(exc, MisalignedResponseError) else retry_delay(attempt, headers, rng=self._rng)
                if status == 429:
                    self.limiter.pause(delay)  # every worker waits, not just this one
                self._sleep(delay)
                continue
            used = getattr(getattr(response, "usage", None), "prompt_tokens", None)
            with self._stats_lock:
                batch.total_tokens += used if isinstance(used, int) and not isinstance(used, bool) else tokens
            return vectors

    def _decode(self, response: Any, expected: int, batch: EmbeddingBatch | None = None) -> list[array.array]:
        """Vectors in input order, or `MisalignedResponseError` when they cannot be trusted."""
        data = list(getattr(response, "data", None) or [])
        if len(data) != expected:
            raise MisalignedResponseError(f"response carried {len(data)} vectors for {expected} inputs")
        positions = [_field(item, "index") for item in data]
        if any(p is not None for p in positions):  # no index at all: the list order is all there is
            if not all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
                raise MisalignedResponseError(f"response items carry missing or non-integer indices {positions[:5]}")
            if sorted(positions) != list(range(expected)):  # type: ignore[type-var]
                raise MisalignedResponseError(f"response indices {sorted(positions)[:5]}... do not match 0..{expected - 1}")  # type: ignore[type-var]
            data = [item for _, item in sorted(zip(positions, data), key=lambda pair: pair[0])]  # type: ignore[arg-type,return-value]
        vectors: list[array.array] = []
        for position, item in enumerate(data):
            try:
                vectors.append(_to_float32(_field(item, "embedding")))
            except (TypeError, ValueError, OverflowError) as exc:  # binascii.Error is a ValueError
                raise MisalignedResponseError(f"vector {position} cannot be decoded: {exc}") from exc
        want = self.dimensions or len(vectors[0])
        for position, vector in enumerate(vectors):
            if len(vector) != want or want == 0:
                raise MisalignedResponseError(f"vector {position} has {len(vector)} dimensions, expected {want}")
        if batch is not None:  # every vector of one call has one width (a numpy block relies on it)
            with self._stats_lock:
                if batch.dimensions is None:
                    batch.dimensions = want
                elif batch.dimensions != want:
                    raise MisalignedResponseError(
                        f"response has {want}-dimension vectors, earlier responses had {batch.dimensions} dimensions"
                    )
        return vectors

    def _stamp_request(self, request: Any) -> None:
        request.extensions[_SENT_AT] = self._clock()

    def _observe_response(self, response: Any) -> None:
        self.limiter.observe(response.headers, sent_at=_sent_at(response))

    def _format(self, vectors: list[array.array]) -> Any:
        if self.output == "array":
            return vectors
        if self.output == "numpy":
            try:
                import numpy as np
            except ImportError as exc:  # pragma: no cover - numpy is in the dev extra
                raise MissingDependencyError("numpy", "numpy", "output='numpy'") from exc
            if not vectors:
                return np.zeros((0, self.dimensions or 0), dtype=np.float32)
            # One contiguous float32 block: 6 KB per 1536-dim vector.
            # (over a bytearray: an array over immutable bytes would be read-only)
            block = bytearray().join(v.tobytes() for v in vectors)
            return np.frombuffer(block, dtype=np.float32).reshape(len(vectors), -1)
        return [v.tolist() for v in vectors]

    def _reason(self, exc: BaseException | None) -> str:
        if exc is None:
            return "unknown error"
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
        return redact(text, self._api_key)

    def _api_error(
        self,
        message: str,
        cause: BaseException | None,
        *,
        failures: Mapping[int, str] | None = None,
        cls: type[EmbeddingAPIError] = EmbeddingAPIError,
    ) -> EmbeddingAPIError:
        kwargs: dict[str, Any] = {
            "status_code": error_status(cause) if cause is not None else None,
            "request_id": getattr(cause, "request_id", None) if cause is not None else None,
            "code": error_code(cause) if cause is not None else None,
        }
        if cls is AllRequestsFailedError:
            kwargs["failures"] = dict(failures or {})
        return cls(redact(message, self._api_key), **kwargs)


_SENT_AT = "core_sent_at"
"""Request extension holding when the request left (the service's clock)."""


def _sent_at(response: Any) -> float | None:
    """When the request behind `response` left, as stamped by `_stamp_request` (None if unknown)."""
    extensions = getattr(getattr(response, "request", None), "extensions", None)
    value = extensions.get(_SENT_AT) if isinstance(extensions, dict) else None
    return value if isinstance(value, float) else None


def _field(item: Any, name: str) -> Any:
    """A response item's field without inventing one: mocks and lenient objects
    answer any attribute, so only values actually set on the item are read."""
    values = getattr(item, "__dict__", None)  # pydantic models (the SDK's) and plain objects
    if isinstance(values, dict) and name in values:
        return values[name]
    if isinstance(item, dict):  # JSON from a hand-rolled client
        return item.get(name)
    return getattr(item, name, None) if name == "embedding" else None


def _to_float32(embedding: Any) -> array.array:
    """A float32 `array('f')` from base64 text, a float list, or anything with `tobytes`."""
    if isinstance(embedding, str):
        vector = array.array("f")
        vector.frombytes(base64.b64decode(embedding, validate=True))
        if sys.byteorder == "big":  # the API sends little-endian float32
            vector.byteswap()
        return vector
    return array.array("f", embedding)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer in {low}..{high}, not {value!r}")
