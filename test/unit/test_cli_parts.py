"""The command line's parts, without servers: option parsing, targets, file names, compact counts."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from core.cli.failures import failed_path
from core.cli.parser import UsageError, build_parser
from core.cli.progress import compact
from core.cli.sources import resolve_source
from core.cli.targets import select_target
from core.readers import read_jsonl


def ingest_args(*argv: str) -> argparse.Namespace:
    return build_parser("python -m core").parse_args(["ingest", *argv])


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (950, "950"), (9098, "9.1k"), (20_000, "20k"), (123_456, "123k"), (1_188_195, "1.2M"), (45e6, "45M")],
)
def test_compact_counts(value: float, text: str) -> None:
    assert compact(value) == text


def test_failed_file_names_do_not_pile_up(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text("{}\n")
    assert failed_path(ingest_args(str(source)), resolve_source(str(source), None)) == tmp_path / "bad.failed.jsonl"
    failed = tmp_path / "bad.failed.jsonl"
    failed.write_text("{}\n")
    # Ingesting the failed-sections file writes what still fails back to it, not to bad.failed.failed.jsonl.
    assert failed_path(ingest_args(str(failed)), resolve_source(str(failed), None)) == failed
    csv = tmp_path / "data.csv"
    csv.write_text("id,title,content\n")
    assert failed_path(ingest_args(str(csv)), resolve_source(str(csv), None)) == tmp_path / "data.failed.jsonl"
    assert failed_path(ingest_args("-"), resolve_source("-", None)) == Path("stdin.failed.jsonl")
    with pytest.raises(UsageError, match="is the input file"):
        failed_path(ingest_args(str(source), "--failed-out", str(source)), resolve_source(str(source), None))


def test_sources_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder"):
        resolve_source(str(tmp_path), None)
    with pytest.raises(UsageError, match="no such file"):
        resolve_source(str(tmp_path / "missing.jsonl"), None)
    stdin = resolve_source("-", None)
    assert (stdin.stdin, stdin.fmt, stdin.label) == (True, "jsonl", "standard input")
    assert resolve_source("-", "csv").fmt == "csv"


def test_an_unfixed_unreadable_record_keeps_its_reason_and_a_fixed_one_is_read() -> None:
    lines = [
        {"_raw": "this line is not JSON", "_error": "not valid JSON: Expecting value (column 1)", "_line": 3},
        {"_raw": '{"id": 9, "title": "t", "content": "fixed by hand"}', "_error": "not valid JSON: ...", "_line": 4},
    ]
    records = list(read_jsonl(io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())))
    assert records[0].section is None and records[0].error == "not valid JSON: Expecting value (column 1)"
    assert records[0].raw == "this line is not JSON"
    assert records[1].error is None and records[1].section == {"id": 9, "title": "t", "content": "fixed by hand"}


@pytest.mark.parametrize(
    ("argv", "env", "kind"),
    [
        (["--database-url", "postgresql://u:p@h/db"], {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_KEY": "k"}, "postgres"),
        ([], {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_KEY": "k", "DATABASE_URL": "postgresql://h/db"}, "supabase"),
        ([], {"DATABASE_URL": "postgresql://h/db"}, "postgres"),
        (["--data-dir", "/tmp/x"], {"DATABASE_URL": "postgresql://h/db"}, "embedded"),
        ([], {}, "embedded"),
    ],
)
def test_target_choice(argv: list[str], env: dict[str, str], kind: str) -> None:
    assert select_target(ingest_args("f.jsonl", *argv), env).kind == kind


def test_target_errors() -> None:
    with pytest.raises(UsageError, match="SUPABASE_SERVICE_ROLE_KEY"):
        select_target(ingest_args("f.jsonl"), {"SUPABASE_URL": "https://x.supabase.co"})
    with pytest.raises(UsageError, match="two different databases"):
        select_target(ingest_args("f.jsonl", "--database-url", "postgresql://h/db", "--data-dir", "/tmp/x"), {})
    with pytest.raises(UsageError, match="needs --database-url"):
        select_target(ingest_args("f.jsonl", "--target", "postgres"), {})
