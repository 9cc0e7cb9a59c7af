"""Submit, poll, collect, resubmit: the loop that carries a job's batches to the end.

Each step is recorded in the job before the next one starts, so a run killed at
any point resumes without submitting anything twice:

- ``prepared`` → upload (``files.create``) → ``uploaded`` → create the batch. The
  job notes *before* creating it that it tried, and keys the batch (``metadata``:
  job id, batch key); a run that died between the API's answer and the next save
  finds that batch again with ``batches.list`` instead of creating a second one.
- ``submitted``: polled (``batches.retrieve``) with backoff — `poll_interval`
  growing by `backoff` up to `max_poll_interval`, back to the start when a batch
  moves. `sleep` and `clock` are injectable: a 24-hour window is milliseconds in a test.
- ended: collected (`collect.Collector`), then ``collected``; lines to retry
  (expired, cancelled, transient errors) are copied into new batch files
  (`requeue`) and submitted like the rest, each at most `max_attempts` times.

While the enqueued-token limit is reached (a batch failed with
``token_limit_exceeded``), or `max_enqueued_tokens` would be passed, nothing more is
submitted until a batch of the job ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .collect import Collector
from .files import BatchLimits, BatchWriter, body_of
from .job import JobStore
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
        limits: Caps of one batch (for resubmitted lines).
        polling: Poll interval and backoff.
        max_attempts: Submissions of one request line before it fails for good.
        max_enqueued_tokens: Tokens the job may have in flight at once (None: no cap
            of ours; the API's enqueued-token limit still applies).
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
        self.max_enqueued_tokens = max_enqueued_tokens
        self.cleanup = cleanup
        self.sleep = sleep
        self.clock = clock
        self.on_status = on_status or (lambda text: None)
        self.queue_full = any(entry.get("queue_full") for entry in job.batches if entry.get("state") == "collected"
                              and self._retry_waiting(entry))
        self.submitted = 0
        self.polls = 0

    # --- the loop -----------------------------------------------------------------------------
    def unfinished(self) -> bool:
        """Whether any batch is still to submit, in flight, or has lines waiting to be resubmitted."""
        return any(entry["state"] != "collected" or self._retry_waiting(entry) for entry in self.job.batches)

    def run(self, *, wait: bool = True) -> None:
        """Submit what is prepared; with `wait`, poll until every batch is collected."""
        self.requeue()
        self.submit()
        delay = self.polling.interval
        while True:
            moved = self.poll()
            self.requeue()
            self.submit()
            if not wait or not self.unfinished():
                return
            delay = self.polling.interval if moved else min(self.polling.max_interval, delay * self.polling.backoff)
            self.sleep(delay)

    # --- submitting ---------------------------------------------------------------------------
    def in_flight(self) -> list[dict[str, Any]]:
        return [entry for entry in self.job.batches if entry["state"] == "submitted"]

    def submit(self) -> None:
        """Upload and create every prepared batch the queue has room for (at least one when nothing is in flight)."""
        for entry in self.job.batches:
            if entry["state"] not in ("prepared", "uploaded"):
                continue
            flying = self.in_flight()
            if flying:
                queued = sum(int(e["tokens"]) for e in flying)
                if self.queue_full or (
                    self.max_enqueued_tokens is not None and queued + int(entry["tokens"]) > self.max_enqueued_tokens
                ):
                    return
            self._submit(entry)

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
        """Look at every batch in flight once; collect those that ended. True if any batch moved."""
        moved = False
        for entry in self.in_flight():
            batch = self.remote.retrieve(entry["batch_id"])
            self.polls += 1
            counts = getattr(batch, "request_counts", None)
            completed, failed = (getattr(counts, "completed", 0), getattr(counts, "failed", 0)) if counts else (0, 0)
            done = completed + failed
            if batch.status != entry.get("status") or done != entry.get("done", 0):
                moved = True
                entry.update(status=batch.status, done=done)
                detail = f", {failed:,} failed or not run" if failed else ""
                self.on_status(f"{entry['key']}: {batch.status}, {completed:,} of {entry['lines']:,} requests "
                               f"done{detail}")
            if batch.status in TERMINAL:
                others = any(e is not entry and e.get("status") in ACTIVE for e in self.in_flight())
                self.collector.collect(entry, batch, others_in_flight=others)
                if batch.status != "failed" or not entry.get("queue_full"):
                    self.queue_full = False  # a batch ended: the queue has room again
                else:
                    self.queue_full = others
                self._tidy(entry, batch)
                stats = self.collector.stats
                self.on_status(f"{entry['key']}: collected ({batch.status}); {stats.rows_written:,} rows written so far")
        self.job.save()
        return moved

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
        """Copy every line waiting to be retried into new batch files (the copied lines become ``moved``)."""
        waiting = [entry for entry in self.job.batches if self._retry_waiting(entry)]
        if not waiting:
            return
        job = self.job
        writer = BatchWriter(job.directory, self.limits, job.new_key,
                             lambda done: job.add_batch(done.as_entry(), done.origins))
        copied = 0
        for entry in waiting:
            retry = job.lines(entry, "retry")
            specs = {spec["line"]: spec for spec in job.manifest(entry["key"]) if spec["line"] in retry}
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
        writer.finish()
        job.save()
        for entry in waiting:
            self.forget_requests(entry)
        if copied:
            self.on_status(f"resubmitting {copied:,} requests in {writer.files} new batch file(s)")

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


def request_inputs(raw: bytes) -> list[str]:
    """The inputs of one request line (for tests and `online`)."""
    value = json.loads(body_of(raw))["input"]
    return [value] if isinstance(value, str) else list(value)
