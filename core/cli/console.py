"""What the command line prints besides results: one-line errors, notes, warnings, never a secret."""

from __future__ import annotations

import os
import sys

from ..secrets import Scrubber

__all__ = ["SECRETS", "Note", "one_line", "prog", "warn"]

SECRETS = Scrubber()
"""Every key and connection string this run has seen; scrubbed from anything printed or written."""


def one_line(text: object) -> str:
    """`text` scrubbed of secrets, on one line."""
    return " ".join(SECRETS(str(text)).split())


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
