"""The Batch API's state machine, timed by the server clock (`clock`), with scripted outcomes.

``validating`` (`batch_check`: the input file line by line — JSON, unique
``custom_id``, ``POST`` to the batch's endpoint, one model, <= 50,000 requests, and
for embeddings <= 50,000 inputs across all requests — then the enqueued-token
queue, with its release lag) →
``in_progress`` (lines complete evenly over ``in_progress_seconds``) → ``finalizing``
→ ``completed``; or ``failed`` (validation), ``expired`` (the 24-hour window ended
first: lines done by then are in the output file, the rest in the error file as
``batch_expired``), ``cancelling`` → ``cancelled`` (the same, as ``batch_cancelled``).

A batch advances when anyone looks at it; at its end (`batch_output`) each line
runs through the very ``/v1/embeddings`` endpoint on a private engine state, so a
batch answers exactly what the online API would, in a shuffled order. Scripted
outcomes (config ``script``, one entry per batch validated, in order; a batch the
queue refuses leaves its entry to the next) force the rest: ``stop_at`` (the
fraction of lines processed before the batch stalls until it expires or is
cancelled), ``fail`` (``{"code", "message"}``: fails validation), ``line_errors``
(``{line: {"status", "code", "message"}}``) and ``misaligned`` (lines answered one
vector short).
"""

from __future__ import annotations

import copy
import math
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .api import ApiError
from .batch_check import check_lines, queue_error
from .batch_output import finish
from .clock import clock_of
from .files import files_of
from .state import State

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
    "enqueued_token_limit": None,  # tokens of unfinished batches per model; None = unlimited
    "release_lag_seconds": 0.0,  # an ended batch's tokens stay enqueued this long
    "transient_line_error_rate": 0.0,  # share of request bodies answered 500 the first time they run
    "time_scale": 1.0,  # server seconds per real second (benchmarks: hours of batches in minutes)
    "script": [],  # one entry per batch the queue accepts, in order (see the module doc)
}


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
        elif key == "time_scale" and not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise ValueError(f"batch config 'time_scale' must be a number > 0, got {value!r}")
        elif key == "transient_line_error_rate" and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ValueError(f"batch config 'transient_line_error_rate' must be in [0, 1], got {value!r}")
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
    ok_inputs: int = 0
    """Inputs of the lines answered 200 (embedded and paid for)."""
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
        self.failed_once: set[bytes] = set()  # request bodies that had their transient 500

    # -- control -------------------------------------------------------------------------
    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        validate_batch_config(changes)
        with self.lock:
            self.config.update(copy.deepcopy(changes))
            if "script" in changes:
                self.script = deque(copy.deepcopy(changes["script"]))
            if "time_scale" in changes:
                self.clock.set_rate(float(changes["time_scale"]))
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
            self.failed_once.clear()
            self.files.max_batch_bytes = BATCH_DEFAULTS["max_file_bytes"]

    def summary(self) -> dict[str, Any]:
        with self.lock:
            now = self.clock()
            self.advance_all(now)
            return {
                "now": now, "config": self.snapshot(), "files": len(self.files.files),
                "batches": [
                    {"id": b.id, "status": b.status, "lines": b.lines, "inputs": b.inputs, "tokens": b.tokens,
                     "done": b.done_at(now) if b.status == "in_progress" else b.done, "metadata": b.metadata,
                     "ok_inputs": b.ok_inputs}
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
                now + float(self.config["completion_window_seconds"]), timing, {},
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
        """The file's checks, a scripted failure, then the queue. A script entry goes to the next batch
        validated that the queue accepts (a refused batch leaves it for the next)."""
        batch.script = self.script.popleft() if self.script else {}
        errors = check_lines(self, batch)
        if not errors and batch.script.get("fail"):
            fail = batch.script["fail"]
            errors = [{"code": fail.get("code", "failed"), "message": fail.get("message", "scripted failure"),
                       "param": None, "line": None}]
        if not errors:
            refused = queue_error(self, batch, at)
            if refused is not None:
                errors = [refused]
                if batch.script:
                    self.script.appendleft(batch.script)
                batch.script = {}
        if errors:
            batch.status, batch.errors, batch.times["failed_at"] = "failed", errors[:MAX_LISTED_ERRORS], at
        else:
            batch.status, batch.times["in_progress_at"] = "in_progress", at
            batch.counts = {"total": batch.lines, "completed": 0, "failed": 0}

    def _finish(self, batch: BatchRecord, status: str, at: float) -> None:
        finish(self, batch, status, at)


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
