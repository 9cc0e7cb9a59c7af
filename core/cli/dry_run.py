"""``ingest --dry-run``: tokens, requests and cost of an ingest, without a key, an API call or a database.

The sections are read, windowed (`core.engine.ingest_run.windows`) and validated by the
ingest's own bookkeeping (`IngestRun.take_window`: validation, first occurrence
of an id wins), and each window's texts are planned by the embedding engine
(`EmbedPlan`: token counts, inputs that cannot be sent, identical texts sent
once, packing under both caps), so the figures are what the ingest would send,
never a second implementation.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from .. import pricing
from ..engine.plan import EmbedPlan
from ..engine.ingest_run import IngestRun, windows
from ..limits import INGEST_WINDOW, MAX_TOKENS_PER_INPUT, MAX_TOKENS_PER_REQUEST, TOKENIZER_ENCODING
from .console import printable
from .sources import Source, open_records
from .status import EXIT_FAILED, EXIT_OK

__all__ = ["dry_run"]


def dry_run(args: argparse.Namespace, source: Source, model: str, *, tpm: float | None) -> int:
    """Print what ingesting `source` would cost; exit 1 when some sections would fail.

    Args:
        tpm: The tokens-per-minute budget the ingest would pace to (requests are sized to a share of it).
    """
    counts: Counter[str] = Counter()
    run = IngestRun(model)
    # As the service does: a section above the whole per-minute budget can never be sent.
    per_input = MAX_TOKENS_PER_INPUT if tpm is None or tpm >= MAX_TOKENS_PER_INPUT else max(1, int(tpm))
    target = MAX_TOKENS_PER_REQUEST
    example: str | None = None

    def sections() -> Iterator[Any]:
        for record in open_records(source):
            counts["records"] += 1
            if record.error is not None:
                counts["unreadable"] += 1
                continue
            yield record.section

    for chunk in windows(sections(), INGEST_WINDOW):
        window = run.take_window(chunk)
        plan = EmbedPlan(window.texts, max_inputs=args.batch_size, max_tokens_per_request=MAX_TOKENS_PER_REQUEST,
                         max_tokens_per_input=per_input, budget=tpm)
        counts["requests"] += len(plan.requests)
        counts["tokens"] += sum(request.tokens for request in plan.requests)
        counts["too_long"] += len(plan.errors)
        example = example or next(iter(plan.errors.values()), None)
        target = plan.target
    counts["invalid"] = run.counters.failed
    return _report(args, source, model, counts, target, example, tpm)


def _report(
    args: argparse.Namespace, source: Source, model: str, counts: Counter[str], target: int, example: str | None,
    tpm: float | None,
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
            "price_per_million_usd": pricing.usd_text(price),
            "cost_usd": None if cost is None else float(cost), "cost_usd_exact": pricing.usd_text(cost),
        }))
        return status
    print(printable(f"dry run: {source.label} ({source.fmt}), model {model}; nothing embedded or stored"))
    detail = ")"
    if failing:
        detail = (f": {counts['unreadable']:,} unreadable, {counts['invalid']:,} invalid, "
                  f"{counts['too_long']:,} too long)")
    print(f"  sections: {counts['records']:,} ({counts['records'] - failing:,} to embed, {failing:,} would fail{detail}")
    if example:
        print(printable(f"  too long, e.g.: {example}"))
    print(f"  tokens: {counts['tokens']:,} ({TOKENIZER_ENCODING}, exact)")
    print(f"  requests: {counts['requests']:,} (at most {args.batch_size:,} sections and {target:,} tokens each)")
    if cost is None:
        print(f"  cost: unknown (no price for {model}; pass --price-per-million USD)")
    else:
        print(f"  cost: {pricing.format_usd(cost)} (at ${price} per 1M tokens)")
    if tpm:
        print(f"  time: at least {counts['tokens'] / tpm:,.1f} min at {tpm:,.0f} tokens/min")
    print("  (sections already stored unchanged would be skipped, at no cost)")
    if failing:
        print("  (run it without --dry-run to get the failing sections in a file with their reasons)")
    return status
