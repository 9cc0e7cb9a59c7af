"""The failed-sections file: every section that was not stored, as read, with its reason.

``<FILE stem>.failed.jsonl`` next to FILE (``--failed-out`` to choose): one JSON
object per failed record, in file order — the record's own fields, plus
``_error`` (the reason), ``_code`` (``invalid_section``, ``duplicate_id``,
``embedding_failed``, ``store_failed``, ``unreadable``) and ``_line`` (its line in
FILE; in a JSON array also ``_element``, its index). A line that was not JSON at
all is kept as ``{"_raw": text}``. Fix the records and ingest the file: fields
starting with ``_`` are ignored.

The file is UTF-8 JSON whatever it holds: a lone surrogate (JSON can carry
``"\\ud800"``) is written as its ``\\uXXXX`` escape, so every string reads back
as it was; a byte of FILE that was not UTF-8 is written as ``\\udcXX`` (XX: the
byte), Python's ``surrogateescape`` convention, and reads back as unreadable with
the same reason until it is fixed.

Ingesting a ``*.failed.jsonl`` file writes what still fails back to that same
file (never ``x.failed.failed.jsonl``); when nothing fails any more it is
removed, as is the failed-sections file of an earlier run of FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..readers import read_records
from .console import one_line
from .sources import Source
from .status import UsageError

__all__ = ["FAILED_SUFFIX", "Failure", "failed_path", "write_failures"]

FAILED_SUFFIX = ".failed.jsonl"
DEFAULT_CODE = "embedding_failed"
"""Code assumed for a failure reported without one (an ingest older than the codes)."""
_NOT_SEEN = ("invalid_section", "duplicate_id")
"""Codes of sections the ingest refused before looking at their id's earlier uses."""


_SURROGATE = re.compile("[\ud800-\udfff]")


class Failure(NamedTuple):
    line: int
    id: Any
    code: str
    reason: str
    element: int | None = None
    """Index of the record in a JSON array file (None for JSONL and CSV)."""

    @property
    def where(self) -> str:
        """``line 7``, or in a JSON array ``element 3 (line 1)``."""
        return f"line {self.line}" if self.element is None else f"element {self.element} (line {self.line})"


def json_line(entry: dict[str, Any]) -> str:
    """`entry` as one line of UTF-8-safe JSON: non-ASCII kept, every lone surrogate as its ``\\uXXXX`` escape."""
    text = json.dumps(entry, ensure_ascii=False, default=str)
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def is_failures_file(path: Path | None) -> bool:
    return path is not None and path.name.endswith(FAILED_SUFFIX)


def failed_path(args: argparse.Namespace, source: Source) -> Path:
    """Where this run's failed sections go (see the module docstring)."""
    if args.failed_out:
        out = Path(args.failed_out)
    elif source.path is None:
        out = Path("stdin" + FAILED_SUFFIX)
    elif is_failures_file(source.path):
        out = source.path
    else:
        out = source.path.with_name(source.path.name[: len(source.path.name) - len(source.path.suffix)] + FAILED_SUFFIX)
    if out.is_dir():
        raise UsageError(f"--failed-out {out} is a folder")
    same = source.path is not None and out.exists() and out.resolve() == source.path.resolve()
    if same and not is_failures_file(source.path):
        raise UsageError(f"--failed-out {out} is the input file: choose another path")
    return out


def write_failures(path: Path, source: Source, failures: Sequence[dict[str, Any]]) -> list[Failure]:
    """Write every failed record (unreadable ones included) to `path`, in file order.

    Reads the source a second time (records are not kept during the ingest),
    writes a temporary file and renames it over `path`, so `path` may be the
    source itself. `failures` are the ingest's, by index among readable
    records; their `code` says what happened, never parsed out of `reason`.
    """
    assert source.path is not None
    by_index = {int(item["index"]): item for item in failures}
    duplicated = {item.get("id") for item in failures if item.get("code") == "duplicate_id"}
    refused = {index for index, item in by_index.items() if item.get("code") in _NOT_SEEN}
    first_line: dict[int, int] = {}  # id -> line of the section that kept it, for duplicates
    listed: list[Failure] = []
    tmp = path.with_name(path.name + ".tmp")
    with _replacing(tmp, path) as out:
        index = 0
        for record in read_records(source.path, source.fmt):
            section_id = record.section.get("id") if record.section else None
            if record.error is not None:
                code, reason = "unreadable", record.error
            else:
                item = by_index.get(index)
                if index not in refused and isinstance(section_id, (int, str)) and section_id in duplicated:
                    first_line.setdefault(section_id, record.line)
                index += 1
                if item is None:
                    continue
                code, reason = str(item.get("code") or DEFAULT_CODE), str(item["reason"])
                if code == "duplicate_id" and section_id in first_line:
                    reason = (f"duplicate id (first seen on line {first_line[section_id]}; "
                              "re-running this record as is replaces that section)")
            reason = one_line(reason)
            if isinstance(record.raw, dict):
                entry = {k: v for k, v in record.raw.items() if k not in ("_error", "_code", "_line")}
            else:
                entry = {"_raw": record.raw}
            entry.update({"_error": reason, "_code": code, "_line": record.line})
            if record.element is not None:
                entry["_element"] = record.element
            out.write(json_line(entry) + "\n")
            listed.append(Failure(record.line, section_id, code, reason, record.element))
    return listed


@contextlib.contextmanager
def _replacing(tmp: Path, path: Path) -> Any:
    """A text file at `tmp` that replaces `path` when the block ends well, and is removed when it does not."""
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            yield out
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
