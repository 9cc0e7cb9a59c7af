"""The ingest's progress bar: one line on stderr that fits an 80-column terminal.

    ingest  45%|██████▌       | 9.1k/20k 3.1k/s 1.2M tok/s 0 failed [00:03<00:03]

Counts are compact (``9.1k``, ``1.2M``) so the bar keeps its width and the
failure count is never cut off; without a known total (JSON, standard input)
the bar and percentage are left out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Metered", "ProgressBar", "compact"]

_WITH_TOTAL = "ingest {percentage:3.0f}%|{bar}| {desc} [{elapsed}<{remaining}]"
_WITHOUT_TOTAL = "ingest {desc} [{elapsed}]"


def compact(value: float) -> str:
    """``950``, ``9.1k``, ``20k``, ``123k``, ``1.2M``, ``45M``, ``3.4G``: at most 4 characters + unit."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size * 0.9995:
            scaled = value / size
            text = f"{scaled:.1f}" if abs(scaled) < 9.95 else f"{scaled:.0f}"
            return text.removesuffix(".0") + unit
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


class Metered:
    """The embedding service, with each request's tokens also counted here (for tokens/s)."""

    def __init__(self, service: Any, on_request: Callable[[int, int], None]) -> None:
        self._service = service
        self._on_request = on_request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def embed(self, texts: Sequence[Any], **options: Any) -> Any:
        progress = options.get("progress")

        def both(inputs: int, tokens: int) -> None:
            self._on_request(inputs, tokens)
            if progress is not None:
                progress(inputs, tokens)

        options["progress"] = both
        return self._service.embed(texts, **options)


class ProgressBar:
    """tqdm on stderr: sections done, sections/s, tokens/s, failures so far."""

    def __init__(self, total: int | None, *, disable: bool | None) -> None:
        from tqdm import tqdm

        self.total = total
        self.started = time.monotonic()
        self.tokens_sent = 0
        self.unreadable = 0
        self.shown = 0
        self.failed = 0
        self.bar = tqdm(
            total=total, file=sys.stderr, disable=disable, dynamic_ncols=True, mininterval=0.25,
            bar_format=_WITH_TOTAL if total else _WITHOUT_TOTAL, desc=self.stats(0, 0),
        )

    def on_request(self, inputs: int, tokens: int) -> None:
        self.tokens_sent += tokens

    def on_unreadable(self) -> None:
        self.unreadable += 1
        self._show(self.shown + 1, self.failed + 1)

    def on_ingest(self, counters: Any) -> None:
        self._show(counters.done + self.unreadable, counters.failed + self.unreadable)

    def stats(self, position: int, failed: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = compact(position) + (f"/{compact(self.total)}" if self.total else "")
        failures = f"{failed:,}" if failed < 100_000 else compact(failed)  # exact while it fits
        return f"{done} {compact(position / elapsed)}/s {compact(self.tokens_sent / elapsed)} tok/s {failures} failed"

    def _show(self, position: int, failed: int) -> None:
        self.failed = failed
        self.bar.set_description_str(self.stats(position, failed), refresh=False)
        if position > self.shown:
            self.bar.update(position - self.shown)
            self.shown = position

    def close(self) -> None:
        self.bar.set_description_str(self.stats(self.shown, self.failed), refresh=True)
        self.bar.close()
