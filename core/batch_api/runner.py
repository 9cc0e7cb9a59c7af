"""Submit, poll, collect, resubmit: the loop that carries a job's batches to the end.

Each step is recorded in the job before the next one starts, so a run killed at
any point resumes without submitting anything twice:

- ``prepared`` → upload (``files.create``) → ``uploaded`` → create the batch. The
  job notes *before* creating it that it tried, and keys the batch (``metadata``:
  job id, batch key); a run that died between the API's answer and the next save
  finds that batch again with ``batches.list`` instead of creating a second one.
- ``submitted``: polled (``batches.retrieve``) with backoff — `poll_interval`
  growing by `backoff` up to `max_poll_interval`, back to the start when a batch
  moves (a refusal is not a move). `sleep` and `clock` are injectable: a 24-hour
  window is milliseconds in a test.
- ended: collected (`collect.Collector`), then ``collected``; lines to retry
  (expired, cancelled, transient errors, refused batches) are copied into new
  batch files (`requeue`) and submitted like the rest, each at most `max_attempts`
  times (a refusal for the queue, or a batch refused for another line's fault, costs no attempt).

Batches go as the enqueued-token queue frees (`queue.QueueBudget`): as many in
flight as the budget holds, the next one when a batch ends. A prepared batch built
for a budget since lowered is split again before it goes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..limits import BATCH_STALL_SECONDS, MAX_INPUTS_PER_REQUEST
from .collect import QUEUE_FULL, Collector
from .files import BatchLimits, BatchWriter, body_of
from .job import JobStore
from .queue import QueueBudget
from .remote import Remote

__all__ = ["ACTIVE", "TERMINAL", "Polling", "Runner"]

TERMINAL = ("completed", "expired", "cancelled", "failed")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass(frozen=True)
class Polling:
    """How often to look at batches in flight (seconds)."""

    interval: float = 10.0
    max_interval: float = 300.0
    backoff: float = 1.5


class Runner:
    """Carries the job's batches from ``prepared`` to ``collected``.

    Args:
        job: The job.
        remote: The Batch API.
        collector: Reads ended batches into the store.
        limits: Caps of one batch (for resubmitted lines; the token cap follows the queue budget).
        polling: Poll interval and backoff.
        max_attempts: Submissions of one request line before it fails for good.
        max_enqueued_tokens: Tokens the job may have in the queue at once (None: what the job
            learned, else `core.limits.BATCH_QUEUE_TOKENS`).
        stall_seconds: Waiting with every batch refused after which the run stops (`BatchQueueStalledError`).
        cleanup: Delete the job's files on the API (input, output, error) once a batch is collected.
        sleep: Sleep function (injectable).
        clock: Monotonic clock (injectable).
        on_status: Called with a line of text whenever something happens.
    """

    def __init__(
        self,
        job: JobStore,
        remote: Remote,
        collector: Collector,
        *,
        limits: BatchLimits,
        polling: Polling | None = None,
        max_attempts: int = 5,
        max_enqueued_tokens: int | None = None,
        stall_seconds: float = BATCH_STALL_SECONDS,
        cleanup: bool = True,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.job = job
        self.remote = remote
        self.collector = collector
        self.limits = limits
        self.polling = polling or Polling()
        self.max_attempts = max_attempts
        self.queue = QueueBudget(job.data.setdefault("queue", {}), max_enqueued_tokens, stall_seconds)
        self.cleanup = cleanup
        self.sleep = sleep
        self.clock = clock
        self.on_status = on_status or (lambda text: None)
        self.submitted = 0
        self.refused = 0
        self.polls = 0

    def batch_limits(self) -> BatchLimits:
        """The caps of a batch built now: the API's, and a share of the queue budget."""
        tokens = self.queue.batch_tokens()
        return replace(self.limits, tokens=tokens if self.limits.tokens is None else min(tokens, self.limits.tokens))

    # --- the loop -----------------------------------------------------------------------------
    def unfinished(self) -> bool:
        """Whether any batch is still to submit, in flight, or has lines waiting to be resubmitted."""
        return any(entry["state"] != "collected" or self._retry_waiting(entry) for entry in self.job.batches)

    def run(self, *, wait: bool = True) -> None:
        """Submit what is prepared and has room; with `wait`, poll until every batch is collected.

        Raises:
            BatchQueueStalledError: Every batch was refused for the queue for `stall_seconds`; the job is saved.
        """
        self.requeue()
        self.submit()
        delay = self.polling.interval
        while True:
            moved = self.poll()
            self.requeue()
            self.submit()
            if not wait or not self.unfinished():
                return
            if any(entry.get("accepted") for entry in self.in_flight()):
                self.queue.progress()  # a batch of the job runs: waiting for it is not a stall
            self.queue.check_stall()
            delay = self.polling.interval if moved else min(self.polling.max_interval, delay * self.polling.backoff)
            pause = delay if self.in_flight() else max(self.queue.next_room_in(), self.polling.interval)
            self.sleep(pause)
            self.queue.slept(pause)

    # --- submitting ---------------------------------------------------------------------------
    def in_flight(self) -> list[dict[str, Any]]:
        return [entry for entry in self.job.batches if entry["state"] == "submitted"]

    def submit(self) -> None:
        """Upload and create prepared batches while the queue budget has room for them (one at least when
        nothing of the job is queued and no refusal is being waited out)."""
        self.reshape()
        for entry in self.job.batches:
            if entry["state"] not in ("prepared", "uploaded"):
                continue
            flying = self.in_flight()
            queued = sum(int(e["tokens"]) for e in flying)
            if not self.queue.may_submit(int(entry["tokens"]), queued, bool(flying)):
                return
            self.queue.note_submit(entry, queued)
            self._submit(entry)

    def reshape(self) -> None:
        """Split again the prepared (not yet created) batches built for a queue budget since lowered."""
        cap = self.batch_limits().tokens
        assert cap is not None
        resized = False
        for entry in self.job.batches:
            if entry["state"] in ("prepared", "uploaded") and not entry.get("create_attempted") \
                    and int(entry["tokens"]) > cap and int(entry["lines"]) > 1:
                for line in range(int(entry["lines"])):
                    self.job.settle(entry, line, "retry", "resized", "built for a larger queue budget")
                    entry["retry"][str(line)]["free"] = True
                if entry.get("input_file_id"):
                    self.remote.delete_file(entry["input_file_id"])
                entry.update(state="collected", status="resized")
                resized = True
        if resized:
            self.job.save()
            self.requeue()

    def _submit(self, entry: dict[str, Any]) -> None:
        job = self.job
        key = entry["key"]
        if entry["state"] == "prepared":
            entry["input_file_id"] = self.remote.upload(job.requests_path(key))
            entry["state"], entry["uploaded_at"] = "uploaded", time.time()
            job.save()
        metadata = {"core_job": job.job_id, "core_batch": key}
        batch = None
        if entry.get("create_attempted"):  # a run died after asking: did the batch get made?
            batch = self.remote.find(entry["input_file_id"], metadata, since=float(entry["uploaded_at"]))
        if batch is None:
            entry["create_attempted"] = True
            job.save()
            batch = self.remote.create(entry["input_file_id"], metadata)
        entry.update(state="submitted", batch_id=batch.id, status=batch.status, submitted_at=time.time())
        entry.pop("create_attempted", None)
        job.save()
        self.submitted += 1
        self.on_status(f"{key}: submitted {batch.id} ({entry['lines']:,} requests, {entry['inputs']:,} inputs, "
                       f"{entry['tokens']:,} tokens)")

    # --- polling ------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Look at every batch in flight once; collect those that ended. True if any batch moved
        (a batch refused for the queue is not a move: the poll delay keeps growing)."""
        moved = False
        for entry in self.in_flight():
            batch = self.remote.retrieve(entry["batch_id"])
            self.polls += 1
            counts = getattr(batch, "request_counts", None)
            completed, failed = (getattr(counts, "completed", 0), getattr(counts, "failed", 0)) if counts else (0, 0)
            done = completed + failed
            if batch.status not in ("validating", "failed") and not entry.get("accepted"):
                entry["accepted"] = True
                self.queue.note_accepted()
            if batch.status != entry.get("status") or done != entry.get("done", 0):
                refusal = batch.status == "failed" and _queue_full(batch)
                moved = moved or not refusal
                entry.update(status=batch.status, done=done)
                detail = f", {failed:,} failed or not run" if failed else ""
                if not refusal:
                    self.on_status(f"{entry['key']}: {batch.status}, {completed:,} of {entry['lines']:,} requests "
                                   f"done{detail}")
            if batch.status in TERMINAL:
                self._ended(entry, batch)
        self.job.save()
        return moved

    def _ended(self, entry: dict[str, Any], batch: Any) -> None:
        others = any(e is not entry for e in self.in_flight())
        self.collector.collect(entry, batch)
        if entry.get("queue_full"):
            self.refused += 1
            lesson = self.queue.refused(entry, others_in_flight=others)
            self.on_status(f"{entry['key']}: refused, the enqueued-token queue is full ({entry['tokens']:,} tokens; "
                           f"the job's budget {entry['queue']['budget']:,}); its requests go again; {lesson}")
        else:
            if entry.get("accepted"):
                self.queue.note_end(int(entry["tokens"]))
            self.queue.progress()
        self._tidy(entry, batch)
        stats = self.collector.stats
        self.on_status(f"{entry['key']}: collected ({batch.status}); {stats.rows_written:,} rows written so far")

    def _tidy(self, entry: dict[str, Any], batch: Any) -> None:
        """Drop what a collected batch no longer needs: its files on the API, its request file here."""
        if self.cleanup:
            for file_id in (entry.get("input_file_id"), getattr(batch, "output_file_id", None),
                            getattr(batch, "error_file_id", None)):
                if file_id:
                    self.remote.delete_file(file_id)
        self.forget_requests(entry)

    def forget_requests(self, entry: dict[str, Any]) -> None:
        """Delete the request file of a batch whose every line is stored, moved or finished online."""
        states = self.job.states(entry)
        if entry["state"] == "collected" and not states["failed"] and not states["retry"] \
                and not entry.get("store_failed"):
            self.job.requests_path(entry["key"]).unlink(missing_ok=True)

    # --- resubmitting -------------------------------------------------------------------------
    def _retry_waiting(self, entry: dict[str, Any]) -> bool:
        return entry.get("state") == "collected" and bool(entry.get("retry"))

    def requeue(self) -> None:
        """Copy every line waiting to be retried into new batch files (the copied lines become ``moved``).

        New files are built to the current caps; lines of a batch refused for its shape
        (``too_many_tasks``...) go in batches of half its requests.
        """
        waiting = [entry for entry in self.job.batches if self._retry_waiting(entry)]
        if not waiting:
            return
        job = self.job
        base = self.batch_limits()
        groups: dict[BatchLimits, list[dict[str, Any]]] = {}
        for entry in waiting:
            limits = base
            if entry.get("reshape"):
                limits = replace(base, requests=max(1, min(base.requests, int(entry["lines"]) // 2)),
                                 inputs=max(MAX_INPUTS_PER_REQUEST, min(base.inputs, int(entry["inputs"]) // 2)))
            groups.setdefault(limits, []).append(entry)
        copied = files = 0
        for limits, entries in groups.items():
            writer = BatchWriter(job.directory, limits, job.new_key,
                                 lambda done: job.add_batch(done.as_entry(), done.origins))
            for entry in entries:
                copied += self._copy(entry, writer)
            writer.finish()
            files += writer.files
        job.save()
        for entry in waiting:
            self.forget_requests(entry)
        if copied:
            self.on_status(f"resubmitting {copied:,} requests in {files} new batch file(s)")

    def _copy(self, entry: dict[str, Any], writer: BatchWriter) -> int:
        """Copy `entry`'s lines to retry into `writer` (those out of attempts fail); how many were copied."""
        job = self.job
        retry = job.lines(entry, "retry")
        specs = {spec["line"]: spec for spec in job.manifest(entry["key"]) if spec["line"] in retry}
        copied = 0
        with open(job.requests_path(entry["key"]), "rb") as handle:
            for line, raw in enumerate(handle):
                if line not in retry:
                    continue
                spec, why = specs[line], job.why(entry, "retry", line)
                attempt = int(spec["attempt"]) + (0 if why.get("free") else 1)
                if attempt > self.max_attempts:
                    job.settle(entry, line, "failed", why["code"],
                               f"{why['reason']}; gave up after {spec['attempt']} submissions")
                    continue
                writer.add(body_of(raw), inputs=int(spec["inputs"]), tokens=int(spec["tokens"]),
                           sections=spec["sections"], attempt=attempt, origin=(entry["key"], line))
                copied += 1
        return copied

    # --- cancelling -----------------------------------------------------------------------------
    def cancel(self) -> list[str]:
        """Ask the API to cancel every batch in flight (their partial results are collected as usual)."""
        cancelled = []
        for entry in self.in_flight():
            if entry.get("status") in ("validating", "in_progress", "finalizing"):
                batch = self.remote.cancel(entry["batch_id"])
                if batch is not None:  # None: it ended meanwhile
                    entry["status"] = batch.status
                    cancelled.append(entry["batch_id"])
        self.job.save()
        return cancelled


def _queue_full(batch: Any) -> bool:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    return any(getattr(error, "code", None) == QUEUE_FULL for error in errors)


def request_inputs(raw: bytes) -> list[str]:
    """The inputs of one request line (for tests and `online`)."""
    value = json.loads(body_of(raw))["input"]
    return [value] if isinstance(value, str) else list(value)
