"""Keeping the table equal to its source through the command line (issue #18): ``ingest FILE --sync``
with ``--source`` / ``--max-delete`` / ``--dry-run``, the guard, unreadable records, the lock, and
``delete --ids`` / ``--source``. In this process, against the session's PostgreSQL (8-dimensional
vectors, no index): hundreds of sections, not thousands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import in_process, one_line_error, workdir  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.integration,
    # supabase-py passes postgrest-py arguments it has itself deprecated
    pytest.mark.filterwarnings("ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"),
]

TABLE = "synced"


def version(ids: range | list[int], *, prefix: str = "man", changed: set[int] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    return [{"id": f"{prefix}-{i}", "title": f"{prefix} {i}", "content": f"text {i}" + (" (edited)" if i in changed else ""),
             "lang": "en"} for i in ids]


def write(path: Path, sections: list[dict[str, Any]], *, extra: str = "") -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in sections) + extra, encoding="utf-8")
    return path


def ids_of(pg_conn: Any, source: str) -> set[str]:
    return {r[0] for r in pg_conn.execute(f"select section_id from {TABLE} where source = %s", (source,))}


@pytest.fixture
def cli_sync(in_process: Any, pg_dsn: str) -> Any:
    def run(path: Path | str, *options: str) -> tuple[int, Any]:
        return in_process("ingest", str(path), "--sync", "--database-url", pg_dsn, "--table", TABLE, "--dimensions", "8",
                          "--no-index", "--quiet", *options)

    run.fake = in_process.fake  # type: ignore[attr-defined]
    return run


def test_two_sources_a_second_version_synced_and_a_shrunken_one_refused(
    cli_sync: Any, pg_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manual = tmp_path / "manual.jsonl"
    faq = tmp_path / "faq.jsonl"
    status, captured = cli_sync(write(manual, version(range(300))), "--json")
    assert status == 0, captured.err
    assert json.loads(captured.out)["source"] == str(manual)  # the default source: FILE as given
    assert cli_sync(write(faq, version(range(60), prefix="faq")), "--source", "faq")[0] == 0
    faq_rows = pg_conn.execute(f"select section_id, updated_at from {TABLE} where source = 'faq' order by 1").fetchall()
    assert len(faq_rows) == 60 and len(ids_of(pg_conn, str(manual))) == 300

    # Version 2: 15 removed (5 %), 6 changed, 9 added.
    removed = set(range(0, 150, 10))
    v2 = [i for i in range(300) if i not in removed] + list(range(300, 309))
    write(manual, version(v2, changed={1, 2, 3, 4, 5, 6}))
    cli_sync.fake.reset_stats()
    monkeypatch.delenv("OPENAI_API_KEY")  # a dry run needs no key
    status, captured = cli_sync(manual, "--dry-run", "--json")
    assert status == 0, captured.err
    plan = json.loads(captured.out)
    assert (plan["would_delete"], plan["would_embed"], plan["would_update"], plan["deleted"]) == (15, 15, 0, 0)
    assert plan["delete_preview"][:3] == ["man-0", "man-10", "man-100"]  # sorted as text
    assert cli_sync.fake.stats()["requests"] == 0 and len(ids_of(pg_conn, str(manual))) == 300
    status, captured = cli_sync(manual, "--dry-run")
    assert status == 0, captured.err
    assert "15 to embed, 0 to update without embedding, 279 unchanged, 0 would fail" in captured.out
    assert f"source '{manual}': would delete 15 row(s) no longer in it (first: man-0, man-10, man-100" in captured.out

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    status, captured = cli_sync(manual, "--json")
    assert status == 0, captured.err
    summary = json.loads(captured.out)
    assert (summary["deleted"], summary["stored"], summary["skipped"], summary["delete_refused"]) == (15, 15, 279, None)
    assert cli_sync.fake.stats()["inputs_ok"] == 15
    assert ids_of(pg_conn, str(manual)) == {f"man-{i}" for i in v2}
    assert pg_conn.execute(f"select section_id, updated_at from {TABLE} where source = 'faq' order by 1").fetchall() == faq_rows

    # Version 3 holds 30 % of the source: the guard deletes nothing, exits 1 and says how to allow it.
    write(manual, version(v2[:88]))
    status, captured = cli_sync(manual)
    assert status == 1
    assert f"source '{manual}': 206 row(s) no longer in it" in captured.out and "nothing deleted: " in captured.out
    assert "--max-delete 206 or --max-delete 100%" in captured.out
    assert len(ids_of(pg_conn, str(manual))) == 294
    status, captured = cli_sync(manual, "--json")
    assert status == 1 and json.loads(captured.out)["deleted"] == 0 and json.loads(captured.out)["would_delete"] == 206
    # Allowed by a count: deleted.
    status, captured = cli_sync(manual, "--max-delete", "206", "--json")
    assert status == 0, captured.err
    assert json.loads(captured.out)["deleted"] == 206 and len(ids_of(pg_conn, str(manual))) == 88
    assert len(ids_of(pg_conn, "faq")) == 60


def test_an_unreadable_record_deletes_nothing(cli_sync: Any, pg_conn: Any, tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    assert cli_sync(write(path, version(range(50))), "--source", "docs")[0] == 0
    # Two sections gone, and a line that is not JSON: its id is unknown, so nothing may go.
    write(path, version(range(2, 50)), extra='{"id": "man-0", "title": oops}\n')
    status, captured = cli_sync(path, "--source", "docs", "--json", "--failed-out", str(tmp_path / "f.jsonl"))
    assert status == 1
    summary = json.loads(captured.out)
    assert summary["deleted"] == 0 and summary["would_delete"] == 2
    assert "1 of the 49 records of" in summary["delete_refused"] and "could not be read" in summary["delete_refused"]
    assert len(ids_of(pg_conn, "docs")) == 50
    status, captured = cli_sync(path, "--source", "docs", "--failed-out", str(tmp_path / "f.jsonl"))
    assert "without --sync" in captured.out  # the failed file is never to be synced: it holds only the failures


def test_sync_options_that_do_not_go_together(
    cli_sync: Any, in_process: Any, pg_dsn: str, pg_conn: Any, tmp_path: Path
) -> None:
    path = write(tmp_path / "docs.jsonl", version(range(3)))
    for options, words in (
        ((), "--source"),  # standard input without --source
    ):
        status, captured = cli_sync("-", *options)
        assert status == 2 and words in one_line_error(captured)
    status, captured = cli_sync(path, "--no-skip")
    assert status == 2 and "--no-skip" in one_line_error(captured)
    status, captured = cli_sync(path, "--max-delete", "lots")
    assert status == 2 and "--max-delete" in one_line_error(captured)
    status, captured = in_process("ingest", str(path), "--source", "x", "--dry-run")
    assert status == 2 and "--sync" in one_line_error(captured)
    # A dry run against a table that does not exist yet: the plain dry run (everything to embed), no table made.
    status, captured = in_process("ingest", str(path), "--sync", "--dry-run", "--database-url", pg_dsn, "--table", "fresh")
    assert status == 0, captured.err
    assert pg_conn.execute("select to_regclass('fresh')").fetchone() == (None,)
    assert "does not exist yet: every section would be embedded, nothing deleted" in captured.err
    assert "sections: 3 (3 to embed, 0 would fail)" in captured.out
    assert in_process.fake.stats()["requests"] == 0


def test_a_sync_whose_lock_is_held_exits_2_naming_the_holder(cli_sync: Any, pg_dsn: str, pg_conn: Any, tmp_path: Path) -> None:
    import psycopg

    path = write(tmp_path / "docs.jsonl", version(range(5)))
    assert cli_sync(path, "--source", "locked")[0] == 0
    with psycopg.connect(pg_dsn, autocommit=True, application_name=f"core sync {TABLE} locked") as holder:
        holder.execute("select pg_advisory_lock(hashtext(%s), hashtext(%s))", (TABLE, "locked"))
        cli_sync.fake.reset_stats()
        status, captured = cli_sync(path, "--source", "locked")
        assert status == 2
        line = one_line_error(captured)
        assert "another sync of source 'locked' into table 'synced' is running (PostgreSQL backend pid" in line
        assert line.endswith("wait for it to end, or stop it")
        assert cli_sync.fake.stats()["requests"] == 0
        # Another source syncs meanwhile.
        assert cli_sync(path, "--source", "other")[0] == 0


def test_delete_by_ids_and_by_source(cli_sync: Any, in_process: Any, pg_dsn: str, pg_conn: Any, tmp_path: Path) -> None:
    assert cli_sync(write(tmp_path / "a.jsonl", version(range(20))), "--source", "a")[0] == 0
    assert cli_sync(write(tmp_path / "b.jsonl", version(range(10), prefix="b")), "--source", "b")[0] == 0
    db = ("--database-url", pg_dsn, "--table", TABLE)
    status, captured = in_process("delete", "--ids", "man-1", "man-2", "nope", "man-1", *db, "--dry-run")
    assert status == 0, captured.err
    assert captured.out == f"would delete 2 row(s) of table {TABLE} (3 id(s) given); nothing deleted\n"
    assert len(ids_of(pg_conn, "a")) == 20
    status, captured = in_process("delete", "--ids", "man-1", "man-2", "nope", *db, "--json")
    assert status == 0, captured.err
    assert json.loads(captured.out)["deleted"] == 2 and len(ids_of(pg_conn, "a")) == 18
    status, captured = in_process("delete", "--source", "b", *db, "--dry-run", "--json")
    assert json.loads(captured.out)["would_delete"] == 10 and len(ids_of(pg_conn, "b")) == 10
    status, captured = in_process("delete", "--source", "b", *db)
    assert status == 0 and captured.out == f"deleted 10 row(s) of table {TABLE} (source 'b')\n"
    assert not ids_of(pg_conn, "b") and len(ids_of(pg_conn, "a")) == 18
    # A table of bigint ids: digits on the command line are its numbers.
    numbered = tmp_path / "n.jsonl"
    numbered.write_text("".join(json.dumps({"id": i, "title": "t", "content": f"c{i}"}) + "\n" for i in range(1, 6)))
    assert in_process("ingest", str(numbered), "--database-url", pg_dsn, "--table", "nums", "--dimensions", "8",
                      "--no-index")[0] == 0
    status, captured = in_process("delete", "--ids", "2", "4", "x", "--database-url", pg_dsn, "--table", "nums")
    assert status == 0 and captured.out.startswith("deleted 2 row(s)")
    assert [r[0] for r in pg_conn.execute("select section_id from nums order by 1")] == [1, 3, 5]
    status, captured = in_process("delete", "--source", "a", "--database-url", pg_dsn, "--table", "missing")
    assert status == 2 and "does not exist" in one_line_error(captured)


def test_sync_filter_and_delete_through_supabase(
    in_process: Any, pg_dsn: str, pg_conn: Any, rest: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SUPABASE_URL + key: the PostgREST stand-in over the session's database, a table of text ids."""
    monkeypatch.setenv("SUPABASE_URL", rest.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-key")
    assert in_process("schema", "--dimensions", "8", "--no-index", "--id-type", "text", "--apply", pg_dsn)[0] == 0
    rest.reload_schema()
    path = tmp_path / "docs.jsonl"
    sections = version(range(40))
    for i, section in enumerate(sections):
        section["lang"] = "de" if i % 4 == 0 else "en"
    status, captured = in_process("ingest", str(write(path, sections)), "--sync", "--source", "docs", "--dimensions", "8",
                                  "--json")
    assert status == 0, captured.err
    assert json.loads(captured.out)["stored"] == 40
    status, captured = in_process("search", "text 8", "-k", "5", "--filter", "lang=de", "--dimensions", "8", "--json")
    assert status == 0, captured.err
    hits = json.loads(captured.out)
    assert len(hits) == 5 and {h["metadata"]["lang"] for h in hits} == {"de"} and hits[0]["content"]
    status, captured = in_process("ingest", str(write(path, sections[2:])), "--sync", "--source", "docs", "--dimensions", "8",
                                  "--json")
    assert status == 0, captured.err
    assert json.loads(captured.out)["deleted"] == 2
    assert {r[0] for r in pg_conn.execute("select section_id from section_embeddings")} == {s["id"] for s in sections[2:]}
    status, captured = in_process("delete", "--ids", "man-2", "man-3", "--json")
    assert status == 0, captured.err
    assert json.loads(captured.out)["deleted"] == 2
    status, captured = in_process("delete", "--source", "docs", "--dry-run")
    assert captured.out == "would delete 36 row(s) of table section_embeddings (source 'docs'); nothing deleted\n"
