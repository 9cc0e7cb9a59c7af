"""Deterministic, lexical vectors: what the try-out server returns for a text, and what tests expect.

**Lexical, not semantic.** A text's vector is built from its words and their
character trigrams, so texts that share words (or parts of words: "index",
"indexes", "indexing") point the same way and a search over them finds the
sections that share the query's words; synonyms and paraphrases with other
words are not found (a real model finds those). Features, all feature-hashed
(signed) into the model's native width and vectorised with numpy:

* every lower-cased ``\\w+`` word, weight 1 (0.3 for ~120 very common English
  words: "the", "is", "of"...), so the rarer words of a query decide;
* every byte trigram of each other word, padded with spaces (`` in``, ``ind``,
  ..., ``ex ``), together weighing `_TRIGRAM_SHARE` times the word;
* a tiny dense text-specific component on the first 16 dimensions (seeded from
  the text's blake2b digest), so distinct texts never coincide.

Per dimension the summed weights are damped (``sign(x) * log1p(|x|)``: a word
said ten times is not ten times the topic), then the vector is L2-normalised.
Same text, same vector, at any call; a shortened vector is the first
`dimensions` components of the native one, renormalised (as OpenAI does).
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
_NOISE_SCALE = 0.005
"""Size of the text-specific component, times sqrt(the text's word count): two texts with the same words
("Hello world", "hello, world!") have a cosine > 0.999, and are still two vectors."""
WORD_RE = re.compile(r"\w+")
_LONG_WORD = 48  # longer words are hashed with zlib directly
_COMMON_WEIGHT = 0.3
_TRIGRAM_SHARE = 2.0
"""The trigrams of a word weigh, together, twice the word, so another form of it ("indexes", "indexing")
still matches: a query of 2-4 of a section's words in another form finds it in the top 10 for 87% of queries
(36% with words alone; test/unit/test_lexical_vectors.py). 0.5 found fewer; 3.0 ranked exact words lower."""
_COMMON_WORDS = (
    "a about after all also am an and any are as at be because been before being but by can could did do does "
    "doing done each for from get gets had has have having he her here him his how i if in into is it its just "
    "me more most my no not now of on one only or other our out over own same she should so some such than that "
    "the their them then there these they this those through to too under up very was we were what when where "
    "which while who whom why will with would you your yours"
).split()


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


class _Words:
    """Every lower-cased ``\\w+`` word of some texts, in one byte buffer (words separated by spaces)."""

    def __init__(self, texts: Sequence[str]) -> None:
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
        self.buf = buf
        self.data = np.frombuffer(buf, dtype=np.uint8)
        self.in_word = np.zeros(len(self.data) + 2, dtype=np.int8)
        np.not_equal(self.data, 32, out=self.in_word[1:-1].view(np.bool_))
        edges = np.flatnonzero(np.diff(self.in_word))  # alternating word starts and ends
        self.starts = edges[0::2]
        self.lengths = edges[1::2] - self.starts
        self.rows = np.searchsorted(text_starts, self.starts, side="right") - 1

    def codes(self) -> np.ndarray:
        """zlib.crc32 of each word's UTF-8 bytes."""
        starts, lengths, data = self.starts, self.lengths, self.data
        codes = np.empty(len(starts), dtype=np.uint32)
        long = lengths > _LONG_WORD
        if long.any():  # rare; a byte-position loop over them would be long
            idx = np.flatnonzero(long)
            codes[idx] = [zlib.crc32(self.buf[p : p + ln]) for p, ln in zip(starts[idx].tolist(), lengths[idx].tolist())]
            idx = np.flatnonzero(~long)
            codes[idx] = _crc32_words(data, starts[idx], lengths[idx])
        else:
            codes[:] = _crc32_words(data, starts, lengths)
        return codes

    def trigram_hashes(self) -> np.ndarray:
        """A 32-bit hash of each word byte's trigram (the byte and its neighbours, spaces at word ends), in buffer
        order: word after word, which is the order of ``np.repeat(per_word, lengths)``."""
        padded = np.empty(len(self.data) + 2, dtype=np.uint32)
        padded[0] = padded[-1] = 32
        padded[1:-1] = self.data
        key = padded[2:] << np.uint32(16)
        key |= padded[1:-1] << np.uint32(8)
        key |= padded[:-2]
        key = key[self.in_word[1:-1].view(np.bool_)]
        with np.errstate(over="ignore"):  # Knuth's multiplicative hash, then the high bits folded down
            key *= np.uint32(0x9E3779B1)
        key ^= key >> np.uint32(15)
        return key


def word_codes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(row, zlib.crc32(word)) for every lower-cased ``\\w+`` word of every text, vectorised.

    All texts' words go in one byte buffer and the crc32 of every word is
    computed at once, one byte position per step; words are sorted longest
    first so the words still going form a prefix. Equal to zlib.crc32 of each
    word's UTF-8 bytes, without a Python call per word.
    """
    words = _Words(texts)
    return words.rows, words.codes()


_COMMON_CODES = np.array(sorted(zlib.crc32(w.encode()) for w in _COMMON_WORDS), dtype=np.uint32)
_COMMON_LOW16 = np.zeros(1 << 16, dtype=np.bool_)
_COMMON_LOW16[_COMMON_CODES & np.uint32(0xFFFF)] = True


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


def _text_component(digests: Sequence[bytes], k: int) -> np.ndarray:
    """(len(digests), k) values in [-1, 1), a function of each text's digest alone."""
    seeds = np.frombuffer(b"".join(d[:8] for d in digests), dtype="<u8").astype(np.uint64)
    with np.errstate(over="ignore"):
        x = seeds[:, None] + np.arange(1, k + 1, dtype=np.uint64)[None, :] * np.uint64(0xD1B54A32D192ED03)
    return (_splitmix64(x) >> np.uint64(11)).astype(np.float64) * (2.0 / 2**53) - 1.0


def _scatter(hashes: np.ndarray, offsets: np.ndarray, weights: np.ndarray, n: int, dimensions: int,
             native: int) -> np.ndarray:
    """(n, dimensions) float64: each feature's signed weight summed into its bucket (`offsets`: row * dimensions).

    Bucket = the hash's low 16 bits scaled to `native` (multiply and shift: a
    modulo costs more), sign = its top bit; buckets from `dimensions` up are
    dropped (a shortened vector is a prefix of the native one).
    """
    buckets = hashes & np.uint32(0xFFFF)
    buckets *= np.uint32(native)
    buckets >>= np.uint32(16)
    signed = np.where(hashes >> np.uint32(31), -weights, weights)
    if dimensions < native:
        keep = buckets < dimensions
        buckets, offsets, signed = buckets[keep], offsets[keep], signed[keep]
    out = np.bincount(offsets + buckets, weights=signed, minlength=n * dimensions)
    return out.astype(np.float64, copy=False).reshape(n, dimensions)  # bincount of nothing is int64


def embed(texts: Sequence[str], dimensions: int, native: int, digests: Sequence[bytes] | None = None) -> np.ndarray:
    """Rows of little-endian float32, L2-normalised: the lexical vectors of `texts` (see the module docstring).

    """
    n = len(texts)
    if digests is None:
        digests = text_digests(texts)
    words = _Words(texts)
    codes = words.codes()
    common = _COMMON_LOW16[codes & np.uint32(0xFFFF)]  # a cheap first look; the few candidates checked exactly
    if common.any():
        maybe = np.flatnonzero(common)
        common[maybe] = np.isin(codes[maybe], _COMMON_CODES)
    weights = np.where(common, _COMMON_WEIGHT, 1.0)
    # One scatter for both kinds of feature: every word, then the trigrams of every byte of the other
    # words than the common ones (theirs would only add noise, and ~20% of the work on English text).
    base, lengths = words.rows * dimensions, words.lengths
    trigrams = words.trigram_hashes()
    if common.any():
        trigrams = trigrams[np.repeat(~common, lengths)]
        lengths = np.where(common, 0, lengths)
    n_words = len(codes)
    total = n_words + len(trigrams)
    hashes = np.empty(total, dtype=np.uint32)
    hashes[:n_words] = codes
    hashes[n_words:] = trigrams
    offsets = np.empty(total, dtype=np.int64)
    offsets[:n_words] = base
    offsets[n_words:] = np.repeat(base, lengths)
    feature_weights = np.empty(total, dtype=np.float64)
    feature_weights[:n_words] = weights
    feature_weights[n_words:] = np.repeat(_TRIGRAM_SHARE / np.maximum(lengths, 1), lengths)
    out = _scatter(hashes, offsets, feature_weights, n, dimensions, native)
    np.copysign(np.log1p(np.abs(out)), out, out=out)  # damped: repeating a word adds less and less

    k = min(_NOISE_DIMS, dimensions)
    # Sized by the text's word count, not by its vector's norm: a shortened vector stays a prefix.
    amplitude = _NOISE_SCALE * np.sqrt(np.maximum(np.bincount(words.rows, minlength=n), 1).astype(np.float64))
    out[:, :k] += amplitude[:, None] * _text_component(digests, k)
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
    agree; large (3072) hashes features into twice as many buckets.
    """
    return expected_embeddings([text], dimensions, model=model)[0]
