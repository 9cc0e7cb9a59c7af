"""Sections into batch files: validate, leave out what the job or the store has, plan, write.

The bookkeeping is the online ingest's (`core.engine.ingest_run.IngestRun`: validation,
first occurrence of an id wins, skips by content hash + model, failures with a
code), the packing is the embedding engine's (`EmbeddingServiceBase.plan`, no
probe: the same validation, token counts, deduplication and packing as online),
and each request's body is the very one the online path sends
(`Attempts.create_kwargs`). Only the destination differs: request lines go to
batch files (`files.BatchWriter`) instead of ``/v1/embeddings``.

A section the job already holds is never submitted again: unchanged and stored,
it is skipped; otherwise its outcome comes from the job (`Tracked`). A section
edited after its batch ended is a new submission; one edited while its batch is
still out waits for that batch (its row then carries the old hash, so the next
run re-embeds it).
"""

from __future__ import annotations

import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..engine.plan import EmbedPlan, Request
from ..stores.ingest import stored_hashes, windows
from ..engine.ingest_run import IngestRun, Pending, Window
from ..limits import INGEST_WINDOW, model_dimensions
from .files import BatchWriter, encode_body
from .job import JobStore, SectionIndex, hash_prefix

__all__ = ["Preparer", "Tracked"]


BATCH_ID_TYPE = "bigint"
"""The Batch API path keeps section ids in compact int64 arrays (`Tracked`, the job's manifests): it
takes integer ids; a string id fails alone with that reason (the online path takes both)."""


@dataclass
class Tracked:
    """Sections of this run whose outcome the job will tell: input index and id, in input order."""

    indices: array.array = field(default_factory=lambda: array.array("q"))
    ids: array.array = field(default_factory=lambda: array.array("q"))
    changed_in_flight: int = 0
    """Of them, sections edited while their batch was still out."""

    def add(self, index: int, section_id: int) -> None:
        self.indices.append(index)
        self.ids.append(section_id)

    def __len__(self) -> int:
        return len(self.indices)


class Preparer:
    """Feeds sections through validation, skips and the plan into a `BatchWriter`.

    Args:
        run: The run's bookkeeping (counters, failures, skips).
        service: The `EmbeddingService` (its `plan`, `attempts`, `model`, `dimensions`).
        store: The target store (`fetch_hashes`, `preflight`), or None (a dry run: nothing skipped).
        writer: Where request lines go.
        job: The job (None for a dry run).
        batch_size: Inputs per request (<= 2048).
        skip_unchanged: Skip sections stored with the same hash and model.
        plan_window: Texts planned together (a batch's input cap: requests of one plan fill batches whole).
        request_tokens: Tokens one request may carry (a share of the queue budget; None: the service's cap).
    """

    def __init__(
        self,
        run: IngestRun,
        service: Any,
        store: Any,
        writer: BatchWriter,
        *,
        job: JobStore | None,
        batch_size: int,
        skip_unchanged: bool = True,
        plan_window: int = 50_000,
        request_tokens: int | None = None,
    ) -> None:
        self.run = run
        self.service = service
        self.store = store
        self.writer = writer
        self.job = job
        self.batch_size = batch_size
        self.skip_unchanged = skip_unchanged and store is not None
        self.plan_window = plan_window
        cap = int(service.max_tokens_per_request)
        self.request_tokens = cap if request_tokens is None else min(cap, request_tokens)
        self.tracked = Tracked()
        self.index: SectionIndex | None = job.index() if job is not None else None
        self._states: dict[int, dict[str, set[int]]] = {}
        self._pending: list[Pending] = []
        self.tokens = 0
        self.requests = 0

    def feed(self, sections: Iterable[Any], window: int = INGEST_WINDOW) -> None:
        """Read every section; write what must be submitted (call `finish` after)."""
        for chunk in windows(sections, window):
            window = self.run.take_window(chunk)
            self.run.fit_ids(window, BATCH_ID_TYPE)
            self._window(window)

    def finish(self) -> None:
        """Plan and write what is left, and close the last batch file."""
        while self._pending:
            self._flush()
        self.writer.finish()

    # --- one window -----------------------------------------------------------------------
    def _window(self, window: Window) -> None:
        run = self.run
        if self.index is not None and len(self.index):
            window.items = [item for item in window.items if not self._known(item)]
        if window.items and not run.checked and self.store is not None:
            self.store.preflight(model_dimensions(run.model, getattr(self.service, "dimensions", None)))
            run.checked = True
        if self.skip_unchanged and window.items:
            run.skip_stored(window, stored_hashes(self.store, window))
        run.notify()
        self._pending.extend(window.items)
        while len(self._pending) >= self.plan_window:
            self._flush()

    def _known(self, item: Pending) -> bool:
        """Whether the job answers for `item` (skipped now, or tracked); False: submit it."""
        assert self.index is not None and self.job is not None
        found = self.index.find(item.section_id)
        if found is None:
            return False
        prefix, position, line = found
        entry = self.job.batches[position]
        states = self._line_states(position)
        same = prefix == hash_prefix(item.digest)
        final = line in states["stored"] or line in states["online"] or line in states["failed"]
        if not same and final:
            return False  # edited after its batch ended: a new submission
        if same and (line in states["stored"] or line in states["online"]) and (
            str(item.section_id) not in entry.get("store_failed", {})
        ):
            self.run.skipped_ids.append(item.section_id)
            self.run.counters.skipped += 1
            return True
        self.tracked.add(item.index, item.section_id)
        self.tracked.changed_in_flight += not same
        return True

    def _line_states(self, position: int) -> dict[str, set[int]]:
        states = self._states.get(position)
        if states is None:
            assert self.job is not None
            entry = self.job.batches[position]
            states = self._states[position] = {s: self.job.lines(entry, s) for s in ("stored", "online", "failed")}
        return states

    # --- planning -------------------------------------------------------------------------
    def _flush(self) -> None:
        items, self._pending = self._pending[: self.plan_window], self._pending[self.plan_window :]
        service = self.service  # the engine's plan, with requests sized to the queue budget (never paced)
        plan = EmbedPlan([item.text for item in items], max_inputs=self.batch_size,
                         max_tokens_per_request=self.request_tokens,
                         max_tokens_per_input=service.max_tokens_per_input, truncate=service.truncate)
        for position, reason in plan.errors.items():  # not sendable (too long...): fails alone, as online
            item = items[position]
            self.run.fail(item.index, item.section_id, "embedding_failed", f"embedding failed: {reason}")
        counts = plan.token_counts
        create_kwargs = self.service.attempts.create_kwargs
        for request in plan.requests:
            sections = []
            for position, first in enumerate(request.indices):
                # every input index served by this input: itself and the copies of its text
                for i in plan.indices_of(Request((first,), (), 0)):
                    item = items[i]
                    sections.append([item.section_id, item.digest, counts[i], item.title, position])
                    self.tracked.add(item.index, item.section_id)
            self.writer.add(encode_body(create_kwargs(request)), inputs=len(request.indices), tokens=request.tokens,
                            sections=sections)
            self.tokens += request.tokens
            self.requests += 1
