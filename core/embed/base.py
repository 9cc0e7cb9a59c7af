"""What the sync and async embedding services share: settings, planning, results.

`EmbeddingService` (threads) and `AsyncEmbeddingService` (asyncio) are thin drivers
over this base and the I/O-free engine (`core.engine`): they only send requests
and wait. Validation of settings, the seed contract's input checks, turning a
finished `EmbeddingBatch` into the seed's result dict or a typed error, and
settling one request's outcome into the plan all live here, once.
"""

from __future__ import annotations

import inspect
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from ..engine.attempts import Attempts
from ..engine.output import format_vectors
from ..engine.plan import EmbeddingBatch, EmbedPlan, Request
from ..engine.probe import ProbeGate
from ..errors import (
    AllRequestsFailedError,
    ConfigurationError,
    EmbeddingAPIError,
    EmptyInputError,
    EndpointError,
    InputTooLongError,
    InvalidInputError,
    InvalidInputTypeError,
    RequestTooLargeError,
)
from ..limits import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_INPUTS_PER_REQUEST,
    MAX_OUTAGE_SECONDS,
    MAX_VECTOR_DIMENSIONS,
    MAX_TOKENS_PER_INPUT,
    MAX_TOKENS_PER_REQUEST,
)
from ..engine.ratelimit import RateLimiter
from ..secrets import strip_url_userinfo

__all__ = ["EmbeddingServiceBase", "OutputFormat"]

OutputFormat = Literal["list", "numpy", "array"]

_SENT_AT = "core_sent_at"
"""Request extension holding when the request left (the service's clock)."""


