"""The Batch API calls, through the service's SDK client: retried like every call, errors sanitized.

Upload (``files.create(purpose="batch")``), create (``completion_window="24h"``, the
job and batch keys in ``metadata``), find a batch created by a run that died before
recording it (``batches.list``), retrieve, cancel, download (streamed to disk) and
delete. Transient failures (timeouts, connection errors, 408/409/429/5xx) are
retried by the one retry loop (`core.engine.retry`); a wrong endpoint, key or account is
an `EndpointError`; anything else an `EmbeddingAPIError` with a redacted message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..engine.attempts import is_endpoint_problem
from ..errors import EmbeddingAPIError, EndpointError
from ..secrets import redact, strip_url_userinfo, url_passwords
from ..engine.retry import (
    RetryPolicy,
    call_with_retries,
    error_code,
    error_status,
    should_retry,
)
from .files import COMPLETION_WINDOW, ENDPOINT

__all__ = ["Remote"]

T = TypeVar("T")
_LIST_PAGE = 100
_ADOPT_MARGIN = 3600.0
"""Seconds before an upload within which a batch made from it may have been created."""


class Remote:
    """The Batch API of one embedding service's client.

    Args:
        service: An `EmbeddingService` (its `client`, `attempts`, `max_retries`, `base_url`).
        sleep: Sleep between retries (injectable for tests).
    """

    def __init__(self, service: Any, sleep: Callable[[float], Any] = time.sleep) -> None:
        self.client = service.client
        self.attempts = service.attempts
        url = getattr(service, "base_url", None)
        self.base_url = strip_url_userinfo(str(url)) if url else None
        """The endpoint for messages: without a ``user:password@`` (httpx sends it as Basic auth)."""
        self._credentials = url_passwords(str(url)) if url else []
        self.policy = RetryPolicy(max_retries=int(getattr(service, "max_retries", 6)), retryable=should_retry)
        self.sleep = sleep
        self.calls = 0

    def _call(self, doing: str, fn: Callable[[], T], policy: RetryPolicy | None = None) -> T:
        def attempt() -> T:
            self.calls += 1
            return fn()

        try:
            return call_with_retries(attempt, policy or self.policy, sleep=self.sleep)
        except Exception as exc:
            described = redact(self.attempts.describe(exc), *self._credentials)
            if is_endpoint_problem(exc):
                raise EndpointError(
                    f"the Batch API at {self.base_url or 'https://api.openai.com/v1'} cannot be used ({doing}): "
                    f"{described}", url=self.base_url, status_code=error_status(exc),
                    request_id=getattr(exc, "request_id", None), code=error_code(exc),
                ) from None
            raise EmbeddingAPIError(
                f"Batch API call failed ({doing}): {described}", status_code=error_status(exc),
                request_id=getattr(exc, "request_id", None), code=error_code(exc),
            ) from None

    # --- submitting -------------------------------------------------------------------------
    def upload(self, path: Path) -> str:
        """Upload a batch input file; its file id."""

        def send() -> Any:
            with open(path, "rb") as handle:
                return self.client.files.create(file=(path.name, handle, "application/jsonl"), purpose="batch")

        return str(self._call(f"uploading {path.name}", send).id)

    def create(self, input_file_id: str, metadata: dict[str, str]) -> Any:
        """Create an embeddings batch over an uploaded file; the `Batch`."""
        return self._call(f"creating a batch from {input_file_id}", lambda: self.client.batches.create(
            input_file_id=input_file_id, endpoint=ENDPOINT, completion_window=COMPLETION_WINDOW, metadata=metadata,
        ))

    def find(self, input_file_id: str, metadata: dict[str, str], since: float) -> Any | None:
        """The batch created from `input_file_id` with `metadata` (a run that died before recording it), or None.

        Batches are listed newest first; the search stops at batches older than `since` (Unix seconds).
        """

        def search() -> Any | None:
            for batch in self.client.batches.list(limit=_LIST_PAGE):
                if batch.created_at < since - _ADOPT_MARGIN:
                    return None
                if batch.input_file_id == input_file_id and all(
                    (batch.metadata or {}).get(k) == v for k, v in metadata.items()
                ):
                    return batch
            return None

        return self._call("looking for a batch created before a crash", search)

    # --- following ----------------------------------------------------------------------------
    def retrieve(self, batch_id: str) -> Any:
        return self._call(f"retrieving {batch_id}", lambda: self.client.batches.retrieve(batch_id))

    def cancel(self, batch_id: str) -> Any | None:
        """Ask the API to cancel a batch; None when it had ended already (409: nothing to cancel)."""
        policy = RetryPolicy(self.policy.max_retries, retryable=lambda exc: should_retry(exc) and error_status(exc) != 409)
        try:
            return self._call(f"cancelling {batch_id}", lambda: self.client.batches.cancel(batch_id), policy)
        except EmbeddingAPIError as exc:
            if exc.status_code == 409:
                return None
            raise

    def download(self, file_id: str, path: Path) -> Path:
        """Stream file `file_id` to `path` (through a temporary name); returns `path`."""
        tmp = path.with_name(path.name + ".part")

        def fetch() -> None:
            with self.client.files.with_streaming_response.content(file_id) as response, open(tmp, "wb") as out:
                out.writelines(response.iter_bytes(1 << 20))

        self._call(f"downloading {file_id}", fetch)
        os.replace(tmp, path)
        return path

    def delete_file(self, file_id: str) -> None:
        """Delete a file of the job (best effort: a failure leaves it to expire on its own)."""
        try:
            self.client.files.delete(file_id)
        except Exception:  # noqa: BLE001 - cleanup only; files with purpose=batch expire anyway
            pass
