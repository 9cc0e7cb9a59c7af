"""A local OpenAI-compatible `/v1/embeddings` server for tests and benchmarks.

Nothing here touches the internet. The server runs as its own process on
127.0.0.1 and behaves, as a client sees it, like the real embeddings API:
bearer auth, the documented request limits and their error bodies, exact
cl100k_base token counts (`core.tokens`), `float` / `base64` encodings,
shortened `dimensions`, rate-limit headers and continuously refilling RPM/TPM
buckets, plus configurable latency and injectable faults.

Run it by hand::

    python -m core.testing.openai_server --port 0 --config '{"tpm": 100000}'

It prints ``LISTENING http://127.0.0.1:PORT`` as its first stdout line. From
Python use :class:`FakeOpenAIServer` (a context manager that starts and stops
the process). Each returned vector is :func:`expected_embedding` of its text,
so tests can check that every vector belongs to its input.

Control plane on the same port: ``GET/POST /_control/config`` (POST merges JSON
into the config), ``GET /_control/stats`` and ``POST /_control/reset``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import math
import random
import re
import socketserver
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from core.tokens import count_tokens_batch, get_encoding
from core.testing._process import ServerProcess, read_request_body, watch_stdin_eof

__all__ = [
    "DEFAULT_CONFIG",
    "FAULT_NAMES",
    "MODEL_DIMENSIONS",
    "FakeOpenAIServer",
    "expected_embedding",
    "expected_embeddings",
    "format_duration",
    "main",
]

MODEL_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Native dimensions of the models the server knows."""

FAULT_NAMES: tuple[str, ...] = ("500", "503", "hang", "short", "extra", "bad_index")
"""Injectable faults, in the order random draws walk them."""

DEFAULT_CONFIG: dict[str, Any] = {
    "rpm": None,  # requests per window; None = unlimited
    "tpm": None,  # tokens per window; None = unlimited
    "window_seconds": 60.0,  # length of the rate-limit "minute"
    "max_inputs_per_request": 2048,
    "max_tokens_per_input": 8192,
    "max_tokens_per_request": 300_000,
    "latency_base": 0.0,  # an answer leaves no sooner than latency_base +
    "latency_per_token": 0.0,  # latency_per_token * request tokens seconds after arrival
    "fault_rates": {},  # {"500": p, "503": p, "hang": p, "short": p, "extra": p, "bad_index": p}
    "fault_script": [],  # fault names or "ok", consumed one per request before random faults
    "seed": 0,  # seed of the fault RNG
    "hang_seconds": 30.0,
    "quota_exhausted": False,
}
"""Every config key and its default: no limits, no latency, no faults."""

_ORG = "org-fake0000000000000000000"
_NOISE_DIMS = 16
_NOISE_SCALE = 0.01
_WORD_RE = re.compile(r"\w+")
_COUNT_CACHE_MAX = 500_000
_LOG_MAX = 1_000_000  # stats keep the most recent requests' log entries
_LONG_WORD = 48  # longer words are hashed with zlib directly
_MAX_BODY = 256 * 1024 * 1024

# ---------------------------------------------------------------------------------------
# Embedding values
# ---------------------------------------------------------------------------------------

def _ascii_word_table() -> bytes:
    table = bytearray(b" " * 256)
    for c in b"abcdefghijklmnopqrstuvwxyz0123456789_":
        table[c] = c
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = c + 32
    return bytes(table)


_ASCII_WORD_TABLE = _ascii_word_table()
"""bytes.translate table: ASCII word characters lower-cased, everything else a space."""


def _word_bytes(text: str) -> bytes:
    """`text`'s lower-cased ``\\w+`` words as UTF-8, separated by spaces (and maybe padded with spaces).

    ASCII texts take a C-speed path (translate) that gives exactly what the
    regex gives, since ``\\w`` on ASCII is ``[A-Za-z0-9_]``. UTF-8 multi-byte
    sequences never contain a space byte, so words stay separable.
    """
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORD_TABLE)
    return b" ".join(w.encode("utf-8", "surrogatepass") for w in _WORD_RE.findall(text.lower()))


