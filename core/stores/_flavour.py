"""What the sync stores need that really differs from the async ones; the async twin is `_flavour_async.py`.

Hand-written, like its twin (see there): threads instead of tasks, `time.sleep`, a thread lock,
and no cancellation to tell apart (Ctrl-C reaches a sync ingest as KeyboardInterrupt itself).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Cancelled", "Lock", "client_at_init", "current_loop", "interrupt_watch", "map_limited", "sleep"]

T = TypeVar("T")
R = TypeVar("R")

Lock = threading.Lock
sleep = time.sleep


class Cancelled(BaseException):
    """Never raised: a sync ingest has no cancellation other than KeyboardInterrupt."""


def map_limited(func: Callable[[T], R], items: Sequence[T], limit: int) -> list[R]:
    """``[func(item) for item in items]`` on up to `limit` threads; results in order."""
    workers = min(limit, len(items))
    if workers <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="core-store") as pool:
        return list(pool.map(func, items))


def current_loop() -> None:
    """None: no event loop to outlive (the async twin's tells a client made on a dead loop)."""
    return None


def client_at_init(make: Callable[[str, str], Any], url: str, key: str) -> Any:
    """``make(url, key)`` now: a bad URL or key fails in the constructor, where the caller passed it."""
    return make(url, key)


@contextlib.contextmanager
def interrupt_watch() -> Iterator[Callable[[], bool]]:
    """As the async twin's; Ctrl-C needs no watching here."""
    yield lambda: False
