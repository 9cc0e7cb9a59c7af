"""Batch input files: `/v1/embeddings` request lines as JSONL, split within the Batch API's limits.

A `BatchWriter` takes request lines one by one (each already packed by the
embedding plan: <= 2048 inputs, <= 300,000 tokens) and starts a new batch file
before any of the Batch API's limits would be crossed: 50,000 requests per batch,
200 MB per file, and for embeddings 50,000 inputs across all requests of a batch;
and before the batch's share of the enqueued-token budget (`BatchLimits.tokens`).
A line with more tokens than that share goes alone in its batch.
Beside each requests file it writes a manifest: for every line, which sections it
carries (id, content hash, tokens, title, position of its input in the request).

Files are written under a temporary name and renamed when complete; the caller
records a finished file in the job (`on_file`), so a crash mid-file leaves only a
temporary file that the next run overwrites.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigurationError
from ..limits import BATCH_MAX_FILE_BYTES, BATCH_MAX_INPUTS, BATCH_MAX_REQUESTS

__all__ = [
    "COMPLETION_WINDOW",
    "ENDPOINT",
    "BatchFile",
    "BatchLimits",
    "BatchWriter",
    "body_of",
    "custom_id",
    "encode_line",
    "parse_custom_id",
]

ENDPOINT = "/v1/embeddings"
COMPLETION_WINDOW = "24h"
MAX_REQUESTS_PER_BATCH = BATCH_MAX_REQUESTS
MAX_INPUTS_PER_BATCH = BATCH_MAX_INPUTS
MAX_FILE_BYTES = BATCH_MAX_FILE_BYTES

_HEAD = b'{"custom_id":"'
_TAIL = b'","method":"POST","url":"' + ENDPOINT.encode() + b'","body":'


@dataclass(frozen=True)
class BatchLimits:
    """The caps on one batch: the Batch API's (smaller values are for tests), and `tokens`, the
    share of the enqueued-token budget one batch may take (None: no token cap)."""

    requests: int = MAX_REQUESTS_PER_BATCH
    inputs: int = MAX_INPUTS_PER_BATCH
    bytes: int = MAX_FILE_BYTES
    tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("requests", "inputs", "bytes", "tokens"):
            value = getattr(self, name)
            if name == "tokens" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"batch limit {name!r} must be an integer >= 1, not {value!r}")
        if self.requests > 99_999:
            raise ConfigurationError(f"at most 99,999 requests per batch (custom ids have 5 digits), not {self.requests}")


def custom_id(key: str, line: int) -> str:
    """The request's `custom_id`: its batch key and line number (``b000001-00017``)."""
    return f"{key}-{line:05d}"


def parse_custom_id(value: Any) -> tuple[str, int] | None:
    """(batch key, line) of a `custom_id` this module made, else None."""
    if not isinstance(value, str):
        return None
    key, _, line = value.rpartition("-")
    return (key, int(line)) if key and line.isdigit() else None


def encode_line(cid: str, body: bytes) -> bytes:
    """One JSONL request line: ``{"custom_id", "method": "POST", "url": "/v1/embeddings", "body"}``."""
    return _HEAD + cid.encode("ascii") + _TAIL + body + b"}\n"


def body_of(line: bytes) -> bytes:
    """The JSON body of a line `encode_line` made (its custom id is fixed-width: sliced, not parsed)."""
    start = line.index(_TAIL) + len(_TAIL)
    end = line.rstrip(b"\n")
    return end[start:-1]


