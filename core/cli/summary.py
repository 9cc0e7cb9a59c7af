"""How an ingest ends: the summary, the failed-sections file, the exit status.

The summary fits 80 columns a line: a longer failure reason is cut there, and
printed whole on its own lines with ``--wide``; ``--json`` and the
failed-sections file always carry every reason whole.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from .. import pricing
from . import sync
from .console import one_line, printable, prog, warn
from .failures import Failure, write_failures
from .sources import Source
from .status import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

__all__ = ["Run", "finish", "interrupted"]

WIDTH = 80
"""Columns of the terminal the summary must fit (longer failure reasons are cut unless --wide; the file
and --json have them whole)."""
SHOWN_FAILURES = 5


@dataclass
class Run:
    """What one ingest did."""

    records: int = 0
    unreadable: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    interrupted: BaseException | None = None
    price_per_million: Decimal | None = None
    """USD per 1M tokens for the cost figure when it is not the standard one (the Batch API's half price);
    None: --price-per-million, else the model's list price."""

    def price(self, args: argparse.Namespace) -> Decimal | str | None:
        return self.price_per_million if self.price_per_million is not None else args.price_per_million


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
        "updated": int(result.get("updated_count", 0)),
    }
    cost = pricing.estimate_cost(counts["tokens"], model, run.price(args))
    cost_text = pricing.format_usd(cost) if cost is not None else f"unknown (no price for {model})"
    lines = [
        f"stored {counts['stored']:,}, skipped {counts['skipped']:,}, failed {counts['failed']:,} "
        f"of {counts['sections']:,} sections",
        _fit(f"{counts['tokens']:,} tokens, cost {cost_text}, {elapsed:.1f} s"),
    ]
    if counts["updated"]:
        lines.insert(1, f"  {counts['updated']:,} of the stored updated without embedding (text unchanged)")
    if "source" in result:  # a sync
        lines += sync.summary_lines(result)
    return counts, lines


def _json(counts: dict[str, int], run: Run, args: argparse.Namespace, model: str, elapsed: float, **extra: Any) -> str:
    """The summary as one JSON object: ``cost_usd`` a number (None when unknown), ``cost_usd_exact`` its exact
    decimal string."""
    cost = pricing.estimate_cost(counts["tokens"], model, run.price(args))
    return json.dumps({
        **counts, "cost_usd": None if cost is None else float(cost), "cost_usd_exact": pricing.usd_text(cost),
        "elapsed_seconds": round(elapsed, 3), **extra,
    })


def _reason_lines(head: str, reason: str, wide: bool) -> list[str]:
    """`head` and `reason` on one line of at most WIDTH columns; with `wide`, a longer one whole, wrapped below."""
    line = f"{head}: {reason}"
    if len(line) <= WIDTH or not wide:
        return [_fit(line)]
    return [f"{head}:", *textwrap.wrap(reason, WIDTH - 4, initial_indent="    ", subsequent_indent="    ",
                                       break_long_words=True, break_on_hyphens=False)]


def _say(*lines: str) -> None:
    """Summary lines on stdout, the input's control characters escaped (`printable`)."""
    print("\n".join(printable(line) for line in lines))


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

    status = EXIT_FAILED if counts["failed"] or sync.refused(run.result) else EXIT_OK
    if args.json:
        failures = [{"line": f.line, "element": f.element, "id": f.id, "code": f.code, "reason": f.reason}
                    for f in listed]
        extra = sync.json_fields(run.result) if "source" in run.result else {}
        print(_json(counts, run, args, model, elapsed, failed_file=written, failures=failures, **extra))
        return status
    _say(*lines)
    wide = bool(args.wide)
    shown = [(printable(f.where + (f" (id {f.id})" if f.id is not None else "")), f.reason)
             for f in listed[:SHOWN_FAILURES]]
    if len(listed) > SHOWN_FAILURES:
        reason, times = Counter(f.reason for f in listed).most_common(1)[0]
        shown.append((f"... {len(listed) - SHOWN_FAILURES:,} more; most common ({times:,}x)", reason))
    for where, reason in shown:
        _say(*_reason_lines(f"  {where}", reason, wide))
    if not wide and any(len(f"  {where}: {reason}") > WIDTH for where, reason in shown):
        _say(f"(cut at {WIDTH} columns: --wide shows them whole; so do --json and the failed-sections file)")
    if written:
        _say(f"failed sections written to {written}")
        _say(sync.failed_hint(written) if "source" in run.result else f"fix them, then run: {prog()} ingest {written}")
    elif removed:
        _say(f"nothing failed: removed {failed_out}")
    return status


def interrupted(args: argparse.Namespace, run: Run, model: str, elapsed: float) -> int:
    """Ctrl-C / SIGTERM / SIGHUP during the ingest: what was stored, exactly when the ingest says."""
    exc = run.interrupted
    signal_exit = getattr(exc, "exit_code", None) or getattr(getattr(exc, "__context__", None), "exit_code", None)
    status = int(signal_exit or EXIT_INTERRUPTED)
    if run.result:
        counts, lines = _totals(args, run, model, elapsed)
        print(_json(counts, run, args, model, elapsed, interrupted=True) if args.json else "\n".join(lines), flush=True)
        stored = counts["stored"]
        what = f"{stored:,} section{'s' if stored != 1 else ''} stored" if stored else "nothing stored"
        message = f"interrupted: {what} (they stay stored; re-run to continue: stored sections are skipped)"
        if not stored:
            message = "interrupted: nothing stored"
    else:
        message = "interrupted (sections stored so far stay stored; re-run to continue)"
    print(one_line(f"{prog()}: {message}"), file=sys.stderr, flush=True)
    return status
