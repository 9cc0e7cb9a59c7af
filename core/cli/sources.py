"""The sections file of `ingest`: a path, or ``-`` for standard input.

Records are streamed (`core.readers`), never held in memory. Standard input is
copied, as it is read, to a temporary file: the failed-sections file is written
from a second reading of the records, which a pipe cannot give.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..readers import InputFileError, SourceRecord, count_records, detect_format, read_records
from .status import UsageError

__all__ = ["STDIN", "Source", "open_records", "resolve_source", "total_records"]

STDIN = "-"


@dataclass
class Source:
    """Where the sections come from.

    Attributes:
        label: What to call it in messages (the path, or "standard input").
        fmt: ``jsonl``, ``json`` or ``csv``.
        path: The file; for standard input, the copy being written as it is read
            (complete once the records are all read), else None.
        stdin: True for ``-``.
    """

    label: str
    fmt: str
    path: Path | None
    stdin: bool = False


def resolve_source(file: str, fmt: str | None) -> Source:
    """The source `file` names, checked (exists, a file, readable; format known) before anything starts."""
    if file == STDIN:
        return Source("standard input", fmt or "jsonl", None, stdin=True)
    path = Path(file)
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a sections file: name a .jsonl, .json or .csv file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {path}: permission denied")
    try:
        return Source(str(path), detect_format(path, fmt), path)
    except InputFileError as exc:
        raise UsageError(str(exc)) from None


class _Tee(io.RawIOBase):
    """Reads `source`, writing every byte read to `copy` too."""

    def __init__(self, source: IO[bytes], copy: IO[bytes]) -> None:
        self.source = source
        self.copy = copy

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read1(len(buffer)) if hasattr(self.source, "read1") else self.source.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self.copy.write(data)
        else:
            self.copy.flush()
        return n


def open_records(source: Source, stack: contextlib.ExitStack | None = None) -> Iterator[SourceRecord]:
    """Records of `source`, the first one read already so that file-level errors surface now.

    For standard input with a `stack`, a copy is kept in a temporary file
    (`source.path`, deleted when `stack` closes); without one, nothing is kept.
    """
    handle: Any = None
    if source.stdin:
        handle = sys.stdin.buffer
        if stack is not None:
            fd, name = tempfile.mkstemp(prefix="core-stdin-", suffix="." + source.fmt)
            copy = stack.enter_context(os.fdopen(fd, "wb"))
            stack.callback(Path(name).unlink, missing_ok=True)
            source.path = Path(name)
            handle = io.BufferedReader(_Tee(handle, copy))
    try:
        records = read_records(handle if handle is not None else source.path, source.fmt)  # type: ignore[arg-type]
        first = next(records, None)
    except InputFileError as exc:
        raise UsageError(f"{source.label}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {source.label}: {exc.strerror or exc}") from None
    return itertools.chain([first] if first is not None else [], records)


def total_records(source: Source) -> int | None:
    """How many records the source holds, for the progress bar; None when it cannot tell cheaply."""
    if source.stdin or source.path is None:
        return None
    try:
        return count_records(source.path, source.fmt)
    except OSError:
        return None
