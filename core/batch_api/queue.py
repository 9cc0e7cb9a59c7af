"""The job's view of the Batch API's enqueued-token queue: a budget, learned from refusals, saved in the job.

Every account has, per model, a limit on the tokens of its batches not yet
finished. A batch that would pass it is accepted by ``POST /v1/batches`` and then
fails validation with ``token_limit_exceeded``. The job keeps its batches in flight
under a budget (`QueueBudget.budget`: ``max_enqueued_tokens``, else the tier-1
figure `core.limits.BATCH_QUEUE_TOKENS`), builds every batch to a share of it, and
learns from each refusal:

- refused while batches of the job were in flight, or alone: the budget halves
  (of what was refused: the job's batches in flight plus this one), and nothing
  more is submitted until one of the job's batches ends;
- refused shortly after a batch of the job ended: the API had not freed that
  batch's tokens yet (a release lag); the lag is learned (doubling from
  `core.limits.BATCH_RELEASE_LAG_START`) and ended batches' tokens count as held for that long.

A refused batch's lines go again, free (no attempt counted), after a wait that
doubles with each refusal in a row (bounded); a run refused for
`core.limits.BATCH_STALL_SECONDS` with nothing accepted stops with
`BatchQueueStalledError`, the job resumable. What was learned (budget, lag) is saved
in ``job.json`` (``queue``): a resumed run starts from it.

Time here is the run's waiting time (the sum of its sleeps), so an injected sleep
that moves a test server's clock moves this one too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BatchQueueStalledError, ConfigurationError
from ..limits import (
    BATCH_MAX_REFUSAL_BACKOFF,
    BATCH_MAX_RELEASE_LAG,
    BATCH_QUEUE_MIN_TOKENS,
    BATCH_QUEUE_SHARES,
    BATCH_QUEUE_TOKENS,
    BATCH_REFUSAL_BACKOFF,
    BATCH_RELEASE_LAG_START,
    BATCH_REQUEST_SHARE,
    BATCH_STALL_SECONDS,
    MAX_TOKENS_PER_INPUT,
    MAX_TOKENS_PER_REQUEST,
)

__all__ = ["QueueBudget", "batch_tokens", "check_queue_tokens", "request_tokens"]


def check_queue_tokens(value: Any) -> int | None:
    """`value` as a queue budget (an int >= 1, or None for the default); ConfigurationError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"max_enqueued_tokens must be an integer >= 1 or None, not {value!r}")
    return value


