"""Streaming readers of section files: JSONL, JSON (an array) and CSV.

Every reader is a generator over a file: it holds one record (and a bounded
read buffer) at a time, never the whole file, so a file of any size is read in
constant memory. Each record comes out as a `SourceRecord`:

* ``section``: the ``{"id", "title", "content", ...}`` dict handed to the ingest,
  every other field its metadata (ids that are strings of digits, as CSV always
  gives them, become ints; fields starting with ``_`` are left out, so a
  ``*.failed.jsonl`` file written by the CLI can be read back as is: a record of it that holds an unreadable
  line, ``{"_raw": text, "_error": reason}``, is that line again — read as the
  section once fixed, else unreadable with the same reason);
* ``raw``: the record exactly as read (what a failed-sections file holds);
* ``error``: why the record could not be read at all (a line that is not JSON,
  a CSV row with the wrong number of fields), with ``section`` None. Such a
  record does not stop the reader: the next line is read as usual.

Whether a readable section is *valid* (an int or string id, string title and content...)
is decided later, by `core.stores.ingest.validate_section`.

A record holding bytes that are not UTF-8 is unreadable: "not UTF-8 (byte 0xE9
at line 3, column 17)" (CSV: the field instead of the column); its raw text
keeps each such byte as a lone surrogate (``\\udcXX``, ``errors="surrogateescape"``).
A file whose byte-order mark says UTF-16 or UTF-32 is refused as a whole, naming
the encoding. In a JSON array, records carry their element's index (``element``):
an array written on one line has every element on line 1.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from .errors import InputFileError
from .json_array import JsonArrayStream
from .utf8 import bom_problem, csv_not_utf8, has_undecodable, not_utf8

__all__ = ["FORMATS", "InputFileError", "SourceRecord", "count_records", "detect_format", "read_csv", "read_json",
           "read_jsonl", "read_records", "to_section"]

FORMATS = ("jsonl", "json", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
_FIELDS = ("id", "title", "content")
_INTEGER = re.compile(r"[+-]?\d+")
_CSV_FIELD_LIMIT = 64 << 20
_ENCODING = "utf-8-sig"  # a leading byte-order mark (Excel's CSV export) is dropped
_ERRORS = "surrogateescape"  # see core.utf8


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record of a section file.

    Attributes:
        line: 1-based line where the record starts.
        section: The section to ingest, or None when the record is unreadable.
        raw: The record as read: a dict (JSON object, CSV row) or, for a line
            that could not be parsed, its text.
        error: Why the record is unreadable, or None.
    """

    line: int
    section: dict[str, Any] | None
    raw: Any
    error: str | None = None
    element: int | None = None
    """0-based index of the record in a JSON array file; None for JSONL and CSV."""

    @property
    def where(self) -> str:
        """``line 7``, or in a JSON array ``element 3 (line 1)``."""
        return f"line {self.line}" if self.element is None else f"element {self.element} (line {self.line})"


def detect_format(path: str | os.PathLike[str], override: str | None = None) -> str:
    """``"jsonl"``, ``"json"`` or ``"csv"``: `override` if given, else from the extension.

    Raises:
        InputFileError: Unknown `override`, or an extension that names no format.
    """
    if override is not None:
        if override not in FORMATS:
            raise InputFileError(f"unknown format {override!r}: use one of {', '.join(FORMATS)}")
        return override
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    try:
        return _EXTENSIONS[suffix]
    except KeyError:
        raise InputFileError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension: "
            "name it .jsonl, .json or .csv, or pass --format"
        ) from None