def _crc32_table() -> np.ndarray:
    """zlib's crc32 byte table (reflected polynomial 0xEDB88320)."""
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & np.uint32(1), (t >> np.uint32(1)) ^ np.uint32(0xEDB88320), t >> np.uint32(1))
    return t.astype(np.uint32)


_CRC_TABLE = _crc32_table()


def _word_codes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(row, zlib.crc32(word)) for every lower-cased ``\\w+`` word of every text, vectorised.

    All texts' words go in one byte buffer and the crc32 of every word is
    computed at once, one byte position per step; words are sorted longest
    first so the words still going form a prefix. Equal to zlib.crc32 of each
    word's UTF-8 bytes, without a Python call per word.
    """
    n = len(texts)
    joined = "\n".join(texts)
    if joined.isascii():
        buf = joined.encode("ascii").translate(_ASCII_WORD_TABLE)
        sizes = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    else:
        parts = [_word_bytes(t) for t in texts]
        buf = b" ".join(parts)
        sizes = np.fromiter(map(len, parts), dtype=np.int64, count=n)
    text_starts = np.zeros(n, dtype=np.int64)
    np.cumsum(sizes[:-1] + 1, out=text_starts[1:])
    data = np.frombuffer(buf, dtype=np.uint8)
    in_word = np.zeros(len(data) + 2, dtype=np.int8)
    np.not_equal(data, 32, out=in_word[1:-1].view(np.bool_))
    edges = np.flatnonzero(np.diff(in_word))  # alternating word starts and ends
    starts = edges[0::2]
    lengths = edges[1::2] - starts
    rows = np.searchsorted(text_starts, starts, side="right") - 1
    codes = np.empty(len(starts), dtype=np.uint32)
    long = lengths > _LONG_WORD
    if long.any():  # rare; a byte-position loop over them would be long
        idx = np.flatnonzero(long)
        codes[idx] = [zlib.crc32(buf[p : p + ln]) for p, ln in zip(starts[idx].tolist(), lengths[idx].tolist())]
        idx = np.flatnonzero(~long)
        codes[idx] = _crc32_words(data, starts[idx], lengths[idx])
    else:
        codes[:] = _crc32_words(data, starts, lengths)
    return rows, codes


def _crc32_words(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """zlib.crc32 of each data[start : start + length], one byte position per step for all words."""
    n_words = len(starts)
    if n_words == 0:
        return np.zeros(0, dtype=np.uint32)
    max_len = int(lengths.max())
    order = np.argsort((max_len - lengths).astype(np.uint16), kind="stable")  # radix sort: longest first
    pos = starts[order]
    going = n_words - np.cumsum(np.bincount(lengths, minlength=max_len + 1))  # going[j]: words longer than j
    crc = np.full(n_words, 0xFFFFFFFF, dtype=np.uint32)
    table, low8, s8 = _CRC_TABLE, np.uint32(0xFF), np.uint32(8)
    for j in range(max_len):
        k = going[j]
        c = crc[:k]
        crc[:k] = table[(c ^ data[pos[:k] + j]) & low8] ^ (c >> s8)
    crc ^= np.uint32(0xFFFFFFFF)
    codes = np.empty(n_words, dtype=np.uint32)
    codes[order] = crc
    return codes


def _digests(texts: Sequence[str]) -> list[bytes]:
    """A 128-bit digest per text: token-count cache key and seed of its own component."""
    b2 = hashlib.blake2b
    return [b2(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _embed(texts: Sequence[str], dimensions: int, native: int, digests: Sequence[bytes] | None = None) -> np.ndarray:
    """Rows of little-endian float32, L2-normalised: the vectors of `texts`.

    Native vector = feature-hashed bag of lower-cased ``\\w+`` words (bucket =
    crc32 & 0x7fffffff mod `native`, sign = the crc's top bit, weight = count)
    plus a tiny dense text-specific component on the first 16 dimensions
    (seeded from the text's blake2b digest), so texts sharing words are close
    while distinct texts never coincide. A shortened vector is the first
    `dimensions` components of the native one, renormalised (as OpenAI does).
    """
    n = len(texts)
    if digests is None:
        digests = _digests(texts)
    rows, codes = _word_codes(texts)
    counts = np.bincount(rows, minlength=n)
    buckets = (codes & np.uint32(0x7FFFFFFF)) % np.uint32(native)
    signs = np.where(codes >> np.uint32(31), -1.0, 1.0)
    offsets = rows * dimensions
    if dimensions < native:
        keep = buckets < dimensions
        buckets, signs, offsets = buckets[keep], signs[keep], offsets[keep]
    out = np.bincount(offsets + buckets, weights=signs, minlength=n * dimensions)
    out = out.astype(np.float64, copy=False).reshape(n, dimensions)  # bincount of nothing is int64

    k = min(_NOISE_DIMS, dimensions)
    seeds = np.frombuffer(b"".join(d[:8] for d in digests), dtype="<u8").astype(np.uint64)
    with np.errstate(over="ignore"):
        x = seeds[:, None] + np.arange(1, k + 1, dtype=np.uint64)[None, :] * np.uint64(0xD1B54A32D192ED03)
    unit = (_splitmix64(x) >> np.uint64(11)).astype(np.float64) * (2.0 / 2**53) - 1.0  # in [-1, 1)
    amplitude = _NOISE_SCALE * np.sqrt(np.maximum(counts, 1).astype(np.float64))
    out[:, :k] += amplitude[:, None] * unit

    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    norms[norms == 0.0] = 1.0
    np.divide(out, norms[:, None], out=out)
    return out.astype("<f4")


def expected_embeddings(
    texts: Sequence[str], dimensions: int = 1536, *, model: str = "text-embedding-3-small"
) -> np.ndarray:
    """The (len(texts), dimensions) float32 matrix the server returns for `texts`."""
    native = MODEL_DIMENSIONS[model]
    if not 1 <= dimensions <= native:
        raise ValueError(f"dimensions must be in 1..{native} for {model}, got {dimensions}")
    return _embed(list(texts), dimensions, native)


def expected_embedding(text: str, dimensions: int = 1536, *, model: str = "text-embedding-3-small") -> np.ndarray:
    """The float32, L2-normalised vector the server returns for `text` (deterministic).

    `model` only matters through its native size: small and ada-002 (1536)
    agree; large (3072) hashes words into twice as many buckets.
    """
    return expected_embeddings([text], dimensions, model=model)[0]


# ---------------------------------------------------------------------------------------
# Response encoding (vectorised: no per-float Python work)
# ---------------------------------------------------------------------------------------

_DIGIT_POWERS = 10 ** np.arange(8, -1, -1, dtype=np.int64)  # 1e8 .. 1


def _float_json_rows(mat: np.ndarray) -> list[bytes]:
    """Each row as a JSON array of numbers with 9 significant digits (round-trips float32)."""
    if len(mat) > 256:  # bound the temporaries
        return [row for i in range(0, len(mat), 256) for row in _float_json_rows(mat[i : i + 256])]
    n, d = mat.shape
    a = np.abs(mat.astype(np.float64))
    nonzero = a > 0
    safe = np.where(nonzero, a, 1.0)
    exp = np.floor(np.log10(safe)).astype(np.int64)
    mant = np.rint(safe * 10.0 ** (8 - exp))
    hi = mant >= 1e9
    exp[hi] += 1
    lo = mant < 1e8
    exp[lo] -= 1
    fix = hi | lo
    mant[fix] = np.rint(safe[fix] * 10.0 ** (8 - exp[fix]))
    mant = np.where(nonzero, mant, 0).astype(np.int64)
    exp = np.where(nonzero, exp, 0)

    buf = np.empty((n, d, 16), dtype=np.uint8)
    buf[..., 0] = np.where(mat < 0, ord("-"), ord(" "))
    digits = (mant[..., None] // _DIGIT_POWERS) % 10 + ord("0")
    buf[..., 1] = digits[..., 0]
    buf[..., 2] = ord(".")
    buf[..., 3:11] = digits[..., 1:]
    buf[..., 11] = ord("e")
    buf[..., 12] = np.where(exp < 0, ord("-"), ord("+"))
    aexp = np.abs(exp)
    buf[..., 13] = aexp // 10 + ord("0")
    buf[..., 14] = aexp % 10 + ord("0")
    buf[..., 15] = ord(",")
    raw = buf.tobytes()
    width = d * 16
    return [b"[" + raw[i * width : (i + 1) * width - 1].replace(b" ", b"") + b"]" for i in range(n)]


def _base64_rows(mat: np.ndarray) -> list[bytes | memoryview]:
    """Each row as base64 of its little-endian float32 bytes."""
    n, d = mat.shape
    mat = np.ascontiguousarray(mat, dtype="<f4")
    if (d * 4) % 3 == 0:  # rows end on base64 group boundaries: encode once, slice
        enc = memoryview(base64.b64encode(mat.tobytes()))
        width = d * 4 // 3 * 4
        return [enc[i * width : (i + 1) * width] for i in range(n)]
    return [base64.b64encode(row.tobytes()) for row in mat]


# ---------------------------------------------------------------------------------------
# Config, rate limits, stats
# ---------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """A duration as OpenAI's rate-limit headers write it: ``120ms``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    total_ms = max(0, round(seconds * 1000))
    if total_ms == 0:
        return "0s"
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, ms = divmod(rest, 60_000)
    secs = f"{ms // 1000}.{ms % 1000:03d}".rstrip("0").rstrip(".")
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{secs}s"


def _validate_config(changes: dict[str, Any]) -> None:
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
    for key in ("latency_base", "latency_per_token", "hang_seconds"):
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


class _Bucket:
    """A continuously refilling bucket: capacity `limit`, refill `limit / window` per second."""

    def __init__(self, limit: float, window: float, now: float) -> None:
        self.capacity = float(limit)
        self.rate = float(limit) / float(window)
        self.level = float(limit)
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        return max(0.0, (amount - self.level) / self.rate)

    def until_full(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str | None = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        fault: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = list(headers)
        self.fault = fault

    def body(self) -> bytes:
        err = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": err}).encode()


def _input_invalid(message: str | None = None) -> _ApiError:
    return _ApiError(
        400, message or "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        param="input",
    )


class _State:
    """Everything the request threads share, behind one lock."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.config: dict[str, Any] = copy.deepcopy(DEFAULT_CONFIG)
        self.rng = random.Random(0)
        self.script: deque[str] = deque()
        self.rpm: _Bucket | None = None
        self.tpm: _Bucket | None = None
        self.in_flight = 0
        self.count_cache: dict[bytes, int] = {}
        self.reset_stats()
        self.merge(config, initial=True)

    # -- config ------------------------------------------------------------------------
    def merge(self, changes: dict[str, Any], *, initial: bool = False) -> dict[str, Any]:
        _validate_config(changes)
        with self.lock:
            self.config.update(copy.deepcopy(changes))
            if initial or "seed" in changes:
                self.rng = random.Random(self.config["seed"])
            if initial or "fault_script" in changes:
                self.script = deque(self.config["fault_script"])
            if initial or {"rpm", "tpm", "window_seconds"} & set(changes):
                now = time.monotonic()
                cfg = self.config
                self.rpm = _Bucket(cfg["rpm"], cfg["window_seconds"], now) if cfg["rpm"] is not None else None
                self.tpm = _Bucket(cfg["tpm"], cfg["window_seconds"], now) if cfg["tpm"] is not None else None
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

    # -- rate limits -------------------------------------------------------------------
    def rate_headers(self) -> list[tuple[str, str]]:
        """x-ratelimit-* headers of the configured limits (call with the lock held, after refill)."""
        headers: list[tuple[str, str]] = []
        for bucket, kind in ((self.rpm, "requests"), (self.tpm, "tokens")):
            if bucket is None:
                continue
            headers += [
                (f"x-ratelimit-limit-{kind}", str(int(bucket.capacity))),
                (f"x-ratelimit-remaining-{kind}", str(max(0, int(bucket.level)))),
                (f"x-ratelimit-reset-{kind}", format_duration(bucket.until_full())),
            ]
        return headers

    def current_rate_headers(self) -> list[tuple[str, str]]:
        with self.lock:
            now = time.monotonic()
            for bucket in (self.rpm, self.tpm):
                if bucket is not None:
                    bucket.refill(now)
            return self.rate_headers()

    def admit(self, model: str, tokens: int) -> tuple[str, list[tuple[str, str]]]:
        """Rate-limit check, then the fault to apply ("ok" or a FAULT_NAMES entry).

        Raises _ApiError(429) when a bucket lacks the request or its tokens. A
        request answered (not 500/503) consumes one request and its tokens.
        """
        with self.lock:
            cfg = self.config
            now = time.monotonic()
            for bucket in (self.rpm, self.tpm):
                if bucket is not None:
                    bucket.refill(now)
            if cfg["quota_exhausted"]:
                raise _ApiError(
                    429,
                    "You exceeded your current quota, please check your plan and billing details. For more "
                    "information on this error, read the docs: "
                    "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                    "insufficient_quota",
                    "insufficient_quota",
                    headers=self.rate_headers(),
                )
            if self.tpm is not None and tokens > self.tpm.capacity:
                raise _ApiError(
                    429,
                    f"Request too large for {model} in organization {_ORG} on tokens per min (TPM): "
                    f"Limit {int(self.tpm.capacity)}, Requested {tokens}. The input or output tokens must be "
                    "reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits "
                    "to learn more.",
                    "tokens",
                    "rate_limit_exceeded",
                    headers=self.rate_headers(),
                )
            short: list[tuple[_Bucket, str, str, float]] = []
            if self.rpm is not None and self.rpm.level < 1:
                short.append((self.rpm, "requests", "RPM", 1))
            if self.tpm is not None and self.tpm.level < tokens:
                short.append((self.tpm, "tokens", "TPM", tokens))
            if short:
                wait = max(bucket.wait_for(amount) for bucket, _, _, amount in short)
                bucket, kind, abbrev, amount = short[0]
                used = int(math.ceil(bucket.capacity - bucket.level))
                headers = self.rate_headers() + [
                    ("retry-after-ms", str(max(1, math.ceil(wait * 1000)))),
                    ("retry-after", str(max(1, math.ceil(wait)))),
                ]
                raise _ApiError(
                    429,
                    f"Rate limit reached for {model} in organization {_ORG} on {kind} per min ({abbrev}): "
                    f"Limit {int(bucket.capacity)}, Used {used}, Requested {int(amount)}. Please try again in "
                    f"{format_duration(wait)}. Visit https://platform.openai.com/account/rate-limits to learn more.",
                    kind,
                    "rate_limit_exceeded",
                    headers=headers,
                )
            fault = self._draw_fault()
            if fault not in ("500", "503"):
                if self.rpm is not None:
                    self.rpm.level -= 1
                if self.tpm is not None:
                    self.tpm.level -= tokens
            return fault, self.rate_headers()

    def _draw_fault(self) -> str:
        if self.script:
            return self.script.popleft()
        rates = self.config["fault_rates"]
        if not rates:
            return "ok"
        u = self.rng.random()
        acc = 0.0
        for name in FAULT_NAMES:
            acc += rates.get(name, 0.0)
            if u < acc:
                return name
        return "ok"

    # -- token counts ------------------------------------------------------------------
    def count_tokens(self, texts: list[str], digests: list[bytes]) -> list[int]:
        """Exact cl100k_base counts (core.tokens), cached by the texts' 128-bit digests."""
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


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 411: "Length Required",
    413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}
_SERVER_ERRORS = {
    "500": (500, "The server had an error while processing your request. Sorry about that!"),
    "503": (503, "The server is overloaded or not ready yet."),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "fake-openai"
    timeout = 600  # idle keep-alive connections are dropped after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

    # -- plumbing ------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self.close_connection = True
            raise _ApiError(413, f"Request body too large ({length} bytes).")
        return read_request_body(self)

    def _send(self, status: int, body: bytes | list[bytes | memoryview], headers: Iterable[tuple[str, str]] = ()) -> None:
        payload = body if isinstance(body, bytes) else b"".join(body)
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n",
            f"date: {formatdate(usegmt=True)}\r\n",
            "content-type: application/json\r\n",
            f"content-length: {len(payload)}\r\n",
        ]
        head += [f"{k}: {v}\r\n" for k, v in headers]
        if self.close_connection:
            head.append("connection: close\r\n")
        head.append("\r\n")
        self.wfile.write(b"".join(("".join(head).encode("latin-1"), payload)))

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        state = self.server.state
        try:
            body = self._read_body()
        except _ApiError as exc:
            self._send(exc.status, exc.body())
            return
        except (ValueError, OSError):
            self.close_connection = True
            self._send(400, _ApiError(400, "Malformed request body.").body())
            return
        if path.startswith("/_control/"):
            self._control(path, body)
            return
        self._api(path, body, state)

    # -- control plane -------------------------------------------------------------------
    def _control(self, path: str, body: bytes) -> None:
        state = self.server.state
        method = self.command
        if path == "/_control/config" and method == "GET":
            with state.lock:
                self._send_json(200, state.snapshot_config())
        elif path == "/_control/config" and method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("config must be a JSON object")
                self._send_json(200, state.merge(changes))
            except ValueError as exc:
                self._send_json(400, {"error": str(exc)})
        elif path == "/_control/stats" and method == "GET":
            self._send_json(200, state.stats())
        elif path == "/_control/reset" and method == "POST":
            with state.lock:
                state.reset_stats()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": f"unknown control endpoint {method} {path}"})

    # -- the API -------------------------------------------------------------------------
    def _api(self, path: str, body: bytes, state: _State) -> None:
        start = time.monotonic()
        state.begin()
        status, tokens, n_inputs, fault = 0, 0, 0, None
        response: tuple[list[bytes | memoryview], list[tuple[str, str]]] | None = None
        request_id = "req_" + uuid.uuid4().hex
        try:
            try:
                if path != "/v1/embeddings" or self.command != "POST":
                    raise _ApiError(404, f"Invalid URL ({self.command} {path})")
                try:
                    status, tokens, n_inputs, fault, response = self._embeddings(body, state, start, request_id)
                except _ApiError:
                    raise
                except Exception as exc:  # a bug of ours or a tokenizer failure: answer, don't drop
                    print(f"fake OpenAI server: internal error: {exc!r}", file=sys.stderr, flush=True)
                    raise _ApiError(500, f"Internal error in the fake server: {exc!r}", "server_error") from exc
            except _ApiError as exc:
                status, fault = exc.status, exc.fault
                headers = [("x-request-id", request_id), ("openai-processing-ms", str(_ms_since(start)))]
                headers += exc.headers or state.current_rate_headers()
                response = ([exc.body()], headers)
        finally:
            state.end(start, status, tokens, n_inputs, fault)  # before answering: a client then sees it in stats
        if response is not None:
            self._send(status, *response)

    def _embeddings(
        self, body: bytes, state: _State, start: float, request_id: str
    ) -> tuple[int, int, int, str | None, tuple[list[bytes | memoryview], list[tuple[str, str]]] | None]:
        """Handle one embeddings request: (status, tokens, n_inputs, fault, (body parts, headers) or None)."""
        auth = self.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
                "username) if you're accessing the API from your browser and are prompted for a username and "
                "password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
            )
        try:
            req = json.loads(body)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            raise _ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
                "JSON. If you have trouble figuring out how to fix this, please contact us through our help center "
                "at help.openai.com.)",
            )
        cfg = state.config
        model = req.get("model")
        if model is None:
            raise _ApiError(400, "you must provide a model parameter", param="model")
        if not isinstance(model, str):
            raise _ApiError(400, f"{model!r} is not of type 'string' - 'model'", param="model")
        if "input" not in req:
            raise _ApiError(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
        fmt = req.get("encoding_format")
        if fmt is None:
            fmt = "float"
        if fmt not in ("float", "base64"):
            raise _ApiError(
                400, f"Invalid value for 'encoding_format': expected one of 'float' or 'base64', but got {fmt!r} instead.",
                param="encoding_format", code="invalid_value",
            )
        user = req.get("user")
        if user is not None and not isinstance(user, str):
            raise _ApiError(400, f"{user!r} is not of type 'string' - 'user'", param="user")

        if model not in MODEL_DIMENSIONS:
            raise _ApiError(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        native = MODEL_DIMENSIONS[model]
        dims = req.get("dimensions")
        if dims is None:
            dims = native
        else:
            if not model.startswith("text-embedding-3"):
                raise _ApiError(400, "This model does not support specifying dimensions.", param="dimensions")
            if isinstance(dims, bool) or not isinstance(dims, int):
                raise _ApiError(400, f"Invalid type for 'dimensions': expected an integer, but got {dims!r} instead.",
                                param="dimensions", code="invalid_type")
            if dims < 1:
                raise _ApiError(400, f"Invalid value for 'dimensions' = {dims}. Must be at least 1.",
                                param="dimensions", code="invalid_value")
            if dims > native:
                raise _ApiError(
                    400, f"Invalid 'dimensions': integer above maximum value. Expected a value <= {native}, "
                    f"but got {dims} instead.", param="dimensions", code="integer_above_max_value",
                )

        texts, counts, digests = _parse_input(req["input"], state, cfg)
        n = len(texts)
        limit_input = cfg["max_tokens_per_input"]
        for c in counts:
            if c > limit_input:
                raise _ApiError(
                    400, f"This model's maximum context length is {limit_input} tokens, however you requested {c} "
                    f"tokens ({c} in your prompt; 0 for the completion). Please reduce your prompt; or completion length.",
                )
        total = sum(counts)
        if total > cfg["max_tokens_per_request"]:
            raise _ApiError(
                400, f"Requested {total} tokens, max {cfg['max_tokens_per_request']} tokens per request",
                code="max_tokens_per_request",
            )

        fault, rate_headers = state.admit(model, total)
        delay = cfg["latency_base"] + cfg["latency_per_token"] * total
        if fault == "hang":
            time.sleep(cfg["hang_seconds"])
            self.close_connection = True  # close without answering
            return 0, total, n, fault, None
        if fault in _SERVER_ERRORS:
            _sleep_until(start + delay)
            code, message = _SERVER_ERRORS[fault]
            raise _ApiError(code, message, "server_error", headers=rate_headers, fault=fault)

        mat = _embed(texts, dims, native, digests)
        rows = _base64_rows(mat) if fmt == "base64" else _float_json_rows(mat)
        indices = list(range(n))
        if fault == "short":
            rows, indices = rows[:-1], indices[:-1]
        elif fault == "extra":
            rows, indices = rows + rows[-1:], indices + [n]
        elif fault == "bad_index":
            if n >= 2:
                indices[-1] = indices[-2]
            else:
                rows, indices = rows + rows, indices + [0]
        quote = b'"' if fmt == "base64" else b""
        parts: list[bytes | memoryview] = [b'{"object":"list","data":[']
        for k, (i, row) in enumerate(zip(indices, rows)):
            parts += [b',{"object":"embedding","index":' if k else b'{"object":"embedding","index":',
                      str(i).encode(), b',"embedding":', quote, row, quote, b"}"]
        parts.append(
            f'],"model":{json.dumps(model)},"usage":{{"prompt_tokens":{total},"total_tokens":{total}}}}}'.encode()
        )
        _sleep_until(start + delay)
        headers = [("x-request-id", request_id), ("openai-processing-ms", str(_ms_since(start))),
                   ("openai-model", model), *rate_headers]
        return 200, total, n, (None if fault == "ok" else fault), (parts, headers)


def _sleep_until(deadline: float) -> None:
    """Latency: the answer leaves no sooner than `deadline` (time.monotonic())."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def _parse_input(value: Any, state: _State, cfg: dict[str, Any]) -> tuple[list[str], list[int], list[bytes] | None]:
    """Validate `input`; return the texts (token arrays decoded), their token counts and digests."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise _input_invalid()
    if not items:
        raise _input_invalid()
    if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        items = [items]  # one token array
    if len(items) > cfg["max_inputs_per_request"]:
        raise _input_invalid(
            f"Too many inputs. The max number of inputs is {cfg['max_inputs_per_request']}. We recommend that you "
            "split your request into multiple smaller requests."
        )
    if all(isinstance(x, str) for x in items):
        if any(x == "" for x in items):
            raise _input_invalid()
        texts: list[str] = items
        digests = _digests(texts)
        return texts, state.count_tokens(texts, digests), digests
    if all(isinstance(x, list) for x in items):
        enc = get_encoding()
        vocab = enc.n_vocab
        texts, counts = [], []
        for arr in items:
            if not arr or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in arr):
                raise _input_invalid()
            texts.append(enc.decode(arr, errors="replace"))
            counts.append(len(arr))
        return texts, counts, None
    raise _input_invalid()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
    state: _State

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's getfqdn (a DNS lookup)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, BrokenPipeError)):
            return  # a client gave up (timeouts, hang faults): not an error of ours
        super().handle_error(request, client_address)


def _serve(port: int, config: dict[str, Any]) -> _Server:
    server = _Server(("127.0.0.1", port), _Handler)
    server.state = _State(config)
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local OpenAI-compatible embeddings server (127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = any free port)")
    parser.add_argument("--config", default="{}", help="JSON object of config keys (see DEFAULT_CONFIG)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="exit when stdin closes (the parent process ended)")
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config)
        if not isinstance(config, dict):
            raise ValueError("--config must be a JSON object")
        server = _serve(args.port, config)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"LISTENING http://127.0.0.1:{server.server_address[1]}", flush=True)

    def warm_up() -> None:  # load cl100k_base now, not inside the first request
        try:
            get_encoding()
        except Exception as exc:  # reported again, as a 500, by the first request needing it
            print(f"warning: tokenizer failed to load: {exc}", file=sys.stderr, flush=True)

    threading.Thread(target=warm_up, daemon=True).start()
    if args.exit_on_stdin_eof:
        watch_stdin_eof()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


