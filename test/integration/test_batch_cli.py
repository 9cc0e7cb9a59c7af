"""``python -m core ingest FILE --batch-api``: killed while polling, run again, every section stored once.

The CI-sized version of ``bench/bench_batch_api.py`` (100,000 sections there).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from cli_helpers import clean_env, cli, start_cli

from core.cli import main
from core.testing.openai_server.batches import BatchControl

SECTIONS = 2_000


@pytest.fixture
def control(fake_openai):
    control = BatchControl(fake_openai)
    control.reset()
    yield control
    control.reset()


def write_sections(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(1, n + 1):
            out.write(json.dumps({"id": i, "title": f"Section {i}", "content": f"notes on topic {i % 13}, item {i}"})
                      + "\n")
    return path


def job_states(job: Path) -> list[str]:
    try:
        return [b["state"] for b in json.loads((job / "job.json").read_text())["batches"]]
    except (OSError, ValueError, KeyError):
        return []


def test_killed_while_polling_then_run_again_stores_every_section_submitting_nothing_twice(
        tmp_path, fake_openai, control, pg_conn, pg_dsn):
    control.configure(validating_seconds=0.2, in_progress_seconds=600)  # in flight until the test says
    file = write_sections(tmp_path / "sections.jsonl", SECTIONS)
    env = clean_env(fake_openai)
    args = ["ingest", str(file), "--batch-api", "--batch-size", "100", "--database-url", pg_dsn, "--dimensions", "64",
            "--no-index", "--poll-interval", "0.1", "--json"]
    job = tmp_path / "sections.batch-job"
    proc = start_cli(*args, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (job_states(job) and set(job_states(job)) == {"submitted"}
                   and json.loads((job / "job.json").read_text())["batches"][0].get("status") == "in_progress"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the CLI did not submit its batch in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-polling: no cleanup, no last save
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert pg_conn.execute("select count(*) from section_embeddings").fetchone()[0] == 0
    control.configure(in_progress_seconds=1)  # the rest of the work takes a second from now on
    control.advance(600)
    done = cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert (summary["stored"], summary["skipped"], summary["failed"], summary["sections"]) == (SECTIONS, 0, 0, SECTIONS)
    batches = control.state()["batches"]
    assert len(batches) == 1 and batches[0]["inputs"] == SECTIONS  # submitted once, collected by the second run
    assert pg_conn.execute("select count(*) from section_embeddings").fetchone()[0] == SECTIONS
    assert job_states(job) == ["collected"]
    again = cli(*args, env=env)
    assert json.loads(again.stdout.splitlines()[-1])["skipped"] == SECTIONS
    assert len(control.state()["batches"]) == 1


def test_dry_run_counts_batches_and_the_batch_price(tmp_path, capsys):
    file = write_sections(tmp_path / "s.jsonl", 120)
    assert main(["ingest", str(file), "--dry-run", "--batch-api", "--batch-size", "50", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["batch_api"] is True and (figures["batches"], figures["requests"], figures["inputs"]) == (1, 3, 120)
    assert figures["price_per_million_usd"] == "0.01"  # half of text-embedding-3-small's $0.02
    assert float(figures["cost_usd"]) == pytest.approx(figures["tokens"] * 0.01 / 1e6)


def test_batch_options_without_batch_api_are_refused(tmp_path, capsys):
    file = write_sections(tmp_path / "s.jsonl", 3)
    assert main(["ingest", str(file), "--finish-online"]) == 2
    assert "--finish-online and --job-dir go with --batch-api" in capsys.readouterr().err