def to_section(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The ingestable section of a raw record: `id`, `title`, `content` and its metadata.

    Every other field is the section's metadata (a CSV column's value is a string), except
    fields starting with ``_``: those are the failed-sections file's own (``_error``,
    ``_code``, ``_line``, ``_raw``, ``_element``, ``_extra``), never the section's. An id
    that is a string of digits, or an integral float, becomes an int. Missing fields stay
    missing (validation reports them).
    """
    section = {name: raw[name] for name in _FIELDS if name in raw}
    section.update((name, value) for name, value in raw.items() if name not in _FIELDS and not name.startswith("_"))
    if "id" in section:
        section["id"] = _normalise_id(section["id"])
    return section


def _normalise_id(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        return int(text) if _INTEGER.fullmatch(text) else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _record(line: int, raw: Any, *, what: str, element: int | None = None) -> SourceRecord:
    if not isinstance(raw, dict):
        kind = "array" if isinstance(raw, list) else type(raw).__name__
        if raw is None:
            kind = "null"
        return SourceRecord(line, None, raw, f"{what} is not an object (got {kind})", element)
    if isinstance(raw.get("_raw"), str) and not any(name in raw for name in _FIELDS):
        record = _unreadable_again(line, raw)
        return SourceRecord(record.line, record.section, record.raw, record.error, element)
    return SourceRecord(line, to_section(raw), raw, None, element)



def _unreadable_again(line: int, record: dict[str, Any]) -> SourceRecord:
    """A failed-sections record holding a line that could not be read: that line, read again.

    Fixed (its text is now a JSON object), it is the section; else it stays
    unreadable with the reason it was written with, so re-running an unfixed
    failed-sections file reports the same reasons.
    """
    text = record["_raw"]
    if has_undecodable(text):  # the bytes that were not UTF-8 are still there (as \udcXX)
        return SourceRecord(line, None, text, str(record.get("_error") or "not UTF-8"))
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        value = None
    if isinstance(value, dict):
        return SourceRecord(line, to_section(value), value)
    return SourceRecord(line, None, text, str(record.get("_error") or "not valid JSON"))


def read_records(source: str | os.PathLike[str] | IO[bytes], format: str | None = None) -> Iterator[SourceRecord]:  # noqa: A002
    """Records of a section file, one at a time.

    Args:
        source: A path, or a binary file object (then `format` is required).
        format: ``"jsonl"``, ``"json"`` or ``"csv"``; default from the extension.

    Raises:
        InputFileError: Format unknown, or the file is not a JSON array / has no
            usable CSV header (raised when the first record is requested).
        OSError: The file cannot be opened.
    """
    if isinstance(source, (str, os.PathLike)):
        fmt = detect_format(source, format)
        return _from_path(source, fmt)
    if format is None:
        raise InputFileError("format is required when reading from a file object")
    return _READERS[detect_format("", format)](source)


def _from_path(path: str | os.PathLike[str], fmt: str) -> Iterator[SourceRecord]:
    with open(path, "rb") as handle:
        yield from _READERS[fmt](handle)


def _check_bom(handle: IO[bytes]) -> None:
    """Raises InputFileError when the file's byte-order mark names UTF-16 or UTF-32 (`core.utf8.bom_problem`)."""
    problem = bom_problem(handle)
    if problem is not None:
        raise InputFileError(problem)



# --- JSONL ---------------------------------------------------------------------------------


