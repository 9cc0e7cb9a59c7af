"""The server's wall clock for the Batch API: real time, optionally sped up, plus an offset tests can move.

Batches are timed in Unix seconds (``created_at``, ``expires_at``...) like the real
API. A test moves this clock forward (``POST /_control/batches/advance``) instead
of waiting: a 24-hour completion window then passes in milliseconds. A benchmark
sets a `rate` (batch config ``time_scale``: server seconds per real second) to run
hours of batches in minutes with the client polling in real time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["ServerClock", "clock_of"]


class ServerClock:
    """``time.time()``, running `rate` times as fast since the rate was set, plus an offset that only grows."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.rate = 1.0
        self.anchor = time.time()  # real time the rate was set at
        self._lock = threading.Lock()

    def __call__(self) -> float:
        real = time.time()
        return real + (real - self.anchor) * (self.rate - 1.0) + self.offset

    def set_rate(self, rate: float) -> None:
        """Run `rate` times as fast from now on (the clock never jumps)."""
        if not rate > 0:
            raise ValueError(f"the clock's rate must be > 0, not {rate!r}")
        with self._lock:
            now = self()
            self.anchor, self.rate = time.time(), float(rate)
            self.offset = now - self.anchor

    def advance(self, seconds: float) -> float:
        """Move the clock `seconds` forward; returns the new time."""
        if not seconds >= 0:
            raise ValueError(f"the clock only moves forward, not by {seconds!r} seconds")
        with self._lock:
            self.offset += seconds
        return self()

    def reset(self) -> None:
        with self._lock:
            self.offset, self.rate, self.anchor = 0.0, 1.0, time.time()


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
