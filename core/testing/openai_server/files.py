"""``/v1/files``: upload (multipart/form-data), retrieve, list, content, delete.

Contents live in anonymous temporary files (unlinked from the start: the OS frees
them when the server process ends, however it ends), so a 200 MB batch input or
a 400 MB batch output costs disk between requests, not the server's memory.
Uploads with ``purpose=batch`` follow the Batch API's rules: a ``.jsonl`` name and
at most `FileStore.max_batch_bytes` (200 MB).
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from .api import ApiError, ApiRequest, Reply, require_bearer
from .clock import clock_of

__all__ = ["FILE_ROUTES", "FileStore", "StoredFile", "files_of", "page", "query_of"]

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_BATCH_FILE_BYTES = 200_000_000
"""The Batch API's input file cap (200 MB)."""


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    handle: IO[bytes] = field(repr=False)

    def read(self) -> bytes:
        self.handle.seek(0)
        return self.handle.read()

    def lines(self) -> Iterable[bytes]:
        """The file's lines (with their newline), read from disk as they are used."""
        self.handle.seek(0)
        yield from self.handle

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "file", "id": self.id, "purpose": self.purpose, "filename": self.filename,
            "bytes": self.bytes, "created_at": self.created_at, "expires_at": None,
            "status": "processed", "status_details": None,
        }


class FileStore:
    """Every file of one server, by id, in upload order."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.max_batch_bytes = MAX_BATCH_FILE_BYTES
        self.lock = threading.Lock()
        self.files: dict[str, StoredFile] = {}

    def add(self, filename: str, purpose: str, chunks: Iterable[bytes | memoryview]) -> StoredFile:
        handle = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the file entry
        for chunk in chunks:
            handle.write(chunk)
        return self.add_handle(filename, purpose, handle)

    def add_handle(self, filename: str, purpose: str, handle: IO[bytes]) -> StoredFile:
        """Keep the open temporary file `handle` (written) as a new file."""
        handle.flush()
        size = handle.seek(0, 2)
        stored = StoredFile("file-" + uuid.uuid4().hex[:24], filename, purpose, size, int(self.clock()), handle)
        with self.lock:
            self.files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile:
        with self.lock:
            stored = self.files.get(file_id)
        if stored is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return stored

    def delete(self, file_id: str) -> None:
        stored = self.get(file_id)
        with self.lock:
            self.files.pop(file_id, None)
        stored.handle.close()

    def clear(self) -> None:
        with self.lock:
            files, self.files = self.files, {}
        for stored in files.values():
            stored.handle.close()


_MAKING = threading.Lock()


def files_of(state: Any) -> FileStore:
    """The file store of the server owning `state` (made on first use)."""
    store = getattr(state, "batch_files", None)
    if store is None:
        clock = clock_of(state)
        with _MAKING:
            store = getattr(state, "batch_files", None)
            if store is None:
                store = state.batch_files = FileStore(clock)
    return store


def _json(obj: Any) -> Reply:
    return Reply(200, [json.dumps(obj).encode()])


def query_of(request: ApiRequest) -> dict[str, str]:
    """The request's query parameters (first value of each)."""
    return dict(getattr(request, "query", None) or {})


