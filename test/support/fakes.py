"""Small fakes shared by the unit tests (imported as a top-level module, like the fixtures)."""

from __future__ import annotations

import threading


class FakeClock:
    """Monotonic fake time; `sleep` advances it and records every wait."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
