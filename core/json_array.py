"""`JsonArrayStream`: a top-level JSON array read from a text stream one element at a time.

The parsing half of `core.readers.read_json`, which turns the elements into
section records: this module knows JSON only. Memory stays bounded by the
element being decoded (plus one read chunk), never the whole file.
"""

from __future__ import annotations

import json
import re
from typing import IO, Any

__all__ = ["MAX_JSON_ELEMENT", "JsonArrayStream"]

_JSON_CHUNK = 1 << 16
"""Characters read at a time by the JSON reader (doubled while one element needs more)."""
MAX_JSON_ELEMENT = 64 << 20
"""Characters one JSON array element may span before the reader gives up on it."""

_WHITESPACE = re.compile(r"[ \t\n\r]*")


class JsonArrayStream:
    """Incremental reader of a top-level JSON array, one element at a time.

    Keeps a text buffer of what is not consumed yet plus at most one chunk more
    than the element being decoded needs; lines are counted incrementally.
    """

    def __init__(self, text: IO[str]) -> None:
        self.text = text
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # line of buf[counted]
        self.counted = 0
        self.decoder = json.JSONDecoder()
        self.value_start = 0
        """Where in `buf` the value `decode` returned last starts (it ends at `pos`)."""

    def line_at(self, pos: int) -> int:
        if pos >= self.counted:
            self.line += self.buf.count("\n", self.counted, pos)
        else:  # pragma: no cover - positions only move forward
            self.line -= self.buf.count("\n", pos, self.counted)
        self.counted = pos
        return self.line

    def more(self) -> bool:
        """Append the next chunk (at least as large as the buffer); False at end of file."""
        if self.eof:
            return False
        self.line_at(self.pos)
        self.buf = self.buf[self.pos :]
        self.counted -= self.pos
        self.pos = 0
        data = self.text.read(max(_JSON_CHUNK, len(self.buf)))
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def skip_whitespace(self) -> None:
        while True:
            match = _WHITESPACE.match(self.buf, self.pos)
            assert match is not None
            self.pos = match.end()
            if self.pos < len(self.buf) or not self.more():
                return

    def peek(self) -> str:
        self.skip_whitespace()
        return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def decode(self) -> tuple[Any, str | None]:
        """The next value, or (None, reason) when it is not valid JSON."""
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                truncated = exc.msg.startswith("Unterminated") or len(self.buf) - exc.pos < 1024
                if not self.eof and truncated and len(self.buf) - self.pos < MAX_JSON_ELEMENT:
                    self.more()  # trims the buffer: decode again (at end of file too) for exact positions
                    continue
                return None, f"not valid JSON: {exc.msg} (line {self.line_at(exc.pos)} column {_column(self.buf, exc.pos)})"
            except RecursionError:
                return None, "not valid JSON: nested too deeply"
            if end == len(self.buf) and not self.eof:
                self.more()
                continue  # a number cut by the buffer's end: decode it again whole
            self.value_start, self.pos = self.pos, end
            return value, None


def _column(buf: str, pos: int) -> int:
    return pos - (buf.rfind("\n", 0, pos) + 1) + 1
