"""Is a section file UTF-8? Byte-order marks and undecodable bytes, in words a user can act on.

The readers (`core.readers`) decode with ``errors="surrogateescape"``: a byte
that is not UTF-8 (0x80..0xFF) becomes the lone surrogate U+DC80..U+DCFF, so a
record is never lost to one bad byte and the byte can be named exactly.
"""

from __future__ import annotations

import re
from typing import IO

__all__ = ["bom_problem", "csv_not_utf8", "has_undecodable", "not_utf8"]

_UNDECODABLE = re.compile("[\udc80-\udcff]")
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32-LE"), (b"\x00\x00\xfe\xff", "UTF-32-BE"), (b"\xff\xfe", "UTF-16-LE"),
         (b"\xfe\xff", "UTF-16-BE"))
"""Byte-order marks of encodings that are not UTF-8, longest first (UTF-32-LE starts like UTF-16-LE)."""


def bom_problem(handle: IO[bytes]) -> str | None:
    """Why `handle` is not UTF-8 when its byte-order mark names another encoding, else None.

    Looks without consuming (``peek``); a handle that cannot peek is not checked.
    """
    peek = getattr(handle, "peek", None)
    if peek is None:
        return None
    head = bytes(peek(4)[:4])
    for bom, name in _BOMS:
        if head.startswith(bom):
            return (f"the file is {name} (its byte-order mark {bom.hex(' ').upper()} says so), not UTF-8: "
                    f"convert it first, e.g. iconv -f {name} -t UTF-8 FILE > FILE.utf8")
    return None


def has_undecodable(text: str) -> bool:
    """True when `text` holds a byte that was not UTF-8 (as U+DC80..U+DCFF)."""
    return _UNDECODABLE.search(text) is not None


def _byte(char: str) -> str:
    return f"0x{ord(char) - 0xDC00:02X}"


def not_utf8(text: str, start: int, line: int) -> str | None:
    """``not UTF-8 (byte 0xE9 at line L, column C)`` for the first undecodable byte of ``text[start:]``.

    `line` is the line of ``text[start]``; the column counts characters from the
    last line break in `text` before the byte. None when there is no such byte.
    """
    bad = _UNDECODABLE.search(text, start)
    if bad is None:
        return None
    at = bad.start()
    line += text.count("\n", start, at)
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    return f"not UTF-8 (byte {_byte(bad.group())} at line {line}, column {column})"


def csv_not_utf8(row: list[str], keys: list[str], start: int) -> str | None:
    """``not UTF-8 (byte 0xE9 at line L, in field 'content')`` for a CSV row starting on line `start`.

    A CSV reader gives fields, not the row's text: the field is named instead of a column.
    """
    line = start
    for number, value in enumerate(row):
        bad = _UNDECODABLE.search(value)
        if bad is not None:
            name = keys[number] if number < len(keys) else f"#{number + 1}"
            line += value.count("\n", 0, bad.start())
            return f"not UTF-8 (byte {_byte(bad.group())} at line {line}, in field {name!r})"
        line += value.count("\n")
    return None
