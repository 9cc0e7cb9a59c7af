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

COUNT_CHUNK = 256
"""Inputs checked and counted at a time (~110k tokens of ~440-token sections: ~20 ms)."""
from .packing import pack_requests
from .tokens import count_tokens_batch, truncate_to_tokens

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

    Inputs are checked and counted incrementally, a chunk at a time, as requests are
    taken: the first request leaves after ~one request's worth of counting instead
    of the whole call's (tokenizing is ~0.17 us of CPU per token, 0.75 s per 10,000
    sections of ~440 tokens), and the drivers count while earlier requests are in
    flight. `requests`, `errors` and `token_counts` count everything first (the dry
    run and the Batch API want the whole plan at once).

    Args:
        texts: The inputs; anything that is not a non-empty valid string fails alone.
        max_inputs: Inputs per request (<= 2048).
        max_tokens_per_request: The API's token cap per request.
        max_tokens_per_input: The model's token cap per input.
        truncate: Cut over-long inputs instead of failing them.
        budget: The account's tokens-per-minute budget, when known.
        probe: Make the first request a small probe (when there is more than one)
            and hold the rest until its answer (or its rate-limit headers) arrives.
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
        self._texts = texts
        self._cursor = 0  # inputs checked and counted so far
        self._first_of: dict[str, int] = {}
        self._copies: dict[int, list[int]] = {}  # first index -> every index with that text
        self._text: dict[int, str] = {}
        self._unpacked: list[int] = []  # counted first-occurrence indices not yet in a request
        self._unpacked_tokens = 0
        self._pending: deque[Request] = deque()
        self._in_flight = 0
        self._want_probe = probe
        self.probing = False

    # --- planning --------------------------------------------------------------------------

    @property
    def target(self) -> int:
        """Tokens per request as currently packed."""
        return request_token_target(self.hard_cap, self.budget)

    @property
    def exhausted(self) -> bool:
        """Every input checked and counted."""
        return self._cursor >= len(self._texts)

    def _advance(self, chunk: int = COUNT_CHUNK) -> None:
        """Check and count the next `chunk` inputs; queue the sendable ones for packing."""
        batch = self.batch
        stop = min(len(self._texts), self._cursor + chunk)
        strings: list[tuple[int, str]] = []
        for index in range(self._cursor, stop):
            text = self._texts[index]
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
        self._cursor = stop
        counts = count_tokens_batch([t for _, t in strings], num_threads=1)
        limit = min(self.max_tokens_per_input, self.hard_cap, int(self.budget) if self.budget else self.hard_cap)
        what = "input" if limit == self.max_tokens_per_input else "request"
        for (index, text), tokens in zip(strings, counts):
            if tokens > limit:
                if not self.truncate:
                    batch.fail(index, "too_long", f"{tokens} tokens, over the {limit}-token {what} limit")
                    continue
                text = truncate_to_tokens(text, limit)
                tokens = count_tokens_batch([text])[0]
            batch.token_counts[index] = tokens
            first = self._first_of.setdefault(text, index)
            if first == index:
                self._copies[index] = [index]
                self._text[index] = text
                self._unpacked.append(index)
                self._unpacked_tokens += tokens
            else:
                self._copies[first].append(index)

    def _fill(self) -> None:
        """Count until a full request can be packed (or everything is counted), then pack."""
        target = self.target
        while not self.exhausted and self._unpacked_tokens <= target and len(self._unpacked) <= self.max_inputs:
            self._advance()
        if self._want_probe:
            self._want_probe = False
            if not self.exhausted or self._unpacked_tokens > target or len(self._unpacked) > self.max_inputs:
                # More than one request: the first is a small probe.
                small = min(target, PROBE_REQUEST_TOKENS)
                probe = pack_requests(
                    self._unpacked, self.batch.token_counts, max_inputs=self.max_inputs, max_tokens=small,
                    allow_oversize=True,
                )[0]
                self._take_unpacked(len(probe))
                self._pending.append(self._request(probe, probe=True))
                self.probing = True
                return
        self._pack(self._take_unpacked(len(self._unpacked)), keep_tail=not self.exhausted)

    def _take_unpacked(self, count: int) -> list[int]:
        taken, self._unpacked = self._unpacked[:count], self._unpacked[count:]
        self._unpacked_tokens = sum(self.batch.token_counts[i] for i in self._unpacked)
        return taken

    def _request(self, indices: Sequence[int], *, probe: bool = False) -> Request:
        counts = self.batch.token_counts
        return Request(tuple(indices), tuple(self._text[i] for i in indices), sum(counts[i] for i in indices), probe)

    def _pack(self, firsts: list[int], *, keep_tail: bool = False) -> None:
        """Queue `firsts` (in order) as requests of the current target size; with `keep_tail`,
        a last, not yet full request goes back to be filled by inputs still to count.
        An input above the known budget fails alone (refused however long one waits)."""
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
        packed = pack_requests(
            firsts, self.batch.token_counts, max_inputs=self.max_inputs, max_tokens=self.target, allow_oversize=True
        )
        if keep_tail and packed:
            tail_tokens = sum(self.batch.token_counts[i] for i in packed[-1])
            if tail_tokens < self.target and len(packed[-1]) < self.max_inputs:  # room left: fill it later
                self._unpacked = packed.pop() + self._unpacked
                self._unpacked_tokens = sum(self.batch.token_counts[i] for i in self._unpacked)
        for indices in packed:
            self._pending.append(self._request(indices))

    def _prepare_all(self) -> None:
        while not self.exhausted:
            self._advance(len(self._texts))
        if self._unpacked:
            self._fill()
            if self._unpacked:
                self._pack(self._take_unpacked(len(self._unpacked)))

    def update(self, *, budget: float | None, probed: bool) -> None:
        """Take in what the rate limiter knows now: repack waiting requests to a new budget's size."""
        if probed:
            self.probing = False
            self._want_probe = False
        if budget != self.budget and budget is not None:
            old_target = self.target
            self.budget = budget
            if self.target != old_target and self._pending:
                self._repack()

    def _repack(self, extra: Sequence[int] = ()) -> None:
        waiting = sorted([*extra, *(i for request in self._pending for i in request.indices), *self._unpacked])
        self._pending.clear()
        self._unpacked, self._unpacked_tokens = [], 0
        self._pack(waiting, keep_tail=not self.exhausted)

    # --- running ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """The requests not yet taken (before a run: all of them; counts every input first)."""
        self._prepare_all()
        return list(self._pending)

    @property
    def errors(self) -> dict[int, str]:
        """Input index -> reason for every input that failed (counts every input first)."""
        self._prepare_all()
        return self.batch.errors

    @property
    def token_counts(self) -> list[int]:
        """Tokens per input (counts every input first)."""
        self._prepare_all()
        return self.batch.token_counts

    def single_request(self) -> bool:
        """Whether everything fits one request (counts at most ~one request's worth of inputs)."""
        if not self._pending and (self._unpacked or not self.exhausted):
            self._fill()
        return self.exhausted and not self._unpacked and len(self._pending) <= 1

    @property
    def counted_ahead(self) -> bool:
        """`next_request` would answer without tokenizing anything: a request is packed and
        waiting, the probe's answer is awaited, or every input is counted already. A driver
        may run `next_request` away from its I/O (a worker thread) when this is False."""
        return bool(self._pending) or (self.probing and self._in_flight > 0) or self.exhausted

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def finished(self) -> bool:
        return self.exhausted and not self._unpacked and not self._pending and self._in_flight == 0

    def next_request(self) -> Request | None:
        """The next request to send, or None (nothing left, or the probe's answer is awaited)."""
        if self.probing and self._in_flight:
            return None
        while not self._pending and (self._unpacked or not self.exhausted):
            self._fill()
            if self.exhausted and self._unpacked and not self._pending:
                self._pack(self._take_unpacked(len(self._unpacked)))
        if not self._pending:
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
        self._repack(request.indices)

    def cancel(self, reason: str = "cancelled before it was sent") -> None:
        """Drop every request not yet taken and every input not yet counted; they fail with
        `reason` (code ``cancelled``)."""
        while self._pending:
            for i in self.indices_of(self._pending.popleft()):
                self.batch.fail(i, "cancelled", reason)
        for first in self._unpacked:
            for i in self._copies[first]:
                self.batch.fail(i, "cancelled", reason)
        self._unpacked, self._unpacked_tokens = [], 0
        for index in range(self._cursor, len(self._texts)):
            self.batch.fail(index, "cancelled", reason)
        self._cursor = len(self._texts)

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
