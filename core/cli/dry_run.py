"""``ingest --dry-run``: tokens, requests and cost of an ingest, without a key, an API call or a database.

The sections are read and validated as the ingest would (`core.stores.ingest.validate_section`,
first occurrence of an id wins) in the same windows, and each window's texts are
planned by the embedding engine itself (`EmbeddingService.plan`: token counts,
inputs that cannot be sent, identical texts sent once, packing under both caps),
so the figures are what the ingest would send, never a second implementation.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from .. import pricing
from ..limits import INGEST_WINDOW, MAX_TOKENS_PER_INPUT, MAX_TOKENS_PER_REQUEST, TOKENIZER_ENCODING
from .parser import EXIT_FAILED, EXIT_OK
from .sources import Source, open_records

__all__ = ["dry_run"]


def _service(args: argparse.Namespace, model: str) -> Any:
    from ..embed.service import EmbeddingService

    options: dict[str, Any] = {"max_batch_size": args.batch_size, "tokens_per_minute": args.tpm}
    if args.tpm is not None and args.tpm < MAX_TOKENS_PER_INPUT:
        options["max_tokens_per_input"] = max(1, int(args.tpm))  # as the ingest does
    return EmbeddingService(api_key="dry-run", model=model, **options)  # never sends anything


def dry_run(args: argparse.Namespace, source: Source, model: str) -> int:
    """Print what ingesting `source` would cost; exit 1 when some sections would fail."""
    from ..stores.ingest import section_text, validate_section

    service = _service(args, model)
    counts: Counter[str] = Counter()
    target = MAX_TOKENS_PER_REQUEST
    example: str | None = None

    def plan(texts: list[str]) -> None:
        """One ingest window: its valid texts, as the service would send them."""
        nonlocal target, example
        embed_plan = service.plan(texts, max_batch_size=args.batch_size)
        counts["requests"] += len(embed_plan.requests)
        counts["tokens"] += sum(request.tokens for request in embed_plan.requests)
        counts["too_long"] += len(embed_plan.errors)
        example = example or next(iter(embed_plan.errors.values()), None)
        target = int(getattr(embed_plan, "target", target))

    try:
        seen: set[int] = set()
        window: list[str] = []
        slots = 0  # sections handed to the ingest in this window (invalid ones take a slot too)
        for record in open_records(source):
            counts["records"] += 1
            if record.error is not None:
                counts["unreadable"] += 1
                continue
            section = record.section
            slots += 1
            if validate_section(section) is not None or section["id"] in seen:
                counts["invalid"] += 1
            else:
                seen.add(section["id"])
                window.append(section_text(section["title"], section["content"]))
            if slots == INGEST_WINDOW:
                plan(window)
                window, slots = [], 0
        if window:
            plan(window)
    finally:
        service.close()
    return _report(args, source, model, counts, target, example)


def _report(
    args: argparse.Namespace, source: Source, model: str, counts: Counter[str], target: int, example: str | None
) -> int:
    price = pricing.price_per_million(model, args.price_per_million)
    cost = pricing.estimate_cost(counts["tokens"], model, args.price_per_million)
    failing = counts["unreadable"] + counts["invalid"] + counts["too_long"]
    status = EXIT_FAILED if failing else EXIT_OK
    if args.json:
        print(json.dumps({
            "dry_run": True, "file": source.label, "format": source.fmt, "model": model,
            "sections": counts["records"], "to_embed": counts["records"] - failing,
            "unreadable": counts["unreadable"], "invalid": counts["invalid"], "too_long": counts["too_long"],
            "tokens": counts["tokens"], "requests": counts["requests"],
            "price_per_million_usd": pricing.usd_text(price), "cost_usd": pricing.usd_text(cost),
        }))
        return status
    print(f"dry run: {source.label} ({source.fmt}), model {model}; nothing embedded or stored")
    detail = ")"
    if failing:
        detail = (f": {counts['unreadable']:,} unreadable, {counts['invalid']:,} invalid, "
                  f"{counts['too_long']:,} too long)")
    print(f"  sections: {counts['records']:,} ({counts['records'] - failing:,} to embed, {failing:,} would fail{detail}")
    if example:
        print(f"  too long, e.g.: {example}")
    print(f"  tokens: {counts['tokens']:,} ({TOKENIZER_ENCODING}, exact)")
    print(f"  requests: {counts['requests']:,} (at most {args.batch_size:,} sections and {target:,} tokens each)")
    if cost is None:
        print(f"  cost: unknown (no price for {model}; pass --price-per-million USD)")
    else:
        print(f"  cost: {pricing.format_usd(cost)} (at ${price} per 1M tokens)")
    if args.tpm:
        print(f"  time: at least {counts['tokens'] / args.tpm:,.1f} min at {args.tpm:,.0f} tokens/min")
    print("  (sections already stored unchanged would be skipped, at no cost)")
    if failing:
        print("  (run it without --dry-run to get the failing sections in a file with their reasons)")
    return status
