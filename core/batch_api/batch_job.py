"""`BatchJob`: an ingest through OpenAI's Batch API, resumable from its job folder; `estimate` for dry runs.

``BatchJob(folder, service, store).run(sections)`` reads the sections (validated,
skipped when unchanged, planned and packed as online), writes batch files, submits
them, polls until they end, checks and stores every answer, resubmits what expired
or was cancelled, and reports exactly like the online ingest
(``success_count + failed_count + skipped_count + pending_count == sections``).
Run it again — after a crash, a kill, or days later — and it continues from the
folder: nothing is submitted twice.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import CoreError
from ..stores.ingest import IngestInterrupted, check_ingest_args
from ..engine.ingest_run import IngestProgress, IngestRun
from ..limits import BATCH_STALL_SECONDS, INGEST_WINDOW, model_dimensions
from ..secrets import strip_url_userinfo
from .collect import Collector
from .files import ENDPOINT, BatchFile, BatchLimits, BatchWriter
from .job import JobStore
from .online import OnlineStats
from .online import finish_online as retry_online
from .prepare import Preparer, Tracked
from .queue import QueueBudget, check_queue_tokens, request_tokens
from .remote import Remote
from .runner import Polling, Runner

__all__ = ["BatchJob", "estimate"]

DEFAULT_LIMITS = BatchLimits()
"""The Batch API's own caps."""
DEFAULT_POLLING = Polling()


