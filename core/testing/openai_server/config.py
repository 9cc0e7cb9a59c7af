"""The server's config: the models it knows, every config key with its default, and validation."""

from __future__ import annotations

import math
from typing import Any

from .faults import FAULT_NAMES

__all__ = ["DEFAULT_CONFIG", "MODEL_DIMENSIONS", "validate_config"]

MODEL_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Native dimensions of the models the server knows."""

DEFAULT_CONFIG: dict[str, Any] = {
    "rpm": None,  # requests per window; None = unlimited
    "tpm": None,  # tokens per window; None = unlimited
    "window_seconds": 60.0,  # length of the rate-limit "minute"
    "max_inputs_per_request": 2048,
    "max_tokens_per_input": 8192,
    "max_tokens_per_request": 300_000,
    "latency_base": 0.0,  # an answer leaves no sooner than latency_base +
    "latency_per_token": 0.0,  # latency_per_token * request tokens seconds after arrival
    "fault_rates": {},  # {"500": p, "503": p, "hang": p, "short": p, "extra": p, "bad_index": p, "reset": p, "storm": p}
    "fault_script": [],  # fault names or "ok", consumed one per request before random faults
    "seed": 0,  # seed of the fault RNG
    "hang_seconds": 30.0,
    "storm_seconds": 1.0,  # how long a 429 storm (fault "storm") lasts
    "quota_exhausted": False,
}
"""Every config key and its default: no limits, no latency, no faults."""


def validate_config(changes: dict[str, Any]) -> None:
    """Raise ValueError when `changes` has an unknown key or a value of the wrong kind."""
    unknown = sorted(set(changes) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; known: {sorted(DEFAULT_CONFIG)}")

    def number(key: str, *, positive: bool = False, optional: bool = False) -> None:
        if key not in changes:
            return
        value = changes[key]
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"config {key!r} must be a finite number{' or None' if optional else ''}, got {value!r}")
        if value < 0 or (positive and value == 0):
            raise ValueError(f"config {key!r} must be {'> 0' if positive else '>= 0'}, got {value!r}")

    for key in ("rpm", "tpm"):
        number(key, positive=True, optional=True)
    for key in ("window_seconds", "max_inputs_per_request", "max_tokens_per_input", "max_tokens_per_request"):
        number(key, positive=True)
    for key in ("latency_base", "latency_per_token", "hang_seconds", "storm_seconds"):
        number(key)
    if "fault_rates" in changes:
        rates = changes["fault_rates"]
        if not isinstance(rates, dict):
            raise ValueError(f"config 'fault_rates' must be a dict, got {rates!r}")
        bad = sorted(set(rates) - set(FAULT_NAMES))
        if bad:
            raise ValueError(f"unknown fault name(s) {bad} in 'fault_rates'; known: {list(FAULT_NAMES)}")
        for name, p in rates.items():
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
                raise ValueError(f"fault rate {name!r} must be a probability in [0, 1], got {p!r}")
        if sum(rates.values()) > 1 + 1e-9:
            raise ValueError(f"fault rates sum to {sum(rates.values())} > 1")
    if "fault_script" in changes:
        script = changes["fault_script"]
        if not isinstance(script, list) or any(s not in FAULT_NAMES and s != "ok" for s in script):
            raise ValueError(f"config 'fault_script' must be a list of {list(FAULT_NAMES) + ['ok']}, got {script!r}")
    if "seed" in changes and (isinstance(changes["seed"], bool) or not isinstance(changes["seed"], (int, str))):
        raise ValueError(f"config 'seed' must be an int or str, got {changes['seed']!r}")
    if "quota_exhausted" in changes and not isinstance(changes["quota_exhausted"], bool):
        raise ValueError(f"config 'quota_exhausted' must be a bool, got {changes['quota_exhausted']!r}")
