"""The plan of a Batch API ingest, for the dry run: batches, tokens against the queue budget, rounds, price.

`plan_batches` runs the very preparation of `BatchJob.run` without I/O (`batch_job.estimate`)
and adds what the queue makes of it: how many rounds of the enqueued-token queue the
batches take (a round is the batches in the queue at once: as many as the budget holds,
in order), and the price at the Batch API's rate.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from .. import pricing
from .batch_job import DEFAULT_LIMITS, estimate
from .files import BatchLimits

__all__ = ["plan_batches", "queue_rounds"]


def queue_rounds(batch_tokens: list[int], budget: int) -> int:
    """Rounds of a queue of `budget` tokens that batches of `batch_tokens` (in order) take.

    A round holds consecutive batches while their tokens fit the budget (a batch above it
    goes alone). Batches go as the queue frees, so this is a count of the queue's
    turnovers, not of waits: a batch that ends early lets the next one in sooner.
    """
    rounds, held = 0, 0
    for tokens in batch_tokens:
        if held == 0 or held + tokens > budget:
            rounds += 1
            held = 0
        held += tokens
    return rounds


def plan_batches(
    sections: Iterable[Any],
    service: Any,
    *,
    batch_size: int = 2048,
    limits: BatchLimits = DEFAULT_LIMITS,
    max_enqueued_tokens: int | None = None,
    price_per_million: Decimal | float | str | None = None,
) -> dict[str, Any]:
    """`estimate`'s figures plus ``rounds`` (of the queue), ``largest_batch_tokens``, ``batch_price_per_million``
    and ``cost_usd`` (Decimal, at the Batch API's price: half the standard one, or of `price_per_million`;
    None when the model's price is unknown). No I/O."""
    figures = estimate(sections, service, batch_size=batch_size, limits=limits,
                       max_enqueued_tokens=max_enqueued_tokens)
    model = str(service.model)
    price = pricing.price_per_million(model, price_per_million)
    batch_price = None if price is None else price * pricing.BATCH_DISCOUNT
    figures.update(
        rounds=queue_rounds(figures["batch_tokens"], figures["queue_budget"]),
        largest_batch_tokens=max(figures["batch_tokens"], default=0),
        batch_price_per_million=batch_price,
        cost_usd=None if batch_price is None else pricing.estimate_cost(figures["tokens"], model, batch_price),
    )
    return figures
