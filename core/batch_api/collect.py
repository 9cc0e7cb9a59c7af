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
- a batch that failed validation, by kind of error (`QUEUE_FULL`, `RESHAPE`, `NO_RETRY`):
  lines it names fail with the API's message and the others go again (free: they
  never ran); ``token_limit_exceeded`` sends every line again, free, once the queue
  has room (`queue.QueueBudget` learns from it); a batch too big in another way
  (``too_many_tasks``...) goes again in halves; an error no retry can fix
  (``model_mismatch``...) fails every line with the API's reason; any other
  error sends the lines again later (an attempt each).
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
"""The account's enqueued-token queue has no room for the batch: a later (or smaller) batch passes."""
RESHAPE = frozenset({"too_many_tasks", "too_many_requests", "too_many_inputs", "file_too_large"})
"""The batch is too big for the API in another way: halves of it pass."""
NO_RETRY = frozenset({"model_mismatch", "url_mismatch", "mismatched_model", "mismatched_endpoint", "invalid_method",
                      "invalid_json_line", "duplicate_custom_id", "empty_file", "missing_required_parameter",
                      "invalid_body", "invalid_request", "model_not_found", "invalid_model"})
"""Errors of the batch's contents that the same requests would meet again: their lines fail."""
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

    def collect(self, entry: dict[str, Any], batch: Any) -> None:
        """Settle every line of `entry`, whose API batch `batch` ended (completed, expired, cancelled, failed)."""
        if batch.status == "failed":
            self._failed(entry, batch)
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
    def _failed(self, entry: dict[str, Any], batch: Any) -> None:
        errors = list(getattr(getattr(batch, "errors", None), "data", None) or [])
        by_line: dict[int, Any] = {}
        general = []
        for error in errors:
            line = getattr(error, "line", None)
            if isinstance(line, int) and 1 <= line <= int(entry["lines"]):
                by_line.setdefault(line - 1, error)
            else:
                general.append(error)
        codes = {str(getattr(e, "code", None) or "") for e in general}
        where = f"batch {entry.get('batch_id')}"
        first = general[0] if general else None
        why = f"{getattr(first, 'code', None) or 'batch_failed'}: {getattr(first, 'message', None)} ({where})"
        for line in sorted(self.job.open_lines(entry)):
            if line in by_line:
                error = by_line[line]
                self._fail(entry, line, str(error.code or "invalid_request"),
                           f"the batch failed validation: {error.code}: {error.message} ({where}, line {line + 1})")
            elif QUEUE_FULL in codes:  # not these requests' fault: they go once the queue has room
                self._retry(entry, line, QUEUE_FULL, why, counts=False)
            elif codes & NO_RETRY:
                code = sorted(codes & NO_RETRY)[0]
                error = next(e for e in general if e.code == code)
                self._fail(entry, line, code, f"the batch failed validation: {code}: {error.message} ({where})")
            elif codes & RESHAPE:
                self._retry(entry, line, sorted(codes & RESHAPE)[0], f"the batch was too big: {why}")
            elif general:
                self._retry(entry, line, str(first.code or "batch_failed"), f"the batch failed: {why}")
            else:  # only other lines were named: these never ran
                self._retry(entry, line, "batch_failed", f"the batch failed because of other requests ({where})",
                            counts=False)
        if QUEUE_FULL in codes:
            entry["queue_full"] = True
        elif codes & RESHAPE:
            entry["reshape"] = True