def encode_body(body: dict[str, Any]) -> bytes:
    """An embeddings request body as compact UTF-8 JSON."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class BatchFile:
    """One finished batch file (what the job records about it)."""

    key: str
    lines: int = 0
    inputs: int = 0
    sections: int = 0
    tokens: int = 0
    bytes: int = 0
    origins: list[tuple[str, int]] = field(default_factory=list)
    """(batch key, line) each line was copied from, for resubmitted lines (same order as the lines)."""

    def as_entry(self) -> dict[str, Any]:
        return {"key": self.key, "lines": self.lines, "inputs": self.inputs, "sections": self.sections,
                "tokens": self.tokens, "bytes": self.bytes}


class BatchWriter:
    """Writes request lines into batch files under `limits` (or only counts them, without `directory`).

    Args:
        directory: Where ``<key>.requests.jsonl`` and ``<key>.manifest.jsonl`` go; None for a dry run.
        limits: The caps of one batch.
        new_key: Gives the key of the next batch file (``b000001``...).
        on_file: Called with each finished `BatchFile` (its files already in place).
    """

    def __init__(
        self,
        directory: Path | None,
        limits: BatchLimits,
        new_key: Callable[[], str],
        on_file: Callable[[BatchFile], None],
    ) -> None:
        self.directory = directory
        self.limits = limits
        self.new_key = new_key
        self.on_file = on_file
        self.current: BatchFile | None = None
        self._requests: IO[bytes] | None = None
        self._manifest: IO[bytes] | None = None
        self.files = 0

    def add(
        self,
        body: bytes,
        *,
        inputs: int,
        tokens: int,
        sections: Sequence[Sequence[Any]],
        attempt: int = 1,
        origin: tuple[str, int] | None = None,
    ) -> None:
        """Append one request line (its `body` JSON) carrying `sections` ([id, hash, tokens, title, position])."""
        size = len(_HEAD) + len(custom_id("b000000", 0)) + len(_TAIL) + len(body) + 2
        if size > self.limits.bytes or inputs > self.limits.inputs:
            raise ConfigurationError(
                f"one request ({inputs} inputs, {size:,} bytes) is over a batch's limits "
                f"({self.limits.inputs:,} inputs, {self.limits.bytes:,} bytes)"
            )
        current = self.current
        if current is not None and (
            current.lines + 1 > self.limits.requests
            or current.inputs + inputs > self.limits.inputs
            or current.bytes + size > self.limits.bytes
            or (self.limits.tokens is not None and current.tokens + tokens > self.limits.tokens)
        ):
            self.finish()
        if self.current is None:
            self._start()
        current = self.current
        assert current is not None
        cid = custom_id(current.key, current.lines)
        if self._requests is not None and self._manifest is not None:
            self._requests.write(encode_line(cid, body))
            entry = {"line": current.lines, "custom_id": cid, "inputs": inputs, "tokens": tokens,
                     "attempt": attempt, "sections": [list(s) for s in sections]}
            self._manifest.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        if origin is not None:
            current.origins.append(origin)
        current.lines += 1
        current.inputs += inputs
        current.sections += len(sections)
        current.tokens += tokens
        current.bytes += size

    def _start(self) -> None:
        key = self.new_key()
        self.current = BatchFile(key)
        if self.directory is not None:
            self._requests = open(self._tmp(key, "requests"), "wb")  # noqa: SIM115 - closed in finish()
            self._manifest = open(self._tmp(key, "manifest"), "wb")  # noqa: SIM115

    def _tmp(self, key: str, kind: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.{kind}.jsonl.tmp"

    def finish(self) -> None:
        """Close the current file (if any lines went in) and hand it to `on_file`."""
        current, self.current = self.current, None
        if current is None:
            return
        if self.directory is not None:
            for handle, kind in ((self._requests, "requests"), (self._manifest, "manifest")):
                assert handle is not None
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                os.replace(self._tmp(current.key, kind), self.directory / f"{current.key}.{kind}.jsonl")
            self._requests = self._manifest = None
        self.files += 1
        self.on_file(current)

    def abandon(self) -> None:
        """Drop the file being written (an interrupted run): the next run writes it again."""
        for handle in (self._requests, self._manifest):
            if handle is not None:
                handle.close()
        self._requests = self._manifest = None
        self.current = None
