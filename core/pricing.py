"""What embedding tokens cost: a small price table and exact arithmetic.

Prices are OpenAI's list prices for standard (non-batch) embeddings requests,
in US dollars per million input tokens. They change rarely but they do change:
the CLI takes ``--price-per-million`` to override them, and a model missing from
the table has no price (its cost is reported as unknown, never guessed).
"""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = [
    "BATCH_DISCOUNT",
    "PRICE_PER_MILLION_TOKENS",
    "batch_cost",
    "estimate_cost",
    "format_usd",
    "price_per_million",
    "usd_text",
]

PRICE_PER_MILLION_TOKENS: dict[str, Decimal] = {
    "text-embedding-3-small": Decimal("0.02"),
    "text-embedding-3-large": Decimal("0.13"),
    "text-embedding-ada-002": Decimal("0.10"),
}
"""USD per 1,000,000 input tokens, by model."""


def price_per_million(model: str, override: float | Decimal | str | None = None) -> Decimal | None:
    """USD per million tokens for `model`: `override` if given, else the table's; None if unknown.

    Raises:
        ValueError: `override` is negative or not a number.
    """
    if override is not None:
        price = Decimal(str(override))
        if not price.is_finite() or price < 0:
            raise ValueError(f"price per million tokens must be a number >= 0, not {override!r}")
        return price
    return PRICE_PER_MILLION_TOKENS.get(model)


def estimate_cost(tokens: int, model: str, override: float | Decimal | str | None = None) -> Decimal | None:
    """Exact USD cost of `tokens` tokens of `model`, or None when the price is unknown."""
    price = price_per_million(model, override)
    if price is None:
        return None
    return Decimal(tokens) * price / Decimal(1_000_000)


BATCH_DISCOUNT = Decimal("0.5")
"""The Batch API's price, as a share of the standard price (50%)."""


def batch_cost(tokens: int, model: str, override: float | Decimal | str | None = None) -> Decimal | None:
    """Exact USD cost of `tokens` tokens sent through the Batch API: half the standard price
    (`override` is the standard price per million, as for `estimate_cost`); None when unknown."""
    cost = estimate_cost(tokens, model, override)
    return None if cost is None else cost * BATCH_DISCOUNT


def format_usd(amount: Decimal | float | None) -> str:
    """``$1.23``, ``$0.0000469`` (up to three significant digits below a cent), or ``unknown``."""
    if amount is None:
        return "unknown"
    value = Decimal(str(amount)) if not isinstance(amount, Decimal) else amount
    if value == 0:
        return "$0.00"
    if abs(value) >= Decimal("0.01"):
        return f"${value:,.2f}"
    decimals = min(12, -math.floor(math.log10(abs(float(value)))) + 2)
    text = f"{value:.{decimals}f}".rstrip("0")
    return f"${text}"


def usd_text(amount: Decimal | None) -> str | None:
    """`amount` as a plain decimal string (no exponent), for JSON output; None stays None."""
    if amount is None:
        return None
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
