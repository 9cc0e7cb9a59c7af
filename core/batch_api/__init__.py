"""Embeddings through OpenAI's Batch API: half the price, within 24 hours, outside the per-minute limits.

The same ``/v1/embeddings`` requests the online path sends (packed by the same
plan, `core.engine.plan.EmbedPlan`), written as JSONL batch files within the
Batch API's limits, uploaded, submitted, polled, and their answers checked
(`core.engine.decode.decode_embeddings`) and stored through the store's
`write_rows`. The job lives in a folder (`job.JobStore`): re-running continues
where a crash, a kill or an expired batch left it, and never submits a section twice.

Modules, one job each: `files` (request lines, splitting within limits), `job`
(the resumable state), `prepare` (sections into batch files), `remote` (the API
calls), `runner` (submit, poll, resubmit), `collect` (answers into rows), `online`
(``--finish-online``), `queue` (the enqueued-token budget, learned from refusals),
`batch_job` (`BatchJob`, `estimate`), `plan` (`plan_batches`: the dry run's plan).
"""

from __future__ import annotations

from .batch_job import BatchJob, estimate
from .files import ENDPOINT, BatchLimits
from .plan import plan_batches
from .runner import Polling

__all__ = ["ENDPOINT", "BatchJob", "BatchLimits", "Polling", "estimate", "plan_batches"]