def page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    """A cursor page of `items` (newest first), as the list endpoints answer: ``after`` and ``limit``."""
    after = query.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    try:
        limit = int(query.get("limit") or 20)
    except ValueError:
        raise ApiError(400, f"Invalid 'limit': {query.get('limit')!r}.", param="limit") from None
    if not 1 <= limit <= 10_000:
        raise ApiError(400, f"Invalid 'limit': must be between 1 and 10000, got {limit}.", param="limit")
    data = items[:limit]
    return {
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": len(items) > limit,
    }


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_DISPOSITION = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, memoryview]]:
    """`{field name: (filename or None, content)}` of a multipart/form-data body (no copies of the parts)."""
    match = _BOUNDARY.search(content_type or "")
    if not content_type.lower().startswith("multipart/form-data") or match is None:
        raise ApiError(400, "Expected a multipart/form-data request body.")
    delimiter = b"--" + match.group(1).encode("latin-1")
    view = memoryview(body)
    fields: dict[str, tuple[str | None, memoryview]] = {}
    pos = body.find(delimiter)
    while pos >= 0:
        start = pos + len(delimiter)
        if body[start:start + 2] == b"--":
            break
        start += 2 if body[start:start + 2] == b"\r\n" else 0
        head_end = body.find(b"\r\n\r\n", start)
        end = body.find(b"\r\n" + delimiter, head_end + 4) if head_end >= 0 else -1
        if end < 0:
            raise ApiError(400, "Malformed multipart/form-data body.")
        head = body[start:head_end].decode("utf-8", "replace")
        disposition = next((line for line in head.split("\r\n") if line.lower().startswith("content-disposition")), "")
        attributes = dict(_DISPOSITION.findall(disposition))
        if "name" in attributes:
            fields[attributes["name"]] = (attributes.get("filename"), view[head_end + 4:end])
        pos = end + 2
    return fields


def create_file(request: ApiRequest) -> Reply:
    """``POST /v1/files``."""
    require_bearer(request.headers)
    fields = parse_multipart(request.headers.get("Content-Type", ""), request.body)
    purpose = bytes(fields["purpose"][1]).decode("utf-8", "replace") if "purpose" in fields else None
    if purpose is None:
        raise ApiError(400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter")
    if purpose not in UPLOAD_PURPOSES:
        raise ApiError(
            400, f"Invalid value for 'purpose': {purpose!r}. Supported values are: {', '.join(UPLOAD_PURPOSES)}.",
            param="purpose", code="invalid_value",
        )
    if "file" not in fields or fields["file"][0] is None:
        raise ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
    filename, content = fields["file"]
    store = files_of(request.state)
    if purpose == "batch":
        if not str(filename).endswith(".jsonl"):
            raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
        if len(content) > store.max_batch_bytes:
            raise ApiError(
                400, f"File is too large ({len(content):,} bytes). The Batch API accepts files up to "
                f"{store.max_batch_bytes:,} bytes.", param="file",
            )
        if len(content) == 0:
            raise ApiError(400, "File is empty.", param="file")
    return _json(store.add(str(filename), purpose, [content]).as_json())


def list_files(request: ApiRequest) -> Reply:
    """``GET /v1/files`` (newest first; ``purpose``, ``after``, ``limit``)."""
    require_bearer(request.headers)
    store = files_of(request.state)
    with store.lock:
        files = list(store.files.values())
    query = query_of(request)
    purpose = query.get("purpose")
    items = [f.as_json() for f in reversed(files) if purpose is None or f.purpose == purpose]
    return _json(page(items, {**query, "limit": query.get("limit") or "10000"}))


def retrieve_file(request: ApiRequest) -> Reply:
    """``GET /v1/files/{file_id}``."""
    require_bearer(request.headers)
    return _json(files_of(request.state).get(request.params["file_id"]).as_json())


def file_content(request: ApiRequest) -> Reply:
    """``GET /v1/files/{file_id}/content``: the bytes as uploaded (or as the batch wrote them)."""
    require_bearer(request.headers)
    stored = files_of(request.state).get(request.params["file_id"])
    return Reply(200, [stored.read()])


def delete_file(request: ApiRequest) -> Reply:
    """``DELETE /v1/files/{file_id}``."""
    require_bearer(request.headers)
    file_id = request.params["file_id"]
    files_of(request.state).delete(file_id)
    return _json({"id": file_id, "object": "file", "deleted": True})


FILE_ROUTES = {
    ("POST", "/v1/files"): create_file,
    ("GET", "/v1/files"): list_files,
    ("GET", "/v1/files/{file_id}"): retrieve_file,
    ("GET", "/v1/files/{file_id}/content"): file_content,
    ("DELETE", "/v1/files/{file_id}"): delete_file,
}
"""(method, path) -> endpoint, merged into the server's `API_ROUTES`."""
