"""A batch that ended: its output and error files matched to lines by ``custom_id``, checked, stored.

Every answer is checked exactly as the online path checks it
(`core.engine.decode.decode_embeddings`: one vector per input, at the right
indices, all of one width); a line that is not is resubmitted, never stored.
Rows are written through the store's `write_rows`, a chunk at a time, and the
job records each chunk's lines as stored before the next: a crash in the middle
re-reads the files (the API keeps them) and writes only what is not recorded.

What becomes of a line:

- answered 200 and aligned: ``stored`` (a row per section; a row the store refuses
  is a ``store_failed`` section, with the store's reason);
- not run because the batch expired or was cancelled, answered 408/409/429/5xx,
  misaligned, or missing from both files: ``retry`` (resubmitted in a new batch);
- any other error (a 400...): ``failed``, with the API's reason;
- a batch that failed validation: lines it names fail with the API's message; the
  others are resubmitted; all of them when the enqueued-token limit was reached.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.decode import decode_embeddings
from ..errors import MisalignedResponseError
from ..engine.rows import Row
from .files import parse_custom_id
from .job import JobStore
from .remote import Remote

__all__ = ["QUEUE_FULL", "CollectStats", "Collector"]

NOT_RUN = ("batch_expired", "batch_cancelled")
QUEUE_FULL = "token_limit_exceeded"
WRITE_CHUNK = 2048
"""Rows per `write_rows` call (one output line carries up to 2048 inputs)."""


def _retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


@dataclass
class CollectStats:
    """What collecting did in this run."""

    rows_written: int = 0
    tokens: int = 0
    lines_stored: int = 0
    lines_failed: int = 0
    lines_retried: int = 0
    unknown_lines: int = 0
    """Lines of output/error files that match no request of their batch (ignored)."""


class Collector:
    """Reads ended batches into the store.

    Args:
        job: The job.
        store: Where rows go (`write_rows`).
        remote: The Batch API.
        model: The embedding model (stored with each row).
        dimensions: The width every vector must have (None: the first vector's).
        timestamp: `updated_at` for rows written now.
    """

    def __init__(
        self,
        job: JobStore,
        store: Any,
        remote: Remote,
        *,
        model: str,
        dimensions: int | None,
        timestamp: Callable[[], str],
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.job = job
        self.store = store
        self.remote = remote
        self.model = model
        self.dimensions = dimensions
        self.timestamp = timestamp
        self.on_status = on_status
        self.stats = CollectStats()

    def collect(self, entry: dict[str, Any], batch: Any, *, others_in_flight: bool) -> None:
        """Settle every line of `entry`, whose API batch `batch` ended (completed, expired, cancelled, failed)."""
        if batch.status == "failed":
            self._failed(entry, batch, others_in_flight)
        else:
            manifest = {line["line"]: line for line in self.job.manifest(entry["key"])}
            for attribute, kind in (("output_file_id", "output"), ("error_file_id", "errors")):
                file_id = getattr(batch, attribute, None)
                if file_id:
                    entry[attribute] = file_id
                    path = self.remote.download(file_id, self.job.directory / f"{entry['key']}.{kind}.jsonl")
                    try:
                        self._read(entry, manifest, path)
                    finally:
                        path.unlink(missing_ok=True)
            for line in sorted(self.job.open_lines(entry)):
                self._retry(entry, line, "missing", f"the batch ended {batch.status} without an answer for it")
        entry["state"] = "collected"
        self.job.save()

    # --- output and error files ---------------------------------------------------------------
    def _read(self, entry: dict[str, Any], manifest: dict[int, dict[str, Any]], path: Path) -> None:
        settled = set(range(int(entry["lines"]))) - self.job.open_lines(entry)
        rows: list[Row] = []
        lines: set[int] = set()
        updated_at = self.timestamp()
        with open(path, "rb") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    answer = json.loads(raw)
                    parsed = parse_custom_id(answer.get("custom_id"))
                except (ValueError, AttributeError):
                    parsed = None
                if parsed is None or parsed[0] != entry["key"] or parsed[1] not in manifest:
                    self.stats.unknown_lines += 1
                    continue
                line = parsed[1]
                if line in settled:
                    continue  # recorded by an earlier run that died collecting this batch
                settled.add(line)
                row_count = len(rows)
                self._answer(entry, manifest[line], answer, rows, updated_at)
                if len(rows) > row_count:
                    lines.add(line)
                if len(rows) >= WRITE_CHUNK:
                    self._write(entry, rows, lines)
                    rows, lines = [], set()
        if rows:
            self._write(entry, rows, lines)

    def _answer(self, entry: dict[str, Any], spec: dict[str, Any], answer: dict[str, Any], rows: list[Row],
                updated_at: str) -> None:
        line = spec["line"]
        where = f"batch {entry.get('batch_id')}, request {spec['custom_id']}"
        error = answer.get("error")
        response = answer.get("response") or {}
        if error:
            code = str(error.get("code") or "batch_error")
            reason = f"{code}: {error.get('message')} ({where})"
            if code in NOT_RUN:
                self._retry(entry, line, code, reason)
            else:
                self._fail(entry, line, code, reason)
            return
        status, body = response.get("status_code"), response.get("body")
        if status != 200:
            details = (body or {}).get("error") if isinstance(body, dict) else None
            details = details if isinstance(details, dict) else {}
            code = str(details.get("code") or details.get("type") or f"http_{status}")
            reason = f"HTTP {status} {code}: {details.get('message') or body} ({where})"
            if isinstance(status, int) and _retryable(status):
                self._retry(entry, line, code, reason)
            else:
                self._fail(entry, line, code, reason)
            return
        try:
            vectors = decode_embeddings(body, int(spec["inputs"]), self.dimensions)
        except MisalignedResponseError as exc:
            self._retry(entry, line, "misaligned", f"misaligned response: {exc} ({where})")
            return
        if self.dimensions is None:
            self.dimensions = len(vectors[0])  # every later line must have this width
        for section_id, digest, tokens, title, position in spec["sections"]:
            rows.append(Row(section_id, title, vectors[position], self.model, digest, tokens, updated_at))
        usage = body.get("usage") if isinstance(body, dict) else None
        used = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        self.stats.tokens += used if isinstance(used, int) else int(spec["tokens"])

    def _write(self, entry: dict[str, Any], rows: list[Row], lines: set[int]) -> None:
        refused = self.store.write_rows(rows)
        if refused:
            failed = entry.setdefault("store_failed", {})
            for section_id, reason in refused.items():
                failed[str(section_id)] = str(reason)
        self.job.settle_many(entry, lines, "stored")
        self.stats.rows_written += len(rows) - len(refused)
        self.stats.lines_stored += len(lines)
        self.job.save()

    def _retry(self, entry: dict[str, Any], line: int, code: str, reason: str, *, counts: bool = True) -> None:
        self.job.settle(entry, line, "retry", code, reason)
        if not counts:
            entry["retry"][str(line)]["free"] = True
        self.stats.lines_retried += 1

    def _fail(self, entry: dict[str, Any], line: int, code: str, reason: str) -> None:
        self.job.settle(entry, line, "failed", code, reason)
        self.stats.lines_failed += 1

    # --- a batch that failed ----------------------------------------------------------------
    def _failed(self, entry: dict[str, Any], batch: Any, others_in_flight: bool) -> None:
        errors = list(getattr(getattr(batch, "errors", None), "data", None) or [])
        by_line = {int(e.line) - 1: e for e in errors if getattr(e, "line", None)}
        general = [e for e in errors if not getattr(e, "line", None)]
        queue_full = next((e for e in general if e.code == QUEUE_FULL), None)
        where = f"batch {entry.get('batch_id')}"
        for line in sorted(self.job.open_lines(entry)):
            if queue_full is not None:
                # Not this request's fault: it goes again once the queue drains (free while
                # other batches of the job hold the queue; counted when it was alone).
                self._retry(entry, line, QUEUE_FULL, f"{QUEUE_FULL}: {queue_full.message} ({where})",
                            counts=not others_in_flight)
            elif line in by_line:
                error = by_line[line]
                self._fail(entry, line, str(error.code or "invalid_request"),
                           f"the batch failed validation: {error.message} ({where}, line {line + 1})")
            elif general:
                self._fail(entry, line, str(general[0].code or "batch_failed"),
                           f"the batch failed: {general[0].message} ({where})")
            else:
                self._retry(entry, line, "batch_failed", f"the batch failed because of other requests ({where})")
        if queue_full is not None:
            entry["queue_full"] = True
            if self.on_status is not None:
                self.on_status(f"{entry['key']}: the enqueued-token limit is reached; resubmitting after the queue drains")