class BatchJob:
    """An ingest through the Batch API (50% of the price, within 24 hours, outside the per-minute limits).

    Args:
        directory: The job folder (``job.json`` and the batch files; made if missing).
        service: An `EmbeddingService`: its client, model, dimensions, plan and request bodies.
        store: A `SectionStore` (`PostgresStore`, `SupabaseStore`): hashes to skip, rows to write.
        batch_size: Inputs per request (<= 2048).
        limits: A batch's caps (the API's by default).
        polling: How often to look at batches in flight.
        max_attempts: Submissions of one request before it fails for good (expired, cancelled, 5xx...).
        max_enqueued_tokens: The account's enqueued-token limit for the model, if known: the tokens of the
            job's batches in the queue at once, every batch built to a share of it. None: what the job
            learned from refusals, else `core.limits.BATCH_QUEUE_TOKENS` (tier 1), halved on each refusal.
        stall_seconds: Waiting with every batch refused after which `run` stops (the job resumable).
        cleanup: Delete the job's files on the API once their batch is collected.
        skip_unchanged: Skip sections stored with the same content hash and model.
        window: Sections validated and looked up at a time.
        sleep, clock: Injectable for tests (a 24-hour window in milliseconds).
        on_status: Called with one line of text per event (submitted, status changes, collected...).
        progress: Called with the running totals (`IngestProgress`) as sections are read.
    """

    def __init__(
        self,
        directory: str | Path,
        service: Any,
        store: Any,
        *,
        batch_size: int = 2048,
        limits: BatchLimits = DEFAULT_LIMITS,
        polling: Polling = DEFAULT_POLLING,
        max_attempts: int = 5,
        max_enqueued_tokens: int | None = None,
        stall_seconds: float = BATCH_STALL_SECONDS,
        cleanup: bool = True,
        skip_unchanged: bool = True,
        window: int = INGEST_WINDOW,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_status: Callable[[str], None] | None = None,
        progress: Callable[[IngestProgress], None] | None = None,
    ) -> None:
        check_ingest_args(batch_size, window)
        self.directory = Path(directory)
        self.service = service
        self.store = store
        self.batch_size = batch_size
        self.limits = limits
        self.polling = polling
        self.max_attempts = max_attempts
        self.max_enqueued_tokens = check_queue_tokens(max_enqueued_tokens)
        self.stall_seconds = stall_seconds
        self.cleanup = cleanup
        self.skip_unchanged = skip_unchanged
        self.window = window
        self.sleep = sleep
        self.clock = clock
        self.on_status = on_status
        self.progress = progress
        self.model = str(service.model)

    def identity(self) -> dict[str, Any]:
        """What the job's batches are made with: a job is only continued with the same.

        The endpoint's URL is kept without its ``user:password@`` (the job folder never holds a credential).
        """
        base_url = getattr(self.service, "base_url", None)
        return {"model": self.model, "dimensions": getattr(self.service, "dimensions", None),
                "encoding_format": getattr(self.service, "encoding_format", "base64"), "endpoint": ENDPOINT,
                "base_url": strip_url_userinfo(str(base_url)) if base_url else None}

    def _timestamp(self) -> str:
        stamp = getattr(self.store, "_timestamp", None)
        return stamp() if callable(stamp) else datetime.now(timezone.utc).isoformat()

    def run(self, sections: Iterable[Any], *, wait: bool = True, finish_online: bool = False) -> dict[str, Any]:
        """Read `sections`, submit what is new, and (with `wait`) carry every batch of the job to its end.

        Args:
            sections: Dicts with ``id``, ``title``, ``content`` (any iterable; read once, in windows).
            wait: Poll until every batch is collected; False: submit and return (run again to collect).
            finish_online: Then embed online what failed inside the batches.

        Returns:
            The online ingest's report (``success_count``, ``failed_count``, ``skipped_count``,
            ``total_tokens``, ``failed_ids``, ``failures``, ``skipped_ids``), plus ``pending_count``
            (sections still in batches) and ``batch`` (the job's figures).

        Raises:
            JobFolderError: The job folder is a file, read-only or cannot be made (before anything is paid for).
            ConfigurationError: The job folder is in use, or was made with other settings.
            BatchQueueStalledError: Every batch was refused for the queue for `stall_seconds`; carries
                ``report``; the job is saved, run again.
            StoreError, EndpointError, EmbeddingAPIError: Carry ``report``; the job is saved, run again.
            IngestInterrupted: Ctrl-C; carries ``report``; the job is saved, run again to continue.
        """
        with JobStore(self.directory, self.identity()) as job:
            run = IngestRun(self.model, self.progress)
            remote = Remote(self.service, self.sleep)
            dimensions = model_dimensions(self.model, getattr(self.service, "dimensions", None))
            collector = Collector(job, self.store, remote, model=self.model, dimensions=dimensions,
                                  timestamp=self._timestamp, on_status=self.on_status)
            runner = Runner(job, remote, collector, limits=self.limits, polling=self.polling,
                            max_attempts=self.max_attempts, max_enqueued_tokens=self.max_enqueued_tokens,
                            stall_seconds=self.stall_seconds, cleanup=self.cleanup, sleep=self.sleep,
                            clock=self.clock, on_status=self.on_status)
            writer = BatchWriter(job.directory, runner.batch_limits(), job.new_key,
                                 lambda done: job.add_batch(done.as_entry(), done.origins))
            prep = Preparer(run, self.service, self.store, writer, job=job, batch_size=self.batch_size,
                            skip_unchanged=self.skip_unchanged, plan_window=self.limits.inputs,
                            request_tokens=request_tokens(runner.queue.budget))
            started = self.clock()
            online = OnlineStats()
            parts = (job, run, prep, collector, runner, online, remote)
            try:
                prep.feed(sections, self.window)
                prep.finish()
                if runner.unfinished() and not run.checked:  # before paying for anything
                    self.store.preflight(dimensions)
                    run.checked = True
                runner.run(wait=wait)
                if finish_online:
                    online = retry_online(job, self.service, self.store, model=self.model,
                                          batch_size=self.batch_size, timestamp=self._timestamp,
                                          on_status=self.on_status)
                    parts = (job, run, prep, collector, runner, online, remote)
            except KeyboardInterrupt:
                writer.abandon()
                job.save()
                raise IngestInterrupted(self._report(*parts, self.clock() - started)) from None
            except CoreError as exc:
                writer.abandon()
                job.save()
                exc.report = self._report(*parts, self.clock() - started)  # type: ignore[attr-defined]
                raise
            return self._report(*parts, self.clock() - started)

    def _report(self, job: JobStore, run: IngestRun, prep: Preparer, collector: Collector, runner: Runner,
                online: OnlineStats, remote: Remote, elapsed: float) -> dict[str, Any]:
        pending = resolve(job, run, prep.tracked)
        run.counters.tokens = collector.stats.tokens + online.tokens
        report = run.report()
        stats = collector.stats
        report["pending_count"] = pending
        report["batch"] = {
            "job": str(job.directory), "job_id": job.job_id, "batches": len(job.batches),
            "files_written": prep.writer.files, "requests_written": prep.requests, "tokens_written": prep.tokens,
            "batches_submitted": runner.submitted, "batches_refused": runner.refused, "polls": runner.polls,
            "api_calls": remote.calls, "queue_budget": runner.queue.budget,
            "release_lag_seconds": runner.queue.release_lag,
            "rows_written": stats.rows_written, "lines_stored": stats.lines_stored,
            "lines_failed": stats.lines_failed, "lines_retried": stats.lines_retried,
            "unknown_lines": stats.unknown_lines, "changed_in_flight": prep.tracked.changed_in_flight,
            "online_sections": online.sections_stored, "online_requests": online.requests,
            "unfinished": runner.unfinished(), "elapsed_seconds": round(elapsed, 3),
        }
        return report

    def cancel(self) -> list[str]:
        """Cancel every batch of the job in flight; the next `run` collects their partial results and
        resubmits the rest."""
        with JobStore(self.directory, self.identity()) as job:
            remote = Remote(self.service, self.sleep)
            collector = Collector(job, self.store, remote, model=self.model, dimensions=None, timestamp=self._timestamp)
            return Runner(job, remote, collector, limits=self.limits).cancel()


