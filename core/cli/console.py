"""What the command line prints besides results: one-line errors, notes, warnings, never a secret."""

from __future__ import annotations

import os
import re
import sys

from ..secrets import Scrubber

__all__ = ["SECRETS", "Note", "one_line", "printable", "prog", "warn"]

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
"""Terminal control characters (C0, DEL, C1: ESC sequences can retitle or rewrite a terminal), bidi
overrides (they reorder what is shown) and lone surrogates (they cannot be printed in UTF-8)."""

SECRETS = Scrubber()
"""Every key and connection string this run has seen; scrubbed from anything printed or written."""


def printable(text: str) -> str:
    """`text` with every control character, bidi override and lone surrogate written as an escape
    (``\\x1b``, ``\\u202e``, ``\\ud800``): what the input holds, shown without acting on the terminal."""
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: object) -> str:
    """`text` scrubbed of secrets, on one line, control characters escaped (`printable`)."""
    return printable(" ".join(SECRETS(str(text)).split()))


def prog() -> str:
    """How the user called us: ``core-embed`` (console script) or ``python -m core``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "core-embed" if name.startswith("core-embed") else "python -m core"


def warn(text: str) -> None:
    print(one_line(f"{prog()}: warning: {text}"), file=sys.stderr, flush=True)


class Note:
    """Informational lines on stderr (silenced by --quiet).

    While the target is being set up, lines are held back and printed only once
    it is ready (`release`): a setup error is then the only line on stderr.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.held: list[str] | None = []

    def __call__(self, text: str) -> None:
        if self.quiet:
            return
        if self.held is not None:
            self.held.append(text)
        else:
            print(one_line(text), file=sys.stderr, flush=True)

    def release(self) -> None:
        held, self.held = self.held or [], None
        for text in held:
            self(text)
