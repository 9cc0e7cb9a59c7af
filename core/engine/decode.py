"""Reading an embeddings response: vectors in input order, or a refusal — no I/O.

A response is accepted only with exactly one vector per input, at the right
indices, all of one width: a vector stored under the wrong text is worse than
none, so anything else raises `MisalignedResponseError` (which is retried).
"""

from __future__ import annotations

import array
import base64
import binascii
import sys
from typing import Any

from ..errors import MisalignedResponseError

__all__ = ["decode_embeddings", "to_float32"]


def decode_embeddings(response: Any, expected: int, dimensions: int | None = None) -> list[array.array]:
    """The vectors of `response` in input order, as float32 `array('f')`.

    Args:
        response: The SDK's `CreateEmbeddingResponse`, a dict, or any object with `data`.
        expected: Inputs sent in the request.
        dimensions: Width every vector must have (None: the first vector's width).

    Raises:
        MisalignedResponseError: Wrong count, missing/duplicate/non-integer indices,
            undecodable or empty vectors, or vectors of different widths.
    """
    data = _field(response, "data") if isinstance(response, dict) else getattr(response, "data", None)
    data = list(data or [])
    if len(data) != expected:
        raise MisalignedResponseError(f"response carried {len(data)} vectors for {expected} inputs")
    positions = [_field(item, "index") for item in data]
    if positions != list(range(expected)):  # the common case, in order, costs one comparison
        if any(p is not None for p in positions):  # no index at all: the list order is all there is
            if not all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
                raise MisalignedResponseError(f"response items carry missing or non-integer indices {positions[:5]}")
            if sorted(positions) != list(range(expected)):  # type: ignore[type-var]
                raise MisalignedResponseError(
                    f"response indices {sorted(positions)[:5]}... do not match 0..{expected - 1}"  # type: ignore[type-var]
                )
            data = [item for _, item in sorted(zip(positions, data), key=lambda pair: pair[0])]  # type: ignore[arg-type,return-value]
    vectors: list[array.array] = []
    for position, item in enumerate(data):
        try:
            vectors.append(to_float32(_field(item, "embedding")))
        except (TypeError, ValueError, OverflowError) as exc:  # binascii.Error is a ValueError
            raise MisalignedResponseError(f"vector {position} cannot be decoded: {exc}") from None
    want = dimensions or len(vectors[0])
    for position, vector in enumerate(vectors):
        if len(vector) != want or want == 0:
            raise MisalignedResponseError(f"vector {position} has {len(vector)} dimensions, expected {want}")
    return vectors


def _field(item: Any, name: str) -> Any:
    """A response item's field without inventing one: mocks and lenient objects
    answer any attribute, so only values actually set on the item are read."""
    values = getattr(item, "__dict__", None)  # pydantic models (the SDK's) and plain objects
    if isinstance(values, dict) and name in values:
        return values[name]
    if isinstance(item, dict):  # JSON from a hand-rolled client
        return item.get(name)
    return getattr(item, name, None) if name == "embedding" else None


def to_float32(embedding: Any) -> array.array:
    """A float32 `array('f')` from base64 text (little-endian float32) or a sequence of floats."""
    vector = array.array("f")
    if isinstance(embedding, str):
        # a2b_base64 in strict mode: the same check as b64decode(validate=True) without its wrapper.
        raw = binascii.a2b_base64(embedding, strict_mode=True) if sys.version_info >= (3, 11) else base64.b64decode(
            embedding, validate=True
        )
        vector.frombytes(raw)
        if sys.byteorder == "big":  # the API sends little-endian float32
            vector.byteswap()
        return vector
    return array.array("f", embedding)
