"""The library's error types: one small hierarchy, every error says what and where.

Each class also derives from the built-in type a caller would naturally catch
(`ValueError`, `TypeError`, `RuntimeError`, `ImportError`), so code written
against the seed contract (`pytest.raises(ValueError, match="empty list")`)
keeps working while new code can catch `CoreError`.

No error message ever contains an API key: messages are built from indices,
ids, status codes and the API's own error text only.
"""

from __future__ import annotations

from typing import Any

from .secrets import strip_url_userinfo

__all__ = [
    "CoreError",
    "ConfigurationError",
    "MissingDependencyError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "EmptyInputError",
    "InputTooLongError",
    "InvalidSectionError",
    "EmbeddingAPIError",
    "AllRequestsFailedError",
    "EndpointError",
    "StoreError",
    "RequestTooLargeError",
    "MisalignedResponseError",
    "JobFolderError",
    "BatchQueueStalledError",
]


class CoreError(Exception):
    """Base class of every error raised by this library."""


class ConfigurationError(CoreError, ValueError):
    """A setting is missing or invalid (no API key, bad table name, bad URL...)."""


class MissingDependencyError(CoreError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the optional package {package!r}: "
            f"pip install 'supabase-section-embeddings[{extra}]'"
        )


class InvalidInputError(CoreError, ValueError):
    """One input is unusable. `index` says which one, `reason` says why."""

    def __init__(self, message: str, *, index: int | None = None, reason: str = "") -> None:
        self.index = index
        self.reason = reason or message
        super().__init__(message)


class EmptyInputError(InvalidInputError):
    """An input text is empty (the API answers HTTP 400 for it)."""


class InvalidInputTypeError(InvalidInputError, TypeError):
    """An input is not a string."""


class InputTooLongError(InvalidInputError):
    """An input has more tokens than the model accepts per input."""


class InvalidSectionError(InvalidInputError):
    """A section dict is malformed; `section_id` names it when it has one."""

    def __init__(
        self, message: str, *, index: int | None = None, section_id: Any = None, reason: str = ""
    ) -> None:
        self.section_id = section_id
        super().__init__(message, index=index, reason=reason)


class EmbeddingAPIError(CoreError):
    """An embeddings request failed for good (after retries where retrying made sense).

    Attributes:
        status_code: HTTP status of the last answer, if there was one.
        request_id: The API's `x-request-id` of the last answer, if any.
        code: The API's error code (e.g. ``insufficient_quota``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.request_id = request_id
        self.code = code
        super().__init__(message)


class AllRequestsFailedError(EmbeddingAPIError, RuntimeError):
    """Every embeddings request of a call failed: nothing to return.

    Raised chained (``raise ... from``) to the last underlying cause. `failures`
    maps each input index to its reason.
    """

    def __init__(self, message: str, *, failures: dict[int, str] | None = None, **kw: Any) -> None:
        self.failures = dict(failures or {})
        super().__init__(message, **kw)


class EndpointError(AllRequestsFailedError):
    """The embeddings endpoint cannot be used at all: refused connection, 401, 403, 404
    or ``insufficient_quota`` before it ever answered. Fix the URL, key or account.

    Raised on the first such answer, before anything else is paid for; an
    `AllRequestsFailedError` (a `RuntimeError`) for callers of the seed API.

    Attributes:
        url: The endpoint's base URL (never a key), None for OpenAI's default.
    """

    def __init__(self, message: str, *, url: str | None = None, **kw: Any) -> None:
        self.url = strip_url_userinfo(url) if url else url
        super().__init__(message, **kw)


class StoreError(CoreError):
    """The vector store could not be reached or refused the schema."""


class RequestTooLargeError(CoreError):
    """A request needs more tokens than the account's whole per-minute budget.

    Refused (429) however long one waits: its inputs must be repacked into
    smaller requests, not retried as they are.
    """


class MisalignedResponseError(CoreError):
    """A response did not carry exactly one vector per input, at the right indices.

    Never accepted: a vector stored under the wrong section is worse than none.
    """


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a signal turned into it) stopped an ingest; `report` says exactly what was stored.

    Requests not yet sent were cancelled; rows written before the interrupt stay
    written (vectors are stored as their requests complete, not window by window).
    Raised by the sync and the async ingest alike (under ``asyncio.run``, Ctrl-C
    reaches the ingest as a cancellation, which it turns into this).
    """

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(f"interrupted after storing {report['success_count']} sections")
        self.report = report


class JobFolderError(ConfigurationError):
    """A Batch API job folder cannot be used: it is a file, read-only, or cannot be made.

    Raised when the job is opened, before anything is uploaded or paid for; the
    message names the folder and the reason. Fix the path or its permissions.
    """


class BatchQueueStalledError(CoreError):
    """The Batch API refused every batch of the job for a long time (its enqueued-token queue
    stayed full): the run stops with the job saved; running it again continues from there.

    Attributes:
        waited: Seconds waited without any batch accepted or collected.
    """

    def __init__(self, message: str, *, waited: float) -> None:
        self.waited = waited
        super().__init__(message)


class InputFileError(ConfigurationError):
    """The file as a whole cannot be read as sections (wrong format, no header...)."""
