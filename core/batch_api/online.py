"""``--finish-online``: requests that failed inside a batch, sent through the online path instead.

Takes every ``failed`` line of the job, and every section whose row the store
refused, reads their inputs back from the batch's request file (the very texts the
batch was sent), embeds them with the online engine (`EmbeddingService.embed`:
paced, retried, checked) and writes the rows. A line whose sections are all stored
becomes ``online``; what fails again keeps failing, with the online reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..engine.rows import Row
from .files import body_of
from .job import JobStore

__all__ = ["OnlineStats", "finish_online"]


@dataclass
class OnlineStats:
    lines: int = 0
    sections_stored: int = 0
    sections_failed: int = 0
    tokens: int = 0
    requests: int = 0


def _wanted(job: JobStore, entry: dict[str, Any]) -> tuple[set[int], set[int]]:
    """(failed lines, section ids refused by the store) of `entry`."""
    return job.lines(entry, "failed"), {int(k) for k in entry.get("store_failed") or {}}


def finish_online(
    job: JobStore,
    service: Any,
    store: Any,
    *,
    model: str,
    batch_size: int,
    timestamp: Callable[[], str],
    on_status: Callable[[str], None] | None = None,
) -> OnlineStats:
    """Embed online and store what the batches could not; returns what it did."""
    stats = OnlineStats()
    for entry in job.batches:
        if entry.get("state") != "collected":
            continue
        failed_lines, refused = _wanted(job, entry)
        if not failed_lines and not refused:
            continue
        # The sections to redo, and the inputs they need: (line, position) -> text.
        todo: list[tuple[int, list[Any]]] = []  # (line, section spec)
        needed: set[int] = set(failed_lines)
        specs: dict[int, dict[str, Any]] = {}
        for spec in job.manifest(entry["key"]):
            line = spec["line"]
            sections = spec["sections"] if line in failed_lines else [s for s in spec["sections"] if s[0] in refused]
            if sections and line not in job.lines(entry, "moved"):
                specs[line] = spec
                needed.add(line)
                todo.extend((line, s) for s in sections)
        if not todo:
            continue
        inputs: dict[int, list[str]] = {}
        with open(job.requests_path(entry["key"]), "rb") as handle:
            for line, raw in enumerate(handle):
                if line in needed:
                    value = json.loads(body_of(raw))["input"]
                    inputs[line] = [value] if isinstance(value, str) else list(value)
        texts = [inputs[line][section[4]] for line, section in todo]
        if on_status is not None:
            on_status(f"{entry['key']}: embedding {len(texts):,} sections online")
        result = service.embed(texts, max_batch_size=batch_size)
        stats.tokens += result.total_tokens
        stats.requests += result.requests
        updated_at = timestamp()
        rows = [
            Row(section[0], section[3], result.vectors[k], model, section[1], section[2], updated_at)
            for k, (_line, section) in enumerate(todo) if k in result.vectors
        ]
        refused_now = store.write_rows(rows) if rows else {}
        store_failed = entry.setdefault("store_failed", {})
        bad_lines: dict[int, str] = {}
        for k, (line, section) in enumerate(todo):
            if k not in result.vectors:
                bad_lines.setdefault(line, f"online retry failed: {result.errors.get(k, 'no vector')}")
                stats.sections_failed += 1
            elif section[0] in refused_now:
                store_failed[str(section[0])] = str(refused_now[section[0]])
                stats.sections_failed += 1
            else:
                store_failed.pop(str(section[0]), None)
                stats.sections_stored += 1
        for line in sorted({line for line, _ in todo}):
            if line in bad_lines:
                job.settle(entry, line, "failed", "online_failed", bad_lines[line])
            elif line in failed_lines:
                job.settle(entry, line, "online")
                stats.lines += 1
        if not store_failed:
            entry.pop("store_failed", None)
        job.save()
        if not entry.get("failed") and not entry.get("retry") and not entry.get("store_failed"):
            job.requests_path(entry["key"]).unlink(missing_ok=True)  # nothing left that needs its inputs
    return stats
