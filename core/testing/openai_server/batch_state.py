"""The Batch API's state machine, timed by the server clock (`clock`), with scripted outcomes.

``validating`` (the input file is checked line by line: JSON, unique ``custom_id``,
``POST`` to the batch's endpoint, one model, <= 50,000 requests, and for embeddings
<= 50,000 inputs across all requests; then the enqueued-token limit) →
``in_progress`` (lines complete evenly over ``in_progress_seconds``) → ``finalizing``
→ ``completed``; or ``failed`` (validation), ``expired`` (the 24-hour window ended
first: lines done by then are in the output file, the rest in the error file as
``batch_expired``), ``cancelling`` → ``cancelled`` (the same, as ``batch_cancelled``).

A batch advances when anyone looks at it; each line runs through the very
``/v1/embeddings`` endpoint (`embeddings.create_embeddings`) on a private engine
state, so a batch answers exactly what the online API would. Scripted outcomes
(config ``script``, one entry per created batch) force the rest: ``stop_at`` (the
fraction of lines processed before the batch stalls until it expires or is
cancelled), ``fail`` (``{"code", "message"}``: fails validation), ``line_errors``
(``{line: {"status", "code", "message"}}``) and ``misaligned`` (lines answered one
vector short).
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .api import ApiError, ApiRequest
from .clock import clock_of
from .embeddings import create_embeddings
from .files import files_of
from .state import State
from .vectors import text_digests

__all__ = ["ACTIVE", "BATCH_DEFAULTS", "TERMINAL", "BatchRecord", "BatchWorld", "world_of"]

TERMINAL = ("completed", "failed", "expired", "cancelled")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
MAX_LISTED_ERRORS = 100

BATCH_DEFAULTS: dict[str, Any] = {
    "validating_seconds": 0.0,
    "in_progress_seconds": 0.0,  # all lines done after this long; they complete evenly over it
    "finalizing_seconds": 0.0,
    "cancelling_seconds": 0.0,
    "completion_window_seconds": 86_400.0,  # "24h"
    "max_requests_per_batch": 50_000,
    "max_inputs_per_batch": 50_000,  # the embeddings rule, across all requests of a batch
    "max_file_bytes": 200_000_000,
    "enqueued_token_limit": None,  # tokens of in-progress batches per model; None = unlimited
    "script": [],  # one entry per created batch (see the module doc)
}
_EXPIRED = ("batch_expired", "This request could not be executed before the completion window expired.")
_CANCELLED = ("batch_cancelled", "This request was not executed because the batch was cancelled.")


def validate_batch_config(changes: dict[str, Any]) -> None:
    unknown = sorted(set(changes) - set(BATCH_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown batch config key(s) {unknown}; known: {sorted(BATCH_DEFAULTS)}")
    for key, value in changes.items():
        if key == "script":
            if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
                raise ValueError("batch config 'script' must be a list of objects")
            for entry in value:
                bad = sorted(set(entry) - {"stop_at", "fail", "line_errors", "misaligned"})
                if bad:
                    raise ValueError(f"unknown script key(s) {bad}")
        elif key == "enqueued_token_limit" and value is None:
            continue
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"batch config {key!r} must be a finite number >= 0, got {value!r}")


@dataclass
class BatchRecord:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created_at: float
    expires_at: float
    timing: dict[str, float]
    script: dict[str, Any]
    status: str = "validating"
    times: dict[str, float] = field(default_factory=dict)
    lines: int = 0
    inputs: int = 0
    tokens: int = 0
    model: str | None = None
    done: int = 0
    """Lines processed, frozen when the batch is cancelled or expires."""
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})

    def done_at(self, now: float) -> int:
        """Lines processed by `now` while in progress."""
        start = self.times.get("in_progress_at")
        if start is None:
            return 0
        span = self.timing["in_progress_seconds"]
        done = self.lines if span <= 0 else min(self.lines, int(self.lines * (now - start) / span))
        stop_at = self.script.get("stop_at")
        if stop_at is not None:
            done = min(done, int(self.lines * float(stop_at)))
        return max(0, done)

    def as_json(self, now: float) -> dict[str, Any]:
        counts = dict(self.counts)
        if self.status in ("in_progress", "finalizing"):
            counts = {"total": self.lines, "completed": self.done_at(now), "failed": 0}
        stamp = {name: int(self.times[name]) if name in self.times else None for name in (
            "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at"
        )}
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id, "completion_window": "24h", "status": self.status,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "created_at": int(self.created_at), "expires_at": int(self.expires_at), **stamp,
            "request_counts": counts, "metadata": self.metadata, "usage": None,
        }


class BatchWorld:
    """Every batch of one server, its config and its script."""

    def __init__(self, state: Any) -> None:
        self.clock = clock_of(state)
        self.files = files_of(state)
        self.lock = threading.RLock()
        self.config: dict[str, Any] = copy.deepcopy(BATCH_DEFAULTS)
        self.script: deque[dict[str, Any]] = deque()
        self.batches: dict[str, BatchRecord] = {}
        self.engine = State({})  # runs each line: no rate limits, no faults, no latency of the online API

    # -- control -------------------------------------------------------------------------
    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        validate_batch_config(changes)
        with self.lock:
            self.config.update(copy.deepcopy(changes))
            if "script" in changes:
                self.script = deque(copy.deepcopy(changes["script"]))
            if "max_file_bytes" in changes:
                self.files.max_batch_bytes = int(changes["max_file_bytes"])
            return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        config = copy.deepcopy(self.config)
        config["script"] = list(self.script)
        return config

    def reset(self) -> None:
        with self.lock:
            self.batches.clear()
            self.files.clear()
            self.clock.reset()
            self.config = copy.deepcopy(BATCH_DEFAULTS)
            self.script.clear()
            self.files.max_batch_bytes = BATCH_DEFAULTS["max_file_bytes"]

    def summary(self) -> dict[str, Any]:
        with self.lock:
            now = self.clock()
            self.advance_all(now)
            return {
                "now": now, "config": self.snapshot(), "files": len(self.files.files),
                "batches": [
                    {"id": b.id, "status": b.status, "lines": b.lines, "inputs": b.inputs, "tokens": b.tokens,
                     "done": b.done_at(now) if b.status == "in_progress" else b.done, "metadata": b.metadata}
                    for b in self.batches.values()
                ],
            }

    # -- the API -------------------------------------------------------------------------
    def create(self, input_file_id: str, endpoint: str, metadata: dict[str, str] | None) -> BatchRecord:
        with self.lock:
            now = self.clock()
            timing = {k: float(self.config[k]) for k in (
                "validating_seconds", "in_progress_seconds", "finalizing_seconds", "cancelling_seconds"
            )}
            batch = BatchRecord(
                "batch_" + uuid.uuid4().hex, input_file_id, endpoint, metadata, now,
                now + float(self.config["completion_window_seconds"]), timing,
                self.script.popleft() if self.script else {},
            )
            self.batches[batch.id] = batch
            return batch

    def get(self, batch_id: str) -> BatchRecord:
        with self.lock:
            self.advance_all(self.clock())
            batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    def cancel(self, batch_id: str) -> BatchRecord:
        with self.lock:
            batch = self.get(batch_id)
            now = self.clock()
            if batch.status not in ("validating", "in_progress", "finalizing"):
                raise ApiError(409, f"Cannot cancel a batch with status '{batch.status}'.")
            batch.done = batch.done_at(now) if batch.status == "in_progress" else (
                batch.lines if batch.status == "finalizing" else 0
            )
            batch.status, batch.times["cancelling_at"] = "cancelling", now
            self.advance(batch, now)
            return batch

    def advance_all(self, now: float) -> None:
        for batch in list(self.batches.values()):
            self.advance(batch, now)

    def advance(self, batch: BatchRecord, now: float) -> None:
        """Move `batch` through every transition due by `now`, in time order."""
        timing = batch.timing
        while True:
            if batch.status == "validating":
                at = batch.created_at + timing["validating_seconds"]
                if now < at:
                    return
                self._validate(batch, at)
            elif batch.status == "in_progress":
                start = batch.times["in_progress_at"]
                stop_at = batch.script.get("stop_at")
                stalls = stop_at is not None and int(batch.lines * float(stop_at)) < batch.lines
                all_done = math.inf if stalls else start + timing["in_progress_seconds"]
                if all_done <= min(now, batch.expires_at):
                    batch.status, batch.times["finalizing_at"] = "finalizing", all_done
                elif now >= batch.expires_at:
                    batch.done = batch.done_at(batch.expires_at)
                    self._finish(batch, "expired", batch.expires_at)
                    return
                else:
                    return
            elif batch.status == "finalizing":
                at = batch.times["finalizing_at"] + timing["finalizing_seconds"]
                if now < at:
                    return
                batch.done = batch.lines
                self._finish(batch, "completed", at)
            elif batch.status == "cancelling":
                at = batch.times["cancelling_at"] + timing["cancelling_seconds"]
                if now < at:
                    return
                self._finish(batch, "cancelled", at)
            else:
                return

    # -- validating ----------------------------------------------------------------------
    def _validate(self, batch: BatchRecord, at: float) -> None:
        errors = self._check_lines(batch)
        if not errors and batch.script.get("fail"):
            fail = batch.script["fail"]
            errors = [{"code": fail.get("code", "failed"), "message": fail.get("message", "scripted failure"),
                       "param": None, "line": None}]
        limit = self.config["enqueued_token_limit"]
        if not errors and limit is not None:
            queued = sum(b.tokens for b in self.batches.values()
                         if b is not batch and b.model == batch.model and b.status in ("in_progress", "finalizing"))
            if queued + batch.tokens > limit:
                errors = [{
                    "code": "token_limit_exceeded", "param": None, "line": None,
                    "message": f"Enqueued token limit reached for {batch.model} in organization org-local. "
                    f"Limit: {int(limit):,} enqueued tokens. Please try again once some in_progress batches "
                    "have been completed.",
                }]
        if errors:
            batch.status, batch.errors, batch.times["failed_at"] = "failed", errors[:MAX_LISTED_ERRORS], at
        else:
            batch.status, batch.times["in_progress_at"] = "in_progress", at
            batch.counts = {"total": batch.lines, "completed": 0, "failed": 0}

    def _check_lines(self, batch: BatchRecord) -> list[dict[str, Any]]:
        try:
            stored = self.files.get(batch.input_file_id)
        except ApiError as exc:
            return [{"code": "file_not_found", "message": exc.message, "param": "input_file_id", "line": None}]
        errors: list[dict[str, Any]] = []

        def error(code: str, message: str, line: int | None, param: str | None = None) -> None:
            errors.append({"code": code, "message": message, "param": param, "line": line})

        seen: set[str] = set()
        count_tokens = self.config["enqueued_token_limit"] is not None
        for number, raw in enumerate(stored.lines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if not isinstance(line, dict):
                error("invalid_json_line", f"Line {number} is not a valid JSON object.", number)
                continue
            body, custom_id = line.get("body"), line.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                error("missing_required_parameter", "Missing required parameter: 'custom_id'.", number, "custom_id")
            elif custom_id in seen:
                error("duplicate_custom_id", "The custom_id for this request is a duplicate of another request. "
                      "The custom_id parameter must be unique for each individual request in a batch.", number,
                      "custom_id")
            else:
                seen.add(custom_id)
            if line.get("method") != "POST":
                error("invalid_method", "Only the POST method is supported.", number, "method")
            elif line.get("url") != batch.endpoint:
                error("mismatched_endpoint", f"The url of this request does not match the batch's endpoint "
                      f"{batch.endpoint}.", number, "url")
            if not isinstance(body, dict):
                error("invalid_body", "Missing required parameter: 'body'.", number, "body")
                continue
            model = body.get("model")
            if batch.model is None and isinstance(model, str):
                batch.model = model
            elif model != batch.model:
                error("mismatched_model", "All requests in a batch must use the same model.", number, "body.model")
            texts = body.get("input")
            texts = [texts] if isinstance(texts, str) else texts if isinstance(texts, list) else []
            if texts and all(isinstance(t, int) for t in texts):
                texts = [texts]
            batch.lines += 1
            batch.inputs += len(texts)
            if count_tokens:
                strings = [t for t in texts if isinstance(t, str)]
                batch.tokens += sum(self.engine.count_tokens(strings, text_digests(strings)))
                batch.tokens += sum(len(t) for t in texts if isinstance(t, list))
        if batch.lines == 0 and not errors:
            error("empty_file", "The input file has no requests.", None)
        if batch.lines > self.config["max_requests_per_batch"]:
            error("too_many_requests", f"The batch has {batch.lines:,} requests; a batch holds at most "
                  f"{int(self.config['max_requests_per_batch']):,}.", None)
        if batch.endpoint == "/v1/embeddings" and batch.inputs > self.config["max_inputs_per_batch"]:
            error("too_many_inputs", f"The batch has {batch.inputs:,} embedding inputs across its requests; "
                  f"an embeddings batch holds at most {int(self.config['max_inputs_per_batch']):,}.", None)
        return errors

    # -- the end -------------------------------------------------------------------------
    def _finish(self, batch: BatchRecord, status: str, at: float) -> None:
        """Run the lines done, write the output and error files, and end in `status` at `at`."""
        unrun = _EXPIRED if status == "expired" else _CANCELLED
        output, failed = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - handed to the store
        ok = bad = k = 0
        for raw in self.files.get(batch.input_file_id).lines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            custom_id = json.dumps(line["custom_id"]).encode()
            head = b'{"id":"batch_req_' + uuid.uuid4().hex.encode() + b'","custom_id":' + custom_id
            if k < batch.done:
                status_code, body = self._run(batch, k, line["body"])
                request_id = b'"req_' + uuid.uuid4().hex.encode() + b'"'
                (output if status_code == 200 else failed).write(
                    head + b',"response":{"status_code":' + str(status_code).encode() + b',"request_id":'
                    + request_id + b',"body":' + body + b'},"error":null}\n'
                )
                ok, bad = (ok + 1, bad) if status_code == 200 else (ok, bad + 1)
            else:
                failed.write(head + b',"response":null,"error":' + json.dumps(
                    {"code": unrun[0], "message": unrun[1]}).encode() + b"}\n")
                bad += 1
            k += 1
        name = batch.id
        if ok:
            batch.output_file_id = self.files.add_handle(f"{name}_output.jsonl", "batch_output", output).id
        else:
            output.close()
        if bad:
            batch.error_file_id = self.files.add_handle(f"{name}_error.jsonl", "batch_output", failed).id
        else:
            failed.close()
        batch.counts = {"total": batch.lines, "completed": ok, "failed": bad}
        batch.status, batch.times[f"{status}_at"] = status, at

    def _run(self, batch: BatchRecord, k: int, body: Any) -> tuple[int, bytes]:
        """(status, response body) of line `k`, as the online endpoint answers it (or as scripted)."""
        scripted = (batch.script.get("line_errors") or {}).get(str(k))
        if scripted is not None:
            error = ApiError(int(scripted.get("status", 500)), scripted.get("message", "scripted line error"),
                             "server_error" if int(scripted.get("status", 500)) >= 500 else "invalid_request_error",
                             scripted.get("code"))
            return error.status, error.body()
        if k in (batch.script.get("misaligned") or ()):
            self.engine.script.append("short")
        request = ApiRequest("POST", batch.endpoint, {}, {"Authorization": "Bearer batch"},  # type: ignore[arg-type]
                             json.dumps(body).encode(), self.engine, time.monotonic(), "req_batch")
        try:
            reply = create_embeddings(request)
        except ApiError as exc:
            return exc.status, exc.body()
        finally:
            self.engine.script.clear()
        return 200, b"".join(reply.parts or [])


_MAKING = threading.Lock()


def world_of(state: Any) -> BatchWorld:
    """The batches of the server owning `state` (made on first use)."""
    world = getattr(state, "batch_world", None)
    if world is None:
        files_of(state)
        with _MAKING:
            world = getattr(state, "batch_world", None)
            if world is None:
                world = state.batch_world = BatchWorld(state)
    return world
