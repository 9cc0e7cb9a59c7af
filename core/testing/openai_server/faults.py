"""Injectable faults: their names, how one is drawn per request, and what each does to an answer.

``500`` / ``503`` answer a server error (no rate-limit budget spent), ``hang``
never answers, ``short`` / ``extra`` / ``bad_index`` answer 200 with one vector
missing, one too many, or two under the same index.

``reset`` starts a 200 answer (status line, headers, half the body) and then
resets the connection (TCP RST): the client sees the connection die mid-response.
``storm`` starts a 429 storm: for ``storm_seconds`` every embeddings request is
answered 429 ``rate_limit_exceeded`` with ``retry-after-ms`` / ``retry-after``
saying when the storm ends (no budget spent); each of those 429s counts as one
``storm`` fault in the stats.
"""

from __future__ import annotations

import math
import random
import socket
import struct
import time
from collections import deque
from typing import Any, TypeVar

from .api import ApiError

__all__ = ["FAULT_NAMES", "SERVER_ERRORS", "draw_fault", "misalign", "send_then_reset", "storm_error"]

FAULT_NAMES: tuple[str, ...] = ("500", "503", "hang", "short", "extra", "bad_index", "reset", "storm")
"""Injectable faults, in the order random draws walk them (new ones go last: seeded draws stay put)."""

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


def storm_error(model: str, wait: float, headers: list[tuple[str, str]]) -> ApiError:
    """The 429 of a storm that ends in `wait` seconds (retry-after headers say so)."""
    return ApiError(
        429,
        f"Rate limit reached for {model} on requests per min (RPM): the service is under a burst of load. "
        f"Please try again in {max(1, math.ceil(wait * 1000))}ms.",
        "requests",
        "rate_limit_exceeded",
        headers=[*headers, ("retry-after-ms", str(max(1, math.ceil(wait * 1000)))),
                 ("retry-after", str(max(1, math.ceil(wait))))],
        fault="storm",
    )


def send_then_reset(connection: socket.socket, writer: Any, data: bytes) -> None:
    """Write the first half of `data` (a full HTTP answer) and reset the connection (RST, not FIN)."""
    try:
        writer.write(data[: max(1, len(data) // 2)])
        writer.flush()
        time.sleep(0.005)  # let the partial answer reach the client before the reset
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # the client is gone already
    connection.close()  # closes for real once the handler lets go of its files: linger 0 = RST