def read_jsonl(handle: IO[bytes]) -> Iterator[SourceRecord]:
    """One JSON object per line; blank lines are skipped, bad lines become error records."""
    _check_bom(handle)
    for number, data in enumerate(handle, start=1):
        if number == 1 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        text = data.decode("utf-8", _ERRORS)
        problem = not_utf8(text, 0, number) if not data.isascii() else None
        text = text.strip()
        if not text:
            continue
        if problem is not None:
            yield SourceRecord(number, None, text, problem)
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            yield SourceRecord(number, None, text, f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except RecursionError:
            yield SourceRecord(number, None, text, "not valid JSON: nested too deeply")
            continue
        yield _record(number, raw, what="line")


# --- JSON array ----------------------------------------------------------------------------

def read_json(handle: IO[bytes]) -> Iterator[SourceRecord]:
    """Elements of a top-level JSON array, streamed.

    A syntax error inside the array ends the reading (there is no reliable
    next element to resume at): it becomes one error record naming its line.

    Raises:
        InputFileError: The file does not start with ``[`` (after whitespace).
    """
    _check_bom(handle)
    text = io.TextIOWrapper(handle, encoding=_ENCODING, errors=_ERRORS, newline="")
    try:
        stream = JsonArrayStream(text)
        first = stream.peek()
        if first != "[":
            what = "an empty file" if not first else ("an object" if first == "{" else f"{first!r}")
            raise InputFileError(f"a .json section file must hold an array of sections, found {what}")
        stream.pos += 1
        index = 0
        while True:
            char = stream.peek()
            if char == "]":
                stream.pos += 1
                if stream.peek():
                    line = stream.line_at(stream.pos)
                    yield SourceRecord(line, None, "", "not valid JSON: extra data after the closing ']'")
                return
            if index:
                if char != ",":
                    line = stream.line_at(stream.pos)
                    reason = "the array is not closed (unexpected end of file)" if not char else f"expected ',' or ']', found {char!r}"
                    yield SourceRecord(line, None, "", f"not valid JSON: {reason}")
                    return
                stream.pos += 1
                char = stream.peek()
            if not char:
                yield SourceRecord(stream.line_at(stream.pos), None, "", "not valid JSON: the array is not closed (unexpected end of file)")
                return
            if char == "]" and index:
                yield SourceRecord(stream.line_at(stream.pos), None, "", "not valid JSON: trailing comma before ']'")
                return
            line = stream.line_at(stream.pos)
            value, error = stream.decode()
            if error is not None:
                snippet = stream.buf[stream.pos : stream.pos + 200]  # decode() keeps pos at the element
                yield SourceRecord(line, None, snippet, error + "; the rest of the file was not read", index)
                return
            problem = not_utf8(stream.buf[: stream.pos], stream.value_start, line)
            if problem is not None:
                yield SourceRecord(line, None, stream.buf[stream.value_start : stream.pos], problem, index)
            else:
                yield _record(line, value, what=f"element {index}", element=index)
            index += 1
    finally:
        text.detach()  # the caller owns `handle`


# --- CSV -----------------------------------------------------------------------------------


def read_csv(handle: IO[bytes]) -> Iterator[SourceRecord]:
    """Rows of a CSV file with a header naming (at least) ``id``, ``title``, ``content``.

    Column names are matched case-insensitively and without surrounding spaces;
    other columns are the section's metadata (strings). Blank lines are skipped.

    Raises:
        InputFileError: The header lacks one of the three columns or repeats one.
    """
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)  # sections can be longer than csv's 128 KB default
    _check_bom(handle)
    text = io.TextIOWrapper(handle, encoding=_ENCODING, errors=_ERRORS, newline="")
    try:
        reader = csv.reader(text)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise InputFileError(f"cannot read the CSV header: {exc}") from None
        if header is None:
            return
        names = [name.strip() for name in header]
        lowered = [name.lower() for name in names]
        missing = [field for field in _FIELDS if field not in lowered]
        if missing:
            raise InputFileError(
                f"the CSV header must name the columns id, title, content; missing {', '.join(missing)} "
                f"(found: {', '.join(names) or 'nothing'})"
            )
        repeated = sorted({name for name in lowered if lowered.count(name) > 1 and name in _FIELDS})
        if repeated:
            raise InputFileError(f"the CSV header repeats the column(s) {', '.join(repeated)}")
        keys = [name if low not in _FIELDS else low for name, low in zip(names, lowered)]
        last = reader.line_num
        while True:
            start = last + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                last = reader.line_num
                yield SourceRecord(start, None, "", f"not valid CSV: {exc}")
                continue
            last = reader.line_num
            if not row:
                continue
            raw: dict[str, Any] = dict(zip(keys, row))
            problem = csv_not_utf8(row, keys, start)
            if problem is not None:
                yield SourceRecord(start, None, raw, problem)
                continue
            extra = [value for value in row[len(keys) :] if value.strip()]
            absent = [field for field in _FIELDS if field not in raw]
            if extra or absent:
                # Short rows are fine while id, title and content are there; empty
                # trailing fields (a spreadsheet's trailing commas) are ignored.
                if extra:
                    raw["_extra"] = row[len(keys) :]
                why = f"missing {', '.join(absent)}" if absent else "more fields than the header"
                yield SourceRecord(start, None, raw, f"row has {len(row)} fields, the header has {len(keys)}: {why}")
                continue
            yield SourceRecord(start, to_section(raw), raw)
    finally:
        text.detach()


_READERS = {"jsonl": read_jsonl, "json": read_json, "csv": read_csv}


# --- counting ------------------------------------------------------------------------------


def count_records(path: str | os.PathLike[str], format: str) -> int | None:  # noqa: A002
    """How many records `path` holds, cheaply, for a progress bar; None for JSON.

    JSONL counts non-blank lines; CSV counts non-blank rows after the header.
    Unreadable records count too (they are records the ingest accounts for).
    """
    if format == "jsonl":
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    if format == "csv":
        with open(path, encoding=_ENCODING, errors=_ERRORS, newline="") as text:
            reader = csv.reader(text)
            try:
                rows = sum(1 for row in reader if row)
            except csv.Error:
                return None
            return max(rows - 1, 0)
    return None
