"""What the async stores need that really differs from the sync ones; the sync twin is `_flavour.py`.

`tools/async_to_sync.py` rewrites the stores' code from async to sync; it does not rewrite this
module's pair: running several writes at once (tasks here, threads there), sleeping, locking and
telling Ctrl-C from any other cancellation are different mechanisms, not different spellings.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import FrameType
from typing import Any, TypeVar

__all__ = ["Cancelled", "Lock", "client_at_init", "current_loop", "interrupt_watch", "map_limited", "sleep"]

T = TypeVar("T")
R = TypeVar("R")

Lock = asyncio.Lock
"""Serialises the first connection / client creation among a store's concurrent callers."""
Cancelled = asyncio.CancelledError
"""How a stopped caller reaches a running ingest (asyncio.run turns Ctrl-C into this)."""
sleep = asyncio.sleep


async def map_limited(func: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """``[await func(item) for item in items]`` with at most `limit` running at once; results in order."""
    if limit <= 1 or len(items) <= 1:
        return [await func(item) for item in items]
    slots = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with slots:
            return await func(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


def current_loop() -> Any:
    """The running event loop: a client or pool made on another (an earlier ``asyncio.run``) is dead here."""
    return asyncio.get_running_loop()


def client_at_init(make: Callable[[str, str], Awaitable[Any]], url: str, key: str) -> Any:
    """None: an async supabase client is made by awaiting `make`, on first use (`__init__` cannot await)."""
    return None


# --- telling Ctrl-C from other cancellations ----------------------------------------------
# `asyncio.run` answers SIGINT by cancelling its main task, and raises a bare KeyboardInterrupt
# once the task has ended: an ingest sees only `CancelledError`, like any `asyncio.timeout` or
# a web client gone. While any ingest runs, a wrapper around the SIGINT handler counts SIGINTs
# (then calls the handler it wraps), so the ingest can tell which it was: for Ctrl-C it raises
# `IngestInterrupted` with its report; any other cancellation propagates as asyncio expects.

_sigints = 0
_watchers = 0
_wrapped: Any = None


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _sigints
    _sigints += 1
    previous = _wrapped
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_watch() -> Iterator[Callable[[], bool]]:
    """Within: a function telling whether SIGINT arrived since entry (always False off the main thread)."""
    global _watchers, _wrapped
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    if _watchers == 0:
        _wrapped = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, _on_sigint)
    _watchers += 1
    seen = _sigints
    try:
        yield lambda: _sigints > seen
    finally:
        _watchers -= 1
        if _watchers == 0 and signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, _wrapped)
