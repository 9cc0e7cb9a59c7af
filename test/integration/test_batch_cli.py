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
    assert "--finish-online, --job-dir and --batch-queue-tokens go with --batch-api" in capsys.readouterr().err
    assert main(["ingest", str(file), "--batch-queue-tokens", "1000"]) == 2


def test_dry_run_shows_the_plan_against_the_queue_budget(tmp_path, capsys):
    file = write_sections(tmp_path / "s.jsonl", 3000)
    args = ["ingest", str(file), "--dry-run", "--batch-api", "--batch-size", "50"]
    assert main([*args, "--batch-queue-tokens", "20000", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["queue_tokens"] == 20_000 and figures["batch_token_cap"] == 10_000
    assert figures["largest_batch_tokens"] <= 10_000 < figures["tokens"]
    assert figures["batches"] >= figures["tokens"] / 10_000 and figures["queue_rounds"] >= figures["batches"] / 2
    assert main([*args, "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["queue_tokens"] == 3_000_000 and default["batches"] == 1 and default["queue_rounds"] == 1
    assert main([*args, "--batch-queue-tokens", "20000"]) == 0
    text = capsys.readouterr().out
    assert f"batches: {figures['batches']:,}" in text
    assert f"queue: 20,000 enqueued tokens (--batch-queue-tokens): {figures['queue_rounds']:,} round(s)" in text
    assert "cost: $" in text and "Batch API's price" in text


def test_a_job_folder_that_is_a_file_or_cannot_be_written_stops_with_exit_2_before_anything_is_paid(
        tmp_path, fake_openai, control, pg_dsn, monkeypatch):
    file = write_sections(tmp_path / "s.jsonl", 10)
    blocker = tmp_path / "job-file"
    blocker.write_text("not a folder")
    env = clean_env(fake_openai)
    base = ["ingest", str(file), "--batch-api", "--database-url", pg_dsn, "--dimensions", "64", "--no-index"]
    for job_dir, says in ((blocker, "is a file, not a folder"), (blocker / "sub", "cannot be written")):
        done = cli(*base, "--job-dir", str(job_dir), env=env)
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1 and says in errors[0] and "run the same command again" not in done.stderr
        assert "Traceback" not in done.stderr
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the write fail as it would for a user
        from pathlib import Path as RealPath

        write_bytes = RealPath.write_bytes

        def refuse(self, data):
            if self.parent == readonly:
                raise PermissionError(13, "Permission denied", str(self))
            return write_bytes(self, data)

        monkeypatch.setattr(RealPath, "write_bytes", refuse)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    code = main([*base, "--job-dir", str(readonly)])
    assert code == 2
    assert control.state()["files"] == 0 and control.state()["batches"] == []  # nothing uploaded
    readonly.chmod(0o700)


def test_a_password_in_the_base_url_never_reaches_the_job_folder_nor_messages(tmp_path, fake_openai, control, pg_dsn):
    file = write_sections(tmp_path / "s.jsonl", 10)
    env = clean_env(fake_openai)
    env["OPENAI_BASE_URL"] = fake_openai.base_url.replace("http://", "http://batchuser:Pw0rdS3cret@")
    control.configure(in_progress_seconds=1)
    args = ["ingest", str(file), "--batch-api", "--database-url", pg_dsn, "--dimensions", "64", "--no-index",
            "--poll-interval", "0.2", "--job-dir", str(tmp_path / "job")]
    done = cli(*args, env=env)  # httpx sends the userinfo as Basic auth: the local server answers 401
    assert done.returncode == 2 and "the Batch API at http://127.0.0.1:" in done.stderr, done.stderr
    assert "Pw0rdS3cret" not in done.stderr + done.stdout and "batchuser" not in done.stderr
    job = json.loads((tmp_path / "job" / "job.json").read_text())
    assert job["base_url"] == fake_openai.base_url
    for path in (tmp_path / "job").iterdir():
        assert b"Pw0rdS3cret" not in path.read_bytes(), path
    again = cli(*args, env={**env, "OPENAI_BASE_URL": fake_openai.base_url})  # the same job, without the credential
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "job" / "job.json").read_text())["job_id"] == job["job_id"]
