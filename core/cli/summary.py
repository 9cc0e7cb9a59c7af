"""How an ingest ends: the summary (at most 80 columns a line), the failed-sections file, the exit status."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import pricing
from .console import one_line, prog, warn
from .failures import Failure, write_failures
from .parser import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from .sources import Source

__all__ = ["Run", "finish", "interrupted"]

WIDTH = 80
"""Columns of the terminal the summary must fit (longer failure reasons are cut; the file has them whole)."""
SHOWN_FAILURES = 5


@dataclass
class Run:
    """What one ingest did."""

    records: int = 0
    unreadable: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    interrupted: BaseException | None = None


def _fit(text: str) -> str:
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "…"


def _totals(args: argparse.Namespace, run: Run, model: str, elapsed: float) -> tuple[dict[str, int], list[str]]:
    result = run.result
    counts = {
        "sections": run.records,
        "stored": int(result.get("success_count", 0)),
        "skipped": int(result.get("skipped_count", 0)),
        "failed": int(result.get("failed_count", 0)) + run.unreadable,
        "tokens": int(result.get("total_tokens", 0)),
    }
    cost = pricing.estimate_cost(counts["tokens"], model, args.price_per_million)
    cost_text = pricing.format_usd(cost) if cost is not None else f"unknown (no price for {model})"
    lines = [
        f"stored {counts['stored']:,}, skipped {counts['skipped']:,}, failed {counts['failed']:,} "
        f"of {counts['sections']:,} sections",
        _fit(f"{counts['tokens']:,} tokens, cost {cost_text}, {elapsed:.1f} s"),
    ]
    return counts, lines


def _json(counts: dict[str, int], args: argparse.Namespace, model: str, elapsed: float, **extra: Any) -> str:
    cost = pricing.estimate_cost(counts["tokens"], model, args.price_per_million)
    return json.dumps({**counts, "cost_usd": pricing.usd_text(cost), "elapsed_seconds": round(elapsed, 3), **extra})


def finish(args: argparse.Namespace, run: Run, source: Source, failed_out: Path, model: str, elapsed: float) -> int:
    """Write (or clear) the failed-sections file, print the summary; 0 when nothing failed, else 1."""
    counts, lines = _totals(args, run, model, elapsed)
    listed: list[Failure] = []
    written: str | None = None
    removed = False
    if counts["failed"]:
        try:
            listed = write_failures(failed_out, source, list(run.result.get("failures", [])))
            written = str(failed_out)
        except OSError as exc:
            warn(f"cannot write {failed_out}: {exc.strerror or exc}")
    elif failed_out.is_file() and not args.failed_out:
        failed_out.unlink()  # what failed before (in this file, or in the earlier run of it) is stored now
        removed = True

    if args.json:
        failures = [{"line": f.line, "id": f.id, "code": f.code, "reason": f.reason} for f in listed]
        print(_json(counts, args, model, elapsed, failed_file=written, failures=failures))
        return EXIT_FAILED if counts["failed"] else EXIT_OK
    print("\n".join(lines))
    for failure in listed[:SHOWN_FAILURES]:
        where = f"line {failure.line}" + (f" (id {failure.id})" if failure.id is not None else "")
        print(_fit(f"  {where}: {failure.reason}"))
    if len(listed) > SHOWN_FAILURES:
        reason, times = Counter(f.reason for f in listed).most_common(1)[0]
        print(_fit(f"  ... {len(listed) - SHOWN_FAILURES:,} more; most common ({times:,}x): {reason}"))
    if written:
        print(f"failed sections written to {written}")
        print(f"fix them, then run: {prog()} ingest {written}")
    elif removed:
        print(f"nothing failed: removed {failed_out}")
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def interrupted(args: argparse.Namespace, run: Run, model: str, elapsed: float) -> int:
    """Ctrl-C / SIGTERM / SIGHUP during the ingest: what was stored, exactly when the ingest says."""
    exc = run.interrupted
    signal_exit = getattr(exc, "exit_code", None) or getattr(getattr(exc, "__context__", None), "exit_code", None)
    status = int(signal_exit or EXIT_INTERRUPTED)
    if run.result:
        counts, lines = _totals(args, run, model, elapsed)
        print(_json(counts, args, model, elapsed, interrupted=True) if args.json else "\n".join(lines), flush=True)
        stored = counts["stored"]
        what = f"{stored:,} section{'s' if stored != 1 else ''} stored" if stored else "nothing stored"
        message = f"interrupted: {what} (they stay stored; re-run to continue: stored sections are skipped)"
        if not stored:
            message = "interrupted: nothing stored"
    else:
        message = "interrupted (sections stored so far stay stored; re-run to continue)"
    print(one_line(f"{prog()}: {message}"), file=sys.stderr, flush=True)
    return status
