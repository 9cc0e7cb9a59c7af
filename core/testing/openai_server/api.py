"""What an API endpoint gets and gives back: the request, the reply, and OpenAI's error shape.

An endpoint is a function ``(ApiRequest) -> Reply`` listed in
`server.API_ROUTES`; it raises `ApiError` for any error answer (the server adds
the request id, processing time and rate-limit headers to it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from email.message import Message

    from .state import State

__all__ = [
    "ApiError",
    "ApiRequest",
    "Endpoint",
    "Reply",
    "input_invalid",
    "ms_since",
    "parse_json_object",
    "require_bearer",
    "sleep_until",
]


class ApiError(Exception):
    """An error answer in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str | None = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        fault: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = list(headers)
        self.fault = fault

    def body(self) -> bytes:
        err = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": err}).encode()


def input_invalid(message: str | None = None) -> ApiError:
    return ApiError(
        400, message or "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        param="input",
    )


@dataclass
class ApiRequest:
    """One API request, as an endpoint sees it."""

    method: str
    path: str
    """Without the query string and trailing slash."""
    params: dict[str, str]
    """Values of the route's ``{name}`` segments."""
    headers: Message
    body: bytes
    state: State
    start: float
    """time.monotonic() on arrival."""
    request_id: str
    query: dict[str, str] = field(default_factory=dict)
    """The query string's parameters (first value of each)."""


@dataclass
class Reply:
    """What an endpoint answers; `parts` None means no answer at all (a hang: the connection is closed)."""

    status: int
    parts: list[bytes | memoryview] | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    tokens: int = 0
    """Tokens of the request, counted in stats when status is 200."""
    inputs: int = 0
    """Inputs of the request, counted in stats when status is 200."""
    fault: str | None = None
    """The injected fault it carries, if any (counted in stats)."""


Endpoint = Callable[[ApiRequest], Reply]


def require_bearer(headers: Message) -> None:
    """Raise the API's 401 unless the request carries ``Authorization: Bearer <non-empty key>``."""
    scheme, _, key = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
            "username) if you're accessing the API from your browser and are prompted for a username and "
            "password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
        )


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request's JSON object, or the API's 400 for a body that is not one."""
    try:
        req = json.loads(body)
    except ValueError:
        req = None
    if not isinstance(req, dict):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
            "JSON. If you have trouble figuring out how to fix this, please contact us through our help center "
            "at help.openai.com.)",
        )
    return req


def sleep_until(deadline: float) -> None:
    """Latency: the answer leaves no sooner than `deadline` (time.monotonic())."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
