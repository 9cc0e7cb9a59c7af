"""``ingest --batch-api``: the same ingest through OpenAI's Batch API (half the price, within 24 hours).

Everything that matters is the library's (`core.batch_api.BatchJob`): the same
validation, skips and packing as online, batch files within the API's limits,
a job folder that makes the command resumable. This module only adds the
options, where the job folder goes (``<FILE stem>.batch-job`` next to FILE), the
notes printed while batches run, the cost at the batch price, and the dry run's
figures (batches, files, requests, tokens, cost at the batch price).

Run the same command again after a crash, a kill or days later: it continues
from the job folder and never submits a section twice.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from .. import pricing
from ..batch_api import BatchJob, Polling, plan_batches
from ..embed.service import EmbeddingService
from ..errors import CoreError, JobFolderError
from .console import Note, warn
from .parser import JOB_SUFFIX
from .sources import Source, open_records
from .status import EXIT_FAILED, EXIT_OK, EXIT_USAGE, RUN_STOPPING, CliError, UsageError, stopped_message
from .summary import Run

__all__ = ["check", "dry_run", "ingest", "job_dir"]

def check(args: argparse.Namespace, source: Source) -> None:
    """Options that do not go together, refused before anything starts (the ingest ignores --tpm here)."""
    if not args.batch_api:
        if args.finish_online or args.job_dir or args.batch_queue_tokens is not None:
            raise UsageError("--finish-online, --job-dir and --batch-queue-tokens go with --batch-api")
        return
    if source.stdin and not args.job_dir:
        raise UsageError("--batch-api with standard input needs --job-dir (the job folder goes next to FILE otherwise)")
    if args.tpm is not None:
        warn("--tpm does not apply to the Batch API (batches are outside the per-minute limits): ignored")


def job_dir(args: argparse.Namespace, source: Source) -> Path:
    if args.job_dir:
        return Path(args.job_dir)
    assert source.path is not None
    return source.path.with_name(source.path.name[: len(source.path.name) - len(source.path.suffix)] + JOB_SUFFIX)


def _batch_price(args: argparse.Namespace, model: str) -> Decimal | None:
    price = pricing.price_per_million(model, args.price_per_million)
    return None if price is None else price * pricing.BATCH_DISCOUNT


def ingest(args: argparse.Namespace, store: Any, service: Any, records: Iterator[Any], source: Source,
           note: Note) -> Any:
    """Run the ingest as a Batch API job; returns the ingest's `Run` (what `summary.finish` reports).

    The run's cost is at the batch price: half the standard one (or of --price-per-million).
    """
    outcome = Run(price_per_million=_batch_price(args, str(service.model)))

    def sections() -> Iterator[dict[str, Any]]:
        for record in records:
            outcome.records += 1
            if record.error is not None:
                outcome.unreadable += 1
                continue
            yield record.section

    folder = job_dir(args, source)
    again = f"the job in {folder} continues when you run the same command again"
    note(f"Batch API job: {folder}")
    job = BatchJob(
        folder, service, store, batch_size=args.batch_size, skip_unchanged=not args.no_skip,
        max_enqueued_tokens=args.batch_queue_tokens,
        polling=Polling(interval=args.poll_interval, max_interval=max(300.0, args.poll_interval)), on_status=note,
    )
    try:
        outcome.result = job.run(sections(), finish_online=args.finish_online)
    except KeyboardInterrupt as exc:
        outcome.interrupted = exc
        outcome.result = dict(getattr(exc, "report", None) or {})
    except JobFolderError as exc:  # raised before anything was read or sent: nothing to continue
        raise CliError(str(exc), EXIT_USAGE) from None
    except RUN_STOPPING as exc:
        raise CliError(f"{stopped_message(exc)}; {again}", EXIT_USAGE) from None
    except (CoreError, OSError) as exc:  # e.g. the database went away half way
        raise CliError(f"{stopped_message(exc)}; {again}", EXIT_FAILED) from None
    report = outcome.result
    batch = report.get("batch") or {}
    if batch:
        note(f"Batch API: {batch['batches']:,} batch(es) in the job, {batch['batches_submitted']:,} submitted "
             f"and {batch['rows_written']:,} rows written by this run")
    if report.get("pending_count"):
        note(f"{report['pending_count']:,} sections are in batches still with the API: run the same command again "
             "to collect them (nothing is submitted twice)")
    return outcome


def dry_run(args: argparse.Namespace, source: Source, model: str) -> int:
    """Print the plan of a Batch API ingest of `source`: batches, tokens per batch against the queue
    budget, rounds of the queue, price at the batch rate; exit 1 when some sections would fail."""
    counts = {"records": 0, "unreadable": 0}

    def sections() -> Iterator[dict[str, Any]]:
        for record in open_records(source):
            counts["records"] += 1
            if record.error is not None:
                counts["unreadable"] += 1
                continue
            yield record.section

    options: dict[str, Any] = {"model": model, "max_batch_size": args.batch_size}
    if args.dimensions is not None:
        options["dimensions"] = args.dimensions
    with EmbeddingService(api_key="dry-run", **options) as service:  # never sends anything
        plan = plan_batches(sections(), service, batch_size=args.batch_size,
                            max_enqueued_tokens=args.batch_queue_tokens, price_per_million=args.price_per_million)
    codes = [failure["code"] for failure in plan["failures"]]
    too_long = sum(code == "embedding_failed" for code in codes)
    invalid = len(codes) - too_long
    failing = counts["unreadable"] + len(codes)
    price, cost = plan["batch_price_per_million"], plan["cost_usd"]
    if args.json:
        print(json.dumps({
            "dry_run": True, "batch_api": True, "file": source.label, "format": source.fmt, "model": model,
            "sections": counts["records"], "to_embed": plan["to_embed"], "unreadable": counts["unreadable"],
            "invalid": invalid, "too_long": too_long, "batches": plan["batches"], "files": plan["batches"],
            "requests": plan["requests"], "inputs": plan["inputs"], "tokens": plan["tokens"],
            "bytes": plan["bytes"], "queue_tokens": plan["queue_budget"], "batch_token_cap": plan["batch_token_cap"],
            "largest_batch_tokens": plan["largest_batch_tokens"], "queue_rounds": plan["rounds"],
            "price_per_million_usd": pricing.usd_text(price),
            "cost_usd": None if cost is None else float(cost), "cost_usd_exact": pricing.usd_text(cost),
        }))
        return EXIT_FAILED if failing else EXIT_OK
    print(f"dry run (Batch API): {source.label} ({source.fmt}), model {model}; nothing uploaded, embedded or stored")
    detail = f": {counts['unreadable']:,} unreadable, {invalid:,} invalid, {too_long:,} too long)" if failing else ")"
    print(f"  sections: {counts['records']:,} ({plan['to_embed']:,} to embed, {failing:,} would fail{detail}")
    size = f"{plan['bytes'] / 1e6:,.1f} MB" if plan["bytes"] >= 100_000 else f"{plan['bytes']:,} bytes"
    print(f"  batches: {plan['batches']:,} ({plan['requests']:,} requests, {plan['inputs']:,} inputs, {size}; "
          "at most 50,000 requests, 50,000 inputs and 200 MB each)")
    print(f"  tokens: {plan['tokens']:,} (cl100k_base, exact); per batch at most {plan['largest_batch_tokens']:,}, "
          f"built to {plan['batch_token_cap']:,} (half the queue)")
    source_of_budget = "--batch-queue-tokens" if args.batch_queue_tokens else "the tier-1 default; set --batch-queue-tokens"
    print(f"  queue: {plan['queue_budget']:,} enqueued tokens ({source_of_budget}): {plan['rounds']:,} round(s) "
          "of the queue; each batch goes as the queue frees")
    if cost is None:
        print(f"  cost: unknown (no price for {model}; pass --price-per-million USD)")
    else:
        print(f"  cost: {pricing.format_usd(cost)} at the Batch API's price (${price.normalize()} per 1M tokens, "
              "half the standard price)")
    print("  time: each batch within 24 hours (the Batch API's completion window)")
    print("  (sections already stored unchanged would be skipped, at no cost)")
    return EXIT_FAILED if failing else EXIT_OK
