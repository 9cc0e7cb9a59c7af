"""How an ingest runs and ends, as a user sees it: terminal width, standard input, re-runs, interrupts.

Each test here pins a fixed bug of the command line (see the test's doc).
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (  # noqa: F401  (fixtures)
    EXAMPLE,
    EXAMPLE_SECTIONS,
    clean_env,
    cli,
    in_process,
    in_terminal,
    screen_lines,
    start_cli,
    workdir,
)

pytestmark = pytest.mark.integration

BAD_LINES = ['{"id": 1, "title": "No content"}', "not JSON at all", '{"id": "x", "title": "t", "content": "c"}']


def many_sections(path: Path, n: int, bad: list[str] = BAD_LINES) -> Path:
    words = "vectors postgres index search tokens batch retry limit socket table".split()
    with path.open("w", encoding="utf-8") as out:
        for i in range(1, n + 1):
            text = " ".join(words[(i * 7 + j) % len(words)] for j in range(60))
            out.write(json.dumps({"id": 1000 + i, "title": f"Section {i}", "content": text}) + "\n")
        out.write("\n".join(bad) + "\n")
    return path


def test_progress_bar_and_summary_fit_80_columns(fake_openai: Any, pg_dsn: str, pg_conn: Any, workdir: Path) -> None:
    """Was: the bar shrank to one character and the failure count was cut off; the summary wrapped."""
    source = many_sections(workdir / "wide.jsonl", 3000)
    status, output = in_terminal(
        "ingest", source.name, "--database-url", pg_dsn, "--table", "cli_tty", "--dimensions", "8", "--no-index",
        "--id-type", "bigint", env=clean_env(fake_openai), cwd=workdir,
    )
    assert status == 1, output
    lines = [line for line in screen_lines(output) if not line.startswith("target: ")]  # a DSN is as long as it is
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, too_wide
    frames = [line for line in lines if line.startswith("ingest ")]
    assert frames and re.search(r"\|\S{10,}\| 3k/3k .* tok/s 3 failed \[", frames[-1]), frames[-1]
    assert "stored 3,000, skipped 0, failed 3 of 3,003 sections" in lines


def test_ingest_reads_standard_input(fake_openai: Any, pg_dsn: str, pg_conn: Any, workdir: Path) -> None:
    """Was: `ingest -` said "no such file: -"."""
    text = "".join(json.dumps(s) + "\n" for s in EXAMPLE_SECTIONS[:5]) + "not JSON\n"
    target = ["--database-url", pg_dsn, "--table", "cli_stdin", "--dimensions", "8", "--no-index"]
    proc = cli("ingest", "-", *target, env=clean_env(fake_openai), cwd=workdir, stdin=text)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("stored 5, skipped 0, failed 1 of 6 sections\n")
    assert pg_conn.execute("select count(*) from cli_stdin").fetchone() == (5,)
    failed = workdir / "stdin.failed.jsonl"
    assert [json.loads(line)["_raw"] for line in failed.read_text().splitlines()] == ["not JSON"]
    # CSV from standard input, with --format
    csv_text = "id,title,content\n41,Piped,From a pipe\n"
    proc = cli("ingest", "-", "--format", "csv", *target, "--json", env=clean_env(fake_openai), cwd=workdir, stdin=csv_text)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["stored"] == 1
    assert not failed.exists()  # nothing failed this time: the earlier failures file is gone


def test_dry_run_exits_1_when_sections_would_fail(in_process: Any, workdir: Path) -> None:
    """Was: exit 0 whatever the dry run found. (Its string id is valid since issue #17: a dry run reads
    no table, so it counts that section to embed; only the table's id type can refuse it.)"""
    source = workdir / "dry.jsonl"
    long_text = "word " * 9000  # over the 8191-token input limit
    lines = [json.dumps(s) for s in EXAMPLE_SECTIONS[:3]] + BAD_LINES + [
        json.dumps({"id": 77, "title": "Long", "content": long_text})
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    status, captured = in_process("ingest", str(source), "--dry-run", "--json")
    assert status == 1
    report = json.loads(captured.out)
    assert (report["sections"], report["to_embed"], report["unreadable"], report["invalid"], report["too_long"]) == (
        7, 4, 1, 1, 1
    )
    status, captured = in_process("ingest", str(source), "--dry-run")
    assert status == 1 and "3 would fail" in captured.out and "too long" in captured.out
    assert in_process("ingest", str(EXAMPLE), "--dry-run")[0] == 0


def test_rerunning_an_unfixed_failed_file_keeps_its_name_and_reasons(
    fake_openai: Any, pg_dsn: str, pg_conn: Any, workdir: Path
) -> None:
    """Was: bad.failed.failed.jsonl, and the not-JSON line's reason turned into "missing 'id'"."""
    source = workdir / "unfixed.jsonl"
    source.write_text("\n".join([json.dumps(EXAMPLE_SECTIONS[0]), *BAD_LINES]) + "\n", encoding="utf-8")
    target = ["--database-url", pg_dsn, "--table", "cli_unfixed", "--dimensions", "8", "--no-index", "--id-type", "bigint"]
    env = clean_env(fake_openai)
    assert cli("ingest", str(source), *target, env=env).returncode == 1
    failed = workdir / "unfixed.failed.jsonl"
    first = [json.loads(line) for line in failed.read_text().splitlines()]
    for _ in range(2):
        again = cli("ingest", str(failed), *target, env=env)
        assert again.returncode == 1 and f"failed sections written to {failed}\n" in again.stdout
        assert sorted(p.name for p in workdir.glob("unfixed*")) == ["unfixed.failed.jsonl", "unfixed.jsonl"]
        records = [json.loads(line) for line in failed.read_text().splitlines()]
        assert [(r["_error"], r["_code"]) for r in records] == [(r["_error"], r["_code"]) for r in first]
        assert [r.get("_raw") for r in records] == [r.get("_raw") for r in first]


def test_duplicate_ids_name_the_line_that_kept_the_id(in_process: Any, pg_dsn: str, pg_conn: Any, workdir: Path) -> None:
    source = workdir / "dupes.jsonl"
    rows = [{"id": 5, "title": "A", "content": "first"}, {"id": 6, "title": "B", "content": "other"},
            {"id": 5, "title": "C", "content": "second"}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    status, captured = in_process("ingest", str(source), "--database-url", pg_dsn, "--table", "cli_dupes",
                                  "--dimensions", "8", "--no-index", "--json")
    assert status == 1
    (failure,) = json.loads(captured.out)["failures"]
    assert failure["line"] == 3 and failure["code"] == "duplicate_id"
    assert "first seen on line 1" in failure["reason"]


def test_every_section_failing_builds_no_index(in_process: Any, pg_dsn: str, pg_conn: Any, workdir: Path) -> None:
    """Was: "building the HNSW index on 0 rows..."."""
    source = workdir / "allbad.jsonl"
    source.write_text("\n".join(BAD_LINES) + "\n", encoding="utf-8")
    # A bigint table: the string id "x" fails too (without --id-type the ids 1 and "x" would make a text table).
    status, captured = in_process("ingest", str(source), "--database-url", pg_dsn, "--table", "cli_allbad",
                                  "--dimensions", "8", "--id-type", "bigint")
    assert status == 1
    assert "stored 0, skipped 0, failed 3 of 3 sections" in captured.out
    assert "HNSW" not in captured.err and "index" not in captured.err


def wait_for(condition: Any, timeout: float = 60.0, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the CLI ended early ({proc.returncode}):\n{out}\n{err}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_ctrl_c_says_exactly_how_many_sections_were_stored(
    fake_openai: Any, pg_dsn: str, pg_conn: Any, workdir: Path
) -> None:
    fake_openai.configure(latency_base=0.3)
    proc = start_cli("ingest", str(EXAMPLE), "--database-url", pg_dsn, "--table", "cli_sigint", "--dimensions", "8",
                     "--no-index", "--batch-size", "4", "--concurrency", "1", env=clean_env(fake_openai))
    count = "select count(*) from cli_sigint"
    wait_for(lambda: pg_conn.execute("select to_regclass('cli_sigint') is not null").fetchone()[0]
             and pg_conn.execute(count).fetchone()[0] >= 8, proc=proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    stored = pg_conn.execute(count).fetchone()[0]
    assert 8 <= stored < 40
    assert f"interrupted: {stored:,} sections stored" in err, err
    assert out.startswith(f"stored {stored:,}, skipped 0, failed 0 of ")


def test_sigterm_stops_cleanly_and_lets_go_of_the_embedded_server(fake_openai: Any, workdir: Path) -> None:
    """Was: SIGTERM killed the process on the spot: no summary, the embedded server left running."""
    data_dir = workdir / "sigterm-pgdata"
    fake_openai.configure(latency_base=0.3)
    proc = start_cli("ingest", str(EXAMPLE), "--data-dir", str(data_dir), "--dimensions", "8", "--no-index",
                     "--batch-size", "2", "--concurrency", "1", env=clean_env(fake_openai))
    wait_for(lambda: fake_openai.stats()["requests"] >= 3, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err and "Traceback" not in err
    assert out.startswith("stored ")
    wait_for(lambda: not (data_dir / "postmaster.pid").exists(), timeout=30)
