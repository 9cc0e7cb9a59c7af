"""Fakes for the Batch API unit tests: a store in memory, and output files handed to the collector."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class MemoryStore:
    """A `SectionStore` stand-in: rows in a dict; ids in `refuse` are refused by `write_rows`."""

    table = "memory"

    def __init__(self) -> None:
        self.rows: dict[int, Any] = {}
        self.refuse: set[int] = set()
        self.preflights = 0
        self.lookups = 0
        self.writes = 0

    def preflight(self, dimensions: int | None) -> None:
        self.preflights += 1

    def fetch_hashes(self, ids: list[int]) -> dict[int, tuple[str, str]]:
        self.lookups += 1
        return {i: (self.rows[i].content_hash, self.rows[i].model) for i in ids if i in self.rows}

    def write_rows(self, rows: list[Any]) -> dict[int, str]:
        self.writes += 1
        refused = {}
        for row in rows:
            if row.section_id in self.refuse:
                refused[row.section_id] = "refused by the test"
            else:
                self.rows[row.section_id] = row
        return refused

    def _timestamp(self) -> str:
        return "2026-01-01T00:00:00+00:00"


class FilesRemote:
    """The collector's `Remote`: `download` writes the bytes registered under a file id."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.downloads: list[str] = []

    def download(self, file_id: str, path: Path) -> Path:
        self.downloads.append(file_id)
        path.write_bytes(self.files[file_id])
        return path


def vector_b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def ok_line(custom_id: str, vectors: list[list[float]], tokens: int = 5) -> bytes:
    body = {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": vector_b64(v)}
                                       for i, v in enumerate(vectors)],
            "model": "text-embedding-3-small", "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return json.dumps({"id": "batch_req_1", "custom_id": custom_id,
                       "response": {"status_code": 200, "request_id": "req_1", "body": body}, "error": None}).encode()


def http_error_line(custom_id: str, status: int, message: str, code: str | None = None) -> bytes:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return json.dumps({"id": "batch_req_2", "custom_id": custom_id,
                       "response": {"status_code": status, "request_id": "req_2", "body": body}, "error": None}).encode()


def not_run_line(custom_id: str, code: str = "batch_expired") -> bytes:
    return json.dumps({"id": "batch_req_3", "custom_id": custom_id, "response": None,
                       "error": {"code": code, "message": f"{code} message"}}).encode()


def batch(status: str, output: str | None = None, errors_file: str | None = None,
          errors: list[dict[str, Any]] | None = None) -> Any:
    """An SDK-like `Batch` object."""
    data = [SimpleNamespace(**{"code": None, "message": None, "line": None, "param": None, **e}) for e in errors or []]
    return SimpleNamespace(status=status, output_file_id=output, error_file_id=errors_file,
                           errors=SimpleNamespace(data=data) if data else None)
