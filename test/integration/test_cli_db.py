"""``python -m core db``: the embedded PostgreSQL from the shell (issue #21).

One data folder through its life: none yet; served (`--serve`) and used by another
program through the printed connection string; sized (`--size`); stopped
(`--stop`, which also ends the serving command); sized again while stopped (the
server is started for the look and let go of after it).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import clean_env, cli, start_cli

pytestmark = pytest.mark.integration


def _dsn(text: str) -> str:
    match = re.search(r"connection string: (\S+)", text)
    assert match, text
    return match.group(1)


def test_db_prints_serves_sizes_and_stops_the_embedded_database() -> None:
    psycopg = pytest.importorskip("psycopg")
    with tempfile.TemporaryDirectory(prefix="core-db-") as tmp:
        folder = Path(tmp) / "pgdata"
        env = clean_env(CORE_DATA_DIR=str(folder))  # the folder every command uses without --data-dir
        proc = cli("db", env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [f"data folder: {folder}",
                                            "no database here yet: `ingest` creates it (or `db --serve`, which "
                                            "keeps it running)"]
        server: Any = start_cli("db", "--serve", env=env)
        try:
            lines = [server.stdout.readline() for _ in range(3)]
            assert lines[2].startswith("serving"), (lines, server.stderr.read() if server.poll() is not None else "")
            dsn = _dsn(lines[1])
            proc = cli("db", env=env)
            assert proc.returncode == 0 and "server: running (PID " in proc.stdout and _dsn(proc.stdout) == dsn
            with psycopg.connect(dsn, autocommit=True) as conn:  # another program, through the printed string
                conn.execute("create table notes (id int primary key, body text)")
                conn.execute("insert into notes select g, repeat('x', 100) from generate_series(1, 3) g")
            proc = cli("db", "--size", env=env)
            assert proc.returncode == 0, proc.stderr
            assert "  public.notes: 3 rows, " in proc.stdout and "data folder on disk: " in proc.stdout
            proc = cli("db", "--stop", env=env)
            assert proc.returncode == 0 and "server: stopped (PID " in proc.stdout, proc.stdout + proc.stderr
            assert server.wait(timeout=30) == 0  # the serving command noticed and ended
            assert "the server stopped" in server.stdout.read()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        proc = cli("db", env=env)
        assert "server: not running" in proc.stdout and "connection string" not in proc.stdout
        proc = cli("db", "--size", "--data-dir", str(folder), env=clean_env())  # --data-dir: the same folder
        assert proc.returncode == 0, proc.stderr
        assert "  public.notes: 3 rows, " in proc.stdout
        assert "server: not running" in cli("db", env=env).stdout  # started for the look, let go of after it
        assert cli("db", "--stop", env=env).stdout.endswith("server: not running; nothing to stop\n")


def test_db_options_go_one_at_a_time() -> None:
    proc = cli("db", "--stop", "--size", env=clean_env())
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr
