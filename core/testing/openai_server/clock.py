"""The server's wall clock for the Batch API: real time plus an offset tests can move.

Batches are timed in Unix seconds (``created_at``, ``expires_at``...) like the real
API. A test moves this clock forward (``POST /_control/batches/advance``) instead
of waiting: a 24-hour completion window then passes in milliseconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["ServerClock", "clock_of"]


class ServerClock:
    """``time.time()`` plus an offset that only grows."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        """Move the clock `seconds` forward; returns the new time."""
        if not seconds >= 0:
            raise ValueError(f"the clock only moves forward, not by {seconds!r} seconds")
        with self._lock:
            self.offset += seconds
        return self()

    def reset(self) -> None:
        with self._lock:
            self.offset = 0.0


_MAKING = threading.Lock()


def clock_of(state: Any) -> ServerClock:
    """The clock of the server owning `state` (made on first use)."""
    clock = getattr(state, "batch_clock", None)
    if clock is None:
        with _MAKING:
            clock = getattr(state, "batch_clock", None)
            if clock is None:
                clock = state.batch_clock = ServerClock()
    return clock
