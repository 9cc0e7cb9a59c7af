"""Loads into a table that already has its HNSW index (issue #20): `--rebuild-index auto` drops the
index before a load that is large against the table and builds it again after (inserting row by
row into the graph was ~5x slower per row); a small load goes into the index as it is; a load that
stops between the drop and the rebuild says so, and the next ingest builds the index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import in_process, workdir  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def write(path: Path, ids: range) -> Path:
    path.write_text("".join(json.dumps({"id": i, "title": f"T{i}", "content": f"text number {i}"}) + "\n" for i in ids))
    return path


def has_index(pg_conn: Any, table: str) -> bool:
    return pg_conn.execute("select to_regclass(%s) is not null", (f"{table}_embedding_hnsw_idx",)).fetchone()[0]


def test_auto_rebuilds_for_a_large_load_and_inserts_a_small_one(in_process: Any, workdir: Path, pg_dsn: str, pg_conn: Any) -> None:  # noqa: F811
    target = ("--database-url", pg_dsn, "--table", "rebuild_t", "--dimensions", "8")
    status, out = in_process("ingest", str(write(workdir / "r1.jsonl", range(1, 101))), *target)
    assert status == 0 and has_index(pg_conn, "rebuild_t")
    status, out = in_process("ingest", str(write(workdir / "r2.jsonl", range(101, 141))), *target)  # 40 into 100
    assert status == 0 and "40 rows into 100: the HNSW index is dropped and built again after the load" in out.err
    assert "building the HNSW index on 140 rows" in out.err and has_index(pg_conn, "rebuild_t")
    status, out = in_process("ingest", str(write(workdir / "r3.jsonl", range(141, 146))), *target)  # 5 into 140
    assert status == 0 and "index:" not in out.err and "building the HNSW index" not in out.err
    assert has_index(pg_conn, "rebuild_t")
    status, out = in_process("ingest", str(write(workdir / "r4.jsonl", range(146, 196))), *target, "--rebuild-index", "never")
    assert status == 0 and "building the HNSW index" not in out.err and has_index(pg_conn, "rebuild_t")
    status, out = in_process("ingest", str(write(workdir / "r5.jsonl", range(196, 199))), *target, "--rebuild-index", "always")
    assert status == 0 and "--rebuild-index always" in out.err and "building the HNSW index on 198 rows" in out.err
    assert pg_conn.execute("select count(*) from rebuild_t").fetchone() == (198,)


def test_a_rerun_of_an_unchanged_file_keeps_the_index(in_process: Any, workdir: Path, pg_dsn: str, pg_conn: Any) -> None:  # noqa: F811
    """Was: the strategy weighed the sections read, not the rows to write, so re-running an
    unchanged file of 1,000,000 sections dropped the index and rebuilt it for nothing (20 minutes,
    searches scanning every row meanwhile). The first window's stored hashes say what is new."""
    target = ("--database-url", pg_dsn, "--table", "rebuild_v", "--dimensions", "8")
    file = write(workdir / "v1.jsonl", range(1, 101))
    assert in_process("ingest", str(file), *target)[0] == 0 and has_index(pg_conn, "rebuild_v")
    oid = pg_conn.execute("select 'rebuild_v_embedding_hnsw_idx'::regclass::oid").fetchone()
    status, out = in_process("ingest", str(file), *target)  # 100 sections into 100, none to write
    assert status == 0 and "skipped 100" in out.out and "index:" not in out.err and "building the HNSW index" not in out.err
    assert pg_conn.execute("select 'rebuild_v_embedding_hnsw_idx'::regclass::oid").fetchone() == oid  # the same index
    # 100 unchanged and 40 new of 140 read: 40 rows to write into 100, a large load: rebuilt.
    status, out = in_process("ingest", str(write(workdir / "v2.jsonl", range(1, 141))), *target)
    assert status == 0 and "40 rows into 100: the HNSW index is dropped and built again after the load" in out.err
    assert has_index(pg_conn, "rebuild_v")


def test_a_load_that_stops_after_the_drop_says_so_and_the_next_ingest_builds_the_index(
    in_process: Any, workdir: Path, pg_dsn: str, pg_conn: Any, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    from core.stores.postgres import PostgresStore

    target = ("--database-url", pg_dsn, "--table", "rebuild_u", "--dimensions", "8")
    assert in_process("ingest", str(write(workdir / "u1.jsonl", range(1, 51))), *target)[0] == 0

    def interrupted(self: Any, rows: Any) -> Any:
        raise KeyboardInterrupt  # Ctrl-C in the middle of the load

    with monkeypatch.context() as patched:
        patched.setattr(PostgresStore, "write_rows", interrupted)
        status, out = in_process("ingest", str(write(workdir / "u2.jsonl", range(51, 151))), *target)
    assert status == 130 and not has_index(pg_conn, "rebuild_u")
    assert "table rebuild_u has no HNSW index now" in out.err and "the next ingest into it builds the index" in out.err
    status, out = in_process("ingest", str(write(workdir / "u3.jsonl", range(151, 153))), *target)
    assert status == 0 and has_index(pg_conn, "rebuild_u")
