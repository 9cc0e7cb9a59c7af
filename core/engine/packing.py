"""Packing inputs into requests that respect both the input-count and the token cap."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pack_requests"]


def pack_requests(
    indices: Sequence[int],
    token_counts: Sequence[int],
    *,
    max_inputs: int,
    max_tokens: int,
    allow_oversize: bool = False,
) -> list[list[int]]:
    """Group `indices` into requests, in order, each filled as far as both limits allow.

    A request closes when adding the next input would exceed `max_inputs` inputs or
    `max_tokens` tokens summed, so the number of requests is the fewest an
    order-preserving packing can reach (the seed's call counts rely on this).

    Args:
        indices: Input indices to send, in the order to send them.
        token_counts: Token count per input, indexed by input index (each must be
            <= `max_tokens`; longer inputs are rejected before packing).
        max_inputs: Inputs per request, at least 1.
        max_tokens: Tokens per request, at least 1.
        allow_oversize: Send an input above `max_tokens` alone in its own request
            instead of raising (when `max_tokens` is a pacing target below the
            API's hard cap, which the caller has already enforced).

    Returns:
        Lists of input indices, one per request.

    Raises:
        ValueError: A limit below 1, or an input alone above `max_tokens` (unless `allow_oversize`).
    """
    if max_inputs < 1 or max_tokens < 1:
        raise ValueError(f"limits must be >= 1 (max_inputs={max_inputs}, max_tokens={max_tokens})")
    requests: list[list[int]] = []
    current: list[int] = []
    current_tokens = 0
    for index in indices:
        tokens = token_counts[index]
        if tokens > max_tokens and not allow_oversize:
            raise ValueError(f"input {index} has {tokens} tokens, above the {max_tokens}-token request cap")
        if current and (len(current) >= max_inputs or current_tokens + tokens > max_tokens):
            requests.append(current)
            current, current_tokens = [], 0
        current.append(index)
        current_tokens += tokens
    if current:
        requests.append(current)
    return requests
