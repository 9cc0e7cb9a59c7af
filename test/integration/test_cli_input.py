"""What the command line makes of awkward input (issue #15 items 7, 11, 14, 15; issue #21's long reasons).

Each test failed on the code before the fix: the failed-sections file crashed on a
JSON-escaped lone surrogate and left its ``.tmp`` behind; terminal control
characters from the input reached the terminal; ``--database-url ""`` silently
meant the embedded database; a Latin-1 byte was "lone surrogate at position 3";
a UTF-16 file was a list of ``\\udcff\\udcfe...`` failures; every failure of a
one-line JSON array said "line 1"; reasons were cut at 80 columns with no way
to see them whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import in_process, one_line_error, workdir  # noqa: F401  (fixtures)

from core.readers import read_records

pytestmark = pytest.mark.integration


def _target(pg_dsn: str, table: str) -> list[str]:
    return ["--database-url", pg_dsn, "--table", table, "--dimensions", "8", "--no-index"]


def test_lone_surrogates_round_trip_into_the_failed_file(in_process: Any, pg_dsn: str, workdir: Path) -> None:
    """Was: exit 1, "unexpected UnicodeEncodeError", no summary, an empty .failed.jsonl.tmp left."""
    source = workdir / "surrogates.jsonl"
    lines = [
        r'{"id": 1, "title": "t", "content": "x\ud800y"}',  # lone high surrogate
        r'{"id": 2, "title": "t\udfff", "content": "c", "note": "\udce9 and \ud83d"}',  # lone low + extra field
        r'{"id": 3, "title": "ok", "content": "a pair \ud83d\ude00 is fine"}',
        r'{"id": 4, "title": "t", "content": "c\u0000"}',  # NUL: JSON carries it, Postgres text does not
    ]
    source.write_text("\n".join(lines) + "\n", encoding="ascii")
    status, captured = in_process("ingest", str(source), *_target(pg_dsn, "cli_surrogates"))
    assert status == 1, captured.err
    assert "stored 1, skipped 0, failed 3 of 4 sections" in captured.out
    failed = workdir / "surrogates.failed.jsonl"
    assert not list(workdir.glob("*.tmp"))
    written = failed.read_bytes()
    written.decode("utf-8")  # strict: the file is UTF-8 whatever the sections held
    entries = [json.loads(line) for line in written.decode("utf-8").splitlines()]
    originals = [json.loads(line) for line in lines]
    for entry, original in zip(entries, [originals[0], originals[1], originals[3]]):
        assert {k: v for k, v in entry.items() if not k.startswith("_")} == original  # every string as it was
    assert "lone surrogate" in entries[0]["_error"] and "NUL" in entries[2]["_error"]
    # and the file reads back as the same sections
    again = [record.section for record in read_records(failed)]
    assert again == [originals[0], originals[1], originals[3]]  # "note": section 2's metadata


def test_no_tmp_file_is_left_when_writing_the_failed_file_fails(
    in_process: Any, pg_dsn: str, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.cli import failures

    source = workdir / "one_bad.jsonl"
    source.write_text('{"id": 1, "title": "t"}\n', encoding="utf-8")

    def boom(entry: dict[str, Any]) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(failures, "json_line", boom)
    status, captured = in_process("ingest", str(source), *_target(pg_dsn, "cli_tmp"))
    assert status == 1
    assert "cannot write" in captured.err and "No space left" in captured.err
    assert not list(workdir.glob("one_bad*.tmp")) and not (workdir / "one_bad.failed.jsonl").exists()


def test_terminal_control_characters_are_printed_escaped(in_process: Any, pg_dsn: str, workdir: Path) -> None:
    """Was: a CSV header starting with ESC ]0;... BEL retitled the terminal through the error message."""
    source = workdir / "evil.csv"
    source.write_text("\x1b]0;pwned\x07id,title,content\n1,t,c\n", encoding="utf-8")
    status, captured = in_process("ingest", str(source), *_target(pg_dsn, "cli_evil"))
    assert status == 2
    line = one_line_error(captured)
    assert "\x1b" not in captured.err and "\x07" not in captured.err
    assert "\\x1b]0;pwned\\x07id" in line
    # in the summary and the failure lines too
    source = workdir / "evil.jsonl"
    source.write_text('{"id": "\\u001b[2J\\u202e", "title": "t", "content": "c"}\n{"id": 5, "title": "\\u009b31m", "content": ""}\n',
                      encoding="utf-8")
    status, captured = in_process("ingest", str(source), *_target(pg_dsn, "cli_evil"), "--id-type", "bigint")
    assert status == 1
    shown = captured.out + captured.err
    assert not any(char in shown for char in "\x1b\x9b\u202e\x07")
    assert "\\x1b[2J\\u202e" in captured.out


def test_an_empty_database_url_is_refused(in_process: Any, workdir: Path) -> None:
    """Was: `--database-url "$UNSET"` silently used the embedded database."""
    for value in ("", "  "):
        for command in (["ingest", str(workdir / "x.jsonl")], ["search", "query"]):
            status, captured = in_process(*command, "--database-url", value, "--data-dir", str(workdir / "never"))
            assert status == 2
            assert "argument --database-url: empty (an unset variable?)" in one_line_error(captured)
    assert not (workdir / "never").exists()


def test_a_latin1_byte_is_named_with_line_and_column(in_process: Any, pg_dsn: str, workdir: Path) -> None:
    """Was: "'content' is not valid Unicode (lone surrogate at position 3)"."""
    source = workdir / "latin1.jsonl"
    source.write_bytes(b'{"id": 1, "title": "t", "content": "fine"}\n{"id": 2, "title": "t", "content": "caf\xe9"}\n')
    status, captured = in_process("ingest", str(source), *_target(pg_dsn, "cli_latin1"), "--json")
    assert status == 1
    summary = json.loads(captured.out)
    assert summary["failures"] == [{"line": 2, "element": None, "id": None, "code": "unreadable",
                                    "reason": "not UTF-8 (byte 0xE9 at line 2, column 40)"}]
    # the failed file keeps the byte (as \udce9) and reads back with the same reason until fixed
    failed = workdir / "latin1.failed.jsonl"
    failed.read_bytes().decode("utf-8")
    [record] = list(read_records(failed))
    assert record.error == "not UTF-8 (byte 0xE9 at line 2, column 40)"


@pytest.mark.parametrize(("encoding", "name"), [("utf-16", "UTF-16-LE"), ("utf-32", "UTF-32-LE")])
def test_a_utf16_file_is_one_line_naming_its_encoding(in_process: Any, workdir: Path, encoding: str, name: str) -> None:
    """Was: every line a failure reading `\\udcff\\udcfe{...`."""
    source = workdir / f"{encoding}.jsonl"
    source.write_text('{"id": 1, "title": "t", "content": "c"}\n', encoding=encoding)
    status, captured = in_process("ingest", str(source), "--data-dir", str(workdir / "never"))
    assert status == 2
    assert f"is {name} (its byte-order mark" in one_line_error(captured) and "not UTF-8" in one_line_error(captured)


def test_json_array_failures_name_their_element(in_process: Any, pg_dsn: str, workdir: Path) -> None:
    """Was: every failure of an array written on one line said "line 1"."""
    source = workdir / "array.json"
    source.write_text(json.dumps([{"id": 1, "title": "a", "content": "b"}, {"id": 2, "title": "c"}, 7,
                                  {"id": 4, "title": "d", "content": "e"}]), encoding="utf-8")
    status, captured = in_process("ingest", str(source), *_target(pg_dsn, "cli_array"))
    assert status == 1
    assert "  element 1 (line 1) (id 2): missing 'content'" in captured.out
    assert "  element 2 (line 1): element 2 is not an object (got int)" in captured.out
    entries = [json.loads(line) for line in (workdir / "array.failed.jsonl").read_text().splitlines()]
    assert [(e["_line"], e["_element"]) for e in entries] == [(1, 1), (1, 2)]


def test_long_reasons_are_whole_in_json_the_failed_file_and_with_wide(
    in_process: Any, pg_dsn: str, workdir: Path
) -> None:
    """Was: reasons cut at 80 columns in the summary (`over the 8191-token input…`), no way to see them whole."""
    source = workdir / "long.jsonl"
    source.write_text(json.dumps({"id": 1, "title": "t", "content": "ok"}) + "\n"
                      + json.dumps({"id": 123456789012, "title": "t", "content": "word " * 9000}) + "\n", encoding="utf-8")
    target = _target(pg_dsn, "cli_long")
    status, as_json = in_process("ingest", str(source), *target, "--json")
    assert status == 1
    [failure] = json.loads(as_json.out)["failures"]
    reason = failure["reason"]
    head = "  line 2 (id 123456789012):"
    assert failure["line"] == 2 and failure["id"] == 123456789012 and "8191" in reason and len(f"{head} {reason}") > 80
    [entry] = [json.loads(line) for line in (workdir / "long.failed.jsonl").read_text().splitlines()]
    assert entry["_error"] == reason  # the file carries it whole too
    status, captured = in_process("ingest", str(source), *target)
    assert status == 1
    shown = [line for line in captured.out.splitlines() if line.startswith("  ")]
    assert shown == [shown[0]] and len(shown[0]) == 80 and shown[0].endswith("…"), captured.out
    assert "--wide shows them whole" in captured.out
    status, wide = in_process("ingest", str(source), *target, "--wide")
    lines = wide.out.splitlines()
    at = lines.index(head)
    below = [line for line in lines[at + 1 :] if line.startswith("    ")]
    assert " ".join(line.strip() for line in below) == " ".join(reason.split())  # whole, on lines of its own
    assert all(len(line) <= 80 for line in below)
