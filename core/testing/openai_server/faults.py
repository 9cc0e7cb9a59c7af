"""Injectable faults: their names, how one is drawn per request, and what each does to an answer.

``500`` / ``503`` answer a server error (no rate-limit budget spent), ``hang``
never answers, ``short`` / ``extra`` / ``bad_index`` answer 200 with one vector
missing, one too many, or two under the same index.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TypeVar

__all__ = ["FAULT_NAMES", "SERVER_ERRORS", "draw_fault", "misalign"]

FAULT_NAMES: tuple[str, ...] = ("500", "503", "hang", "short", "extra", "bad_index")
"""Injectable faults, in the order random draws walk them."""

SERVER_ERRORS: dict[str, tuple[int, str]] = {
    "500": (500, "The server had an error while processing your request. Sorry about that!"),
    "503": (503, "The server is overloaded or not ready yet."),
}
"""The server-error faults: (HTTP status, message)."""

_Row = TypeVar("_Row")


def draw_fault(script: deque[str], rates: dict[str, float], rng: random.Random) -> str:
    """The next request's fault ("ok" or a FAULT_NAMES entry): the script's next entry, else a random draw."""
    if script:
        return script.popleft()
    if not rates:
        return "ok"
    u = rng.random()
    acc = 0.0
    for name in FAULT_NAMES:
        acc += rates.get(name, 0.0)
        if u < acc:
            return name
    return "ok"


def misalign(fault: str | None, rows: list[_Row], indices: list[int]) -> tuple[list[_Row], list[int]]:
    """The rows and indices a 200 answer carries under `fault` (unchanged unless short/extra/bad_index)."""
    n = len(indices)
    if fault == "short":
        rows, indices = rows[:-1], indices[:-1]
    elif fault == "extra":
        rows, indices = rows + rows[-1:], indices + [n]
    elif fault == "bad_index":
        if n >= 2:
            indices = indices[:-1] + [indices[-2]]
        else:
            rows, indices = rows + rows, indices + [0]
    return rows, indices
