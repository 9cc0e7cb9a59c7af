"""Vectors on the wire: each row as a JSON array of floats or as base64 (vectorised, no per-float Python work)."""

from __future__ import annotations

import base64

from ._numpy import numpy as np

__all__ = ["base64_rows", "float_json_rows"]

_DIGIT_POWERS = 10 ** np.arange(8, -1, -1, dtype=np.int64)  # 1e8 .. 1


def float_json_rows(mat: np.ndarray) -> list[bytes]:
    """Each row as a JSON array of numbers with 9 significant digits (round-trips float32)."""
    if len(mat) > 256:  # bound the temporaries
        return [row for i in range(0, len(mat), 256) for row in float_json_rows(mat[i : i + 256])]
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


def base64_rows(mat: np.ndarray) -> list[bytes | memoryview]:
    """Each row as base64 of its little-endian float32 bytes."""
    n, d = mat.shape
    mat = np.ascontiguousarray(mat, dtype="<f4")
    if (d * 4) % 3 == 0:  # rows end on base64 group boundaries: encode once, slice
        enc = memoryview(base64.b64encode(mat.tobytes()))
        width = d * 4 // 3 * 4
        return [enc[i * width : (i + 1) * width] for i in range(n)]
    return [base64.b64encode(row.tobytes()) for row in mat]
