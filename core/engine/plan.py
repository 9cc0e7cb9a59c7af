"""The embedding plan: which inputs go in which request, and what came of each — no I/O.

`EmbedPlan` is the scheduler every driver shares (the sync thread pool, the asyncio
driver, the Batch API's request files and the CLI's dry run):

1. every input is checked (a string, not empty, valid Unicode) and counted with
   tiktoken; one that cannot be sent fails alone with its index, a code and a reason;
2. identical texts are sent once, every copy gets the vector;
3. the rest are packed in order under both caps (inputs, tokens). While the
   account's rate limit is unknown the first request is a small probe whose
   answer's headers teach the limit; once it is known, requests are sized to a
   share of the per-minute token budget so several are in flight and the bucket
   drains smoothly instead of in whole-bucket lurches;
4. a driver takes requests (`next_request`), sends them however it likes, and
   reports back (`succeed`, `fail`, `too_large`); the plan accounts for every index.
"""

from __future__ import annotations

import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..limits import PROBE_REQUEST_TOKENS, REQUEST_SHARE_OF_BUDGET
from ..packing import pack_requests
from ..tokens import count_tokens_batch, truncate_to_tokens

__all__ = ["EmbedPlan", "EmbeddingBatch", "Request", "request_token_target"]


@dataclass
class EmbeddingBatch:
    """Everything one embedding call produced, by input index.

    Attributes:
        vectors: Input index -> float32 vector, for every input that succeeded.
        errors: Input index -> reason, for every input that failed.
        codes: Input index -> failure code (``invalid_type``, ``empty``,
            ``invalid_unicode``, ``too_long``, ``api_error``, ``cancelled``).
        token_counts: Tokens per input as sent (0 for inputs never sent).
        total_tokens: Tokens the API reported in `usage` over all successful requests.
        requests: HTTP requests sent, retries included.
        retries: Of those, how many were retries.
        rate_limited: How many answers were 429.
        last_error: The last failure, as a sanitized `EmbeddingAPIError` (no raw SDK
            exception is kept: a server that echoes the key would put it in tracebacks).
        dimensions: Width of every vector of this call (None until one arrived).
    """

    vectors: dict[int, array.array] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    codes: dict[int, str] = field(default_factory=dict)
    token_counts: list[int] = field(default_factory=list)
    total_tokens: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    last_error: BaseException | None = None
    dimensions: int | None = None

    @property
    def failed_indices(self) -> list[int]:
        return sorted(self.errors)

    @property
    def indices(self) -> list[int]:
        """Input indices that succeeded, in input order."""
        return sorted(self.vectors)

    def fail(self, index: int, code: str, reason: str) -> None:
        self.errors[index] = reason
        self.codes[index] = code


@dataclass(frozen=True)
class Request:
    """One `/v1/embeddings` request: the (first-occurrence) input indices it carries."""

    indices: tuple[int, ...]
    texts: tuple[str, ...]
    tokens: int
    probe: bool = False


def request_token_target(hard_cap: int, budget: float | None) -> int:
    """Tokens to pack per request: the API's cap, or a share of a known per-minute budget.

    A request worth the whole bucket makes the limiter wait for a full bucket each
    time, with one request in flight: a third of the ceiling was lost that way
    (measured, bench/bench_defaults.py). A share keeps several in flight.
    """
    if budget is None:
        return hard_cap
    return max(1, min(hard_cap, int(budget * REQUEST_SHARE_OF_BUDGET)))


