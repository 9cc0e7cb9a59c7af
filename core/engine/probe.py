"""One probe per service while the account's rate limits are unknown — no I/O, no clock.

Every request a driver is about to send asks the service's `ProbeGate` first, and the
answer is the same for the thread driver and the asyncio driver (they only differ in
how they wait while told to hold):

- ``SEND``: the limits are known (given, learned from headers, or a probe came back
  without any): nothing to learn first;
- ``PROBE``: limits unknown and no request of this service is out learning them: this
  one goes alone and is the probe;
- ``HOLD``: another request of this service is the probe; ask again shortly.

Within one call the plan (`core.engine.plan.EmbedPlan`) already holds its own requests
behind its small probe; the gate extends that to every call sharing one service: 100
single-text calls at once, or 8 threads of a web server calling one `EmbeddingService`,
would otherwise each send blind and mostly come back 429 (measured on the asyncio
driver, which had this gate alone until issue #20; the thread driver sent one probe
per concurrent call).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

__all__ = ["HOLD", "PROBE", "SEND", "ProbeGate"]

SEND: Final = "send"
PROBE: Final = "probe"
HOLD: Final = "hold"


class ProbeGate:
    """Which request of a service probes the limits; the others hold until it is back.

    Thread-safe (the thread driver's workers share it); an asyncio driver uses it from
    its loop's thread only. `release` must follow every `PROBE` answer, whatever became
    of the request (the driver's ``finally``), or the service's other requests would
    hold forever.
    """

    def __init__(self) -> None:
        self._owner: object | None = None
        self._lock = threading.Lock()

    def claim(self, request: object, *, known: bool) -> str:
        """``SEND``, ``PROBE`` or ``HOLD`` for `request` (`known`: the limits are known)."""
        if known:
            return SEND
        with self._lock:
            if self._owner is None:
                self._owner = request
                return PROBE
            return SEND if self._owner is request else HOLD

    def release(self, request: object, on_probe: Callable[[], None] | None = None) -> bool:
        """`request` is back (answered, failed or cancelled). Returns whether it was the probe.

        Args:
            request: The request `claim` was asked about.
            on_probe: Called, before the gate opens, when `request` was the probe: the
                driver marks the limits as probed there (learned, or absent from the
                answer), so no request of another thread claims a second probe between.
        """
        with self._lock:
            if self._owner is not request:
                return False
            if on_probe is not None:
                on_probe()
            self._owner = None
            return True

    @property
    def probing(self) -> bool:
        """A probe of this service is out."""
        return self._owner is not None