class EmbeddingServiceBase:
    """Settings, validation and results shared by `EmbeddingService` (threads) and
    `AsyncEmbeddingService` (asyncio): the drivers differ only in how they wait.

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
        max_outage: Seconds of nothing but failed attempts (5xx, timeouts, broken or
            refused connections; not 429s) after which the call stops with `EndpointError`.
        tokens_per_minute: Known TPM limit (else learned from response headers).
        requests_per_minute: Known RPM limit (else learned from response headers).
        probe_limits: While no limit is known, send a call's first request alone and
            let its rate-limit headers pace the rest (once per service; skipped
            when `tokens_per_minute`/`requests_per_minute` are given).
        encoding_format: ``"base64"`` (compact, decoded straight to float32) or ``"float"``.
        output: What `batch_generate_embeddings` returns per vector: ``"list"`` of
            Python floats (default, JSON-ready), ``"numpy"`` (one 2-D float32 array,
            needs numpy) or ``"array"`` (`array.array('f')`, 6 KB per 1536 dims).
        client: A ready `openai.OpenAI` (async: `AsyncOpenAI`) client (then `api_key`/`base_url` are unused).
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
        max_outage: float = MAX_OUTAGE_SECONDS,
        tokens_per_minute: float | None = None,
        requests_per_minute: float | None = None,
        encoding_format: Literal["base64", "float"] = "base64",
        output: OutputFormat = "list",
        probe_limits: bool = True,
        client: Any = None,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        _check_range("max_batch_size", max_batch_size, 1, MAX_INPUTS_PER_REQUEST)
        _check_range("max_tokens_per_input", max_tokens_per_input, 1, 10**7)
        _check_range("max_tokens_per_request", max_tokens_per_request, 1, 10**9)
        _check_range("max_concurrency", max_concurrency, 1, 1024)
        _check_range("max_retries", max_retries, 0, 100)
        if dimensions is not None:
            _check_range("dimensions", dimensions, 1, MAX_VECTOR_DIMENSIONS)
        if encoding_format not in ("base64", "float"):
            raise ConfigurationError(f"encoding_format must be 'base64' or 'float', not {encoding_format!r}")
        if output not in ("list", "numpy", "array"):
            raise ConfigurationError(f"output must be 'list', 'numpy' or 'array', not {output!r}")
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, not {timeout!r}")
        if not max_outage > 0:
            raise ConfigurationError(f"max_outage must be > 0 seconds, not {max_outage!r}")
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
        self.probe_gate = ProbeGate()
        self.limiter = RateLimiter(
            tokens_per_minute=tokens_per_minute,
            requests_per_minute=requests_per_minute,
            clock=clock,
            # The async service's sleep is a coroutine: its limiter waits through acquire_async instead.
            sleep=time.sleep if inspect.iscoroutinefunction(sleep) else sleep,
        )
        if client is not None:
            self.client = client
            api_key = None
            self.base_url = strip_url_userinfo(str(getattr(client, "base_url", "") or "")) or None
        else:
            api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
            if not api_key:
                raise ConfigurationError(
                    "no OpenAI API key: pass EmbeddingService(api_key=...) or set OPENAI_API_KEY"
                )
            # For messages, reprs and job files only: the client keeps the URL as given
            # (httpx sends its user:password as Basic auth); nothing we print needs them.
            self.base_url = strip_url_userinfo(base_url or os.environ.get("OPENAI_BASE_URL") or "") or None
            self.client = self._make_client(api_key, base_url, timeout)
        self._api_key = api_key
        self.attempts = Attempts(
            model=model,
            dimensions=dimensions,
            encoding_format=encoding_format,
            limiter=self.limiter,
            max_retries=max_retries,
            base_url=self.base_url,
            api_key=api_key,
            rng=rng,
            clock=clock,
            max_outage=max_outage,
        )
    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, dimensions={self.dimensions!r}, "
            f"base_url={self.base_url!r}, max_batch_size={self.max_batch_size}, "
            f"max_concurrency={self.max_concurrency}, api_key='***')"
        )

    def _make_client(self, api_key: str, base_url: str | None, timeout: float) -> Any:
        raise NotImplementedError

    # --- planning ------------------------------------------------------------------------

    def plan(
        self, texts: Sequence[Any], *, max_batch_size: int | None = None, probe: bool = False, paced: bool = True
    ) -> EmbedPlan:
        """The requests `texts` would be sent in, with every unsendable input's reason — no I/O.

        Used by the drivers, the Batch API and the CLI's dry run alike.

        Args:
            texts: The inputs.
            max_batch_size: Inputs per request (default: the service's).
            probe: Make the first request a small probe (the online drivers, limits unknown).
            paced: Size requests to the known tokens-per-minute budget. The Batch API passes
                False: its requests are not paced by that budget, only by the API's caps.
        """
        limit = self.max_batch_size if max_batch_size is None else max_batch_size
        _check_range("max_batch_size", limit, 1, MAX_INPUTS_PER_REQUEST)
        return EmbedPlan(
            texts,
            max_inputs=limit,
            max_tokens_per_request=self.max_tokens_per_request,
            max_tokens_per_input=self.max_tokens_per_input,
            truncate=self.truncate,
            budget=self.limiter.tokens.capacity if paced else None,
            probe=probe,
        )

    def _should_probe(self) -> bool:
        return self.probe_limits and self.max_concurrency > 1 and not self.limiter.probed

    def _probe_turn(self, request: Request) -> str:
        """The service's `ProbeGate` answer for `request` (``send``, ``probe`` or ``hold``);
        both drivers ask it right before their first attempt and hold while it says so."""
        return self.probe_gate.claim(request, known=not self.probe_limits or self.limiter.probed)

    def _probe_done(self, request: Request) -> None:
        """`request` is back, whatever became of it: if it was the service's probe, the limits
        count as probed and the requests it held go."""
        self.probe_gate.release(request, on_probe=self._mark_probed)

    def _mark_probed(self) -> None:
        self.limiter.probed = True

    def _refresh(self, plan: EmbedPlan) -> None:
        plan.update(budget=self.limiter.tokens.capacity, probed=self.limiter.probed)

    def _settle(self, plan: EmbedPlan, request: Request, outcome: Any) -> list[int]:
        """Record one request's outcome in `plan`; return the input indices it served.

        Raises:
            EndpointError: The endpoint is unusable (the run stops; nothing else is sent).
        """
        if request.probe:
            self.limiter.probed = True  # answered, with or without rate-limit headers
        if isinstance(outcome, EndpointError):
            plan.fail(request, str(outcome), code="endpoint")
            plan.cancel("not sent: the endpoint is unusable")
            plan.batch.last_error = outcome
            outcome.failures = dict(plan.batch.errors)
            # Raised in the SDK error's `except`: drop that link, the SDK error may echo the key.
            outcome.__context__ = outcome.__cause__ = None
            raise outcome
        if isinstance(outcome, RequestTooLargeError):
            budget = self.limiter.tokens.capacity
            plan.too_large(request, budget if budget is not None else request.tokens / 2)
            return []
        if isinstance(outcome, BaseException):
            code, reason = self.attempts.failure(outcome)
            plan.fail(request, reason, code=code)
            plan.batch.last_error = self.attempts.sanitized(outcome)
        else:
            vectors, used = outcome
            plan.succeed(request, vectors, used)
        return plan.indices_of(request)

    def _stamp_request(self, request: Any) -> None:
        request.extensions[_SENT_AT] = self._clock()

    def _observe_response(self, response: Any) -> None:
        self.limiter.observe(response.headers, sent_at=sent_at(response))

    # --- the seed contract -----------------------------------------------------------------

    def _check_texts(self, texts: Any) -> None:
        """`batch_generate_embeddings`' input contract: a non-empty list of non-empty strings.

        Raises:
            InvalidInputTypeError: Not a list, or an item not a string (names its index).
            InvalidInputError: An empty list; EmptyInputError: an empty text (names its index).
        """
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidInputTypeError(
                f"texts must be a list of strings, not {type(texts).__name__}", reason="not a list"
            )
        if len(texts) == 0:
            raise InvalidInputError("Cannot embed an empty list of texts", reason="empty list")
        self._check_strict(texts)

    def _check_strict(self, texts: Sequence[Any]) -> None:
        """The seed contract: a non-string or empty text raises, naming its index."""
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputTypeError(
                    f"text at index {index} is {type(text).__name__}, not str", index=index, reason="not a string"
                )
            if not text:
                raise EmptyInputError(f"text at index {index} is empty", index=index, reason="empty text")

    def _single_result(self, batch: EmbeddingBatch) -> list[float]:
        """`generate_embedding`'s answer from a one-input batch, or its typed error."""
        if 0 in batch.vectors:
            return batch.vectors[0].tolist()
        reason = batch.errors.get(0, "no vector returned")
        if batch.codes.get(0) == "too_long":
            raise InputTooLongError(f"text at index 0 {reason}", index=0, reason=reason)
        if batch.codes.get(0) == "invalid_unicode":
            raise InvalidInputError(f"text at index 0 is {reason}", index=0, reason=reason)
        raise self._api_error(f"Failed to generate embedding: {reason}", batch.last_error) from batch.last_error

    def _formatter(self) -> ListFormatter | None:
        """For ``output="list"``: turns each request's vectors into lists as it settles."""
        return ListFormatter() if self.output == "list" else None

    def _batch_result(
        self, texts: Sequence[str], batch: EmbeddingBatch, formatter: ListFormatter | None = None
    ) -> dict[str, Any]:
        """The seed's result dict from a finished batch, or `AllRequestsFailedError`."""
        if not batch.vectors:
            last = batch.last_error
            detail = f"; last error: {self.attempts.describe(last)}" if last is not None else ""
            first = batch.failed_indices[0]
            raise self._api_error(
                f"Failed to generate any embeddings: all {len(texts)} inputs failed "
                f"(index {first}: {batch.errors[first]}){detail}",
                last,
                failures=batch.errors,
                cls=AllRequestsFailedError,
            ) from last
        indices = batch.indices
        if formatter is not None:
            embeddings: Any = [formatter.lists[i] for i in indices]
        else:
            embeddings = format_vectors([batch.vectors[i] for i in indices], self.output, self.dimensions)
        return {
            "embeddings": embeddings,
            "failed_indices": batch.failed_indices,
            "total_tokens": batch.total_tokens,
            "indices": indices,
            "errors": dict(sorted(batch.errors.items())),
        }

    def _api_error(
        self,
        message: str,
        cause: BaseException | None,
        *,
        failures: Mapping[int, str] | None = None,
        cls: type[EmbeddingAPIError] = EmbeddingAPIError,
    ) -> EmbeddingAPIError:
        kwargs: dict[str, Any] = {
            "status_code": getattr(cause, "status_code", None),
            "request_id": getattr(cause, "request_id", None),
            "code": getattr(cause, "code", None),
        }
        if cls is AllRequestsFailedError:
            kwargs["failures"] = dict(failures or {})
        return cls(self.attempts.redact(message), **kwargs)


class ListFormatter:
    """``on_vectors`` callback that turns vectors into Python lists as their requests settle.

    Lists of Python floats cost ~1.4 s of CPU per 10,000 1536-dim vectors; made at
    the end they add that much to the call's wall time, made per request they fill
    the time the driver spends waiting for answers or the rate limit (regime a/b of
    bench/bench_defaults.py: the tail after the last answer fell from 0.5-2.6 s).
    """

    def __init__(self) -> None:
        self.lists: dict[int, list[float]] = {}

    def __call__(self, served: list[int], batch: EmbeddingBatch) -> None:
        vectors = batch.vectors
        for i in served:
            vector = vectors.get(i)
            if vector is not None:
                self.lists[i] = vector.tolist()


def sent_at(response: Any) -> float | None:
    """When the request behind `response` left, as stamped by `_stamp_request` (None if unknown)."""
    extensions = getattr(getattr(response, "request", None), "extensions", None)
    value = extensions.get(_SENT_AT) if isinstance(extensions, dict) else None
    return value if isinstance(value, float) else None


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer in {low}..{high}, not {value!r}")
