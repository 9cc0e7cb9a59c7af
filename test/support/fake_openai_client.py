"""The one hand-written fake of the OpenAI client, and the SDK errors it can raise.

`FakeOpenAIClient` stands in for ``openai.OpenAI`` where `EmbeddingService`
calls it: ``client.embeddings.create(**kwargs)``. It records every call and
answers, in this order: the scripted `outcomes` (an exception to raise, or a
function ``kwargs -> response``), then ``handler(call_number, kwargs)``, then
a good answer: one item per input at its index, whose vector is
``vector(text, dims)`` (so a vector under the wrong text is caught), encoded as
the call asked (float list or base64), with ``usage(texts)`` prompt tokens.

The engine tests use the defaults (`vec_for`, 4 dimensions, 7 tokens per
input); the store tests pass their own vector and exact token counts. Over
real HTTP the suite uses the local server `core.testing.FakeOpenAIServer`
instead; the seed tests patch ``core.embedding_service.OpenAI`` with a MagicMock.
"""

from __future__ import annotations

import base64
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import httpx2
import openai

__all__ = [
    "DIMS",
    "URL",
    "FakeOpenAIClient",
    "Item",
    "Response",
    "Usage",
    "connection_error",
    "refused_error",
    "encode",
    "good_response",
    "status_error",
    "timeout_error",
    "vec_for",
]

DIMS = 4
"""Default vector width of the fake's answers."""
URL = "https://api.openai.com/v1/embeddings"

Vector = Callable[[str, int], Sequence[float]]
Handler = Callable[[int, dict[str, Any]], Any]


def vec_for(text: str, dims: int = DIMS) -> list[float]:
    """A vector that identifies its text (small integers: exact in float32)."""
    h = zlib.crc32(text.encode("utf-8"))
    return [float((h >> (5 * k)) % 997) for k in range(dims - 1)] + [float(len(text) % 4096)]


class Item:
    def __init__(self, index: int | None, embedding: Any) -> None:
        if index is not None:
            self.index = index
        self.embedding = embedding
        self.object = "embedding"


class Usage:
    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.total_tokens = prompt_tokens


class Response:
    def __init__(self, data: list[Any], usage: Usage | None = None) -> None:
        self.data = data
        if usage is not None:
            self.usage = usage


def encode(vector: Sequence[float], encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


def good_response(
    kwargs: dict[str, Any],
    *,
    dims: int | None = None,
    tokens_per_input: int = 7,
    vector: Vector = vec_for,
    usage: Callable[[list[str]], int] | None = None,
) -> Response:
    """One item per input, in order, each `vector(text, dims)` encoded as `kwargs` asks."""
    dims = dims or kwargs.get("dimensions") or DIMS
    fmt = kwargs.get("encoding_format", "float")
    texts = list(kwargs["input"])
    data = [Item(i, encode(vector(t, dims), fmt)) for i, t in enumerate(texts)]
    tokens = usage(texts) if usage is not None else tokens_per_input * len(texts)
    return Response(data, Usage(tokens))


class FakeEmbeddings:
    """``client.embeddings``: records every `create` call (kwargs, input copied) and answers it."""

    def __init__(
        self, handler: Handler | None, outcomes: list[Any] | None, answer: Callable[[dict[str, Any]], Any]
    ) -> None:
        self.handler = handler
        self.outcomes = list(outcomes or [])
        self.answer = answer
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def create(self, **kwargs: Any) -> Any:
        with self._lock:
            number = len(self.calls)
            self.calls.append(dict(kwargs, input=list(kwargs["input"])))
            outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            return outcome(kwargs)
        if self.handler is not None:
            return self.handler(number, kwargs)
        return self.answer(kwargs)


class FakeOpenAIClient:
    """``client.embeddings.create(...)``: scripted outcomes first, then `handler`, then good answers.

    Args:
        handler: ``handler(call_number, kwargs) -> response`` (or raise) for calls
            the script does not cover.
        outcomes: Per call, in order: an exception to raise or a function kwargs -> response.
        vector: ``vector(text, dims)`` of a good answer (default `vec_for`).
        dims: Width of a good answer's vectors when the call asks for none.
        usage: ``usage(texts) -> prompt_tokens`` of a good answer (default 7 per input).
    """

    def __init__(
        self,
        handler: Handler | None = None,
        outcomes: list[Any] | None = None,
        *,
        vector: Vector = vec_for,
        dims: int = DIMS,
        usage: Callable[[list[str]], int] | None = None,
    ) -> None:
        def answer(kwargs: dict[str, Any]) -> Response:
            return good_response(kwargs, dims=kwargs.get("dimensions") or dims, vector=vector, usage=usage)

        self.embeddings = FakeEmbeddings(handler, outcomes, answer)
        self.closed = False

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every `create` call's kwargs, in order (retries included)."""
        return self.embeddings.calls

    @property
    def inputs(self) -> list[list[str]]:
        """The input list of every call."""
        return [call["input"] for call in self.calls]

    @property
    def texts(self) -> list[str]:
        """Every text sent, all calls flattened."""
        return [t for call in self.calls for t in call["input"]]

    def close(self) -> None:
        self.closed = True


# --- SDK errors, as the real client raises them -------------------------------------------------


def status_error(status: int, *, headers=None, body=None, message: str = "boom", cls=None):
    """A real SDK status error (the class the SDK picks for `status`, unless `cls` is given)."""
    cls = cls or {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        409: openai.ConflictError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    request = httpx2.Request("POST", URL)
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return cls(message, response=response, body=body)


def timeout_error():
    return openai.APITimeoutError(request=httpx2.Request("POST", URL))


def connection_error():
    return openai.APIConnectionError(message="Connection reset by peer", request=httpx2.Request("POST", URL))


def refused_error():
    """A connection refused: the SDK's APIConnectionError caused by httpx's ConnectError (a wrong URL or port)."""
    error = openai.APIConnectionError(message="Connection error.", request=httpx2.Request("POST", URL))
    error.__cause__ = httpx2.ConnectError("[Errno 111] Connection refused")
    return error
