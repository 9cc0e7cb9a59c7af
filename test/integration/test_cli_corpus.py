"""The corpus store through the command line (issue #17): text ids, content and metadata from the
file, ``search --json`` / ``--filter`` / ``--hybrid``, one search function per table, ``--id-type``,
``--match-function``, ``--no-content`` and ``--metadata-fields``, metadata-only changes that cost
no embedding request.

The journey of the issue's "Done when" runs on the embedded PostgreSQL (a data folder of its
own); the option cases run in this process against the session's PostgreSQL (`--database-url`,
`--no-index`, small vectors) to stay fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import in_process, one_line_error, workdir  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration]

LANGS = ("en", "de", "fr")


def corpus(n: int, *, url_suffix: str = "") -> list[dict[str, Any]]:
    """`n` sections keyed by slugs, with url/lang/page fields (every third one German)."""
    return [
        {"id": f"guide/page-{i}#setup", "title": f"Page {i}", "content": f"How to set up part {i} of the guide.",
         "url": f"https://docs.example/guide/{i}{url_suffix}", "lang": LANGS[i % 3], "page": i}
        for i in range(n)
    ]


def text(i: int) -> str:
    """Section i's embedded text (title, blank line, content): searching it finds that section first."""
    return f"Page {i}\n\nHow to set up part {i} of the guide."


def write_jsonl(path: Path, sections: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in sections), encoding="utf-8")
    return path


# --- the journey on the embedded PostgreSQL ---------------------------------------------------


@pytest.fixture
def embedded_dir(tmp_path: Path) -> Iterator[Path]:
    """A data folder of its own, whose server is stopped at the end (the CLI starts it when asked)."""
    folder = tmp_path / "pgdata"
    yield folder
    if folder.exists():
        from core.embedded.server import import_pgserver

        import_pgserver().get_server(folder, cleanup_mode="stop").cleanup()


def test_string_ids_content_metadata_filter_and_free_metadata_updates(
    in_process: Any, embedded_dir: Path, tmp_path: Path
) -> None:
    sections = corpus(120)
    path = write_jsonl(tmp_path / "docs.jsonl", sections)
    where = ("--data-dir", str(embedded_dir))
    status, captured = in_process("ingest", str(path), *where, "--json", "--quiet")
    assert status == 0, captured.err
    summary = json.loads(captured.out)
    assert (summary["stored"], summary["failed"], summary["updated"]) == (120, 0, 0)

    # search --json: the id as given, the content and the metadata (every other field of the record).
    status, captured = in_process("search", text(7), "-k", "3", *where, "--json")
    assert status == 0, captured.err
    hits = json.loads(captured.out)
    assert len(hits) == 3
    assert hits[0]["id"] == "guide/page-7#setup" and hits[0]["title"] == "Page 7"
    assert hits[0]["content"] == "How to set up part 7 of the guide."
    assert hits[0]["metadata"] == {"url": "https://docs.example/guide/7", "lang": "de", "page": 7}
    assert hits[0]["similarity"] == pytest.approx(1.0, abs=2e-3)  # the embedded server may search in halfvec

    # --filter lang=de: exactly k German sections (40 exist); --filter page=7: the value read as JSON (a number).
    status, captured = in_process("search", "setting up the guide", "-k", "25", "--filter", "lang=de", *where, "--json")
    assert status == 0, captured.err
    hits = json.loads(captured.out)
    assert len(hits) == 25 and {h["metadata"]["lang"] for h in hits} == {"de"}
    status, captured = in_process("search", "guide", "--filter", "page=7", "--filter", "lang=de", *where, "--json")
    assert [h["id"] for h in json.loads(captured.out)] == ["guide/page-7#setup"]

    # The plain output: similarity, id, title, and under them the start of the content.
    status, captured = in_process("search", text(7), "-k", "1", *where)
    assert status == 0, captured.err
    head, body = captured.out.splitlines()
    assert head.split(None, 2)[1:] == ["guide/page-7#setup", "Page 7"]
    assert body == " " * 8 + "How to set up part 7 of the guide."

    # A re-run in which only the urls changed: no embedding request, every row's url updated.
    in_process.fake.reset_stats()
    write_jsonl(path, corpus(120, url_suffix="?v=2"))
    status, captured = in_process("ingest", str(path), *where, "--quiet")
    assert status == 0, captured.err
    assert in_process.fake.stats()["requests"] == 0
    assert captured.out.startswith("stored 120, skipped 0, failed 0 of 120 sections\n")
    assert "  120 of the stored updated without embedding (text unchanged)" in captured.out
    status, captured = in_process("search", text(7), "-k", "1", *where, "--json")
    assert json.loads(captured.out)[0]["metadata"]["url"] == "https://docs.example/guide/7?v=2"


# --- options, on the session's PostgreSQL ------------------------------------------------------------


