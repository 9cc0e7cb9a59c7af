"""Section file readers (`core.readers`): JSONL, JSON arrays, CSV; bad records; streaming."""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path

import pytest

from core.stores.ingest import validate_section
from core.readers import (
    InputFileError,
    count_records,
    detect_format,
    read_csv,
    read_json,
    read_jsonl,
    read_records,
    to_section,
)


class CountingReader(io.RawIOBase):
    """A binary file that counts how many bytes its reader asked for."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._data.readinto(buffer)
        self.bytes_read += n
        return n


def records(fmt: str, data: bytes) -> list:
    return list(read_records(io.BufferedReader(CountingReader(data)), fmt))


def jsonl(*objects: object) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_sections_with_line_numbers_and_id_normalisation() -> None:
    data = (
        b'\xef\xbb\xbf{"id": 1, "title": "One", "content": "first"}\n'
        b"\n"
        b'{"id": "2", "title": "Two", "content": "second", "_error": "old reason", "_line": 9}\n'
        b'{"id": 3.0, "title": "Three", "content": "third", "extra": true}\r\n'
    )
    got = records("jsonl", data)
    assert [r.line for r in got] == [1, 3, 4]  # the blank line 2 is skipped, not renumbered
    assert [r.section for r in got] == [
        {"id": 1, "title": "One", "content": "first"},
        {"id": 2, "title": "Two", "content": "second"},  # "_" fields left out, "2" -> 2
        {"id": 3, "title": "Three", "content": "third", "extra": True},  # other keys: its metadata
    ]
    assert all(r.error is None for r in got)
    assert got[1].raw["_error"] == "old reason"  # raw keeps the record as read


def test_jsonl_bad_lines_become_failures_and_reading_goes_on() -> None:
    data = (
        b'{"id": 1, "title": "ok", "content": "x"}\n'
        b"{not json\n"
        b"[1, 2]\n"
        b'{"id": 4, "title": "missing content"}\n'
        b'{"id": 5, "title": "ok", "content": "y"}\n'
    )
    got = records("jsonl", data)
    assert [(r.line, r.error is None) for r in got] == [(1, True), (2, False), (3, False), (4, True), (5, True)]
    assert got[1].section is None and got[1].raw == "{not json" and "not valid JSON" in got[1].error
    assert "not an object" in got[2].error
    # A readable record with a missing field is left to validation, which names the field.
    assert validate_section(got[3].section) == "missing 'content'"


def test_jsonl_invalid_utf8_names_the_byte_line_and_column() -> None:
    # Issue #15 item 15: a Latin-1 byte was "lone surrogate at position 3".
    got = records("jsonl", b'{"id": 1, "title": "t", "content": "ok"}\n{"id": 2, "title": "t", "content": "caf\xe9"}\n')
    assert got[0].error is None and got[0].section["content"] == "ok"
    assert got[1].section is None
    assert got[1].error == "not UTF-8 (byte 0xE9 at line 2, column 40)"
    assert got[1].raw.encode("utf-8", "surrogateescape").endswith(b'"caf\xe9"}')  # the bytes as read


def test_json_array_invalid_utf8_names_the_element_line_and_column() -> None:
    data = b'[{"id": 1, "title": "t", "content": "a"},\n {"id": 2, "title": "t", "content": "caf\xe9"}]'
    got = records("json", data)
    assert got[0].error is None and got[0].element == 0
    assert got[1].section is None and got[1].element == 1
    assert got[1].error == "not UTF-8 (byte 0xE9 at line 2, column 41)"  # line 2 starts with a space
    assert got[1].where == "element 1 (line 2)"


def test_csv_invalid_utf8_names_the_byte_line_and_field() -> None:
    got = records("csv", b'id,title,content\n1,t,fine\n2,"two\nlines",caf\xe9\n')
    assert got[0].error is None
    assert got[1].section is None and got[1].error == "not UTF-8 (byte 0xE9 at line 4, in field 'content')"


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
@pytest.mark.parametrize(("encoding", "name"), [("utf-16", "UTF-16-LE"), ("utf-32", "UTF-32-LE"),
                                                 ("utf-16-be", "UTF-16-BE")])
def test_a_utf16_or_utf32_file_is_refused_naming_its_encoding(fmt: str, encoding: str, name: str) -> None:
    text = '{"id": 1, "title": "t", "content": "c"}\n' if fmt == "jsonl" else (
        '[{"id": 1, "title": "t", "content": "c"}]' if fmt == "json" else "id,title,content\n1,t,c\n")
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    with pytest.raises(InputFileError, match=f"is {name} .*not UTF-8"):
        records(fmt, data)


def test_json_array_on_one_line_gives_each_failure_its_element() -> None:
    got = records("json", b'[{"id": 1, "title": "t", "content": "c"}, 7, {"id": 3, "title": "t"}]')
    assert [r.line for r in got] == [1, 1, 1]
    assert [r.element for r in got] == [0, 1, 2]
    assert got[1].where == "element 1 (line 1)" and "element 1 is not an object" in got[1].error


# --- JSON arrays -------------------------------------------------------------------------------


def test_json_array_elements_lines_and_ids() -> None:
    data = b'[\n  {"id": "10", "title": "a", "content": "b"},\n  7,\n  {"id": 12, "title": "c", "content": "d"}\n]\n'
    got = records("json", data)
    assert [r.line for r in got] == [2, 3, 4]
    assert got[0].section == {"id": 10, "title": "a", "content": "b"}
    assert got[1].section is None and "element 1 is not an object" in got[1].error and got[1].element == 1
    assert got[2].section["id"] == 12


def test_json_syntax_error_is_one_failure_naming_its_line() -> None:
    data = b'[{"id": 1, "title": "a", "content": "b"},\n {"id": 2, "title": "a" "content": "b"},\n {"id": 3}]'
    got = records("json", data)
    assert len(got) == 2 and got[0].error is None
    assert got[1].line == 2 and got[1].section is None
    assert "line 2" in got[1].error and "rest of the file was not read" in got[1].error


@pytest.mark.parametrize(
    "data, reason",
    [(b'[{"id": 1, "title": "a", "content": "b"}', "not closed"), (b'[{"id": 1, "title": "a", "content": "b"},]', "trailing comma")],
)
def test_json_truncated_or_trailing_comma(data: bytes, reason: str) -> None:
    got = records("json", data)
    assert got[0].error is None and reason in got[-1].error


def test_json_empty_array_and_not_an_array() -> None:
    assert records("json", b" [ ] ") == []
    with pytest.raises(InputFileError, match="array"):
        records("json", b'{"id": 1}')


def test_json_element_larger_than_the_read_chunk() -> None:
    content = "word " * 60_000  # 300 KB: several read chunks
    data = json.dumps([{"id": 1, "title": "big", "content": content}, {"id": 2, "title": "t", "content": "c"}]).encode()
    got = records("json", data)
    assert [r.section["id"] for r in got] == [1, 2]
    assert got[0].section["content"] == content


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_rows_string_ids_and_multiline_fields() -> None:
    data = (
        b"\xef\xbb\xbfID, Title ,content,source\r\n"
        b'1,First,"two\r\nlines",a\r\n'
        b"\r\n"
        b' 2 ,Second,plain,b\r\n'
        b"x3,Third,bad id,c\r\n"
    )
    got = records("csv", data)
    assert [r.line for r in got] == [2, 5, 6]
    # Other columns are the section's metadata, as strings (the header's spelling kept).
    assert got[0].section == {"id": 1, "title": "First", "content": "two\r\nlines", "source": "a"}
    assert got[1].section == {"id": 2, "title": "Second", "content": "plain", "source": "b"}
    assert got[2].section["id"] == "x3"  # not digits: a string id
    # Valid since string ids are (issue #17): a table keyed by bigint refuses it at ingest, alone.
    assert validate_section(got[2].section) is None


def test_csv_rows_with_missing_or_extra_fields_fail_alone() -> None:
    data = b"id,title,content,note\n1,a,b\n2,only title\n3,a,b,c,surplus\n4,a,b,c,,\n"
    got = records("csv", data)
    assert got[0].error is None  # a short row is fine while id, title, content are there
    assert got[1].section is None and "missing content" in got[1].error and got[1].line == 3
    assert got[2].section is None and "more fields than the header" in got[2].error
    assert got[3].error is None  # empty trailing fields (spreadsheet commas) are ignored


def test_csv_header_must_name_the_three_columns() -> None:
    with pytest.raises(InputFileError, match="missing content"):
        records("csv", b"id,title,body\n1,a,b\n")
    assert records("csv", b"") == []


# --- streaming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_readers_are_generators_that_do_not_read_ahead(fmt: str) -> None:
    n = 50_000
    sections = [{"id": i, "title": f"Title {i}", "content": "some content " * 8} for i in range(n)]
    if fmt == "jsonl":
        data = jsonl(*sections)
    elif fmt == "json":
        data = json.dumps(sections, indent=1).encode()
    else:
        data = ("id,title,content\n" + "".join(f'{s["id"]},{s["title"]},{s["content"]}\n' for s in sections)).encode()
    assert len(data) > 5_000_000
    raw = CountingReader(data)
    reader = read_records(io.BufferedReader(raw), fmt)
    assert inspect.isgenerator(reader)
    assert raw.bytes_read == 0  # nothing read before the first record is asked for
    first = next(reader)
    assert first.section["id"] == 0
    assert raw.bytes_read < 300_000  # a few buffers, not the file
    for _ in range(999):
        next(reader)
    assert raw.bytes_read < 600_000
    assert sum(1 for _ in reader) == n - 1000


# --- paths, formats, counting ------------------------------------------------------------------


def test_detect_format() -> None:
    assert detect_format("a/b.jsonl") == "jsonl"
    assert detect_format("B.JSON") == "json"
    assert detect_format("x.ndjson") == "jsonl"
    assert detect_format("x.csv") == "csv"
    assert detect_format("x.txt", "csv") == "csv"
    with pytest.raises(InputFileError, match="--format"):
        detect_format("x.txt")
    with pytest.raises(InputFileError, match="unknown format"):
        detect_format("x.csv", "xml")


def test_read_records_from_a_path_and_count(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(jsonl({"id": 1, "title": "a", "content": "b"}) + b"\n\nnot json\n")
    assert [r.line for r in read_records(path)] == [1, 4]
    assert count_records(path, "jsonl") == 2
    csv_path = tmp_path / "s.csv"
    csv_path.write_text('id,title,content\n1,a,"b\nc"\n2,d,e\n')
    assert count_records(csv_path, "csv") == 2
    assert count_records(tmp_path / "s.json", "json") is None


def test_to_section_and_the_direct_readers() -> None:
    assert to_section({"id": "-5", "title": "t", "content": "c", "_x": 1, "y": 2}) == {"id": -5, "title": "t", "content": "c", "y": 2}
    # A failed-sections file's own fields never become metadata.
    failed = {"id": "a", "title": "t", "content": "c", "url": "u", "_error": "e", "_code": "x", "_line": 3, "_raw": "r",
              "_element": 1, "_extra": ["z"]}
    assert to_section(failed) == {"id": "a", "title": "t", "content": "c", "url": "u"}
    assert to_section({"id": "12a"}) == {"id": "12a"}
    assert next(read_jsonl(io.BytesIO(b'{"id": 1}\n'))).section == {"id": 1}
    assert next(read_json(io.BytesIO(b'[{"id": 1}]'))).section == {"id": 1}
    assert next(read_csv(io.BytesIO(b"id,title,content\n1,a,b\n"))).section == {"id": 1, "title": "a", "content": "b"}