class EmbedPlan:
    """Validate, count, dedupe and pack `texts`; then track every request to its end.

    Args:
        texts: The inputs; anything that is not a non-empty valid string fails alone.
        max_inputs: Inputs per request (<= 2048).
        max_tokens_per_request: The API's token cap per request.
        max_tokens_per_input: The model's token cap per input.
        truncate: Cut over-long inputs instead of failing them.
        budget: The account's tokens-per-minute budget, when known.
        probe: Make the first request a small probe and hold the rest until its
            answer (or its rate-limit headers) arrives.
    """

    def __init__(
        self,
        texts: Sequence[Any],
        *,
        max_inputs: int,
        max_tokens_per_request: int,
        max_tokens_per_input: int,
        truncate: bool = False,
        budget: float | None = None,
        probe: bool = False,
    ) -> None:
        self.max_inputs = max_inputs
        self.hard_cap = max_tokens_per_request
        self.max_tokens_per_input = max_tokens_per_input
        self.truncate = truncate
        self.budget = budget
        self.batch = EmbeddingBatch(token_counts=[0] * len(texts))
        self._copies: dict[int, list[int]] = {}  # first index -> every index with that text
        self._text: dict[int, str] = {}
        self._prepare(texts)
        self._in_flight = 0
        self._pending: deque[Request] = deque()
        firsts = list(self._copies)
        self.probing = False
        if probe and firsts:
            counts = self.batch.token_counts
            packed = pack_requests(firsts, counts, max_inputs=max_inputs, max_tokens=self.target, allow_oversize=True)
            if len(packed) > 1:  # one request needs no probe: it is all there is
                small = min(self.target, PROBE_REQUEST_TOKENS)
                probe_part = pack_requests(
                    firsts, counts, max_inputs=max_inputs, max_tokens=small, allow_oversize=True
                )[0]
                self._pending.append(self._request(probe_part, probe=True))
                firsts = firsts[len(probe_part):]
                self.probing = True
        self._pack(firsts)

    # --- planning --------------------------------------------------------------------------

    @property
    def target(self) -> int:
        """Tokens per request as currently packed."""
        return request_token_target(self.hard_cap, self.budget)

    def _prepare(self, texts: Sequence[Any]) -> None:
        """Check and count every input; group the sendable ones by text (`_copies`, `_text`)."""
        batch = self.batch
        strings: list[tuple[int, str]] = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                batch.fail(index, "invalid_type", f"not a string ({type(text).__name__})")
            elif not text:
                batch.fail(index, "empty", "empty text")
            elif not text.isascii() and (bad := _lone_surrogate(text)) is not None:
                # The SDK's JSON encoding would fail for the whole request, sinking every
                # other input in it under this one's error.
                batch.fail(index, "invalid_unicode", f"not valid Unicode (lone surrogate at position {bad})")
            else:
                strings.append((index, text))
        counts = count_tokens_batch([t for _, t in strings])
        limit = min(self.max_tokens_per_input, self.hard_cap, int(self.budget) if self.budget else self.hard_cap)
        what = "input" if limit == self.max_tokens_per_input else "request"
        first_of: dict[str, int] = {}
        for (index, text), tokens in zip(strings, counts):
            if tokens > limit:
                if not self.truncate:
                    batch.fail(index, "too_long", f"{tokens} tokens, over the {limit}-token {what} limit")
                    continue
                text = truncate_to_tokens(text, limit)
                tokens = count_tokens_batch([text])[0]
            batch.token_counts[index] = tokens
            first = first_of.setdefault(text, index)
            if first == index:
                self._copies[index] = [index]
                self._text[index] = text
            else:
                self._copies[first].append(index)

    def _request(self, indices: Sequence[int], *, probe: bool = False) -> Request:
        counts = self.batch.token_counts
        return Request(tuple(indices), tuple(self._text[i] for i in indices), sum(counts[i] for i in indices), probe)

    def _pack(self, firsts: list[int]) -> None:
        """Append `firsts` (in order) to the queue as requests of the current target size;
        an input above the known budget fails alone (it would be refused however long one waits)."""
        if self.budget is not None:
            budget = max(1, int(self.budget))
            fits = []
            for i in firsts:
                if self.batch.token_counts[i] > budget:
                    for j in self._copies[i]:
                        self.batch.fail(
                            j, "too_long",
                            f"{self.batch.token_counts[i]} tokens, over the {budget}-token request limit "
                            "(the account's tokens-per-minute budget)",
                        )
                else:
                    fits.append(i)
            firsts = fits
        for indices in pack_requests(
            firsts, self.batch.token_counts, max_inputs=self.max_inputs, max_tokens=self.target, allow_oversize=True
        ):
            self._pending.append(self._request(indices))

    def update(self, *, budget: float | None, probed: bool) -> None:
        """Take in what the rate limiter knows now: repack waiting requests to a new budget's size."""
        if probed:
            self.probing = False
        if budget != self.budget and budget is not None:
            old_target = self.target
            self.budget = budget
            if self.target != old_target and self._pending:
                waiting = sorted(i for request in self._pending for i in request.indices)
                self._pending.clear()
                self._pack(waiting)

    # --- running ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """The requests not yet taken (before a run: all of them)."""
        return list(self._pending)

    @property
    def errors(self) -> dict[int, str]:
        return self.batch.errors

    @property
    def token_counts(self) -> list[int]:
        return self.batch.token_counts

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def finished(self) -> bool:
        return not self._pending and self._in_flight == 0

    def next_request(self) -> Request | None:
        """The next request to send, or None (nothing left, or the probe's answer is awaited)."""
        if not self._pending or (self.probing and self._in_flight):
            return None
        self._in_flight += 1
        return self._pending.popleft()

    def indices_of(self, request: Request) -> list[int]:
        """Every input index served by `request` (copies of its texts included)."""
        return [i for first in request.indices for i in self._copies[first]]

    def succeed(self, request: Request, vectors: Sequence[array.array], used_tokens: int | None) -> None:
        """`request` came back aligned: its vectors go to every copy of its texts."""
        self._settle(request)
        for first, vector in zip(request.indices, vectors):
            for i in self._copies[first]:
                self.batch.vectors[i] = vector
        self.batch.total_tokens += used_tokens if used_tokens is not None else request.tokens

    def fail(self, request: Request, reason: str, *, code: str = "api_error") -> None:
        """`request` failed for good: every input it carried fails with `reason`."""
        self._settle(request)
        for i in self.indices_of(request):
            self.batch.fail(i, code, reason)

    def too_large(self, request: Request, budget: float) -> None:
        """`request` is above the account's whole token budget: repack its inputs smaller."""
        self._settle(request)
        self.budget = budget
        waiting = sorted([*request.indices, *(i for r in self._pending for i in r.indices)])
        self._pending.clear()
        self._pack(waiting)

    def cancel(self, reason: str = "cancelled before it was sent") -> None:
        """Drop every request not yet taken; their inputs fail with `reason` (code ``cancelled``)."""
        while self._pending:
            for i in self.indices_of(self._pending.popleft()):
                self.batch.fail(i, "cancelled", reason)

    def _settle(self, request: Request) -> None:
        self._in_flight -= 1
        if request.probe:
            self.probing = False


def _lone_surrogate(text: str) -> int | None:
    """Position of the first lone surrogate in `text` (not encodable as UTF-8), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None