def test_two_tables_of_two_widths_are_searched_independently(in_process: Any, pg_dsn: str, pg_conn: Any, tmp_path: Path) -> None:
    sections = corpus(30)
    path = write_jsonl(tmp_path / "docs.jsonl", sections)
    db = ("--database-url", pg_dsn)
    for table, size in (("wide", "1536"), ("narrow", "256")):
        status, captured = in_process("ingest", str(path), *db, "--table", table, "--dimensions", size, "--no-index")
        assert status == 0, captured.err
    # Each table has its own search function; neither was repointed at the other.
    functions = {r[0] for r in pg_conn.execute("select proname from pg_proc where proname like 'match_%'")}
    assert {"match_wide", "match_narrow"} <= functions
    for table, size in (("wide", 1536), ("narrow", 256)):
        status, captured = in_process("search", text(3), "-k", "2", *db, "--table", table, "--json")
        assert status == 0, captured.err
        hits = json.loads(captured.out)
        assert hits[0]["id"] == "guide/page-3#setup" and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
        width = pg_conn.execute(f"select vector_dims(embedding) from {table} limit 1").fetchone()[0]
        assert width == size
    # --match-function names a table's function at ingest, and search goes through it.
    status, captured = in_process("ingest", str(path), *db, "--table", "named", "--dimensions", "8", "--no-index",
                                  "--match-function", "find_named")
    assert status == 0, captured.err
    assert pg_conn.execute("select count(*) from pg_proc where proname = 'find_named'").fetchone() == (1,)
    status, captured = in_process("search", text(4), "-k", "1", *db, "--table", "named",
                                  "--match-function", "find_named", "--json")
    assert status == 0, captured.err
    assert json.loads(captured.out)[0]["id"] == "guide/page-4#setup"
    status, captured = in_process("search", "part 4", *db, "--table", "named", "--match-function", "no_such_fn")
    assert status == 2 and "no_such_fn" in one_line_error(captured)


def test_id_type_chosen_from_the_ids_or_by_option_and_kept_by_an_existing_table(
    in_process: Any, pg_dsn: str, pg_conn: Any, tmp_path: Path
) -> None:
    db = ("--database-url", pg_dsn, "--dimensions", "8", "--no-index")
    numbered = write_jsonl(tmp_path / "numbered.jsonl", [{"id": i, "title": f"t{i}", "content": f"c{i}"} for i in range(1, 6)])
    slugs = write_jsonl(tmp_path / "slugs.jsonl", corpus(5))

    def column(table: str) -> str:
        return pg_conn.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute where attrelid = %s::regclass and attname = 'section_id'",
            (table,),
        ).fetchone()[0]

    assert in_process("ingest", str(numbered), *db, "--table", "ints")[0] == 0
    assert in_process("ingest", str(slugs), *db, "--table", "slugs")[0] == 0
    assert in_process("ingest", str(numbered), *db, "--table", "forced", "--id-type", "text")[0] == 0
    assert (column("ints"), column("slugs"), column("forced")) == ("bigint", "text", "text")
    assert {r[0] for r in pg_conn.execute("select section_id from forced")} == {"1", "2", "3", "4", "5"}
    # An existing table keeps its own: integer ids go into the text table as text...
    status, captured = in_process("ingest", str(numbered), *db, "--table", "slugs", "--json")
    assert status == 0, captured.err
    assert json.loads(captured.out)["stored"] == 5
    assert column("slugs") == "text"
    # ... another --id-type is refused in one line, before anything is embedded.
    in_process.fake.reset_stats()
    status, captured = in_process("ingest", str(numbered), *db, "--table", "ints", "--id-type", "uuid")
    assert status == 2 and "bigint ids, not uuid" in one_line_error(captured)
    assert in_process.fake.stats()["requests"] == 0
    # schema: bigint unless --id-type; its function is the table's own.
    status, captured = in_process("schema", "--table", "docs", "--dimensions", "8", "--id-type", "uuid")
    assert status == 0 and "section_id uuid primary key" in captured.out and "function match_docs(" in captured.out
    status, captured = in_process("schema", "--table", "docs", "--dimensions", "8")
    assert "section_id bigint primary key" in captured.out