# ---------------------------------------------------------------------------------------
# The process handle
# ---------------------------------------------------------------------------------------


class FakeOpenAIServer(ServerProcess):
    """Handle of one fake-server process on 127.0.0.1.

    ``with FakeOpenAIServer(tpm=100_000, window_seconds=1) as fake:`` starts
    ``python -m core.testing.openai_server`` (importable from any cwd), waits
    for its LISTENING line, and stops it on exit. Point clients at
    :attr:`base_url` with any non-empty API key.
    """

    module = "core.testing.openai_server"
    label = "fake OpenAI server"

    def __init__(self, *, startup_timeout: float = 30.0, control_timeout: float = 30.0, **config: Any) -> None:
        _validate_config(config)
        super().__init__(startup_timeout=startup_timeout, control_timeout=control_timeout)
        self.config: dict[str, Any] = dict(config)

    def _arguments(self) -> list[str]:
        return ["--config", json.dumps(self.config)]

    @property
    def base_url(self) -> str:
        """What to give the SDK as `base_url`: ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into the live config (buckets refill to full if rpm/tpm/window_seconds are
        given; the RNG is reseeded if seed is; fault_script replaces the queue). Returns the new config."""
        _validate_config(changes)
        return self._call("POST", "/_control/config", changes)

    def reset_config(self) -> dict[str, Any]:
        """Back to DEFAULT_CONFIG: no limits, no latency, no faults, full buckets, RNG reseeded."""
        return self.configure(**copy.deepcopy(DEFAULT_CONFIG))

    def stats(self) -> dict[str, Any]:
        """{"requests", "by_status" {"200": n}, "faults" {name: n}, "tokens_ok", "inputs_ok",
        "max_in_flight", "in_flight", "log" [[t_start, t_end, status, tokens, n_inputs], ...]}
        (times are time.monotonic() of the server; status 0 = hung, never answered)."""
        return super().stats()


if __name__ == "__main__":
    raise SystemExit(main())