def resolve(job: JobStore, run: IngestRun, tracked: Tracked) -> int:
    """Account for every tracked section from the job's line states; returns how many are still pending."""
    if not len(tracked):
        return 0
    index = job.index()
    states: dict[int, dict[str, set[int]]] = {}
    pending = 0
    for input_index, section_id in zip(tracked.indices, tracked.ids):
        found = index.find(section_id)
        if found is None:  # cannot happen: every tracked section is in a manifest
            pending += 1
            continue
        _prefix, position, line = found
        entry = job.batches[position]
        lines = states.get(position)
        if lines is None:
            lines = states[position] = job.states(entry)
        refused = (entry.get("store_failed") or {}).get(str(section_id))
        if line in lines["stored"] or line in lines["online"]:
            if refused is not None:
                run.fail(input_index, section_id, "store_failed", f"store failed: {refused}")
            else:
                run.counters.stored += 1
        elif line in lines["failed"]:
            why = job.why(entry, "failed", line)
            run.fail(input_index, section_id, "embedding_failed", f"embedding failed in a batch: {why['reason']}")
        else:
            pending += 1
    return pending


def estimate(
    sections: Iterable[Any],
    service: Any,
    *,
    batch_size: int = 2048,
    limits: BatchLimits = DEFAULT_LIMITS,
    window: int = INGEST_WINDOW,
    max_enqueued_tokens: int | None = None,
) -> dict[str, Any]:
    """What a Batch API ingest of `sections` would submit — batches, requests, tokens, bytes — with no I/O.

    The same validation, planning and file splitting as `BatchJob.run` (batches built to a
    share of the queue budget: `max_enqueued_tokens`, else the tier-1 default), writing
    nothing; every valid section counts as new (no store is asked what it holds).
    ``batch_tokens`` lists each batch's tokens, in order; ``queue_budget`` is the budget used.
    """
    queue = QueueBudget({}, check_queue_tokens(max_enqueued_tokens))
    batch_limits = replace(limits, tokens=queue.batch_tokens() if limits.tokens is None
                           else min(limits.tokens, queue.batch_tokens()))
    run = IngestRun(str(service.model))
    files: list[BatchFile] = []
    keys = itertools.count(1)
    writer = BatchWriter(None, batch_limits, lambda: f"b{next(keys):06d}", files.append)
    prep = Preparer(run, service, None, writer, job=None, batch_size=batch_size, skip_unchanged=False,
                    plan_window=limits.inputs, request_tokens=request_tokens(queue.budget))
    prep.feed(sections, window)
    prep.finish()
    report = run.report()
    return {
        "sections": run.counters.seen, "to_embed": len(prep.tracked), "failed_count": report["failed_count"],
        "failures": report["failures"], "batches": len(files), "requests": sum(f.lines for f in files),
        "inputs": sum(f.inputs for f in files), "tokens": sum(f.tokens for f in files),
        "bytes": sum(f.bytes for f in files), "largest_file_bytes": max((f.bytes for f in files), default=0),
        "batch_tokens": [f.tokens for f in files], "queue_budget": queue.budget,
        "batch_token_cap": batch_limits.tokens,
    }
