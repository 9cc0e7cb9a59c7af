"""Deterministic vectors: what the server returns for a text, and what tests expect.

A text's native vector is a feature-hashed bag of its lower-cased ``\\w+`` words
plus a tiny text-specific component, L2-normalised; all of it vectorised with
numpy (no Python call per word or per float).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence

from ._numpy import numpy as np
from .config import MODEL_DIMENSIONS

__all__ = ["WORD_RE", "embed", "expected_embedding", "expected_embeddings", "text_digests", "word_codes"]

_NOISE_DIMS = 16
_NOISE_SCALE = 0.01
WORD_RE = re.compile(r"\w+")
_LONG_WORD = 48  # longer words are hashed with zlib directly


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
    return b" ".join(w.encode("utf-8", "surrogatepass") for w in WORD_RE.findall(text.lower()))


def _crc32_table() -> np.ndarray:
    """zlib's crc32 byte table (reflected polynomial 0xEDB88320)."""
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & np.uint32(1), (t >> np.uint32(1)) ^ np.uint32(0xEDB88320), t >> np.uint32(1))
    return t.astype(np.uint32)


_CRC_TABLE = _crc32_table()


def word_codes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
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


def text_digests(texts: Sequence[str]) -> list[bytes]:
    """A 128-bit digest per text: token-count cache key and seed of its own component."""
    b2 = hashlib.blake2b
    return [b2(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def embed(texts: Sequence[str], dimensions: int, native: int, digests: Sequence[bytes] | None = None) -> np.ndarray:
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
        digests = text_digests(texts)
    rows, codes = word_codes(texts)
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
    return embed(list(texts), dimensions, native)


def expected_embedding(text: str, dimensions: int = 1536, *, model: str = "text-embedding-3-small") -> np.ndarray:
    """The float32, L2-normalised vector the server returns for `text` (deterministic).

    `model` only matters through its native size: small and ada-002 (1536)
    agree; large (3072) hashes words into twice as many buckets.
    """
    return expected_embeddings([text], dimensions, model=model)[0]
