"""What the request threads share, behind one lock: live config, rate limits, fault queue, stats, token counts."""

from __future__ import annotations

import copy
import random
import threading
import time
from collections import deque
from typing import Any

from core.engine.tokens import count_tokens_batch

from .config import DEFAULT_CONFIG, validate_config
from .faults import draw_fault, storm_error
from .ratelimit import RateLimits, quota_exhausted

__all__ = ["State"]

_COUNT_CACHE_MAX = 500_000
_LOG_MAX = 1_000_000  # stats keep the most recent requests' log entries


class State:
    """Everything the request threads share, behind one lock."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.config: dict[str, Any] = copy.deepcopy(DEFAULT_CONFIG)
        self.rng = random.Random(0)
        self.script: deque[str] = deque()
        self.limits = RateLimits(None, None, 60.0, time.monotonic())
        self.in_flight = 0
        self.storm_until = 0.0  # time.monotonic() a 429 storm ends
        self.count_cache: dict[bytes, int] = {}
        self.reset_stats()
        self.merge(config, initial=True)

    # -- config ------------------------------------------------------------------------
    def merge(self, changes: dict[str, Any], *, initial: bool = False) -> dict[str, Any]:
        validate_config(changes)
        with self.lock:
            self.config.update(copy.deepcopy(changes))
            if initial or "seed" in changes:
                self.rng = random.Random(self.config["seed"])
            if initial or "fault_script" in changes:
                self.script = deque(self.config["fault_script"])
            if initial or {"fault_rates", "fault_script"} & set(changes):
                self.storm_until = 0.0
            if initial or {"rpm", "tpm", "window_seconds"} & set(changes):
                cfg = self.config
                self.limits = RateLimits(cfg["rpm"], cfg["tpm"], cfg["window_seconds"], time.monotonic())
            return self.snapshot_config()

    def snapshot_config(self) -> dict[str, Any]:
        cfg = copy.deepcopy(self.config)
        cfg["fault_script"] = list(self.script)  # what is left of it
        return cfg

    # -- stats -------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.requests = 0
        self.by_status: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.tokens_ok = 0
        self.inputs_ok = 0
        self.max_in_flight = self.in_flight
        self.log: deque[list[Any]] = deque(maxlen=_LOG_MAX)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "faults": dict(self.faults),
                "tokens_ok": self.tokens_ok,
                "inputs_ok": self.inputs_ok,
                "max_in_flight": self.max_in_flight,
                "in_flight": self.in_flight,
                "log": [list(entry) for entry in self.log],
            }

    def begin(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, start: float, status: int, tokens: int, n_inputs: int, fault: str | None) -> None:
        end = time.monotonic()
        with self.lock:
            self.in_flight -= 1
            if status:
                key = str(status)
                self.by_status[key] = self.by_status.get(key, 0) + 1
            if fault:
                self.faults[fault] = self.faults.get(fault, 0) + 1
            if status == 200:
                self.tokens_ok += tokens
                self.inputs_ok += n_inputs
            self.log.append([start, end, status, tokens, n_inputs])

    # -- rate limits and faults ----------------------------------------------------------
    def current_rate_headers(self) -> list[tuple[str, str]]:
        with self.lock:
            self.limits.refill(time.monotonic())
            return self.limits.headers()

    def admit(self, model: str, tokens: int) -> tuple[str, list[tuple[str, str]]]:
        """Rate-limit check, then the fault to apply ("ok" or a FAULT_NAMES entry) and the rate headers.

        Raises ApiError(429) when the quota is exhausted or a bucket lacks the
        request or its tokens. A request answered (not 500/503) consumes one
        request and its tokens. During a 429 storm every request is refused.
        """
        with self.lock:
            limits = self.limits
            now = time.monotonic()
            limits.refill(now)
            if self.config["quota_exhausted"]:
                raise quota_exhausted(limits.headers())
            if now < self.storm_until:
                raise storm_error(model, self.storm_until - now, limits.headers())
            limits.check(model, tokens)
            fault = draw_fault(self.script, self.config["fault_rates"], self.rng)
            if fault == "storm":
                self.storm_until = now + self.config["storm_seconds"]
                raise storm_error(model, self.config["storm_seconds"], limits.headers())
            if fault not in ("500", "503"):
                limits.consume(tokens)
            return fault, limits.headers()

    # -- token counts ------------------------------------------------------------------
    def count_tokens(self, texts: list[str], digests: list[bytes]) -> list[int]:
        """Exact cl100k_base counts (core.engine.tokens), cached by the texts' 128-bit digests."""
        cache = self.count_cache
        counts = [cache.get(d) for d in digests]
        missing = [i for i, c in enumerate(counts) if c is None]
        if missing:
            fresh = count_tokens_batch([texts[i] for i in missing], num_threads=2 if len(missing) >= 64 else 1)
            if len(cache) > _COUNT_CACHE_MAX:
                cache.clear()
            for i, c in zip(missing, fresh):
                counts[i] = c
                cache[digests[i]] = c
        return counts  # type: ignore[return-value]