def test_csv_columns_failed_file_fields_no_content_and_metadata_fields(
    in_process: Any, pg_dsn: str, pg_conn: Any, tmp_path: Path
) -> None:
    db = ("--database-url", pg_dsn, "--dimensions", "8", "--no-index")
    csv_path = tmp_path / "docs.csv"
    csv_path.write_text("id,title,content,Lang,page\n12,Twelve,twelve text,de,3\n13,Thirteen,thirteen text,en,4\n",
                        encoding="utf-8")
    status, captured = in_process("ingest", str(csv_path), *db, "--table", "csvt")
    assert status == 0, captured.err
    rows = pg_conn.execute("select section_id, content, metadata from csvt order by section_id").fetchall()
    # CSV ids of digits stay numbers (a bigint table); extra columns are metadata, as strings.
    assert rows == [(12, "twelve text", {"Lang": "de", "page": "3"}), (13, "thirteen text", {"Lang": "en", "page": "4"})]

    # A failed section's record goes to the failed file with _error/_code/_line; ingested again, fixed,
    # those fields are not its metadata.
    records = corpus(3)
    records[1]["title"] = None
    path = write_jsonl(tmp_path / "fails.jsonl", records)
    failed = tmp_path / "fails.failed.jsonl"
    status, captured = in_process("ingest", str(path), *db, "--table", "fails", "--failed-out", str(failed))
    assert status == 1
    entry = json.loads(failed.read_text(encoding="utf-8"))
    assert {"_error", "_code", "_line"} <= set(entry)
    entry["title"] = "Page 1"
    failed.write_text(json.dumps(entry) + "\n", encoding="utf-8")
    status, captured = in_process("ingest", str(failed), *db, "--table", "fails", "--format", "jsonl")
    assert status == 0, captured.err
    metadata = pg_conn.execute("select metadata from fails where section_id = 'guide/page-1#setup'").fetchone()[0]
    assert metadata == {"url": "https://docs.example/guide/1", "lang": "de", "page": 1}

    # --no-content keeps no text; --metadata-fields keeps only the fields named.
    path = write_jsonl(tmp_path / "lean.jsonl", corpus(4))
    status, captured = in_process("ingest", str(path), *db, "--table", "lean", "--no-content", "--metadata-fields", "url,page")
    assert status == 0, captured.err
    rows = pg_conn.execute("select content, metadata from lean order by section_id").fetchall()
    assert [r[0] for r in rows] == [None] * 4
    assert rows[0][1] == {"url": "https://docs.example/guide/0", "page": 0}
    status, captured = in_process("search", text(2), "-k", "1", "--database-url", pg_dsn,
                                  "--table", "lean")
    assert status == 0 and len(captured.out.splitlines()) == 1  # no content: no preview line
    status, captured = in_process("ingest", str(path), *db, "--metadata-fields", "url,,page")
    assert status == 2 and "--metadata-fields" in one_line_error(captured)


def test_search_filter_and_hybrid_options(in_process: Any, pg_dsn: str, pg_conn: Any, tmp_path: Path) -> None:
    sections = corpus(40)
    sections[17]["content"] = "Error code ZX-4471 means the disk is full."
    path = write_jsonl(tmp_path / "docs.jsonl", sections)
    db = ("--database-url", pg_dsn, "--table", "hy")
    assert in_process("ingest", str(path), *db, "--dimensions", "8", "--no-index")[0] == 0
    status, captured = in_process("search", "ZX-4471", "-k", "3", *db, "--hybrid", "--json")
    assert status == 0, captured.err
    assert json.loads(captured.out)[0]["id"] == "guide/page-17#setup"  # the exact term ranks first
    status, captured = in_process("search", "guide", *db, "--filter", "lang=xx")
    assert status == 0 and captured.out == "no sections found matching the filter\n"
    for bad in ("lang", "=de"):
        status, captured = in_process("search", "guide", *db, "--filter", bad)
        assert status == 2 and "key=value" in one_line_error(captured)
    status, captured = in_process("search", "guide", *db, "--filter", "lang=de", "--filter", "lang=en")
    assert status == 2 and "twice" in one_line_error(captured)
    # A control character in stored content is escaped in the preview, never sent to the terminal.
    sections[3]["content"] = "evil \x1b]0;title\x07 text"
    write_jsonl(path, sections)
    assert in_process("ingest", str(path), *db, "--dimensions", "8", "--no-index")[0] == 0
    status, captured = in_process("search", sections[3]["title"] + "\n\n" + sections[3]["content"], "-k", "1", *db)
    assert "\x1b" not in captured.out and "evil \\x1b]0;title\\x07 text" in captured.out


def test_a_duplicate_string_id_names_the_line_that_kept_it(in_process: Any, pg_dsn: str, pg_conn: Any, tmp_path: Path) -> None:
    """Was: "first seen on line N" only for integer ids."""
    rows = corpus(2) + [dict(corpus(1)[0], content="again")]
    path = write_jsonl(tmp_path / "dupes.jsonl", rows)
    status, captured = in_process("ingest", str(path), "--database-url", pg_dsn, "--table", "sdupes", "--dimensions", "8",
                                  "--no-index", "--json")
    assert status == 1
    (failure,) = json.loads(captured.out)["failures"]
    assert failure["line"] == 3 and failure["code"] == "duplicate_id" and "first seen on line 1" in failure["reason"]
