"""Vectors as the caller asked for them: Python lists, one numpy block, or float32 arrays."""

from __future__ import annotations

import array
from typing import Any

from ..errors import MissingDependencyError

__all__ = ["format_vectors"]


def format_vectors(vectors: list[array.array], output: str, dimensions: int | None) -> Any:
    """`vectors` as ``"list"`` (lists of floats, JSON-ready; ~49 KB per 1536-dim vector),
    ``"numpy"`` (one writable (n, d) float32 array, 6 KB per vector) or ``"array"`` (as is).

    Raises:
        MissingDependencyError: ``"numpy"`` without numpy installed.
    """
    if output == "array":
        return vectors
    if output == "numpy":
        try:
            import numpy as np
        except ImportError as exc:  # pragma: no cover - numpy is in the dev extra
            raise MissingDependencyError("numpy", "numpy", "output='numpy'") from exc
        if not vectors:
            return np.zeros((0, dimensions or 0), dtype=np.float32)
        # One contiguous float32 block (over a bytearray: an array over immutable bytes is read-only).
        block = bytearray().join(v.tobytes() for v in vectors)
        return np.frombuffer(block, dtype=np.float32).reshape(len(vectors), -1)
    return [v.tolist() for v in vectors]