def batch_tokens(budget: int) -> int:
    """The tokens one batch is built to under a queue `budget` (`BATCH_QUEUE_SHARES` batches fill it)."""
    return max(1, budget // BATCH_QUEUE_SHARES)


def request_tokens(budget: int) -> int:
    """The tokens one request line may carry under a queue `budget` (room for one full input at least)."""
    return min(MAX_TOKENS_PER_REQUEST, max(MAX_TOKENS_PER_INPUT + 1, batch_tokens(budget) // BATCH_REQUEST_SHARE))


@dataclass
class QueueBudget:
    """The budget, the learned release lag, the refusal backoff and the stall clock of one run.

    Args:
        saved: The job's ``queue`` record (``{"set", "budget", "release_lag", "refusals"}``), changed in place.
        max_enqueued_tokens: The caller's budget (None: the saved one, else `BATCH_QUEUE_TOKENS`).
        stall_seconds: Waiting without progress after which the run stops.
    """

    saved: dict[str, Any]
    max_enqueued_tokens: int | None = None
    stall_seconds: float = BATCH_STALL_SECONDS
    waited: float = 0.0
    hold_until: float = 0.0
    backoff: float = BATCH_REFUSAL_BACKOFF
    wait_for_ours: bool = False
    last_progress: float = 0.0
    ended: list[tuple[float, int]] = field(default_factory=list)
    """(waiting time it ended, tokens) of the job's batches that ended in this run."""

    def __post_init__(self) -> None:
        chosen = check_queue_tokens(self.max_enqueued_tokens)
        saved = self.saved
        if chosen is not None and saved.get("set") != chosen:  # a new figure from the caller replaces what was learned
            saved.update(set=chosen, budget=chosen)
        saved.setdefault("set", chosen)
        saved.setdefault("budget", chosen or BATCH_QUEUE_TOKENS)
        saved.setdefault("release_lag", 0.0)
        saved.setdefault("refusals", 0)

    @property
    def budget(self) -> int:
        return int(self.saved["budget"])

    @property
    def release_lag(self) -> float:
        return float(self.saved["release_lag"])

    def batch_tokens(self) -> int:
        return batch_tokens(self.budget)

    # --- time -------------------------------------------------------------------------------
    def slept(self, seconds: float) -> None:
        self.waited += seconds

    def progress(self) -> None:
        """Something was accepted or collected: the stall clock starts again."""
        self.last_progress = self.waited

    def check_stall(self) -> None:
        """Raises BatchQueueStalledError once the run waited `stall_seconds` without progress."""
        idle = self.waited - self.last_progress
        if idle >= self.stall_seconds:
            raise BatchQueueStalledError(
                f"the Batch API refused this job's batches for {idle / 3600:,.1f} hours with nothing accepted "
                f"(its enqueued-token queue stays full: other batches of the account hold it, or its limit for "
                f"this model is below {self.batch_tokens():,} tokens); the job is saved", waited=idle)

    # --- room in the queue ------------------------------------------------------------------
    def lagging(self) -> int:
        """Tokens of ended batches the API may not have freed yet (within the learned release lag)."""
        lag = self.release_lag
        return sum(tokens for at, tokens in self.ended if self.waited < at + lag)

    def may_submit(self, tokens: int, in_flight: int, ours_in_flight: bool) -> bool:
        """Whether a batch of `tokens` may go now, with `in_flight` tokens of the job's batches out."""
        if self.waited < self.hold_until or (self.wait_for_ours and ours_in_flight):
            return False
        held = in_flight + self.lagging()
        return held == 0 or held + tokens <= self.budget

    def next_room_in(self) -> float:
        """Waiting time until the queue may have room (the backoff ends or a lagging batch frees), >= 0."""
        times = [self.hold_until] + [at + self.release_lag for at, _ in self.ended]
        future = [t - self.waited for t in times if t > self.waited]
        return min(future, default=0.0)

    def note_submit(self, entry: dict[str, Any], in_flight: int) -> None:
        """Record what the queue held when `entry` went (to read a refusal of it later)."""
        recent = [self.waited - at for at, _ in self.ended]
        entry["queue"] = {"budget": self.budget, "held": in_flight + self.lagging(),
                          "since_end": min(recent) if recent else None}

    def note_end(self, tokens: int) -> None:
        """A batch of the job ended (its tokens free once the release lag has passed)."""
        window = max(BATCH_RELEASE_LAG_START, 2 * self.release_lag)  # what `refused` and `lagging` look at
        self.ended = [(at, t) for at, t in self.ended if self.waited < at + window]
        self.ended.append((self.waited, tokens))
        self.wait_for_ours = False

    def note_accepted(self) -> None:
        """A batch was accepted (it runs): refusals in a row end."""
        self.backoff = BATCH_REFUSAL_BACKOFF
        self.progress()

    # --- learning ---------------------------------------------------------------------------
    def refused(self, entry: dict[str, Any], others_in_flight: bool) -> str:
        """Learn from `entry` refused with ``token_limit_exceeded``; returns what was learned (for the notes)."""
        seen = entry.get("queue") or {}
        self.saved["refusals"] = int(self.saved["refusals"]) + 1
        self.hold_until = self.waited + self.backoff
        wait = self.backoff
        self.backoff = min(BATCH_MAX_REFUSAL_BACKOFF, self.backoff * 2)
        self.wait_for_ours = others_in_flight
        lesson = f"waiting {wait:,.0f} s"
        if seen.get("budget") != self.budget:
            return lesson + " (the budget was lowered since it went)"
        since_end = seen.get("since_end")
        lag = self.release_lag
        if since_end is not None and since_end < max(BATCH_RELEASE_LAG_START, 2 * lag) and lag < BATCH_MAX_RELEASE_LAG:
            self.saved["release_lag"] = min(BATCH_MAX_RELEASE_LAG, max(BATCH_RELEASE_LAG_START, 2 * lag))
            return lesson + (f"; a batch of the job had just ended: its tokens are counted as queued for "
                             f"{self.release_lag:,.0f} s after a batch ends")
        refused = min(self.budget, int(seen.get("held") or 0) + int(entry["tokens"]))
        budget = max(BATCH_QUEUE_MIN_TOKENS, refused // 2)
        if budget >= self.budget:
            return lesson + " (the account's other batches hold the queue)"
        self.saved["budget"] = budget
        return lesson + f"; the job's queue budget is now {budget:,} tokens (batches of {self.batch_tokens():,})"
